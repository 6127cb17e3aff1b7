//! The runtime: what turns a process into a Lambda function.
//!
//! [`config`] reads the environment once per container into the flows' settings; [`inbound`]
//! reads a Lambda event (REST v1, HTTP API v2, function URL, direct invoke) into a
//! [`crate::domain::delivery::Delivery`]; [`start`] builds the AWS clients once and runs a
//! handler under the Lambda runtime. A new function's `main.rs` calls one `start::run_*`.
//! [`logging`] redacts every log line on its way out.

pub mod config;
pub mod inbound;
pub mod logging;
pub mod start;
