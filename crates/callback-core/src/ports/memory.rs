//! In-memory stand-ins for every port, for unit tests of the logic. They keep items in the same
//! encodings as the DynamoDB adapter and apply the same conditions, so a test can decode what
//! a handler "wrote". They are never the proof that a function works against AWS: the
//! end-to-end tests in `tests/` run the real adapters against moto.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::error_log::ErrorLogEntry;
use crate::domain::inbox::{InboxEntry, InboxOutcome, SORT_KEY};
use crate::domain::item::{Attr, Item};
use crate::domain::limits::check_item;
use crate::domain::record::CallbackRecord;
use crate::ports::error::{InvokeError, MailError, SecretError, StoreError};
use crate::ports::{
    AlertGate, CallbackRecordStore, ErrorLogStore, InboxStore, Invoker, Mail, Mailer, SaveOutcome,
    SecretSource,
};

/// How a function was invoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvocationType {
    Event,
    RequestResponse,
}

/// One recorded invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub function: String,
    pub payload: Vec<u8>,
    pub kind: InvocationType,
}

/// Every port in memory. Tables are maps from a key string to an item.
#[derive(Default)]
pub struct MemoryAws {
    tables: Mutex<HashMap<String, BTreeMap<String, Item>>>,
    invocations: Mutex<Vec<Invocation>>,
    sync_responses: Mutex<HashMap<String, Vec<u8>>>,
    mails: Mutex<Vec<Mail>>,
    mail_attempts: AtomicUsize,
    secrets: Mutex<HashMap<String, String>>,
    secret_reads: AtomicUsize,
    fail_store: AtomicBool,
    fail_invoke: AtomicBool,
    fail_mail: AtomicBool,
    order_updates: AtomicUsize,
    record_writes: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryAws {
    /// Makes every store call fail, as DynamoDB does when it is unreachable.
    pub fn fail_store(&self, fail: bool) {
        self.fail_store.store(fail, Ordering::SeqCst);
    }
    pub fn fail_invoke(&self, fail: bool) {
        self.fail_invoke.store(fail, Ordering::SeqCst);
    }
    pub fn fail_mail(&self, fail: bool) {
        self.fail_mail.store(fail, Ordering::SeqCst);
    }

    /// Refuses what DynamoDB refuses (SPEC 4.6: item size, key sizes, number range), as
    /// DynamoDB's ValidationException would, so a missing check fails a unit test too.
    fn check_limits(
        operation: &'static str,
        table: &str,
        item: &Item,
        hash: &str,
        range: Option<&str>,
    ) -> Result<(), StoreError> {
        check_item(item, hash, range).map_err(|problem| {
            StoreError::new(operation, table, format!("ValidationException: {problem}"))
        })
    }

    fn check_store(&self, operation: &'static str, table: &str) -> Result<(), StoreError> {
        if self.fail_store.load(Ordering::SeqCst) {
            Err(StoreError::new(
                operation,
                table,
                "connection refused (simulated)",
            ))
        } else {
            Ok(())
        }
    }

    /// Every item of a table, in key order.
    pub fn items(&self, table: &str) -> Vec<Item> {
        lock(&self.tables)
            .get(table)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One item by key string (the hash key, or `hash|range`).
    pub fn item(&self, table: &str, key: &str) -> Option<Item> {
        lock(&self.tables)
            .get(table)
            .and_then(|t| t.get(key).cloned())
    }

    /// Puts an item directly, as another system (or the original) would.
    pub fn put_item(&self, table: &str, key: &str, item: Item) {
        lock(&self.tables)
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), item);
    }

    /// Runs `f` on a table under the lock: the conditional-write primitive of this fake.
    pub fn with_table<R>(
        &self,
        table: &str,
        f: impl FnOnce(&mut BTreeMap<String, Item>) -> R,
    ) -> R {
        let mut tables = lock(&self.tables);
        f(tables.entry(table.to_string()).or_default())
    }

