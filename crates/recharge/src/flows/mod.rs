//! The Recharge roads of SPEC 9, written against the ports, never against AWS:
//!
//! - [`webhook`]: `POST /recharge/webhook`: keep, verify, answer fast, hand off;
//! - [`dunning`]: a failed charge's retry date decided and sent to Recharge once per attempt;
//!   `charge/max_retries_reached` recorded and alerted.
//!
//! Both use callback-core's inbox and error path; what they are told is in [`settings`].

pub mod dunning;
pub mod settings;
pub mod webhook;
