//! The domain: values and rules of payments that know nothing of AWS or Lambda.
//!
//! Ids and money ([`callback::OrderId`], [`charge::ChargeId`], [`money`]), what a gateway sends
//! ([`delivery`], [`callback`], [`card`]), the records kept and their PynamoDB-compatible item
//! encodings ([`item`], [`record`], [`inbox`], [`error_log`], [`ledger`]), the KBank
//! [`checksum`], [`redact`]ion of secrets and card numbers, and the [`clock`]. Files here import
//! only each other, never a port, a flow or the runtime.

pub mod callback;
pub mod card;
pub mod charge;
pub mod checksum;
pub mod clock;
pub mod delivery;
pub mod error;
pub mod error_log;
pub mod inbox;
pub mod item;
pub mod ledger;
pub mod limits;
pub mod money;
pub mod record;
pub mod redact;
pub mod secret;
pub mod signature;
