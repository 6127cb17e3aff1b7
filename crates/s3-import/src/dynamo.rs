//! Batched DynamoDB reads and writes for imports:
//!
//! - [`read_batched`]: `BatchGetItem`, 100 keys per call, strongly consistent, only the
//!   attributes asked for; the `UnprocessedKeys` of each answer asked again with a growing
//!   pause. To learn which items exist before choosing how to write them.
//! - [`write_batched`]: `BatchWriteItem`, 25 requests per call, several calls in flight, the
//!   `UnprocessedItems` of each answer sent again with a growing pause. For writes that need no
//!   condition.
//! - [`write_conditional`]: `TransactWriteItems`, up to 100 writes per call, each with its own
//!   condition. `BatchWriteItem` takes no conditions, and one conditional `UpdateItem` per row is
//!   a call per row; a transaction takes 100 conditional writes in one call. When a condition
//!   fails DynamoDB cancels the whole call and says which write failed
//!   (`CancellationReasons`): that write is reported refused and the other writes are sent
//!   again, so a refused row costs one extra call for its chunk. Conflicts and throttling are
//!   retried. A transaction costs two write units per item, the price of the condition.
//!   Two writes to the same item may not share a transaction: the caller sends each key once
//!   per chunk ([`ConditionalChunk::contains`]).
//!
//! Both go through a small trait ([`BatchApi`]) so the retry logic is unit-tested with a twin
//! that leaves items unprocessed or cancels on purpose.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, WriteRequest};
use futures::stream::{self, StreamExt, TryStreamExt};

pub const BATCH_WRITE_MAX: usize = 25;
pub const BATCH_GET_MAX: usize = 100;
pub const TRANSACT_MAX: usize = 100;

/// An item's attributes (a key, or the attributes read).
pub type Item = HashMap<String, AttributeValue>;

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactOutcome {
    Committed,
    /// Cancelled: one reason code per write, in order (`None` = that write was fine).
    Cancelled(Vec<Option<String>>),
}

/// What the import needs of DynamoDB.
#[async_trait]
pub trait BatchApi: Send + Sync {
    /// One `BatchWriteItem` call; returns the unprocessed requests.
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>, String>;
    /// One `TransactWriteItems` call.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, String>;
    /// One strongly consistent `BatchGetItem` call for at most [`BATCH_GET_MAX`] keys, reading
    /// only `attributes`: the items found and the keys left unprocessed.
    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        attributes: &[&str],
    ) -> Result<(Vec<Item>, Vec<Item>), String>;
}

#[async_trait]
impl BatchApi for aws_sdk_dynamodb::Client {
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<Vec<WriteRequest>, String> {
        let out = self
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
        Ok(out
            .unprocessed_items
            .and_then(|mut m| m.remove(table))
            .unwrap_or_default())
    }

    async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        attributes: &[&str],
    ) -> Result<(Vec<Item>, Vec<Item>), String> {
        let mut request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true);
        if !attributes.is_empty() {
            let names: Vec<String> = (0..attributes.len()).map(|i| format!("#a{i}")).collect();
            request = request.projection_expression(names.join(", "));
            for (name, attribute) in names.iter().zip(attributes) {
                request = request.expression_attribute_names(name, *attribute);
            }
        }
        let request = request
            .build()
            .map_err(|e| format!("BatchGetItem request: {e}"))?;
        let out = self
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())?;
        let found = out
            .responses
            .and_then(|mut m| m.remove(table))
            .unwrap_or_default();
        let left = out
            .unprocessed_keys
            .and_then(|mut m| m.remove(table))
            .map(|k| k.keys)
            .unwrap_or_default();
        Ok((found, left))
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, String> {
        match self
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(TransactOutcome::Committed),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    let reasons = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().filter(|c| *c != "None").map(String::from))
                        .collect();
                    return Ok(TransactOutcome::Cancelled(reasons));
                }
                Err(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string())
            }
        }
    }
}

/// Retry settings.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Calls per batch/chunk before giving up.
    pub attempts: u32,
    pub first_pause: Duration,
    pub max_pause: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 10,
            first_pause: Duration::from_millis(50),
            max_pause: Duration::from_secs(2),
        }
    }
}

impl Retry {
    fn pause(&self, attempt: u32) -> Duration {
        (self.first_pause * 2u32.saturating_pow(attempt.min(16))).min(self.max_pause)
    }
}

/// A write that could not be done (after the retries): the import fails and is retried whole.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{operation} on {table} failed: {message}")]
pub struct WriteError {
    pub operation: &'static str,
    pub table: String,
    pub message: String,
}