    pub fn callback_record(&self, table: &str, order_id: &str) -> Option<CallbackRecord> {
        self.item(table, order_id)
            .map(|i| CallbackRecord::from_item(&i).expect("stored record decodes"))
    }

    pub fn inbox(&self, table: &str) -> Vec<InboxEntry> {
        self.items(table)
            .iter()
            .map(|i| InboxEntry::from_item(i).expect("inbox entry decodes"))
            .collect()
    }

    pub fn error_log(&self, table: &str) -> Vec<ErrorLogEntry> {
        let mut entries: Vec<ErrorLogEntry> = self
            .items(table)
            .iter()
            .map(|i| ErrorLogEntry::from_item(i).expect("error log item decodes"))
            .collect();
        entries.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        entries
    }

    pub fn invocations(&self) -> Vec<Invocation> {
        lock(&self.invocations).clone()
    }

    /// What a synchronous invoke of `function` answers.
    pub fn set_sync_response(&self, function: &str, payload: &[u8]) {
        lock(&self.sync_responses).insert(function.to_string(), payload.to_vec());
    }

    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.mails).clone()
    }

    pub fn mail_attempts(&self) -> usize {
        self.mail_attempts.load(Ordering::SeqCst)
    }

    pub fn set_secret(&self, name: &str, value: &str) {
        lock(&self.secrets).insert(name.to_string(), value.to_string());
    }

    /// How many callback record writes were attempted (a replay must not rewrite the record).
    pub fn record_writes(&self) -> usize {
        self.record_writes.load(Ordering::SeqCst)
    }

    /// How many times a secret was read (to check caching).
    pub fn secret_reads(&self) -> usize {
        self.secret_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl CallbackRecordStore for MemoryAws {
    async fn save_callback(
        &self,
        table: &str,
        record: &CallbackRecord,
        webhook_id: Option<&str>,
    ) -> Result<SaveOutcome, StoreError> {
        self.check_store("UpdateItem", table)?;
        self.record_writes.fetch_add(1, Ordering::SeqCst);
        Ok(self.with_table(table, |t| {
            let existing = t.get(&record.order_id);
            // The webhook ids as a list of strings (the DynamoDB adapter keeps a string set).
            let mut ids = match existing.and_then(|i| i.get("webhookIds")) {
                Some(Attr::L(ids)) => ids.clone(),
                _ => Vec::new(),
            };
            if let Some(id) = webhook_id {
                if ids.contains(&Attr::S(id.into())) {
                    return Ok(SaveOutcome::AlreadyProcessed);
                }
            }
            if !record.success
                && existing.is_some_and(|i| i.get("success") == Some(&Attr::Bool(true)))
            {
                return Ok(SaveOutcome::KeptEarlierSuccess);
            }
            let mut item = record.to_item();
            if let Some(created) = existing.and_then(|i| i.get("created_at")) {
                item.insert("created_at".into(), created.clone());
            }
            Self::check_limits("UpdateItem", table, &item, "orderId", None)?;
            if let Some(id) = webhook_id {
                ids.push(Attr::S(id.into()));
            }
            if !ids.is_empty() {
                item.insert("webhookIds".into(), Attr::L(ids));
            }
            t.insert(record.order_id.clone(), item);
            Ok(SaveOutcome::Written)
        })?)
    }
}

#[async_trait]
impl InboxStore for MemoryAws {
    async fn append(&self, table: &str, entry: &InboxEntry) -> Result<(), StoreError> {
        self.check_store("PutItem", table)?;
        let key = format!("{}|{}", entry.order_id, entry.sort_key());
        let item = entry.to_item();
        Self::check_limits("PutItem", table, &item, "orderId", Some(SORT_KEY))?;
        self.with_table(table, |t| {
            // The same key is the same delivery (a Lambda retry): already kept.
            t.entry(key).or_insert(item);
            Ok(())
        })
    }

    async fn set_outcome(
        &self,
        table: &str,
        entry: &InboxEntry,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError> {
        self.check_store("UpdateItem", table)?;
        let key = format!("{}|{}", entry.order_id, entry.sort_key());
        let mut updated = entry.clone();
        updated.outcome = outcome.clone();
        let item = updated.to_item();
        Self::check_limits("UpdateItem", table, &item, "orderId", Some(SORT_KEY))?;
        self.with_table(table, |t| t.insert(key, item));
        Ok(())
    }
}

#[async_trait]
impl ErrorLogStore for MemoryAws {
    async fn put_error(&self, table: &str, entry: &ErrorLogEntry) -> Result<(), StoreError> {
        self.check_store("PutItem", table)?;
        let item = entry.to_item();
        Self::check_limits("PutItem", table, &item, "id", None)?;
        self.with_table(table, |t| t.insert(entry.id.clone(), item));
        Ok(())
    }
}

#[async_trait]
impl AlertGate for MemoryAws {
    async fn try_open(
        &self,
        table: &str,
        key: &str,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> Result<bool, StoreError> {
        self.check_store("UpdateItem", table)?;
        let cutoff = now.timestamp() - cooldown.as_secs() as i64;
        Ok(self.with_table(table, |t| {
            let last = t.get(key).and_then(|i| match i.get("sentAt") {
                Some(Attr::N(n)) => n.parse::<i64>().ok(),
                _ => None,
            });
            if last.is_some_and(|l| l > cutoff) {
                return false;
            }
            let mut item = Item::new();
            item.insert("alertKey".into(), Attr::S(key.into()));
            item.insert("sentAt".into(), Attr::N(now.timestamp().to_string()));
            t.insert(key.to_string(), item);
            true
        }))
    }

    async fn release(
        &self,
        table: &str,
        key: &str,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check_store("UpdateItem", table)?;
        self.with_table(table, |t| {
            if t.get(key).and_then(|i| i.get("sentAt"))
                == Some(&Attr::N(taken_at.timestamp().to_string()))
            {
                t.remove(key);
            }
        });
        Ok(())
    }
}

impl MemoryAws {
    fn record_invocation(
        &self,
        function: &str,
        payload: &[u8],
        kind: InvocationType,
    ) -> Result<(), InvokeError> {
        if self.fail_invoke.load(Ordering::SeqCst) {
            return Err(InvokeError {
                function: function.into(),
                message: "throttled (simulated)".into(),
            });
        }
        lock(&self.invocations).push(Invocation {
            function: function.into(),
            payload: payload.to_vec(),
            kind,
        });
        Ok(())
    }
}

#[async_trait]
impl Invoker for MemoryAws {
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError> {
        self.record_invocation(function, payload, InvocationType::Event)
    }

    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
        self.record_invocation(function, payload, InvocationType::RequestResponse)?;
        Ok(lock(&self.sync_responses)
            .get(function)
            .cloned()
            .unwrap_or_else(|| b"{\"statusCode\":200,\"body\":\"\\\"success\\\"\"}".to_vec()))
    }
}

#[async_trait]
impl Mailer for MemoryAws {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.mail_attempts.fetch_add(1, Ordering::SeqCst);
        if self.fail_mail.load(Ordering::SeqCst) {
            return Err(MailError("MessageRejected (simulated)".into()));
        }
        lock(&self.mails).push(mail.clone());
        Ok(())
    }
}

#[async_trait]
impl SecretSource for MemoryAws {
    async fn secret_string(&self, name: &str) -> Result<String, SecretError> {
        self.secret_reads.fetch_add(1, Ordering::SeqCst);
        lock(&self.secrets)
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError {
                name: name.into(),
                message: "ResourceNotFoundException (simulated)".into(),
            })
    }
}

