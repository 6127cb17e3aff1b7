//! s3-import: what every "a file lands in S3, load it into DynamoDB" function shares.
//!
//! - [`event`]: S3 notifications in every shape (AWS, moto, `s3:TestEvent`, SQS/SNS-wrapped,
//!   EventBridge), keys decoded.
//! - [`objects`]: the S3 port ([`objects::ObjectStore`]: open a stream, read a small object,
//!   put), its AWS adapter [`objects::S3Objects`] and in-memory twin [`objects::MemoryObjects`].
//! - [`csv`]: rows of a CSV stream with their line numbers ([`csv::CsvRows`]), never the
//!   whole file in memory.
//! - [`report`]: the per-file report `<key>.report.json`, which also marks a file as imported.
//! - [`dynamo`]: `BatchWriteItem` with retry of unprocessed items, and conditional writes in
//!   100-item transactions.
//!
//! # Using it for another import
//!
//! ```text
//! let notification = s3_import::event::parse_notification(&event)?;   // ignore test events
//! for object in notification.created {
//!     if !object.key.ends_with(".csv") { continue }                  // your prefix/suffix
//!     if let Some(r) = report::read_report(store, &object.bucket, &object.key).await? {
//!         if r.completes(object.etag.as_deref()) { continue }        // a duplicate event
//!     }
//!     let opened = store.open(&object.bucket, &object.key, object.etag.as_deref()).await?;
//!     let mut rows = csv::CsvRows::new(opened.body);
//!     let mut report = report::ImportReport::new(&object.bucket, &object.key, opened.etag, now);
//!     while let Some(row) = rows.next().await? {
//!         match row { Ok(row) => /* validate; collect writes */, Err(e) => report.reject(e.line, e.reason) }
//!         // every 25 (batch) or 100 (conditional) writes: dynamo::write_batched / write_conditional
//!     }
//!     report::write_report(store, &report).await?;
//! }
//! ```
//! A failure before the report is written leaves no `complete` report: the event's retry runs
//! the file again, so every write must be idempotent (a `SET` of the file's values, or a
//! condition that makes the second write a no-op). `crates/bills/src/import.rs` is the worked
//! example. For the local stack (moto cannot invoke a Lambda from a bucket notification), a
//! function registers its bucket, prefix, suffix and function name in `scripts/stack.py`'s
//! `S3_IMPORTS`; see docs/local-stack.md.

pub mod csv;
pub mod dynamo;
pub mod event;
pub mod objects;
pub mod report;
