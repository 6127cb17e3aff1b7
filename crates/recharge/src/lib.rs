//! recharge: the Recharge dunning webhook (SPEC 9), on callback-core's inbox, error path, secret
//! cache, ports and start-up. Four layers whose imports only point down, as in callback-core:
//!
//! - [`runtime`]: environment, Lambda events in, `runtime::start::run_*` for each binary;
//! - [`flows`]: the webhook (keep, verify, hand off) and the dunning run (decide, reschedule once);
//! - [`ports`]: the dunning ledger, the dunning service and Recharge's API, with their adapters;
//! - [`domain`]: the digest, topics and charges, the date rules and schedule, the ledger's states.
//!
//! Start reading at [`flows::webhook`], then [`domain::dunning`].

pub mod domain;
pub mod flows;
pub mod ports;
pub mod runtime;