// ---- The card path ----

use crate::domain::card::{CardPayment, NotifyRecord};
use crate::domain::charge::{Charge, ChargeId};
use crate::domain::ledger::{
    parse_epoch, ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState,
    PaidOrderStatus,
};
use crate::domain::secret::SecretKey;
use crate::ports::error::GatewayError;
use crate::ports::ChargeInquiry;
use crate::ports::{CardStore, OrderStore, PaidOrderLedger};

impl MemoryAws {
    /// How many times an order was marked paid (the concurrency tests count them).
    pub fn order_updates(&self) -> usize {
        self.order_updates.load(Ordering::SeqCst)
    }

    /// The notify records of a charge, oldest first.
    pub fn notify_records(&self, table: &str, charge_id: &str) -> Vec<NotifyRecord> {
        self.items(table)
            .iter()
            .filter(|i| i.get("chargeId") == Some(&Attr::S(charge_id.into())))
            .map(|i| NotifyRecord::from_item(i).expect("notify record decodes"))
            .collect()
    }
}

#[async_trait]
impl CardStore for MemoryAws {
    async fn save_notify(&self, table: &str, record: &NotifyRecord) -> Result<(), StoreError> {
        self.check_store("PutItem", table)?;
        self.with_table(table, |t| {
            let mut record = record.clone();
            // As the DynamoDB adapter: a taken key moves one microsecond on.
            while t.contains_key(&format!("{}|{}", record.charge_id, record.created_at)) {
                record = record.one_microsecond_later().ok_or_else(|| {
                    StoreError::new("PutItem", table, "created_at is not a timestamp")
                })?;
            }
            let item = record.to_item();
            Self::check_limits("PutItem", table, &item, "chargeId", Some("created_at"))?;
            t.insert(format!("{}|{}", record.charge_id, record.created_at), item);
            Ok(())
        })
    }