/// Reads every key with strongly consistent `BatchGetItem` calls of at most [`BATCH_GET_MAX`]
/// keys, one after the other, asking again for unprocessed keys. Returns the items found (with
/// `attributes` only; absent keys are simply not in it) and the number of calls made.
pub async fn read_batched(
    api: &dyn BatchApi,
    table: &str,
    keys: Vec<Item>,
    attributes: &[&str],
    retry: Retry,
) -> Result<(Vec<Item>, u64), WriteError> {
    let mut found = Vec::with_capacity(keys.len());
    let mut calls = 0u64;
    for chunk in keys.chunks(BATCH_GET_MAX) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            calls += 1;
            let fail = |message: String| WriteError {
                operation: "BatchGetItem",
                table: table.into(),
                message,
            };
            match api.batch_get(table, pending.clone(), attributes).await {
                Ok((items, left)) => {
                    found.extend(items);
                    if left.is_empty() {
                        break;
                    }
                    if attempt + 1 >= retry.attempts {
                        return Err(fail(format!(
                            "{} key(s) still unprocessed after {attempt} retries",
                            left.len()
                        )));
                    }
                    pending = left;
                }
                Err(message) if attempt + 1 >= retry.attempts => return Err(fail(message)),
                Err(message) => tracing::warn!(table, %message, "BatchGetItem failed; retrying"),
            }
            tokio::time::sleep(retry.pause(attempt)).await;
            attempt += 1;
        }
    }
    Ok((found, calls))
}

/// Writes every request with `BatchWriteItem`, `in_flight` calls at a time, retrying
/// unprocessed items. Returns the number of calls made.
pub async fn write_batched(
    api: &dyn BatchApi,
    table: &str,
    requests: Vec<WriteRequest>,
    in_flight: usize,
    retry: Retry,
) -> Result<u64, WriteError> {
    let chunks: Vec<Vec<WriteRequest>> = requests
        .chunks(BATCH_WRITE_MAX)
        .map(|c| c.to_vec())
        .collect();
    let calls: Vec<u64> = stream::iter(chunks)
        .map(|chunk| write_one_batch(api, table, chunk, retry))
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    Ok(calls.into_iter().sum())
}

async fn write_one_batch(
    api: &dyn BatchApi,
    table: &str,
    mut pending: Vec<WriteRequest>,
    retry: Retry,
) -> Result<u64, WriteError> {
    let mut calls = 0u64;
    for attempt in 0..retry.attempts {
        calls += 1;
        match api.batch_write(table, pending.clone()).await {
            Ok(left) if left.is_empty() => return Ok(calls),
            Ok(left) => pending = left,
            Err(message) if attempt + 1 == retry.attempts => {
                return Err(WriteError {
                    operation: "BatchWriteItem",
                    table: table.into(),
                    message,
                })
            }
            Err(message) => tracing::warn!(table, %message, "BatchWriteItem failed; retrying"),
        }
        tokio::time::sleep(retry.pause(attempt)).await;
    }
    Err(WriteError {
        operation: "BatchWriteItem",
        table: table.into(),
        message: format!(
            "{} item(s) still unprocessed after {} calls",
            pending.len(),
            calls
        ),
    })
}

/// Up to [`TRANSACT_MAX`] conditional writes, each with the caller's tag (a line number).
pub struct ConditionalChunk<T> {
    writes: Vec<(T, String, TransactWriteItem)>,
}

impl<T> Default for ConditionalChunk<T> {
    fn default() -> Self {
        ConditionalChunk { writes: Vec::new() }
    }
}

