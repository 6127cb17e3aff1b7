//! The bills import (SPEC 10): a `.csv` lands in the bills bucket; every row is validated and
//! upserted into the bills table; bad rows go to `<key>.report.json` with their line and reason.
//!
//! # How rows are written
//!
//! Rows are read from GetObject's body as it arrives (never the whole file) and go in chunks of
//! up to 100 bills, at most `in_flight` chunks at a time. For each chunk:
//!
//! 1. one strongly consistent `BatchGetItem` (100 keys, `InvoiceID`, `IsProcessed`,
//!    `SourceTime` only; unprocessed keys asked again with backoff) says which bills exist;
//! 2. **bills that do not exist** are written with `BatchWriteItem` Puts (25 per call,
//!    `UnprocessedItems` sent again with backoff): 0.05 calls and one write unit per row;
//! 3. **bills that exist and are paid** (`IsProcessed = 1`), or were set by a newer file
//!    (`SourceTime` later than this file's LastModified), are not written: listed as kept in
//!    the report;
//! 4. **bills that exist and are unpaid** are conditional updates, 100 per `TransactWriteItems`
//!    (s3_import::dynamo::write_conditional) with the condition
//!    `(no IsProcessed OR IsProcessed = 0) AND (no SourceTime OR SourceTime <= this file's)`,
//!    checked by DynamoDB at write time: a bill paid between the read and the write refuses its
//!    write and is listed as kept.
//!
//! A file of new bills costs 0.01 (BatchGet) + 0.04 (BatchWrite) calls per row; a file that
//! re-lists unpaid bills 0.02 per re-listed row (two write units each, the price of the
//! condition); plus 3 calls per file (report read, GetObject, report write).
//!
//! # Why an unconditional Put never reopens a paid bill
//!
//! A Put is sent only for a bill the strongly consistent read just before found absent. To
//! overwrite a paid bill, somebody else would have to create that bill, and it would have to
//! be paid, between that read and the write. Two things write this table:
//!
//! - the payment workflow (statemachines/bill-payment.asl.json, ProcessPayment): one
//!   conditional UpdateItem requiring `attribute_exists(InvoiceID) AND IsProcessed = 0 AND
//!   Balance = :amount`. It never creates a bill, so it can only pay one an import created;
//! - bills imports: the only creators of bills.
//!
//! So the window needs a second import running at the same time as this one, and none does:
//! the import function has `ReservedConcurrentExecutions: 1` (template.yaml;
//! tests/test_template.py keeps it so), so S3's events for it, duplicates and retries after a
//! crash or timeout included, run one at a time (Lambda retries an asynchronous event only
//! after the failed run has ended, a minute or more later). On the local stack
//! scripts/s3_events.py invokes each queue's messages one at a time. Within one run, chunks in
//! flight hold different bills: a bill listed twice in a file waits until every write in flight
//! is done, and its second row's chunk then reads the bill as existing and takes the
//! conditional path (the later row wins, and a bill paid in between stays paid).
//!
//! # Duplicate events, crashes, older files
//!
//! - A `complete` report for the same eTag means the file was imported: a second delivery does
//!   nothing.
//! - A retry after a crash runs the whole file again: bills written by the crashed run now
//!   exist, so they take the conditional path and are set to the same values (same
//!   `SourceTime`); a bill paid meanwhile stays paid.
//! - A newer file wins: each item keeps `SourceTime`, the S3 object's LastModified; a row from
//!   an older file (an old event delivered late) does not overwrite a newer one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use callback_core::{isoformat, Clock};
use futures::stream::{FuturesUnordered, StreamExt};
use s3_import::csv::{is_blank, CsvRows};
use s3_import::dynamo::{
    read_batched, write_batched, write_conditional, BatchApi, ConditionalChunk, Item, Retry,
    WriteError, BATCH_GET_MAX,
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
    /// Chunks (of up to 100 bills) in flight at once.
    pub in_flight: usize,
    pub retry: Retry,
}

