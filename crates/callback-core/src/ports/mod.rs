//! Ports: what the flows need from the outside world, one trait per capability, and their twins:
//! [`aws`] puts them on the AWS SDK, [`kbank`] on KBank's HTTP API, [`memory`] in memory for unit
//! tests. [`error`] holds what a failed call says; [`secret_cache`] keeps a Secrets Manager secret
//! per container. Flows hold the ports as `Arc<dyn ...>`. Ports import only the domain.

pub mod aws;
pub mod error;
pub mod kbank;
pub mod memory;
pub mod secret_cache;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::charge::{Charge, ChargeId};
use crate::domain::clock::Clock;
use crate::domain::error_log::ErrorLogEntry;
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::domain::item::Item;
use crate::domain::record::CallbackRecord;
use crate::domain::secret::SecretKey;
use crate::ports::error::GatewayError;
use crate::ports::error::{InvokeError, MailError, SecretError, StoreError};

/// What happened to a callback record write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The record now holds this callback.
    Written,
    /// A stored `success: true` was kept; this `success: false` was not written over it.
    KeptEarlierSuccess,
    /// The record already holds this verified `webhook-id` (a replay, or a retry after a failed
    /// dispatch): nothing was written.
    AlreadyProcessed,
}

/// Callback records (wallet, bank app, Amex).
#[async_trait]
pub trait CallbackRecordStore: Send + Sync {
    /// Writes the record, except over a stored success with a failure, and except when the
    /// record already holds `webhook_id` (a verified delivery's id, `<gateway>:<webhook-id>`),
    /// which the write adds to the record's `webhookIds`: the replay check of SPEC 4.5 is a
    /// condition of the same write, not a round trip of its own. One conditional write (never
    /// read-then-write); `created_at` of an existing record is kept.
    async fn save_callback(
        &self,
        table: &str,
        record: &CallbackRecord,
        webhook_id: Option<&str>,
    ) -> Result<SaveOutcome, StoreError>;
}

/// The inbox of every delivery.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Appends a delivery; never overwrites another one.
    async fn append(&self, table: &str, entry: &InboxEntry) -> Result<(), StoreError>;
    /// Records how the delivery ended.
    async fn set_outcome(
        &self,
        table: &str,
        entry: &InboxEntry,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError>;
}

/// The error-log table.
#[async_trait]
pub trait ErrorLogStore: Send + Sync {
    async fn put_error(&self, table: &str, entry: &ErrorLogEntry) -> Result<(), StoreError>;
}

/// The shared alert cooldown: one alert per key per cooldown, across all containers.
#[async_trait]
pub trait AlertGate: Send + Sync {
    /// True when the caller may send the alert for `key` now (and the gate is now closed for
    /// `cooldown`); false when one went out less than `cooldown` ago.
    async fn try_open(
        &self,
        table: &str,
        key: &str,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives back the gate taken at `taken_at` when the e-mail could not be sent, so a failed
    /// send holds nothing: the cooldown counts only alerts that went out.
    async fn release(
        &self,
        table: &str,
        key: &str,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// Lambda invocations.
#[async_trait]
pub trait Invoker: Send + Sync {
    /// Asynchronous (`Event`) invoke: returns once Lambda has queued the event.
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError>;
    /// Synchronous (`RequestResponse`) invoke: returns the function's response payload; a
    /// function error is an `Err`.
    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError>;
}

/// One e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Outgoing e-mail (SES).
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// Secrets Manager.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret's `SecretString`.
    async fn secret_string(&self, name: &str) -> Result<String, SecretError>;
}

/// The ports every function needs, built once per container.
#[derive(Clone)]
pub struct Ports {
    pub records: Arc<dyn CallbackRecordStore>,
    pub inbox: Arc<dyn InboxStore>,
    pub errors: Arc<dyn ErrorLogStore>,
    pub alert_gate: Arc<dyn AlertGate>,
    pub invoker: Arc<dyn Invoker>,
    pub mailer: Arc<dyn Mailer>,
    pub secrets: Arc<dyn SecretSource>,
    pub clock: Arc<dyn Clock>,
}

// ---- The card path (notify, delayed notify, process-paid) ----

use crate::domain::card::{CardPayment, NotifyRecord};
use crate::domain::ledger::{ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState};

/// The KBank notify records and the card payment records.
#[async_trait]
pub trait CardStore: Send + Sync {
    /// Writes one notify record (`payment3-credit-card-notify-<branch>`).
    async fn save_notify(&self, table: &str, record: &NotifyRecord) -> Result<(), StoreError>;
    /// The card payment record of a charge, through the `chargeId-index`.
    async fn card_payment_by_charge(
        &self,
        table: &str,
        charge_id: &str,
    ) -> Result<Option<CardPayment>, StoreError>;
    /// Sets `checksumVerified` on a card payment record (hash key `token`).
    async fn set_checksum_verified(
        &self,
        table: &str,
        token: &str,
        verified: bool,
    ) -> Result<(), StoreError>;
}

/// The shop's order table: read by process-paid, and updated by it alone.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// The order item (hash key `orderId`), as stored.
    async fn order_item(&self, table: &str, order_id: &str) -> Result<Option<Item>, StoreError>;
    /// Sets `paymentStatus`, `paidAt`, `paymentType`, `paymentId` on an existing order that is
    /// not `PAID` yet: one conditional write, so an order paid before (by this payment, or by
    /// another one through the Python stack) is never written over.
    async fn mark_order_paid(
        &self,
        table: &str,
        update: &OrderPaidUpdate,
    ) -> Result<OrderMark, StoreError>;
}

/// The exactly-once ledger `payment3-paid-order-<branch>`: `PENDING -> PAID | FAILED`, each move
/// one conditional write, never out of `PAID`.
#[async_trait]
pub trait PaidOrderLedger: Send + Sync {
    /// The ledger entry of an order (strongly consistent read).
    async fn paid_state(
        &self,
        table: &str,
        order_id: &str,
    ) -> Result<Option<PaidOrderState>, StoreError>;
    /// Moves the order to `PAID` and claims the side effects under `claim.token`. `Won` for the
    /// one write that wins: the entry was absent, `PENDING` or `FAILED`, or is this same payment
    /// whose side effects were claimed before `stale_before` (to the millisecond) and never
    /// finished (a crashed winner). Otherwise `Held` with the entry as it stood (DynamoDB's
    /// `ReturnValuesOnConditionCheckFailure=ALL_OLD`): when the SDK retried a write that had
    /// succeeded, that entry carries this claim's token.
    async fn claim_paid(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError>;
    /// Records that the side effects are done, only while the claim is still `token`'s (a run
    /// taken over after the lease must not finish, nor send a second notice). True when it did.
    async fn finish_paid(
        &self,
        table: &str,
        order_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Moves an absent or `PENDING` entry to `FAILED`; true when this write did it.
    async fn mark_failed(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Writes a `PENDING` entry when there is none (a trace of a charge seen unpaid).
    async fn note_pending(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// The stores of the card path, on top of [`Ports`].
#[derive(Clone)]
pub struct CardPorts {
    pub cards: Arc<dyn CardStore>,
    pub orders: Arc<dyn OrderStore>,
    pub ledger: Arc<dyn PaidOrderLedger>,
}

/// Asks the gateway about a charge.
#[async_trait]
pub trait ChargeInquiry: Send + Sync {
    async fn charge(&self, id: &ChargeId, key: &SecretKey) -> Result<Charge, GatewayError>;
}
