//! The flows: each one road of SPEC 4, written against the ports, never against AWS.
//!
//! - [`processor`]: the wallet, bank-app and Amex callbacks (SPEC 4.1), one
//!   [`processor::CallbackProcessor`] per [`processor::RecordTable`];
//! - [`notify`]: KBank's card notify and delayed notify (4.2, 4.3);
//! - [`paid`]: process-paid, a payment applied exactly once (4.4);
//! - [`inbox`]: every delivery kept before anything can fail, its outcome set at the end;
//! - [`incident`]: the error path (SPEC 6): error log, Sentry, alert with cooldown.
//!
//! What they are told is in [`settings`]; what they fail with is [`error::CallbackError`]; what
//! they answer is a [`reply::Reply`]. Flows import the ports and the domain, never the runtime.

pub mod error;
pub mod inbox;
pub mod incident;
pub mod loopback;
pub mod notify;
pub mod paid;
pub mod processor;
pub mod reply;
pub mod settings;
#[cfg(test)]
pub(crate) mod timed;