    async fn card_payment_by_charge(
        &self,
        table: &str,
        charge_id: &str,
    ) -> Result<Option<CardPayment>, StoreError> {
        self.check_store("Query", table)?;
        let found = self.with_table(table, |t| {
            t.values()
                .find(|i| i.get("chargeId") == Some(&Attr::S(charge_id.into())))
                .cloned()
        });
        found
            .map(|i| CardPayment::from_item(&i).map_err(|e| StoreError::new("Query", table, e)))
            .transpose()
    }

    async fn set_checksum_verified(
        &self,
        table: &str,
        token: &str,
        verified: bool,
    ) -> Result<(), StoreError> {
        self.check_store("UpdateItem", table)?;
        self.with_table(table, |t| match t.get_mut(token) {
            // As the DynamoDB adapter: a `false` never goes over a `true`.
            Some(item) if !verified && item.get("checksumVerified") == Some(&Attr::Bool(true)) => {
                Ok(())
            }
            Some(item) => {
                item.insert("checksumVerified".into(), Attr::Bool(verified));
                Ok(())
            }
            None => Err(StoreError::new(
                "UpdateItem",
                table,
                "ConditionalCheckFailed: no such record",
            )),
        })
    }
}

#[async_trait]
impl OrderStore for MemoryAws {
    async fn order_item(&self, table: &str, order_id: &str) -> Result<Option<Item>, StoreError> {
        self.check_store("GetItem", table)?;
        Ok(self.item(table, order_id))
    }

    async fn mark_order_paid(
        &self,
        table: &str,
        update: &OrderPaidUpdate,
    ) -> Result<OrderMark, StoreError> {
        self.check_store("UpdateItem", table)?;
        let mark = self.with_table(table, |t| match t.get_mut(&update.order_id) {
            Some(item) if item.get("paymentStatus") == Some(&Attr::S("PAID".into())) => {
                OrderMark::AlreadyPaid {
                    payment_id: match item.get("paymentId") {
                        Some(Attr::S(p)) => Some(p.clone()),
                        _ => None,
                    },
                }
            }
            Some(item) => {
                item.insert(
                    "paymentStatus".into(),
                    Attr::S(update.payment_status.clone()),
                );
                item.insert("paidAt".into(), Attr::S(update.paid_at.clone()));
                item.insert("paymentType".into(), Attr::S(update.payment_type.clone()));
                item.insert("paymentId".into(), Attr::S(update.payment_id.clone()));
                OrderMark::Marked
            }
            None => OrderMark::Missing,
        });
        if mark == OrderMark::Marked {
            self.order_updates.fetch_add(1, Ordering::SeqCst);
        }
        Ok(mark)
    }
}

