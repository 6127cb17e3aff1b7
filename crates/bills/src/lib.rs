//! bills: the bill payments system of SPEC 10 (seed 004, first system).
//!
//! - [`import`]: the daily bills file from S3 into `payment3-payment-balance-<branch>` (on
//!   crates/s3-import: events, streaming CSV, report, conditional batched writes);
//! - [`api`]: the balance API and the payment API (validation, StartExecution);
//! - [`domain`]: rows, payments and their rules; [`ports`]: the bills table and Step Functions;
//! - [`settings`], [`start`]: environment and start-up of the three functions.
//!
//! The payment itself (Wait, the conditional write, the alerts) is the state machine
//! `statemachines/bill-payment.asl.json`: direct service integrations, no Lambda.

pub mod api;
pub mod domain;
pub mod import;
pub mod ports;
pub mod settings;
pub mod start;