impl<T> ConditionalChunk<T> {
    /// Adds a write for the item with key text `key` (any text unique per item).
    pub fn push(&mut self, tag: T, key: String, write: TransactWriteItem) {
        self.writes.push((tag, key, write));
    }
    pub fn contains(&self, key: &str) -> bool {
        self.writes.iter().any(|(_, k, _)| k == key)
    }
    pub fn len(&self) -> usize {
        self.writes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    pub fn is_full(&self) -> bool {
        self.writes.len() >= TRANSACT_MAX
    }
}

/// What became of a chunk.
#[derive(Debug)]
pub struct ConditionalResult<T> {
    pub written: Vec<T>,
    /// Writes whose condition failed, with the reason code (`ConditionalCheckFailed`).
    pub refused: Vec<(T, String)>,
    pub calls: u64,
}

/// Sends a chunk as transactions until every write is committed or refused.
pub async fn write_conditional<T: Send>(
    api: &dyn BatchApi,
    table: &str,
    chunk: ConditionalChunk<T>,
    retry: Retry,
) -> Result<ConditionalResult<T>, WriteError> {
    let mut pending = chunk.writes;
    let mut result = ConditionalResult {
        written: Vec::new(),
        refused: Vec::new(),
        calls: 0,
    };
    let mut failures = 0u32;
    while !pending.is_empty() {
        result.calls += 1;
        let items = pending.iter().map(|(_, _, w)| w.clone()).collect();
        match api.transact(items).await {
            Ok(TransactOutcome::Committed) => {
                result
                    .written
                    .extend(pending.into_iter().map(|(t, _, _)| t));
                return Ok(result);
            }
            Ok(TransactOutcome::Cancelled(reasons)) => {
                let mut refused_any = false;
                let mut keep = Vec::with_capacity(pending.len());
                for (i, write) in pending.into_iter().enumerate() {
                    match reasons.get(i).cloned().flatten() {
                        Some(code) if code == "ConditionalCheckFailed" => {
                            refused_any = true;
                            result.refused.push((write.0, code));
                        }
                        _ => keep.push(write),
                    }
                }
                pending = keep;
                if !refused_any {
                    // Conflict or throttling: the same writes again, after a pause.
                    failures += 1;
                    if failures >= retry.attempts {
                        return Err(WriteError {
                            operation: "TransactWriteItems",
                            table: table.into(),
                            message: format!("cancelled {failures} times: {reasons:?}"),
                        });
                    }
                    tokio::time::sleep(retry.pause(failures)).await;
                }
            }
            Err(message) => {
                failures += 1;
                if failures >= retry.attempts {
                    return Err(WriteError {
                        operation: "TransactWriteItems",
                        table: table.into(),
                        message,
                    });
                }
                tracing::warn!(table, %message, "TransactWriteItems failed; retrying");
                tokio::time::sleep(retry.pause(failures)).await;
            }
        }
    }
    Ok(result)
}

/// A DynamoDB number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A DynamoDB string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// Expression values from pairs.
pub fn values<const K: usize>(
    pairs: [(&str, AttributeValue); K],
) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::{PutRequest, Update};
    use std::sync::Mutex;

    /// Leaves the last item of each call unprocessed `leave` times; cancels writes whose key is refused.
    #[derive(Default)]
    struct Twin {
        leave: Mutex<u32>,
        written: Mutex<Vec<String>>,
        calls: Mutex<u32>,
        refuse: Vec<String>,
        conflicts: Mutex<u32>,
    }

    fn key_of_put(w: &WriteRequest) -> String {
        match w.put_request().unwrap().item().get("k").unwrap() {
            AttributeValue::S(s) => s.clone(),
            _ => unreachable!(),
        }
    }

    fn key_of_update(w: &TransactWriteItem) -> String {
        match w.update().unwrap().key().get("k").unwrap() {
            AttributeValue::S(s) => s.clone(),
            _ => unreachable!(),
        }
    }

    #[async_trait]
    impl BatchApi for Twin {
        async fn batch_write(
            &self,
            _t: &str,
            mut r: Vec<WriteRequest>,
        ) -> Result<Vec<WriteRequest>, String> {
            *self.calls.lock().unwrap() += 1;
            assert!(r.len() <= BATCH_WRITE_MAX);
            let mut leave = self.leave.lock().unwrap();
            let left = if *leave > 0 && !r.is_empty() {
                *leave -= 1;
                vec![r.pop().unwrap()]
            } else {
                vec![]
            };
            self.written
                .lock()
                .unwrap()
                .extend(r.iter().map(key_of_put));
            Ok(left)
        }
        async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, String> {
            *self.calls.lock().unwrap() += 1;
            assert!(items.len() <= TRANSACT_MAX);
            {
                let mut c = self.conflicts.lock().unwrap();
                if *c > 0 {
                    *c -= 1;
                    return Ok(TransactOutcome::Cancelled(
                        items
                            .iter()
                            .map(|_| Some("TransactionConflict".into()))
                            .collect(),
                    ));
                }
            }
            let reasons: Vec<Option<String>> = items
                .iter()
                .map(|w| {
                    self.refuse
                        .contains(&key_of_update(w))
                        .then(|| "ConditionalCheckFailed".to_string())
                })
                .collect();
            if reasons.iter().any(Option::is_some) {
                return Ok(TransactOutcome::Cancelled(reasons));
            }
            self.written
                .lock()
                .unwrap()
                .extend(items.iter().map(key_of_update));
            Ok(TransactOutcome::Committed)
        }
        async fn batch_get(
            &self,
            _t: &str,
            mut keys: Vec<Item>,
            attributes: &[&str],
        ) -> Result<(Vec<Item>, Vec<Item>), String> {
            *self.calls.lock().unwrap() += 1;
            assert!(keys.len() <= BATCH_GET_MAX);
            assert_eq!(attributes, ["k"]);
            let left = {
                let mut leave = self.leave.lock().unwrap();
                if *leave > 0 && !keys.is_empty() {
                    *leave -= 1;
                    keys.split_off(keys.len() / 2)
                } else {
                    vec![]
                }
            };
            let written = self.written.lock().unwrap();
            let found = keys
                .into_iter()
                .filter(|k| match k.get("k") {
                    Some(AttributeValue::S(v)) => written.contains(v),
                    _ => false,
                })
                .collect();
            Ok((found, left))
        }
    }

