//! Test only: the in-memory twin with every call taking [`DELAY`] (an AWS round trip, on tokio's
//! paused clock, so elapsed time counts rounds exactly), counted by name, with the most calls ever
//! in flight at once. Lets a flow's test show which calls run concurrently (issue 10).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::card::{CardPayment, NotifyRecord};
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::domain::item::Item;
use crate::domain::ledger::{ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState};
use crate::ports::error::{InvokeError, StoreError};
use crate::ports::memory::MemoryAws;
use crate::ports::{CardStore, InboxStore, Invoker, OrderStore, PaidOrderLedger};

pub const DELAY: Duration = Duration::from_millis(10);

/// The stores of [`MemoryAws`] and an invoker, each call [`DELAY`] long.
pub struct Timed {
    aws: Arc<MemoryAws>,
    invoker: Arc<dyn Invoker>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: Mutex<Vec<&'static str>>,
}

impl Timed {
    pub fn new(aws: Arc<MemoryAws>, invoker: Arc<dyn Invoker>) -> Arc<Self> {
        Arc::new(Timed {
            aws,
            invoker,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// The calls made, sorted by name.
    pub fn calls(&self) -> Vec<&'static str> {
        let mut calls = self.calls.lock().unwrap().clone();
        calls.sort();
        calls
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    async fn call(&self, name: &'static str) {
        self.calls.lock().unwrap().push(name);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(DELAY).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl CardStore for Timed {
    async fn save_notify(&self, table: &str, record: &NotifyRecord) -> Result<(), StoreError> {
        self.call("notify.put").await;
        self.aws.save_notify(table, record).await
    }
    async fn card_payment_by_charge(
        &self,
        table: &str,
        charge_id: &str,
    ) -> Result<Option<CardPayment>, StoreError> {
        self.call("card.query").await;
        self.aws.card_payment_by_charge(table, charge_id).await
    }
    async fn set_checksum_verified(
        &self,
        table: &str,
        token: &str,
        verified: bool,
    ) -> Result<(), StoreError> {
        self.call("card.mark").await;
        self.aws.set_checksum_verified(table, token, verified).await
    }
}

#[async_trait]
impl InboxStore for Timed {
    async fn append(&self, table: &str, entry: &InboxEntry) -> Result<(), StoreError> {
        self.call("inbox.append").await;
        self.aws.append(table, entry).await
    }
    async fn set_outcome(
        &self,
        table: &str,
        entry: &InboxEntry,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError> {
        self.call("inbox.set_outcome").await;
        self.aws.set_outcome(table, entry, outcome).await
    }
}

#[async_trait]
impl Invoker for Timed {
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError> {
        self.call("invoke.event").await;
        self.invoker.invoke_event(function, payload).await
    }
    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
        self.call("invoke.sync").await;
        self.invoker.invoke_sync(function, payload).await
    }
}

#[async_trait]
impl OrderStore for Timed {
    async fn order_item(&self, table: &str, order_id: &str) -> Result<Option<Item>, StoreError> {
        self.call("order.get").await;
        self.aws.order_item(table, order_id).await
    }
    async fn mark_order_paid(
        &self,
        table: &str,
        update: &OrderPaidUpdate,
    ) -> Result<OrderMark, StoreError> {
        self.call("order.update").await;
        self.aws.mark_order_paid(table, update).await
    }
}

#[async_trait]
impl PaidOrderLedger for Timed {
    async fn paid_state(
        &self,
        table: &str,
        order_id: &str,
    ) -> Result<Option<PaidOrderState>, StoreError> {
        self.call("ledger.get").await;
        self.aws.paid_state(table, order_id).await
    }
    async fn claim_paid(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.call("ledger.claim").await;
        self.aws.claim_paid(table, claim, now, stale_before).await
    }
    async fn finish_paid(
        &self,
        table: &str,
        order_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("ledger.finish").await;
        self.aws.finish_paid(table, order_id, token, now).await
    }
    async fn mark_failed(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call("ledger.failed").await;
        self.aws.mark_failed(table, claim, now).await
    }
    async fn note_pending(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.call("ledger.pending").await;
        self.aws.note_pending(table, claim, now).await
    }
}
