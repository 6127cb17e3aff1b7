//! The in-memory twin of [`SalaryLedger`] for unit tests: the same all-or-nothing batches.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;

use async_trait::async_trait;
use callback_core::StoreError;
use rust_decimal::Decimal;

use crate::domain::batch::{Batch, ImportId};
use crate::ports::{BatchOutcome, FileEntry, ImportCounts, SalaryLedger};

#[derive(Default)]
struct State {
    salaries: HashMap<(u64, String), Decimal>,
    files: HashMap<String, (FileEntry, Option<ImportCounts>)>,
    markers: HashSet<(String, String)>,
    transactions: u64,
}

#[derive(Default)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// `EmpSalary` of an employee, if the item exists.
    pub fn salary(&self, emp_id: u64, emp_name: &str) -> Option<Decimal> {
        let state = self.state.lock().unwrap();
        state.salaries.get(&(emp_id, emp_name.to_owned())).copied()
    }

    /// Every salary item.
    pub fn salaries(&self) -> HashMap<(u64, String), Decimal> {
        self.state.lock().unwrap().salaries.clone()
    }

    /// Batch transactions that went through.
    pub fn transactions(&self) -> u64 {
        self.state.lock().unwrap().transactions
    }

    /// Counts a finished import left on its entry.
    pub fn counts(&self, import: &ImportId) -> Option<ImportCounts> {
        let state = self.state.lock().unwrap();
        state
            .files
            .get(import.as_str())
            .and_then(|(_, c)| c.clone())
    }
}

#[async_trait]
impl SalaryLedger for MemoryLedger {
    async fn begin(
        &self,
        import: &ImportId,
        batch_rows: usize,
        _now: &str,
    ) -> Result<FileEntry, StoreError> {
        let mut state = self.state.lock().unwrap();
        let (entry, _) = state
            .files
            .entry(import.as_str().to_owned())
            .or_insert_with(|| {
                (
                    FileEntry {
                        batch_rows,
                        done: false,
                        runs: 0,
                    },
                    None,
                )
            });
        entry.runs += 1;
        Ok(entry.clone())
    }

    async fn apply(&self, import: &ImportId, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut state = self.state.lock().unwrap();
        let marker = (import.as_str().to_owned(), batch.marker());
        if state.markers.contains(&marker) {
            return Ok(BatchOutcome::AlreadyApplied);
        }
        // Check every amount first: like a transaction, all rows or none.
        let mut amounts = Vec::with_capacity(batch.rows.len());
        for row in &batch.rows {
            let amount = Decimal::from_str(row.salary.as_str())
                .map_err(|e| StoreError::new("TransactWriteItems", "memory", e))?;
            amounts.push(amount);
        }
        for (row, amount) in batch.rows.iter().zip(amounts) {
            let key = (row.key.emp_id.value(), row.key.emp_name.as_str().to_owned());
            *state.salaries.entry(key).or_default() += amount;
        }
        state.markers.insert(marker);
        state.transactions += 1;
        Ok(BatchOutcome::Applied)
    }

    async fn finish(
        &self,
        import: &ImportId,
        counts: &ImportCounts,
        _now: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        if let Some((entry, stored)) = state.files.get_mut(import.as_str()) {
            entry.done = true;
            *stored = Some(counts.clone());
        }
        Ok(())
    }
}