fn merge(t: &mut BTreeMap<String, Item>, claim: &PaidClaim, attributes: Item, now: &str) {
    let item = t.entry(claim.order_id.clone()).or_default();
    item.entry("created_at".into())
        .or_insert_with(|| Attr::S(now.to_string()));
    for name in claim.absent_attributes() {
        item.remove(name);
    }
    item.extend(attributes);
}

#[async_trait]
impl PaidOrderLedger for MemoryAws {
    async fn paid_state(
        &self,
        table: &str,
        order_id: &str,
    ) -> Result<Option<PaidOrderState>, StoreError> {
        self.check_store("GetItem", table)?;
        self.item(table, order_id)
            .map(|i| {
                PaidOrderState::from_item(&i).map_err(|e| StoreError::new("GetItem", table, e))
            })
            .transpose()
    }

    async fn claim_paid(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        self.check_store("UpdateItem", table)?;
        let at = crate::domain::clock::isoformat(now);
        self.with_table(table, |t| {
            let allowed = match t.get(&claim.order_id) {
                None => true,
                Some(i) if i.get("status") != Some(&Attr::S("PAID".into())) => true,
                Some(i) => {
                    i.get("effectsDone") == Some(&Attr::Bool(false))
                        && i.get("paymentId") == Some(&Attr::S(claim.payment_id.clone()))
                        && matches!(i.get("effectsClaimedAt"), Some(Attr::N(n))
                            if parse_epoch(n).is_some_and(|c| c < stale_before))
                }
            };
            if allowed {
                merge(t, claim, claim.attributes(PaidOrderStatus::Paid, now), &at);
                return Ok(ClaimResult::Won);
            }
            let old = t
                .get(&claim.order_id)
                .map(PaidOrderState::from_item)
                .transpose()
                .map_err(|e| StoreError::new("UpdateItem", table, e))?;
            Ok(ClaimResult::Held(old))
        })
    }

    async fn finish_paid(
        &self,
        table: &str,
        order_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check_store("UpdateItem", table)?;
        Ok(self.with_table(table, |t| match t.get_mut(order_id) {
            Some(item) if item.get("claimToken") == Some(&Attr::S(token.into())) => {
                item.insert("effectsDone".into(), Attr::Bool(true));
                item.insert(
                    "updated_at".into(),
                    Attr::S(crate::domain::clock::isoformat(now)),
                );
                true
            }
            _ => false,
        }))
    }

    async fn mark_failed(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.check_store("UpdateItem", table)?;
        let at = crate::domain::clock::isoformat(now);
        Ok(self.with_table(table, |t| {
            let allowed = match t.get(&claim.order_id) {
                None => true,
                Some(i) => i.get("status") == Some(&Attr::S("PENDING".into())),
            };
            if allowed {
                merge(
                    t,
                    claim,
                    claim.attributes(PaidOrderStatus::Failed, now),
                    &at,
                );
            }
            allowed
        }))
    }

    async fn note_pending(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check_store("PutItem", table)?;
        let at = crate::domain::clock::isoformat(now);
        self.with_table(table, |t| {
            if !t.contains_key(&claim.order_id) {
                merge(
                    t,
                    claim,
                    claim.attributes(PaidOrderStatus::Pending, now),
                    &at,
                );
            }
        });
        Ok(())
    }
}

/// A KBank API in memory: charges by id, the key it expects, a failure to inject.
#[derive(Default)]
pub struct MemoryKBank {
    charges: Mutex<HashMap<String, Charge>>,
    expected_key: Mutex<Option<String>>,
    failure: Mutex<Option<GatewayError>>,
    calls: AtomicUsize,
}

