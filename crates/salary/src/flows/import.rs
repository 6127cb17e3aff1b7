//! One salary file, from its S3 event to `processed/<name>.psv`, the salaries added into
//! `payment3-employee-salary-<branch>` and the report `<key>.report.json`, exactly once.
//!
//! # Why each salary is added exactly once
//!
//! The unit of "once" is the file version: [`ImportId`] is `<bucket>/<key>@<versionId>` (a
//! versioned bucket) or `<bucket>/<key>#<eTag>`; the object is read with `If-Match` on that
//! eTag, so the rows read are the rows that id names. A duplicate S3 event, a Lambda retry and
//! a re-delivery from a queue all carry the same id.
//!
//! 1. The file's ledger entry is created on the first run with the batch size; every later
//!    run reads the size back. The valid rows are cut into batches by [`BatchPlanner`], which
//!    depends only on the rows and that size, so every run cuts the same batches, named by the
//!    line of their first row.
//! 2. A batch is one DynamoDB transaction: a Put of the marker `batch#<line>` under the import id,
//!    conditional on its absence, plus one `ADD EmpSalary` per row. DynamoDB applies all of a
//!    transaction or none of it, so "marker present" and "salaries of the batch added" are the
//!    same fact: there is no moment in which one is true and the other is not.
//! 3. A run that stops anywhere (crash, timeout, throttling, a lost connection) leaves a prefix
//!    of the batches applied, each with its marker. The next run cuts the same batches; the
//!    transaction of an applied batch fails on its marker and adds nothing; the others are
//!    applied. Two runs at once (two deliveries in parallel) race per batch, and the condition
//!    lets exactly one transaction per marker through. A transaction whose answer was lost is
//!    either applied (marker there: the retry is skipped) or not (the retry applies it).
//! 4. When every batch is through, the PSV and the report are written (both overwrite the same
//!    keys with the same content on a re-run) and the file entry is marked done; a later event
//!    for the same id stops at the entry.
//!
//! What it does not cover: a different file (other content, or another key) with the same rows
//! is another import, so a month uploaded twice under two names is added twice; the ledger says
//! which files were imported. Rows are added as they are: the import never subtracts.

use std::sync::Arc;

use callback_core::StoreError;
use s3_import::csv::{is_blank, CsvRows, StreamError};
use s3_import::event::ObjectCreated;
use s3_import::objects::{ObjectError, ObjectStore};
use s3_import::report::{write_report, ImportReport};

use crate::domain::batch::{Batch, BatchPlanner, ImportId, ObjectVersion, MAX_BATCH_ROWS};
use crate::domain::csv_file::{Record, SalaryFile};
use crate::domain::psv::PsvWriter;
use crate::ports::{BatchOutcome, ImportCounts, SalaryLedger};

/// Where salary files are dropped; only `<SALARY_PREFIX>...<CSV_SUFFIX>` keys are imported.
pub const SALARY_PREFIX: &str = "salary/";
pub const CSV_SUFFIX: &str = ".csv";
/// Where the pipe-separated copies go: outside `salary/`, so they never trigger an import.
pub const PROCESSED_PREFIX: &str = "processed/";

/// Why an import stopped: every case is worth a retry (the event is redelivered).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the PSV copy failed: {0}")]
    Psv(#[from] std::io::Error),
    #[error("s3://{bucket}/{key}: the event and the object name no version and no eTag")]
    NoVersion { bucket: String, key: String },
}

/// What became of one object of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    /// The rows were read; the report says what happened to each.
    Imported(Box<ImportReport>),
    /// An earlier run finished this file version: nothing was done.
    AlreadyImported(ImportId),
    /// Not a `salary/*.csv` key (the output, a report, another import's file): left alone.
    NotASalaryFile(String),
    /// The object was deleted, or replaced by a newer one (whose own event follows).
    Gone(String),
}

/// `processed/<name>.psv` for `salary/<name>.csv` (sub-folders kept).
pub fn psv_key(key: &str) -> Option<String> {
    let name = key.strip_prefix(SALARY_PREFIX)?.strip_suffix(CSV_SUFFIX)?;
    (!name.is_empty()).then(|| format!("{PROCESSED_PREFIX}{name}.psv"))
}

pub struct SalaryImport {
    pub objects: Arc<dyn ObjectStore>,
    pub ledger: Arc<dyn SalaryLedger>,
    /// Rows per transaction for a new import (a resumed one keeps its own).
    pub batch_rows: usize,
}

