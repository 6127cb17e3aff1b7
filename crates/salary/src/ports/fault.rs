//! A ledger that crashes part-way, on purpose: after `after_batches` batches have gone through,
//! the next `apply` fails before writing anything, as a Lambda that is killed (timeout, out of
//! memory, a lost connection) stops between two transactions. Unit tests wrap the in-memory
//! ledger with it; the function binary wraps its DynamoDB ledger with it only in debug builds,
//! when the test harness asks (see `functions/salary-import`), so production cannot trigger it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use callback_core::StoreError;

use crate::domain::batch::{Batch, ImportId};
use crate::ports::{BatchOutcome, FileEntry, ImportCounts, SalaryLedger};

/// What the injected crash says.
pub const INJECTED_CRASH: &str = "injected crash (test fault)";

pub struct CrashAfter {
    inner: Arc<dyn SalaryLedger>,
    left: AtomicU64,
}

impl CrashAfter {
    pub fn new(inner: Arc<dyn SalaryLedger>, after_batches: u64) -> Self {
        CrashAfter {
            inner,
            left: AtomicU64::new(after_batches),
        }
    }
}

#[async_trait]
impl SalaryLedger for CrashAfter {
    async fn begin(
        &self,
        import: &ImportId,
        batch_rows: usize,
        now: &str,
    ) -> Result<FileEntry, StoreError> {
        self.inner.begin(import, batch_rows, now).await
    }

    async fn apply(&self, import: &ImportId, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let go_on = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !go_on {
            return Err(StoreError::new(
                "TransactWriteItems",
                "salary",
                INJECTED_CRASH,
            ));
        }
        self.inner.apply(import, batch).await
    }

    async fn finish(
        &self,
        import: &ImportId,
        counts: &ImportCounts,
        now: &str,
    ) -> Result<(), StoreError> {
        self.inner.finish(import, counts, now).await
    }
}
