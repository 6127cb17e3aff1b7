//! The Recharge domain: no AWS, no HTTP.
//!
//! [`signature`] (the webhook digest), [`charge`] (topics, the failed charge a webhook names, the
//! job handed to the dunning function), [`schedule`] (the date rules and the built-in schedule),
//! [`dunning`] (the ledger's item and its states).

pub mod charge;
pub mod dunning;
pub mod schedule;
pub mod signature;