impl SalaryImport {
    pub fn new(objects: Arc<dyn ObjectStore>, ledger: Arc<dyn SalaryLedger>) -> Self {
        SalaryImport {
            objects,
            ledger,
            batch_rows: MAX_BATCH_ROWS,
        }
    }

    /// Imports one created object; `now` is the run's time (RFC 3339).
    pub async fn import(
        &self,
        object: &ObjectCreated,
        now: &str,
    ) -> Result<FileOutcome, ImportError> {
        let Some(psv_key) = psv_key(&object.key) else {
            return Ok(FileOutcome::NotASalaryFile(object.key.clone()));
        };
        let opened = match self
            .objects
            .open(&object.bucket, &object.key, object.etag.as_deref())
            .await
        {
            Ok(opened) => opened,
            Err(e @ (ObjectError::NotFound { .. } | ObjectError::Changed { .. })) => {
                tracing::warn!(error = %e, "salary file gone or replaced: nothing to import");
                return Ok(FileOutcome::Gone(object.key.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let etag = object.etag.clone().or(opened.etag.clone());
        let version = match (&object.version_id, &etag) {
            (Some(v), _) if !v.is_empty() && v != "null" => ObjectVersion::VersionId(v.clone()),
            (_, Some(e)) => ObjectVersion::ETag(e.clone()),
            _ => {
                return Err(ImportError::NoVersion {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                })
            }
        };
        let import = ImportId::new(&object.bucket, &object.key, &version);
        let entry = self.ledger.begin(&import, self.batch_rows, now).await?;
        if entry.done {
            tracing::info!(import = %import, runs = entry.runs, "salary file already imported");
            return Ok(FileOutcome::AlreadyImported(import));
        }

        let mut report = ImportReport::new(&object.bucket, &object.key, etag, now.to_owned());
        let mut counts = ImportCounts::default();
        let mut file = SalaryFile::new();
        let mut planner = BatchPlanner::new(entry.batch_rows);
        let mut psv = PsvWriter::new(Vec::new());
        let mut rows = CsvRows::new(opened.body);
        while let Some(row) = rows.next().await? {
            let row = match row {
                Ok(row) => row,
                Err(unreadable) => {
                    counts.bad_rows += 1;
                    report.rows += 1;
                    report.reject(unreadable.line, unreadable.reason);
                    continue;
                }
            };
            if is_blank(&row) {
                continue;
            }
            psv.write(&row.fields)?;
            match file.classify(row.line, &row.fields) {
                Record::Header => {}
                Record::Bad(bad) => {
                    counts.bad_rows += 1;
                    report.rows += 1;
                    report.reject(bad.line, bad.reason);
                }
                Record::Row(valid) => {
                    counts.rows += 1;
                    report.rows += 1;
                    if let Some(batch) = planner.push(valid) {
                        self.apply(&import, &batch, &mut report, &mut counts)
                            .await?;
                    }
                }
            }
        }
        if let Some(batch) = planner.finish() {
            self.apply(&import, &batch, &mut report, &mut counts)
                .await?;
        }

        self.objects
            .put(
                &object.bucket,
                &psv_key,
                psv.finish()?,
                "text/plain; charset=utf-8",
            )
            .await?;
        report.finished_at = now.to_owned();
        write_report(self.objects.as_ref(), &report).await?;
        self.ledger.finish(&import, &counts, now).await?;
        tracing::info!(
            import = %import,
            rows = counts.rows,
            bad = counts.bad_rows,
            added = counts.applied_now,
            added_before = counts.applied_before,
            psv = %psv_key,
            "salary file imported"
        );
        Ok(FileOutcome::Imported(Box::new(report)))
    }

    async fn apply(
        &self,
        import: &ImportId,
        batch: &Batch,
        report: &mut ImportReport,
        counts: &mut ImportCounts,
    ) -> Result<(), ImportError> {
        report.calls += 1;
        match self.ledger.apply(import, batch).await? {
            BatchOutcome::Applied => {
                report.written += batch.rows.len() as u64;
                counts.applied_now += batch.rows.len() as u64;
            }
            BatchOutcome::AlreadyApplied => {
                counts.applied_before += batch.rows.len() as u64;
                for row in &batch.rows {
                    report.keep(row.line, "added by an earlier run of this file");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use s3_import::objects::MemoryObjects;

    use super::*;
    use crate::ports::fault::{CrashAfter, INJECTED_CRASH};
    use crate::ports::memory::MemoryLedger;

    const BUCKET: &str = "payment3-bills-test-123456789012";

    fn created(key: &str, etag: &str) -> ObjectCreated {
        ObjectCreated {
            bucket: BUCKET.into(),
            key: key.into(),
            size: None,
            etag: Some(etag.into()),
            version_id: None,
            sequencer: None,
            event_time: None,
            event_name: "ObjectCreated:Put".into(),
        }
    }

    /// 60 employees (ids 1..=60), salary 1000 + id, no header: 3 batches of 24, 24, 12.
    fn month_file() -> String {
        (1..=60)
            .map(|id| format!("{id},Employee {id},{}.25\n", 1000 + id))
            .collect()
    }

    fn expected(files: usize) -> HashMap<(u64, String), Decimal> {
        (1..=60u64)
            .map(|id| {
                let one = Decimal::from_str(&format!("{}.25", 1000 + id)).unwrap();
                (
                    (id, format!("Employee {id}")),
                    one * Decimal::from(files as u64),
                )
            })
            .collect()
    }

    fn import(objects: &Arc<MemoryObjects>, ledger: Arc<dyn SalaryLedger>) -> SalaryImport {
        SalaryImport::new(objects.clone(), ledger)
    }

    #[tokio::test]
    async fn a_file_is_copied_added_and_reported() {
        // Given a file with a header, a quoted name with a comma and a pipe, and a bad row
        let objects = Arc::new(MemoryObjects::new());
        let text = "EmpID,EmpName,Salary\n1,\"Doe, Jane | JD\",100.50\n2,Bob,abc\n3,Cy,7\n";
        let etag = objects.insert(BUCKET, "salary/2026/jan.csv", text);
        let ledger = Arc::new(MemoryLedger::new());
        // When it is imported
        let outcome = import(&objects, ledger.clone())
            .import(&created("salary/2026/jan.csv", &etag), "t")
            .await
            .unwrap();
        // Then the valid rows are added, the bad one reported, the PSV written
        let FileOutcome::Imported(report) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((report.rows, report.written, report.rejected), (3, 2, 1));
        assert_eq!(report.rejected_rows[0].line, 3);
        assert!(report.rejected_rows[0].reason.contains("Salary \"abc\""));
        assert_eq!(
            ledger.salary(1, "Doe, Jane | JD"),
            Some(Decimal::from_str("100.5").unwrap())
        );
        assert_eq!(ledger.salary(3, "Cy"), Some(Decimal::from(7)));
        assert_eq!(ledger.salaries().len(), 2);
        let psv =
            String::from_utf8(objects.get(BUCKET, "processed/2026/jan.psv").unwrap()).unwrap();
        assert_eq!(
            psv,
            "EmpID|EmpName|Salary\r\n1|\"Doe, Jane | JD\"|100.50\r\n2|Bob|abc\r\n3|Cy|7\r\n"
        );
        assert!(objects
            .get(BUCKET, "salary/2026/jan.csv.report.json")
            .is_some());
    }

    #[tokio::test]
    async fn only_salary_csv_keys_are_imported() {
        let objects = Arc::new(MemoryObjects::new());
        let ledger = Arc::new(MemoryLedger::new());
        for key in [
            "processed/jan.psv",
            "salary/jan.csv.report.json",
            "bills/x.csv",
            "salary/.csv",
        ] {
            let etag = objects.insert(BUCKET, key, "1,Ann,5\n");
            let outcome = import(&objects, ledger.clone())
                .import(&created(key, &etag), "t")
                .await
                .unwrap();
            assert_eq!(outcome, FileOutcome::NotASalaryFile(key.into()));
        }
        assert!(ledger.salaries().is_empty());
    }

    #[tokio::test]
    async fn a_duplicate_event_adds_nothing() {
        let objects = Arc::new(MemoryObjects::new());
        let etag = objects.insert(BUCKET, "salary/m1.csv", month_file());
        let ledger = Arc::new(MemoryLedger::new());
        let event = created("salary/m1.csv", &etag);
        import(&objects, ledger.clone())
            .import(&event, "t1")
            .await
            .unwrap();
        let again = import(&objects, ledger.clone())
            .import(&event, "t2")
            .await
            .unwrap();
        assert!(matches!(again, FileOutcome::AlreadyImported(_)));
        assert_eq!(ledger.salaries(), expected(1));
        assert_eq!(ledger.transactions(), 3);
    }

    #[tokio::test]
    async fn a_crash_halfway_then_a_retry_adds_each_salary_once() {
        // Given a file of three batches, and a run that crashes after the first batch
        let objects = Arc::new(MemoryObjects::new());
        let etag = objects.insert(BUCKET, "salary/m1.csv", month_file());
        let ledger = Arc::new(MemoryLedger::new());
        let event = created("salary/m1.csv", &etag);
        let crashing = Arc::new(CrashAfter::new(ledger.clone(), 1));
        let err = import(&objects, crashing)
            .import(&event, "t1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains(INJECTED_CRASH));
        // Then 24 salaries are in, no PSV and no report yet
        assert_eq!(ledger.salaries().len(), 24);
        assert!(objects.get(BUCKET, "processed/m1.psv").is_none());
        // When the event is delivered again
        let outcome = import(&objects, ledger.clone())
            .import(&event, "t2")
            .await
            .unwrap();
        // Then the rest is added, the first batch is not added again
        let FileOutcome::Imported(report) = outcome else {
            panic!()
        };
        assert_eq!((report.written, report.kept), (36, 24));
        assert_eq!(ledger.salaries(), expected(1));
        assert_eq!(ledger.transactions(), 3);
        let id = ImportId::new(BUCKET, "salary/m1.csv", &ObjectVersion::ETag(etag));
        let counts = ledger.counts(&id).unwrap();
        assert_eq!((counts.applied_now, counts.applied_before), (36, 24));
    }

    #[tokio::test]
    async fn a_retry_keeps_the_batch_size_of_the_first_run() {
        let objects = Arc::new(MemoryObjects::new());
        let etag = objects.insert(BUCKET, "salary/m1.csv", month_file());
        let ledger = Arc::new(MemoryLedger::new());
        let event = created("salary/m1.csv", &etag);
        let mut first = import(&objects, Arc::new(CrashAfter::new(ledger.clone(), 2)));
        first.batch_rows = 10;
        first.import(&event, "t1").await.unwrap_err();
        assert_eq!(ledger.salaries().len(), 20);
        // A later build with another default still cuts the first run's batches.
        let second = import(&objects, ledger.clone());
        second.import(&event, "t2").await.unwrap();
        assert_eq!(ledger.salaries(), expected(1));
    }

    #[tokio::test]
    async fn twelve_months_of_duplicated_and_crashed_deliveries_give_the_yearly_totals() {
        let objects = Arc::new(MemoryObjects::new());
        let ledger = Arc::new(MemoryLedger::new());
        for month in 1..=12 {
            let key = format!("salary/salarydata-{month}.csv");
            let etag = objects.insert(BUCKET, &key, month_file());
            let event = created(&key, &etag);
            if month % 3 == 0 {
                let crashing = Arc::new(CrashAfter::new(ledger.clone(), month % 2));
                import(&objects, crashing)
                    .import(&event, "t")
                    .await
                    .unwrap_err();
            }
            import(&objects, ledger.clone())
                .import(&event, "t")
                .await
                .unwrap();
            import(&objects, ledger.clone())
                .import(&event, "t")
                .await
                .unwrap();
        }
        assert_eq!(ledger.salaries(), expected(12));
    }

    #[tokio::test]
    async fn a_replaced_object_is_left_to_its_own_event() {
        let objects = Arc::new(MemoryObjects::new());
        objects.insert(BUCKET, "salary/m1.csv", month_file());
        let ledger = Arc::new(MemoryLedger::new());
        let outcome = import(&objects, ledger.clone())
            .import(&created("salary/m1.csv", "an-older-etag"), "t")
            .await
            .unwrap();
        assert_eq!(outcome, FileOutcome::Gone("salary/m1.csv".into()));
        assert!(ledger.salaries().is_empty());
    }

    #[test]
    fn psv_keys() {
        assert_eq!(
            psv_key("salary/jan.csv").as_deref(),
            Some("processed/jan.psv")
        );
        assert_eq!(
            psv_key("salary/2026/01.csv").as_deref(),
            Some("processed/2026/01.psv")
        );
        assert_eq!(psv_key("processed/jan.psv"), None);
        assert_eq!(psv_key("salary/jan.txt"), None);
    }
}