impl MemoryKBank {
    /// A KBank that answers only requests carrying `key`.
    pub fn with_key(key: &str) -> Self {
        let k = MemoryKBank::default();
        *lock(&k.expected_key) = Some(key.to_string());
        k
    }
    /// Adds or replaces a charge (as the gateway's state changes).
    pub fn set_charge(&self, id: &str, amount: &str, status: &str, transaction_state: &str) {
        let charge = Charge {
            id: id.to_string(),
            amount: amount.parse().unwrap_or_default(),
            currency: "THB".into(),
            status: status.into(),
            transaction_state: transaction_state.into(),
            reference_order: None,
        };
        self.put_charge(charge);
    }
    /// Adds or replaces a charge as given (another currency, a `reference_order`).
    pub fn put_charge(&self, charge: Charge) {
        lock(&self.charges).insert(charge.id.clone(), charge);
    }
    /// The charge as held.
    pub fn charge_of(&self, id: &str) -> Option<Charge> {
        lock(&self.charges).get(id).cloned()
    }
    /// The key KBank accepts from now on (a rotation).
    pub fn set_key(&self, key: &str) {
        *lock(&self.expected_key) = Some(key.to_string());
    }
    /// Every inquiry fails with `failure` until cleared with `None`.
    pub fn fail_with(&self, failure: Option<GatewayError>) {
        *lock(&self.failure) = failure;
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ChargeInquiry for MemoryKBank {
    async fn charge(&self, id: &ChargeId, key: &SecretKey) -> Result<Charge, GatewayError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(f) = lock(&self.failure).clone() {
            return Err(f);
        }
        if lock(&self.expected_key)
            .as_deref()
            .is_some_and(|k| k != key.expose())
        {
            return Err(GatewayError::Refused {
                status: 401,
                body: "invalid x-api-key".into(),
            });
        }
        lock(&self.charges)
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| GatewayError::Refused {
                status: 404,
                body: "charge not found".into(),
            })
    }
}

impl MemoryAws {
    /// Every port on this in-memory AWS, with `clock`.
    pub fn ports(
        self: &std::sync::Arc<Self>,
        clock: std::sync::Arc<dyn crate::domain::clock::Clock>,
    ) -> crate::ports::Ports {
        crate::ports::Ports {
            records: self.clone(),
            inbox: self.clone(),
            errors: self.clone(),
            alert_gate: self.clone(),
            invoker: self.clone(),
            mailer: self.clone(),
            secrets: self.clone(),
            clock,
        }
    }

    /// The card-path stores on this in-memory AWS.
    pub fn card_ports(self: &std::sync::Arc<Self>) -> crate::ports::CardPorts {
        crate::ports::CardPorts {
            cards: self.clone(),
            orders: self.clone(),
            ledger: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::card::{NotifyBody, NotifyNote};
    use chrono::TimeZone;
    use serde_json::json;

    #[tokio::test]
    async fn two_deliveries_in_the_same_microsecond_are_both_kept() {
        let body = NotifyBody::parse(
            r#"{"id":"chrg_1","amount":"10.00","currency":"THB","status":"success",
                "transaction_state":"Authorized","checksum":"ab"}"#,
        )
        .unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
        let record = NotifyRecord::new(&body, NotifyNote::Notify, &json!({}), Ok(()), "r", at);
        let aws = MemoryAws::default();
        for _ in 0..3 {
            aws.save_notify("notify", &record).await.unwrap();
        }
        let mut created: Vec<String> = aws
            .items("notify")
            .iter()
            .map(|i| NotifyRecord::from_item(i).unwrap().created_at)
            .collect();
        created.sort();
        assert_eq!(
            created,
            [
                "2026-11-21T09:00:00",
                "2026-11-21T09:00:00.000001",
                "2026-11-21T09:00:00.000002"
            ]
        );
    }
}
