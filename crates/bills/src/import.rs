//! The bills import (SPEC 10): a `.csv` lands in the bills bucket; every row is validated and
//! upserted into the bills table; bad rows go to `<key>.report.json` with their line and reason.
//!
//! - Streaming: rows are read from GetObject's body as it arrives; at most `in_flight` chunks of
//!   100 rows are held.
//! - Never reopening a paid bill: each row is a conditional update (`IsProcessed = 0` or no
//!   bill yet), 100 per `TransactWriteItems` call (s3_import::dynamo::write_conditional); a
//!   paid bill refuses the write and the row is listed as kept.
//! - A newer file wins: each item keeps `SourceTime`, the S3 object's LastModified; a row from
//!   an older file (an old event delivered late) refuses to overwrite a newer one.
//! - Duplicate events and retries: a `complete` report for the same eTag means the file was
//!   imported, so a second delivery does nothing; a retry after a crash runs the whole file
//!   again, and since every write sets the file's values (same `SourceTime`), writing a row a
//!   second time changes nothing.

use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use callback_core::{isoformat, Clock};
use futures::stream::{FuturesUnordered, StreamExt};
use s3_import::csv::{is_blank, CsvRows};
use s3_import::dynamo::{
    write_conditional, BatchApi, ConditionalChunk, ConditionalResult, Retry, WriteError,
};
use s3_import::event::ObjectCreated;
use s3_import::objects::{ObjectError, ObjectStore};
use s3_import::report::{read_report, write_report, ImportReport, ReportStatus};

use crate::domain::{is_header, parse_row, BillRow};

/// Why an import stopped; the event is retried.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Stream(#[from] s3_import::csv::StreamError),
}

/// What happened to one object of the event.
#[derive(Debug)]
pub enum Outcome {
    Imported(ImportReport),
    /// Already imported (a complete report for this eTag): nothing done.
    Duplicate(ImportReport),
    /// Not a bills file, gone, or replaced since the event: nothing done.
    Skipped(String),
}

pub struct Importer {
    pub objects: Arc<dyn ObjectStore>,
    pub db: Arc<dyn BatchApi>,
    pub clock: Arc<dyn Clock>,
    pub table: String,
    /// Transactions in flight at once.
    pub in_flight: usize,
    pub retry: Retry,
}

/// The item key text of a bill (chunks hold each bill once).
fn key_text(row: &BillRow) -> String {
    row.invoice.to_string()
}

