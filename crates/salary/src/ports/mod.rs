//! Ports of the salary import: the salary table and the import ledger, behind one trait
//! ([`SalaryLedger`]) because exactly-once needs them written together, in one transaction.
//! [`dynamodb`] is the adapter, [`memory`] the in-memory twin for unit tests, [`fault`] a
//! wrapper that crashes an import part-way on purpose (tests only).

pub mod dynamodb;
pub mod fault;
pub mod memory;

use async_trait::async_trait;
use callback_core::StoreError;

use crate::domain::batch::{Batch, ImportId};

/// The file's ledger entry, as a run finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// The batch size of the first run (kept, so a retry cuts the same batches).
    pub batch_rows: usize,
    /// An earlier run finished the whole file.
    pub done: bool,
    /// How many runs have begun this import, this one included.
    pub runs: u64,
}

/// What a batch write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// This run added the batch's salaries (and wrote its marker).
    Applied,
    /// The marker was there: an earlier or concurrent run added them; nothing was written.
    AlreadyApplied,
}

/// Counts of a finished import, kept on the file's ledger entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Valid rows in the file.
    pub rows: u64,
    /// Rows not added (see the report).
    pub bad_rows: u64,
    /// Valid rows this run added.
    pub applied_now: u64,
    /// Valid rows an earlier run had added.
    pub applied_before: u64,
}

/// The salary table (`ADD EmpSalary`) and the import ledger.
#[async_trait]
pub trait SalaryLedger: Send + Sync {
    /// Starts or resumes an import: creates the file's entry with `batch_rows` on the first run,
    /// and returns the entry as it now is.
    async fn begin(
        &self,
        import: &ImportId,
        batch_rows: usize,
        now: &str,
    ) -> Result<FileEntry, StoreError>;

    /// Adds every salary of the batch and writes the batch's marker, all in one transaction that
    /// only goes through when the marker is absent: both happen, or neither does.
    async fn apply(&self, import: &ImportId, batch: &Batch) -> Result<BatchOutcome, StoreError>;

    /// Marks the import finished, with its counts.
    async fn finish(
        &self,
        import: &ImportId,
        counts: &ImportCounts,
        now: &str,
    ) -> Result<(), StoreError>;
}