/// The file a chunk comes from: what every write of it records.
struct Source {
    key: String,
    time: String,
    now: String,
}

/// What became of a chunk's rows.
#[derive(Default)]
struct ChunkResult {
    written: u64,
    kept: Vec<(u64, &'static str)>,
    calls: u64,
}

const PAID: &str = "not changed: the bill is paid";
const NEWER: &str = "not changed: a newer file set it";
const REFUSED: &str = "not changed: the bill is paid, or a newer file set it";

fn number(row: &BillRow) -> AttributeValue {
    AttributeValue::N(row.invoice.to_string())
}

fn processed(row: &BillRow) -> AttributeValue {
    AttributeValue::N(if row.processed { "1" } else { "0" }.into())
}

/// A bill that did not exist: the whole item.
fn put_for(row: &BillRow, src: &Source) -> WriteRequest {
    let item = PutRequest::builder()
        .item("InvoiceID", number(row))
        .item("CustomerName", AttributeValue::S(row.customer_name.clone()))
        .item("Balance", AttributeValue::N(row.balance.to_string()))
        .item("IsProcessed", processed(row))
        .item("SourceKey", AttributeValue::S(src.key.clone()))
        .item("SourceTime", AttributeValue::S(src.time.clone()))
        .item("ImportedAt", AttributeValue::S(src.now.clone()))
        .build()
        .expect("the item is set");
    WriteRequest::builder().put_request(item).build()
}

/// A bill that exists and was unpaid when read: the file's values, if it still is.
fn update_for(table: &str, row: &BillRow, src: &Source) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .key("InvoiceID", number(row))
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
        .expression_attribute_values(":processed", processed(row))
        .expression_attribute_values(":key", AttributeValue::S(src.key.clone()))
        .expression_attribute_values(":time", AttributeValue::S(src.time.clone()))
        .expression_attribute_values(":now", AttributeValue::S(src.now.clone()))
        .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        .build()
        .expect("table, key and expression are set");
    TransactWriteItem::builder().update(update).build()
}

