//! The Lambda side: [`config`] (the environment), [`entry`] (event in, imports, response out,
//! the error path, start-up).

pub mod config;
pub mod entry;
