//! Start-up of the two Recharge functions: [`config`] reads the environment, [`inbound`] turns a
//! Lambda event into a delivery, [`start`] builds the clients once and runs the loop.

pub mod config;
pub mod inbound;
pub mod start;