/// Reads which bills of the chunk exist, then writes each the way its state allows.
async fn write_chunk(
    db: Arc<dyn BatchApi>,
    table: String,
    retry: Retry,
    src: Arc<Source>,
    rows: Vec<(u64, BillRow)>,
) -> Result<ChunkResult, WriteError> {
    let keys = rows
        .iter()
        .map(|(_, row)| Item::from([("InvoiceID".to_string(), number(row))]))
        .collect();
    let (found, read_calls) = read_batched(
        db.as_ref(),
        &table,
        keys,
        &["InvoiceID", "IsProcessed", "SourceTime"],
        retry,
    )
    .await?;
    let text = |item: &Item, name: &str| match item.get(name) {
        Some(AttributeValue::N(v) | AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    let existing: HashMap<String, (bool, Option<String>)> = found
        .iter()
        .filter_map(|item| {
            let id = text(item, "InvoiceID")?;
            Some((
                id,
                (
                    text(item, "IsProcessed").as_deref() == Some("1"),
                    text(item, "SourceTime"),
                ),
            ))
        })
        .collect();
    let mut result = ChunkResult {
        calls: read_calls,
        ..Default::default()
    };
    let mut puts = Vec::new();
    let mut conditional: ConditionalChunk<u64> = ConditionalChunk::default();
    for (line, row) in &rows {
        match existing.get(&row.invoice.to_string()) {
            None => puts.push(put_for(row, &src)),
            Some((true, _)) => result.kept.push((*line, PAID)),
            Some((false, Some(time))) if time.as_str() > src.time.as_str() => {
                result.kept.push((*line, NEWER))
            }
            Some(_) => conditional.push(
                *line,
                row.invoice.to_string(),
                update_for(&table, row, &src),
            ),
        }
    }
    let new_bills = puts.len() as u64;
    let (batched, conditioned) = tokio::join!(
        async {
            if puts.is_empty() {
                Ok(0)
            } else {
                write_batched(db.as_ref(), &table, puts, 4, retry).await
            }
        },
        async {
            if conditional.is_empty() {
                Ok(None)
            } else {
                write_conditional(db.as_ref(), &table, conditional, retry)
                    .await
                    .map(Some)
            }
        }
    );
    result.calls += batched?;
    result.written += new_bills;
    if let Some(c) = conditioned? {
        result.calls += c.calls;
        result.written += c.written.len() as u64;
        result
            .kept
            .extend(c.refused.into_iter().map(|(line, _)| (line, REFUSED)));
    }
    Ok(result)
}

impl Importer {
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
        let source = Arc::new(Source {
            key: key.clone(),
            time: opened.last_modified.clone().unwrap_or_else(|| now.clone()),
            now: now.clone(),
        });
        let mut report = ImportReport::new(
            bucket,
            key,
            opened.etag.clone().or(object.etag.clone()),
            now.clone(),
        );
        report.calls = 2; // the report read, GetObject
        let result = self.rows(opened.body, source, &mut report).await;
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
        source: Arc<Source>,
        report: &mut ImportReport,
    ) -> Result<(), ImportError> {
        let mut rows = CsvRows::new(body);
        let mut chunk: Vec<(u64, BillRow)> = Vec::with_capacity(BATCH_GET_MAX);
        let mut chunk_keys: HashSet<u64> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        let mut in_flight_keys: HashSet<u64> = HashSet::new();
        let mut first = true;
        let send = |rows: Vec<(u64, BillRow)>| {
            write_chunk(
                self.db.clone(),
                self.table.clone(),
                self.retry,
                source.clone(),
                rows,
            )
        };
        let settle = |report: &mut ImportReport,
                      r: Result<ChunkResult, WriteError>|
         -> Result<(), ImportError> {
            let r = r?;
            report.calls += r.calls;
            report.written += r.written;
            for (line, reason) in r.kept {
                report.keep(line, reason);
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
            let k = bill.invoice.0;
            if chunk_keys.contains(&k) || in_flight_keys.contains(&k) {
                // The same bill twice in a file: the later row wins, so the earlier write must
                // be done, and seen by the later row's read, first.
                if !chunk.is_empty() {
                    in_flight.push(send(std::mem::take(&mut chunk)));
                    chunk_keys.clear();
                }
                while let Some(r) = in_flight.next().await {
                    settle(report, r)?;
                }
                in_flight_keys.clear();
            }
            in_flight_keys.insert(k);
            chunk_keys.insert(k);
            chunk.push((row.line, bill));
            if chunk.len() >= BATCH_GET_MAX {
                in_flight.push(send(std::mem::take(&mut chunk)));
                chunk_keys.clear();
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
        kinds: Mutex<Vec<String>>,
        fail_after: Mutex<Option<u64>>,
        /// A payment that lands right after the next read: this bill is paid.
        pay_after_read: Mutex<Option<String>>,
    }

    fn s(v: &AttributeValue) -> String {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
            _ => unreachable!(),
        }
    }

    impl Table {
        fn call(&self, kind: &str) -> Result<(), String> {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            self.kinds.lock().unwrap().push(kind.to_string());
            match *self.fail_after.lock().unwrap() {
                Some(n) if *calls > n => Err("injected outage".into()),
                _ => Ok(()),
            }
        }
        fn count(&self, kind: &str) -> usize {
            self.kinds
                .lock()
                .unwrap()
                .iter()
                .filter(|k| *k == kind)
                .count()
        }
    }

    #[async_trait]
    impl BatchApi for Table {
        async fn batch_get(
            &self,
            _: &str,
            keys: Vec<Item>,
            attributes: &[&str],
        ) -> Result<(Vec<Item>, Vec<Item>), String> {
            self.call("get")?;
            assert!(keys.len() <= BATCH_GET_MAX);
            assert_eq!(attributes, ["InvoiceID", "IsProcessed", "SourceTime"]);
            let table = self.items.lock().unwrap();
            let found = keys
                .iter()
                .filter_map(|k| {
                    let id = s(&k["InvoiceID"]);
                    let (_, _, processed, time) = table.get(&id)?;
                    let mut item = Item::from([
                        ("InvoiceID".to_string(), AttributeValue::N(id.clone())),
                        (
                            "IsProcessed".to_string(),
                            AttributeValue::N(processed.clone()),
                        ),
                    ]);
                    if !time.is_empty() {
                        item.insert("SourceTime".into(), AttributeValue::S(time.clone()));
                    }
                    Some(item)
                })
                .collect();
            drop(table);
            if let Some(id) = self.pay_after_read.lock().unwrap().take() {
                let mut table = self.items.lock().unwrap();
                let bill = table.get_mut(&id).unwrap();
                (bill.1, bill.2) = ("0".into(), "1".into());
            }
            Ok((found, vec![]))
        }
        async fn batch_write(
            &self,
            _: &str,
            requests: Vec<WriteRequest>,
        ) -> Result<Vec<WriteRequest>, String> {
            self.call("batch_write")?;
            assert!(requests.len() <= 25);
            let mut table = self.items.lock().unwrap();
            for r in requests {
                let item = r.put_request().unwrap().item();
                table.insert(
                    s(&item["InvoiceID"]),
                    (
                        s(&item["CustomerName"]),
                        s(&item["Balance"]),
                        s(&item["IsProcessed"]),
                        s(&item["SourceTime"]),
                    ),
                );
            }
            Ok(vec![])
        }
        async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, String> {
            self.call("transact")?;
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
            2 + 3 + 10 + 1,
            "report read, GetObject, a BatchGet per 100 rows, a BatchWrite per 25 new bills \
             (99, 100, 50), report write"
        );
        assert_eq!(
            table.count("transact"),
            0,
            "the paid bill is seen by the read: no write"
        );
    }

    #[tokio::test]
    async fn existing_unpaid_bills_are_conditional_and_one_paid_after_the_read_stays_paid() {
        let objects = MemoryObjects::new();
        let table = Arc::new(Table::default());
        {
            let mut items = table.items.lock().unwrap();
            for id in ["3", "4"] {
                items.insert(id.into(), ("Old".into(), "9".into(), "0".into(), "".into()));
            }
            // Set by a file from the far future: this file is older.
            items.insert(
                "5".into(),
                ("New".into(), "7".into(), "0".into(), "9999".into()),
            );
        }
        *table.pay_after_read.lock().unwrap() = Some("4".into());
        let imp = importer(&objects, table.clone());
        let body: String = (1..=30).map(|i| format!("{i},N{i},{i},0\n")).collect();
        let Outcome::Imported(r) = imp.import(&event(&objects, "d.csv", &body)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!((r.rows, r.written, r.kept), (30, 28, 2));
        let items = table.items.lock().unwrap();
        assert_eq!(items["3"].1, "3", "an unpaid bill takes the file's values");
        assert_eq!(
            items["4"].2, "1",
            "paid between the read and the write: stays paid"
        );
        assert_eq!(items["5"].1, "7", "a newer file's values stay");
        let kept: Vec<(u64, &str)> = r
            .kept_rows
            .iter()
            .map(|k| (k.line, k.reason.as_str()))
            .collect();
        assert!(
            kept.contains(&(4, REFUSED)) && kept.contains(&(5, NEWER)),
            "{kept:?}"
        );
        assert_eq!(
            (
                table.count("get"),
                table.count("batch_write"),
                table.count("transact")
            ),
            (1, 2, 2),
            "27 new bills in two BatchWrites; bills 3 and 4 in one transaction, cancelled for \
             4 and sent again with 3"
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
