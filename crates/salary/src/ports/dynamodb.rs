//! [`SalaryLedger`] on DynamoDB.
//!
//! - `payment3-employee-salary-<branch>` (hash `EmpID` N, range `EmpName` S): `ADD EmpSalary`.
//! - `payment3-salary-import-ledger-<branch>` (hash `ImportId` S, range `Entry` S): per import
//!   one `file` entry (`BatchRows`, `Runs`, `Status`, counts) and one `batch#<first line>`
//!   marker per applied batch.
//!
//! A batch is one TransactWriteItems: the marker's Put with `attribute_not_exists`, then one
//! `ADD EmpSalary` Update per row. A marker that exists cancels the whole transaction
//! (`ConditionalCheckFailed` as the first cancellation reason): the batch was applied before,
//! nothing is added. A transaction conflict (another transaction on the same items at the same
//! moment) is retried; when the retry finds the marker, the other run applied the batch.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use callback_core::StoreError;

use crate::domain::batch::{Batch, ImportId};
use crate::ports::{BatchOutcome, FileEntry, ImportCounts, SalaryLedger};

/// The file's own entry in the ledger.
const FILE_ENTRY: &str = "file";
/// Attempts of a batch whose transaction keeps conflicting with another.
const CONFLICT_ATTEMPTS: u32 = 6;

pub struct DynamoLedger {
    client: Client,
    salary_table: String,
    ledger_table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, salary_table: String, ledger_table: String) -> Self {
        DynamoLedger {
            client,
            salary_table,
            ledger_table,
        }
    }

    fn key(import: &ImportId, entry: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("ImportId".to_owned(), s(import.as_str())),
            ("Entry".to_owned(), s(entry)),
        ])
    }

    fn transaction(
        &self,
        import: &ImportId,
        batch: &Batch,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| {
            StoreError::new("TransactWriteItems", &self.ledger_table, e)
        };
        let mut marker = Self::key(import, &batch.marker());
        let last_line = batch.rows.last().map_or(0, |r| r.line);
        marker.insert("Rows".into(), n(&batch.rows.len().to_string()));
        marker.insert("FirstLine".into(), n(&batch.first_line().to_string()));
        marker.insert("LastLine".into(), n(&last_line.to_string()));
        let mut items = vec![TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.ledger_table)
                    .set_item(Some(marker))
                    .condition_expression("attribute_not_exists(ImportId)")
                    .build()
                    .map_err(invalid)?,
            )
            .build()];
        for row in &batch.rows {
            items.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.salary_table)
                            .key("EmpID", n(&row.key.emp_id.to_string()))
                            .key("EmpName", s(row.key.emp_name.as_str()))
                            .update_expression("ADD EmpSalary :salary")
                            .expression_attribute_values(":salary", n(row.salary.as_str()))
                            .build()
                            .map_err(invalid)?,
                    )
                    .build(),
            );
        }
        Ok(items)
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: &str) -> AttributeValue {
    AttributeValue::N(value.to_owned())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// How a cancelled transaction was cancelled: by the marker's condition, or by a conflict.
enum Cancelled {
    MarkerExists,
    Conflict,
    Other,
}

fn cancelled(err: &SdkError<TransactWriteItemsError>) -> Option<Cancelled> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            let codes: Vec<&str> = e
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            Some(if codes.first() == Some(&"ConditionalCheckFailed") {
                Cancelled::MarkerExists
            } else if codes.contains(&"TransactionConflict") {
                Cancelled::Conflict
            } else {
                Cancelled::Other
            })
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Some(Cancelled::Conflict),
        _ => None,
    }
}

#[async_trait]
impl SalaryLedger for DynamoLedger {
    async fn begin(
        &self,
        import: &ImportId,
        batch_rows: usize,
        now: &str,
    ) -> Result<FileEntry, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.ledger_table)
            .set_key(Some(Self::key(import, FILE_ENTRY)))
            .update_expression(
                "SET BatchRows = if_not_exists(BatchRows, :rows), \
                 StartedAt = if_not_exists(StartedAt, :now), LastRunAt = :now ADD Runs :one",
            )
            .expression_attribute_values(":rows", n(&batch_rows.to_string()))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":one", n("1"))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| {
                StoreError::new("UpdateItem", &self.ledger_table, DisplayErrorContext(&e))
            })?;
        let item = out.attributes().cloned().unwrap_or_default();
        Ok(FileEntry {
            batch_rows: number(&item, "BatchRows").map_or(batch_rows, |n| n as usize),
            done: item
                .get("Status")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some("done"),
            runs: number(&item, "Runs").unwrap_or(1),
        })
    }

    async fn apply(&self, import: &ImportId, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let items = self.transaction(import, batch)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(BatchOutcome::Applied),
                Err(err) => err,
            };
            match cancelled(&err) {
                Some(Cancelled::MarkerExists) => return Ok(BatchOutcome::AlreadyApplied),
                Some(Cancelled::Conflict) if attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                _ => {
                    return Err(StoreError::new(
                        "TransactWriteItems",
                        &self.salary_table,
                        DisplayErrorContext(&err),
                    ))
                }
            }
        }
    }

    async fn finish(
        &self,
        import: &ImportId,
        counts: &ImportCounts,
        now: &str,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.ledger_table)
            .set_key(Some(Self::key(import, FILE_ENTRY)))
            .update_expression(
                "SET #status = :done, FinishedAt = :now, ValidRows = :rows, BadRows = :bad, \
                 AppliedByLastRun = :now_applied, AppliedBefore = :before",
            )
            .expression_attribute_names("#status", "Status")
            .expression_attribute_values(":done", s("done"))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":rows", n(&counts.rows.to_string()))
            .expression_attribute_values(":bad", n(&counts.bad_rows.to_string()))
            .expression_attribute_values(":now_applied", n(&counts.applied_now.to_string()))
            .expression_attribute_values(":before", n(&counts.applied_before.to_string()))
            .send()
            .await
            .map_err(|e| {
                StoreError::new("UpdateItem", &self.ledger_table, DisplayErrorContext(&e))
            })?;
        Ok(())
    }
}
