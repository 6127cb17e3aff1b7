//! Test only: the in-memory twin with every call taking [`DELAY`] (an AWS round trip, on tokio's
//! paused clock, so elapsed time counts rounds exactly), counted by name, with the most calls ever
//! in flight at once; a named call can be made to fail. Lets a flow's test show which calls run
//! concurrently, and what a failure of any of them does (issue 10).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::card::{CardPayment, NotifyRecord};
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::domain::item::Item;
use crate::domain::ledger::{ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState};
use crate::domain::record::CallbackRecord;
use crate::ports::error::{InvokeError, StoreError};
use crate::ports::memory::MemoryAws;
use crate::ports::{
    CallbackRecordStore, CardStore, InboxStore, Invoker, OrderStore, PaidOrderLedger, SaveOutcome,
};

pub const DELAY: Duration = Duration::from_millis(10);

/// The stores of [`MemoryAws`] and an invoker, each call [`DELAY`] long.
pub struct Timed {
    aws: Arc<MemoryAws>,
    invoker: Arc<dyn Invoker>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: Mutex<Vec<&'static str>>,
    failing: Mutex<Vec<&'static str>>,
}

impl Timed {
    pub fn new(aws: Arc<MemoryAws>, invoker: Arc<dyn Invoker>) -> Arc<Self> {
        Arc::new(Timed {
            aws,
            invoker,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            failing: Mutex::new(Vec::new()),
        })
    }

    /// From now on the call `name` fails (after its [`DELAY`]).
    pub fn fail(&self, name: &'static str) {
        self.failing.lock().unwrap().push(name);
    }

    /// Every call succeeds again.
    pub fn recover(&self) {
        self.failing.lock().unwrap().clear();
    }

    /// Forgets the calls made and the most in flight so far.
    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
        self.max_in_flight.store(0, Ordering::SeqCst);
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

    /// One call: counted, in flight for [`DELAY`], then done; false if it was made to fail.
    async fn call(&self, name: &'static str) -> bool {
        self.calls.lock().unwrap().push(name);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(DELAY).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        !self.failing.lock().unwrap().contains(&name)
    }

    /// A store call on `table`.
    async fn store(&self, name: &'static str, table: &str) -> Result<(), StoreError> {
        if self.call(name).await {
            Ok(())
        } else {
            Err(StoreError::new("call", table, "unreachable (simulated)"))
        }
    }

    /// An invocation of `function`.
    async fn invoke(&self, name: &'static str, function: &str) -> Result<(), InvokeError> {
        if self.call(name).await {
            Ok(())
        } else {
            Err(InvokeError {
                function: function.into(),
                message: "throttled (simulated)".into(),
            })
        }
    }
}

#[async_trait]
impl CallbackRecordStore for Timed {
    async fn save_callback(
        &self,
        table: &str,
        record: &CallbackRecord,
        webhook_id: Option<&str>,
    ) -> Result<SaveOutcome, StoreError> {
        self.store("record", table).await?;
        self.aws.save_callback(table, record, webhook_id).await
    }
}

#[async_trait]
impl CardStore for Timed {
    async fn save_notify(&self, table: &str, record: &NotifyRecord) -> Result<(), StoreError> {
        self.store("notify.put", table).await?;
        self.aws.save_notify(table, record).await
    }
    async fn card_payment_by_charge(
        &self,
        table: &str,
        charge_id: &str,
    ) -> Result<Option<CardPayment>, StoreError> {
        self.store("card.query", table).await?;
        self.aws.card_payment_by_charge(table, charge_id).await
    }
    async fn set_checksum_verified(
        &self,
        table: &str,
        token: &str,
        verified: bool,
    ) -> Result<(), StoreError> {
        self.store("card.mark", table).await?;
        self.aws.set_checksum_verified(table, token, verified).await
    }
}

#[async_trait]
impl InboxStore for Timed {
    async fn append(&self, table: &str, entry: &InboxEntry) -> Result<(), StoreError> {
        self.store("inbox.append", table).await?;
        self.aws.append(table, entry).await
    }
    async fn set_outcome(
        &self,
        table: &str,
        entry: &InboxEntry,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError> {
        self.store("inbox.set_outcome", table).await?;
        self.aws.set_outcome(table, entry, outcome).await
    }
}

#[async_trait]
impl Invoker for Timed {
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError> {
        self.invoke("invoke.event", function).await?;
        self.invoker.invoke_event(function, payload).await
    }
    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
        self.invoke("invoke.sync", function).await?;
        self.invoker.invoke_sync(function, payload).await
    }
}

#[async_trait]
impl OrderStore for Timed {
    async fn order_item(&self, table: &str, order_id: &str) -> Result<Option<Item>, StoreError> {
        self.store("order.get", table).await?;
        self.aws.order_item(table, order_id).await
    }
    async fn mark_order_paid(
        &self,
        table: &str,
        update: &OrderPaidUpdate,
    ) -> Result<OrderMark, StoreError> {
        self.store("order.update", table).await?;
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
        self.store("ledger.get", table).await?;
        self.aws.paid_state(table, order_id).await
    }
    async fn claim_paid(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.store("ledger.claim", table).await?;
        self.aws.claim_paid(table, claim, now, stale_before).await
    }
    async fn finish_paid(
        &self,
        table: &str,
        order_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.store("ledger.finish", table).await?;
        self.aws.finish_paid(table, order_id, token, now).await
    }
    async fn mark_failed(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.store("ledger.failed", table).await?;
        self.aws.mark_failed(table, claim, now).await
    }
    async fn note_pending(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.store("ledger.pending", table).await?;
        self.aws.note_pending(table, claim, now).await
    }
}
