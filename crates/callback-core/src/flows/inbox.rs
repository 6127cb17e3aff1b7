//! The inbox road (SPEC 4.1 step 3): a delivery is kept before anything else can fail, and its
//! outcome is set when the handler finishes. A failed keep is the caller's 5xx (the gateway
//! retries); a failed finish is only logged (the delivery itself is already kept).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::delivery::Delivery;
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::flows::error::CallbackError;
use crate::ports::error::StoreError;
use crate::ports::InboxStore;

/// How a delivery that failed with `err` ended: `failed` when a retry can help, else `rejected`.
pub fn outcome_of(err: &CallbackError) -> InboxOutcome {
    let (status, error) = (err.status(), err.to_string());
    if err.retryable() {
        InboxOutcome::Failed { status, error }
    } else {
        InboxOutcome::Rejected { status, error }
    }
}

/// The inbox table of a branch.
#[derive(Clone)]
pub struct Inbox {
    store: Arc<dyn InboxStore>,
    table: String,
    ttl: Duration,
}

impl Inbox {
    pub fn new(store: Arc<dyn InboxStore>, table: impl Into<String>, ttl: Duration) -> Self {
        Inbox {
            store,
            table: table.into(),
            ttl,
        }
    }

    /// Keeps a delivery on arrival, filed under `order_id` (or an `UNKNOWN#<n>` partition).
    pub async fn keep(
        &self,
        delivery: &Delivery,
        function: &str,
        order_id: Option<&str>,
    ) -> Result<InboxEntry, StoreError> {
        let entry = self.entry(delivery, function, order_id);
        self.append(&entry).await?;
        Ok(entry)
    }

    /// The entry of a delivery, not yet written: a flow that knows the outcome in advance sets
    /// it and writes the entry with [`Inbox::append`] beside its other effects (one round trip).
    pub fn entry(&self, delivery: &Delivery, function: &str, order_id: Option<&str>) -> InboxEntry {
        InboxEntry::received(delivery, function, order_id, self.ttl.as_secs())
    }

    /// Writes an entry (never over another delivery's).
    pub async fn append(&self, entry: &InboxEntry) -> Result<(), StoreError> {
        self.store.append(&self.table, entry).await
    }

    /// Sets how the delivery ended; a failure here is logged, never raised.
    pub async fn finish(&self, entry: &mut InboxEntry, outcome: InboxOutcome) {
        entry.outcome = outcome;
        if let Err(e) = self
            .store
            .set_outcome(&self.table, entry, &entry.outcome)
            .await
        {
            tracing::error!(error = %e, "could not record the inbox outcome");
        }
    }
}