impl Importer {
    fn write_for(
        &self,
        row: &BillRow,
        source_key: &str,
        source_time: &str,
        now: &str,
    ) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .key("InvoiceID", AttributeValue::N(row.invoice.to_string()))
            .update_expression(
                "SET CustomerName = :name, Balance = :balance, IsProcessed = :processed, \
                 SourceKey = :key, SourceTime = :time, ImportedAt = :now",
            )
            .condition_expression(
                "(attribute_not_exists(IsProcessed) OR IsProcessed = :zero) AND \
                 (attribute_not_exists(SourceTime) OR SourceTime <= :time)",
            )
            .expression_attribute_values(":name", AttributeValue::S(row.customer_name.clone()))
            .expression_attribute_values(":balance", AttributeValue::N(row.balance.to_string()))
            .expression_attribute_values(
                ":processed",
                AttributeValue::N(if row.processed { "1" } else { "0" }.into()),
            )
            .expression_attribute_values(":key", AttributeValue::S(source_key.to_string()))
            .expression_attribute_values(":time", AttributeValue::S(source_time.to_string()))
            .expression_attribute_values(":now", AttributeValue::S(now.to_string()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// Imports one object.
    pub async fn import(&self, object: &ObjectCreated) -> Result<Outcome, ImportError> {
        let (bucket, key) = (&object.bucket, &object.key);
        if !key.to_ascii_lowercase().ends_with(".csv") {
            return Ok(Outcome::Skipped(format!("{key} is not a .csv file")));
        }
        if let Some(report) = read_report(self.objects.as_ref(), bucket, key).await? {
            if report.completes(object.etag.as_deref()) {
                return Ok(Outcome::Duplicate(report));
            }
        }
        let opened = match self.objects.open(bucket, key, object.etag.as_deref()).await {
            Ok(o) => o,
            Err(e @ (ObjectError::NotFound { .. } | ObjectError::Changed { .. })) => {
                return Ok(Outcome::Skipped(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let now = isoformat(self.clock.now());
        let source_time = opened.last_modified.clone().unwrap_or_else(|| now.clone());
        let mut report = ImportReport::new(
            bucket,
            key,
            opened.etag.clone().or(object.etag.clone()),
            now.clone(),
        );
        report.calls = 2; // the report read, GetObject
        let result = self
            .rows(opened.body, key, &source_time, &now, &mut report)
            .await;
        report.finished_at = isoformat(self.clock.now());
        if let Err(e) = &result {
            report.status = ReportStatus::Failed;
            report.error = Some(match e {
                ImportError::Stream(s) => {
                    format!("the file could not be read after line {}", s.line)
                }
                _ => "writing to the bills table failed; the import is retried".into(),
            });
        }
        report.calls += 1;
        let written = write_report(self.objects.as_ref(), &report).await;
        result?;
        written?;
        Ok(Outcome::Imported(report))
    }

    async fn rows(
        &self,
        body: s3_import::objects::BodyReader,
        key: &str,
        source_time: &str,
        now: &str,
        report: &mut ImportReport,
    ) -> Result<(), ImportError> {
        let mut rows = CsvRows::new(body);
        let mut chunk: ConditionalChunk<u64> = ConditionalChunk::default();
        let mut in_flight = FuturesUnordered::new();
        let mut in_flight_keys: HashSet<String> = HashSet::new();
        let mut first = true;
        let db = self.db.clone();
        let table = self.table.clone();
        let retry = self.retry;
        let send = |chunk: ConditionalChunk<u64>| {
            let db = db.clone();
            let table = table.clone();
            async move { write_conditional(db.as_ref(), &table, chunk, retry).await }
        };
        let settle = |report: &mut ImportReport,
                      r: Result<ConditionalResult<u64>, WriteError>|
         -> Result<(), ImportError> {
            let r = r?;
            report.calls += r.calls;
            report.written += r.written.len() as u64;
            for (line, _) in r.refused {
                report.keep(
                    line,
                    "not changed: the bill is paid, or a newer file set it",
                );
            }
            Ok(())
        };
        while let Some(next) = rows.next().await? {
            let row = match next {
                Ok(row) => row,
                Err(e) => {
                    report.rows += 1;
                    report.reject(e.line, e.reason);
                    continue;
                }
            };
            if is_blank(&row) {
                continue;
            }
            if std::mem::replace(&mut first, false) && is_header(&row.fields) {
                continue;
            }
            report.rows += 1;
            let bill = match parse_row(&row.fields) {
                Ok(b) => b,
                Err(reason) => {
                    report.reject(row.line, reason);
                    continue;
                }
            };
            let k = key_text(&bill);
            if chunk.contains(&k) || in_flight_keys.contains(&k) {
                // The same bill twice in a file: the later row wins, so the earlier write
                // must be done first.
                if !chunk.is_empty() {
                    in_flight.push(send(std::mem::take(&mut chunk)));
                }
                while let Some(r) = in_flight.next().await {
                    settle(report, r)?;
                }
                in_flight_keys.clear();
            }
            in_flight_keys.insert(k.clone());
            chunk.push(row.line, k, self.write_for(&bill, key, source_time, now));
            if chunk.is_full() {
                in_flight.push(send(std::mem::take(&mut chunk)));
                if in_flight.len() >= self.in_flight.max(1) {
                    if let Some(r) = in_flight.next().await {
                        settle(report, r)?;
                    }
                    // Keys of finished chunks may stay in the set: that only causes an early wait.
                    if in_flight.is_empty() {
                        in_flight_keys.clear();
                    }
                }
            }
        }
        if !chunk.is_empty() {
            in_flight.push(send(chunk));
        }
        while let Some(r) = in_flight.next().await {
            settle(report, r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use aws_sdk_dynamodb::types::WriteRequest;
    use callback_core::SystemClock;
    use s3_import::dynamo::TransactOutcome;
    use s3_import::objects::MemoryObjects;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A bills table in memory that evaluates the import's condition the way DynamoDB does.
    #[derive(Default)]
    struct Table {
        items: Mutex<HashMap<String, (String, String, String, String)>>, // id -> (name, balance, processed, source_time)
        calls: Mutex<u64>,
        fail_after: Mutex<Option<u64>>,
    }

    fn s(v: &AttributeValue) -> String {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
            _ => unreachable!(),
        }
    }

    #[async_trait]
    impl BatchApi for Table {
        async fn batch_write(
            &self,
            _: &str,
            _: Vec<WriteRequest>,
        ) -> Result<Vec<WriteRequest>, String> {
            unreachable!()
        }
        async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, String> {
            {
                let mut calls = self.calls.lock().unwrap();
                *calls += 1;
                if let Some(n) = *self.fail_after.lock().unwrap() {
                    if *calls > n {
                        return Err("injected outage".into());
                    }
                }
            }
            let mut table = self.items.lock().unwrap();
            let mut reasons = vec![];
            for w in &items {
                let u = w.update().unwrap();
                let id = s(u.key().get("InvoiceID").unwrap());
                let v = u.expression_attribute_values().unwrap();
                let ok = match table.get(&id) {
                    None => true,
                    Some((_, _, processed, time)) => processed == "0" && *time <= s(&v[":time"]),
                };
                reasons.push((!ok).then(|| "ConditionalCheckFailed".to_string()));
            }
            if reasons.iter().any(Option::is_some) {
                return Ok(TransactOutcome::Cancelled(reasons));
            }
            for w in &items {
                let u = w.update().unwrap();
                let v = u.expression_attribute_values().unwrap();
                table.insert(
                    s(u.key().get("InvoiceID").unwrap()),
                    (
                        s(&v[":name"]),
                        s(&v[":balance"]),
                        s(&v[":processed"]),
                        s(&v[":time"]),
                    ),
                );
            }
            Ok(TransactOutcome::Committed)
        }
    }

    fn importer(objects: &MemoryObjects, table: Arc<Table>) -> Importer {
        Importer {
            objects: Arc::new(objects.clone()),
            db: table,
            clock: Arc::new(SystemClock),
            table: "bills".into(),
            in_flight: 3,
            retry: Retry {
                attempts: 2,
                first_pause: Duration::from_millis(1),
                max_pause: Duration::from_millis(1),
            },
        }
    }

    fn event(objects: &MemoryObjects, key: &str, body: &str) -> ObjectCreated {
        let etag = objects.insert("b", key, body.as_bytes().to_vec());
        ObjectCreated {
            bucket: "b".into(),
            key: key.into(),
            size: None,
            etag: Some(etag),
            version_id: None,
            sequencer: None,
            event_time: None,
            event_name: "ObjectCreated:Put".into(),
        }
    }

    #[tokio::test]
    async fn good_and_bad_rows_then_a_duplicate_event() {
        let objects = MemoryObjects::new();
        let table = Arc::new(Table::default());
        let imp = importer(&objects, table.clone());
        let body = "InvoiceID,CustomerName,Balance,IsProcessed\n1,Jane,512.50,0\nx,Bob,1,0\n\n2,\"Doe, John\",10,0\n3,Al,-1,0\n";
        let ev = event(&objects, "bills/today.csv", body);
        let Outcome::Imported(r) = imp.import(&ev).await.unwrap() else {
            panic!()
        };
        assert_eq!((r.rows, r.written, r.rejected, r.kept), (4, 2, 2, 0));
        assert_eq!(r.rejected_rows[0].line, 3);
        assert_eq!(r.rejected_rows[1].line, 6);
        assert!(r.rejected_rows[1].reason.contains("negative"));
        assert_eq!(table.items.lock().unwrap()["1"].1, "512.5");
        assert!(objects.get("b", "bills/today.csv.report.json").is_some());
        let calls = *table.calls.lock().unwrap();
        assert!(matches!(
            imp.import(&ev).await.unwrap(),
            Outcome::Duplicate(_)
        ));
        assert_eq!(
            *table.calls.lock().unwrap(),
            calls,
            "a duplicate event writes nothing"
        );
    }

    #[tokio::test]
    async fn a_paid_bill_is_never_reopened_and_the_rest_is_written() {
        let objects = MemoryObjects::new();
        let table = Arc::new(Table::default());
        table.items.lock().unwrap().insert(
            "2".into(),
            ("Ann".into(), "0".into(), "1".into(), "".into()),
        );
        let imp = importer(&objects, table.clone());
        let body: String = (1..=250).map(|i| format!("{i},N{i},{i},0\n")).collect();
        let ev = event(&objects, "d.csv", &body);
        let Outcome::Imported(r) = imp.import(&ev).await.unwrap() else {
            panic!()
        };
        assert_eq!((r.rows, r.written, r.kept), (250, 249, 1));
        assert_eq!(r.kept_rows[0].line, 2);
        assert_eq!(
            table.items.lock().unwrap()["2"],
            ("Ann".into(), "0".into(), "1".into(), "".into())
        );
        assert_eq!(
            r.calls,
            3 + 3 + 1,
            "report read, GetObject, three chunks, one more for the refused row, report write"
        );
    }

    #[tokio::test]
    async fn a_crash_halfway_then_the_retry_gives_the_same_table() {
        let objects = MemoryObjects::new();
        let table = Arc::new(Table::default());
        *table.fail_after.lock().unwrap() = Some(2);
        let imp = importer(&objects, table.clone());
        let body: String = (1..=1000).map(|i| format!("{i},N{i},{i}.25,0\n")).collect();
        let ev = event(&objects, "d.csv", &body);
        assert!(imp.import(&ev).await.is_err());
        let report: ImportReport =
            serde_json::from_slice(&objects.get("b", "d.csv.report.json").unwrap()).unwrap();
        assert_eq!(report.status, ReportStatus::Failed);
        let partial = table.items.lock().unwrap().len();
        assert!(partial > 0 && partial < 1000, "{partial}");
        *table.fail_after.lock().unwrap() = None;
        let Outcome::Imported(r) = imp.import(&ev).await.unwrap() else {
            panic!("the retry runs the file")
        };
        assert_eq!((r.written, r.kept, r.rejected), (1000, 0, 0));
        let items = table.items.lock().unwrap();
        assert_eq!(items.len(), 1000);
        assert_eq!(items["999"].1, "999.25");
    }

    #[tokio::test]
    async fn the_same_bill_twice_in_a_file_keeps_the_later_row_and_headerless_files_are_data() {
        let objects = MemoryObjects::new();
        let table = Arc::new(Table::default());
        let imp = importer(&objects, table.clone());
        let mut body: String = (1..=150).map(|i| format!("{i},N{i},{i},0\n")).collect();
        body.push_str("5,Later,55,0\n");
        let ev = event(&objects, "d.csv", &body);
        let Outcome::Imported(r) = imp.import(&ev).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.written, 151);
        assert_eq!(table.items.lock().unwrap()["5"].1, "55");
        assert_eq!(
            table.items.lock().unwrap()["1"].1,
            "1",
            "the first line is a bill, not a header"
        );
    }

    #[tokio::test]
    async fn other_files_and_vanished_objects_are_skipped() {
        let objects = MemoryObjects::new();
        let imp = importer(&objects, Arc::new(Table::default()));
        let ev = event(&objects, "x.txt", "hi");
        assert!(matches!(
            imp.import(&ev).await.unwrap(),
            Outcome::Skipped(_)
        ));
        let mut ev = event(&objects, "y.csv", "1,a,1,0\n");
        ev.etag = Some("another".into());
        assert!(
            matches!(imp.import(&ev).await.unwrap(), Outcome::Skipped(_)),
            "replaced since the event"
        );
        ev.key = "gone.csv".into();
        assert!(matches!(
            imp.import(&ev).await.unwrap(),
            Outcome::Skipped(_)
        ));
    }
}
