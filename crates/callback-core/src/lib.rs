//! callback-core: the shared library of the payment3 Lambda functions, in four layers whose
//! imports only point down (`scripts/import_cycles.py` checks that no file's imports go round):
//!
//! - [`runtime`]: environment, Lambda events in, start-up (`runtime::start::run_*` is what a
//!   function's `main.rs` calls);
//! - [`flows`]: the roads of SPEC 4 (callback, notify, delayed notify, process-paid), the inbox
//!   and the error path;
//! - [`ports`]: one trait per outside capability, with AWS SDK adapters and in-memory twins;
//! - [`domain`]: ids, money, payloads, records and their item encodings, the KBank checksum,
//!   redaction; no AWS, no Lambda.
//!
//! Start reading at [`flows::processor`]. Another system (a crate of its own under `crates/`)
//! uses the pieces re-exported below rather than reaching into the modules.

pub mod domain;
pub mod flows;
pub mod ports;
pub mod runtime;

// The surface another system builds on.
pub use domain::clock::{isoformat, Clock, SystemClock};
pub use domain::delivery::Delivery;
pub use domain::error::ValidationError;
pub use domain::inbox::{InboxEntry, InboxOutcome};
pub use domain::item::{Attr, DecodeError, Item, ItemBuilder, ItemReader};
pub use domain::redact::{redact_headers, redact_text, redact_value};
pub use domain::secret::SecretKey;
pub use flows::error::CallbackError;
pub use flows::inbox::Inbox;
pub use flows::incident::{Incident, IncidentReporter};
pub use flows::processor::{
    AmexRecords, BankAppRecords, CallbackProcessor, RecordTable, WalletRecords,
};
pub use flows::reply::Reply;
pub use flows::settings::Settings;
pub use ports::error::{InvokeError, MailError, SecretError, StoreError};
pub use ports::secret_cache::SecretCache;
pub use ports::Ports;
pub use runtime::config::ConfigError;
