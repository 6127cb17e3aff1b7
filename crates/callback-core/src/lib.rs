//! callback-core: the shared library of the payment3 Lambda functions.
//!
//! Road of a callback: [`inbound`] (Lambda event -> [`inbound::Delivery`]) -> [`callback`]
//! (validated payload) -> [`record`] (PynamoDB-compatible item, via [`item`]) -> the store
//! [`ports`] -> dispatch -> [`inbound::Reply`]. [`processor::CallbackProcessor`] runs that road
//! for the wallet, bank-app and Amex callbacks; [`incident`] is the error path; [`redact`] keeps
//! secrets and card numbers out of logs and tables. [`adapters`] put the ports on AWS,
//! [`memory`] puts them in memory for unit tests, [`app`] starts a function.

pub mod adapters;
pub mod app;
pub mod callback;
pub mod card;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod error;
pub mod inbound;
pub mod inbox;
pub mod incident;
pub mod item;
pub mod kbank;
pub mod kbank_secret;
pub mod memory;
pub mod money;
pub mod notify;
pub mod paid;
pub mod ports;
pub mod processor;
pub mod record;
pub mod redact;

pub use error::CallbackError;
pub use processor::CallbackProcessor;
pub use record::{AmexRecords, BankAppRecords, RecordTable, WalletRecords};