    fn put(k: &str) -> WriteRequest {
        WriteRequest::builder()
            .put_request(PutRequest::builder().item("k", s(k)).build().unwrap())
            .build()
    }

    fn update(k: &str) -> TransactWriteItem {
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name("t")
                    .key("k", s(k))
                    .update_expression("SET x = :x")
                    .expression_attribute_values(":x", n(1))
                    .build()
                    .unwrap(),
            )
            .build()
    }

    fn quick() -> Retry {
        Retry {
            attempts: 5,
            first_pause: Duration::from_millis(1),
            max_pause: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn unprocessed_items_are_sent_again_until_written() {
        let twin = Twin {
            leave: Mutex::new(3),
            ..Default::default()
        };
        let requests: Vec<_> = (0..60).map(|i| put(&i.to_string())).collect();
        let calls = write_batched(&twin, "t", requests, 4, quick())
            .await
            .unwrap();
        let mut written = twin.written.lock().unwrap().clone();
        written.sort();
        written.dedup();
        assert_eq!(written.len(), 60);
        assert_eq!(calls, 3 + 3, "three batches of at most 25, three retries");
    }

    #[tokio::test]
    async fn reads_in_calls_of_100_keys_asking_again_for_unprocessed_keys() {
        let twin = Twin {
            leave: Mutex::new(2),
            ..Default::default()
        };
        twin.written
            .lock()
            .unwrap()
            .extend((0..250).filter(|i| i % 3 == 0).map(|i| i.to_string()));
        let keys: Vec<Item> = (0..250)
            .map(|i| values([("k", s(i.to_string()))]))
            .collect();
        let (found, calls) = read_batched(&twin, "t", keys, &["k"], quick())
            .await
            .unwrap();
        assert_eq!(found.len(), (0..250).filter(|i| i % 3 == 0).count());
        assert_eq!(
            calls,
            3 + 2,
            "three calls of at most 100 keys, two for unprocessed keys"
        );
        let stuck = Twin {
            leave: Mutex::new(100),
            ..Default::default()
        };
        let keys: Vec<Item> = (0..10).map(|i| values([("k", s(i.to_string()))])).collect();
        let err = read_batched(&stuck, "t", keys, &["k"], quick())
            .await
            .unwrap_err();
        assert!(err.message.contains("unprocessed"), "{err}");
    }

    #[tokio::test]
    async fn gives_up_when_items_stay_unprocessed() {
        let twin = Twin {
            leave: Mutex::new(100),
            ..Default::default()
        };
        let requests: Vec<_> = (0..2).map(|i| put(&i.to_string())).collect();
        let err = write_batched(&twin, "t", requests, 1, quick())
            .await
            .unwrap_err();
        assert!(err.message.contains("unprocessed"));
    }

    #[tokio::test]
    async fn refused_writes_are_reported_the_rest_committed() {
        let twin = Twin {
            refuse: vec!["3".into(), "7".into()],
            conflicts: Mutex::new(1),
            ..Default::default()
        };
        let mut chunk = ConditionalChunk::default();
        for i in 0..10u64 {
            chunk.push(i, i.to_string(), update(&i.to_string()));
        }
        assert!(chunk.contains("4"));
        let r = write_conditional(&twin, "t", chunk, quick()).await.unwrap();
        let mut refused: Vec<u64> = r.refused.iter().map(|(t, _)| *t).collect();
        refused.sort();
        assert_eq!(refused, vec![3, 7]);
        assert_eq!(r.written.len(), 8);
        assert_eq!(
            r.calls, 3,
            "a conflict, a cancellation naming both refused writes, the commit"
        );
    }
}
