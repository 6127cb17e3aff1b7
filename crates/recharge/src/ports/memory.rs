//! In-memory twins of the Recharge ports, for unit tests of the flows: a ledger with DynamoDB's
//! conditional-write semantics, a scripted dunning service and a scripted Recharge API that
//! count their calls.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use callback_core::{Attr, Item, StoreError};

use crate::domain::charge::ChargeFailure;
use crate::domain::dunning::{DunningRecord, Held};
use crate::domain::schedule::RetryDate;
use crate::ports::{AdvisorError, DunningLedger, RechargeApi, RechargeApiError, RetryDateAdvisor};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The dunning ledger in memory: items by (table, charge id, attempt).
#[derive(Default)]
pub struct MemoryLedger {
    items: Mutex<BTreeMap<(String, String, u32), Item>>,
    fail: AtomicBool,
}

impl MemoryLedger {
    pub fn fail_store(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    pub fn record(&self, table: &str, charge_id: &str, attempt: u32) -> Option<DunningRecord> {
        lock(&self.items)
            .get(&(table.into(), charge_id.into(), attempt))
            .map(|i| DunningRecord::from_item(i).expect("a stored item decodes"))
    }

    /// Overwrites an item (tests set up a crashed run's claim with it).
    pub fn put(&self, table: &str, record: &DunningRecord) {
        lock(&self.items).insert(
            (
                table.into(),
                record.charge.charge_id.clone(),
                record.charge.attempt,
            ),
            record.to_item(),
        );
    }

    fn check(&self, operation: &'static str, table: &str) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::new(operation, table, "unavailable (simulated)"));
        }
        Ok(())
    }
}

#[async_trait]
impl DunningLedger for MemoryLedger {
    async fn insert_dunning(
        &self,
        table: &str,
        record: &DunningRecord,
    ) -> Result<bool, StoreError> {
        self.check("PutItem", table)?;
        let key = (
            table.to_string(),
            record.charge.charge_id.clone(),
            record.charge.attempt,
        );
        let mut items = lock(&self.items);
        if items.contains_key(&key) {
            return Ok(false);
        }
        items.insert(key, record.to_item());
        Ok(true)
    }

    async fn load_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
    ) -> Result<Option<DunningRecord>, StoreError> {
        self.check("GetItem", table)?;
        Ok(self.record(table, charge_id, attempt))
    }

    async fn update_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
        held: &Held,
        changes: &Item,
    ) -> Result<bool, StoreError> {
        self.check("UpdateItem", table)?;
        let mut items = lock(&self.items);
        let Some(item) = items.get_mut(&(table.to_string(), charge_id.to_string(), attempt)) else {
            return Ok(false);
        };
        let token_ok = item.get("claimToken") == Some(&Attr::S(held.token.clone()));
        let state_ok = held
            .state
            .is_none_or(|s| item.get("state") == Some(&Attr::S(s.name().into())));
        if !(token_ok && state_ok) {
            return Ok(false);
        }
        for (k, v) in changes {
            item.insert(k.clone(), v.clone());
        }
        Ok(true)
    }
}

/// A dunning service that answers from a script (then the last answer again), counting calls.
pub struct ScriptedAdvisor {
    answers: Mutex<VecDeque<Result<String, AdvisorError>>>,
    last: Mutex<Result<String, AdvisorError>>,
    pub calls: Mutex<Vec<ChargeFailure>>,
}

impl ScriptedAdvisor {
    pub fn answering(answers: Vec<Result<String, AdvisorError>>) -> Self {
        let last = answers
            .last()
            .cloned()
            .unwrap_or(Err(AdvisorError::Unreachable("no script".into())));
        ScriptedAdvisor {
            answers: Mutex::new(answers.into()),
            last: Mutex::new(last),
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn call_count(&self) -> usize {
        lock(&self.calls).len()
    }
}

#[async_trait]
impl RetryDateAdvisor for ScriptedAdvisor {
    async fn retry_date(&self, charge: &ChargeFailure) -> Result<String, AdvisorError> {
        lock(&self.calls).push(charge.clone());
        let next = lock(&self.answers).pop_front();
        next.unwrap_or_else(|| lock(&self.last).clone())
    }
}

/// One call Recharge received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RechargeCall {
    pub charge_id: String,
    pub date: String,
    pub api_token: String,
}

/// Recharge's API answering from a script (then 200), recording every call.
#[derive(Default)]
pub struct ScriptedRecharge {
    answers: Mutex<VecDeque<Result<u16, RechargeApiError>>>,
    pub calls: Mutex<Vec<RechargeCall>>,
}

impl ScriptedRecharge {
    pub fn answering(answers: Vec<Result<u16, RechargeApiError>>) -> Self {
        ScriptedRecharge {
            answers: Mutex::new(answers.into()),
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn calls(&self) -> Vec<RechargeCall> {
        lock(&self.calls).clone()
    }
}

#[async_trait]
impl RechargeApi for ScriptedRecharge {
    async fn change_next_charge_date(
        &self,
        charge_id: &str,
        date: &RetryDate,
        api_token: &str,
    ) -> Result<u16, RechargeApiError> {
        lock(&self.calls).push(RechargeCall {
            charge_id: charge_id.into(),
            date: date.to_string(),
            api_token: api_token.into(),
        });
        let next = lock(&self.answers).pop_front();
        next.unwrap_or(Ok(200))
    }
}
