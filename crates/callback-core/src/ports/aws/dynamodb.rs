//! DynamoDB adapter: every store port, with the conditions done by DynamoDB itself
//! (conditional writes, never read-then-write).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use crate::domain::error_log::ErrorLogEntry;
use crate::domain::inbox::{InboxEntry, InboxOutcome, SORT_KEY};
use crate::domain::item::{Attr, Item};
use crate::domain::record::CallbackRecord;
use crate::ports::error::StoreError;
use crate::ports::{AlertGate, CallbackRecordStore, ErrorLogStore, InboxStore, SaveOutcome};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

/// The callback record's string set of the verified `<gateway>:<webhook-id>`s it has taken
/// (SPEC 4.5 replays). PynamoDB models that do not declare it ignore it.
pub const WEBHOOK_IDS: &str = "webhookIds";

/// All tables, through one client.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
}

impl DynamoStore {
    pub fn new(client: Client) -> Self {
        DynamoStore { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Our item to the SDK's.
pub fn to_sdk(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(k, v)| (k.clone(), attr_to_sdk(v)))
        .collect()
}

fn attr_to_sdk(attr: &Attr) -> AttributeValue {
    match attr {
        Attr::S(s) => AttributeValue::S(s.clone()),
        Attr::N(n) => AttributeValue::N(n.clone()),
        Attr::Bool(b) => AttributeValue::Bool(*b),
        Attr::Null(b) => AttributeValue::Null(*b),
        Attr::M(m) => {
            AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), attr_to_sdk(v))).collect())
        }
        Attr::L(l) => AttributeValue::L(l.iter().map(attr_to_sdk).collect()),
    }
}

/// The SDK's item to ours; types we never write (sets, binary) are dropped.
pub fn from_sdk(item: &HashMap<String, AttributeValue>) -> Item {
    item.iter()
        .filter_map(|(k, v)| attr_from_sdk(v).map(|a| (k.clone(), a)))
        .collect()
}

fn attr_from_sdk(value: &AttributeValue) -> Option<Attr> {
    Some(match value {
        AttributeValue::S(s) => Attr::S(s.clone()),
        AttributeValue::N(n) => Attr::N(n.clone()),
        AttributeValue::Bool(b) => Attr::Bool(*b),
        AttributeValue::Null(b) => Attr::Null(*b),
        AttributeValue::M(m) => Attr::M(
            m.iter()
                .filter_map(|(k, v)| attr_from_sdk(v).map(|a| (k.clone(), a)))
                .collect(),
        ),
        AttributeValue::L(l) => Attr::L(l.iter().filter_map(attr_from_sdk).collect()),
        _ => return None,
    })
}

/// Whether an SDK error is a failed condition (the expected "someone else got there first").
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// A store error carrying the full SDK error chain (for logs, never for responses).
pub fn store_error<E, R>(operation: &'static str, table: &str, err: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::new(operation, table, DisplayErrorContext(err))
}

/// `SET a = :a, b = :b, ...` for every attribute but the keys, with names and values.
pub struct SetExpression {
    pub expression: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl SetExpression {
    /// Every attribute of `item` except `keys`; `keep_first` attributes are only set when absent.
    pub fn of(item: &Item, keys: &[&str], keep_first: &[&str]) -> Self {
        let mut parts = Vec::new();
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        for (i, (name, value)) in item
            .iter()
            .filter(|(n, _)| !keys.contains(&n.as_str()))
            .enumerate()
        {
            let (n, v) = (format!("#a{i}"), format!(":a{i}"));
            if keep_first.contains(&name.as_str()) {
                parts.push(format!("{n} = if_not_exists({n}, {v})"));
            } else {
                parts.push(format!("{n} = {v}"));
            }
            names.insert(n, name.clone());
            values.insert(v, attr_to_sdk(value));
        }
        SetExpression {
            expression: format!("SET {}", parts.join(", ")),
            names,
            values,
        }
    }
}

fn key_of(item: &Item, keys: &[&str]) -> HashMap<String, AttributeValue> {
    keys.iter()
        .filter_map(|k| item.get(*k).map(|v| (k.to_string(), attr_to_sdk(v))))
        .collect()
}

#[async_trait]
impl CallbackRecordStore for DynamoStore {
    async fn save_callback(
        &self,
        table: &str,
        record: &CallbackRecord,
        webhook_id: Option<&str>,
    ) -> Result<SaveOutcome, StoreError> {
        let item = record.to_item();
        let set = SetExpression::of(&item, &["orderId"], &["created_at"]);
        let (mut expression, mut names, mut values) = (set.expression, set.names, set.values);
        let mut conditions = Vec::new();
        if !record.success {
            // A failure may not overwrite a stored success.
            conditions.push("(attribute_not_exists(#ok) OR #ok <> :true)");
            names.insert("#ok".into(), "success".into());
            values.insert(":true".into(), AttributeValue::Bool(true));
        }
        if let Some(id) = webhook_id {
            // The replay check rides on this write: a verified id already on the record fails
            // the condition; else the write adds it.
            expression.push_str(" ADD #wids :wids");
            conditions.push("NOT contains(#wids, :wid)");
            names.insert("#wids".into(), WEBHOOK_IDS.into());
            values.insert(":wids".into(), AttributeValue::Ss(vec![id.to_string()]));
            values.insert(":wid".into(), AttributeValue::S(id.to_string()));
        }
        let mut request = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key_of(&item, &["orderId"])))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values));
        if !conditions.is_empty() {
            request = request
                .condition_expression(conditions.join(" AND "))
                // Which condition failed is read from the item as it was: no second request.
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
        }
        match request.send().await {
            Ok(_) => Ok(SaveOutcome::Written),
            Err(e) if is_condition_failed(&e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item(),
                    _ => None,
                };
                let seen = old
                    .and_then(|o| o.get(WEBHOOK_IDS))
                    .and_then(|ids| ids.as_ss().ok())
                    .zip(webhook_id)
                    .is_some_and(|(ids, id)| ids.iter().any(|i| i == id));
                Ok(if seen {
                    SaveOutcome::AlreadyProcessed
                } else {
                    SaveOutcome::KeptEarlierSuccess
                })
            }
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }
}

#[async_trait]
impl InboxStore for DynamoStore {
    async fn append(&self, table: &str, entry: &InboxEntry) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk(&entry.to_item())))
            .condition_expression("attribute_not_exists(orderId)")
            .send()
            .await;
        match result {
            // The same key is the same delivery (a Lambda retry): already kept.
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("PutItem", table, &e)),
        }
    }

    async fn set_outcome(
        &self,
        table: &str,
        entry: &InboxEntry,
        outcome: &InboxOutcome,
    ) -> Result<(), StoreError> {
        let mut finished = entry.clone();
        finished.outcome = outcome.clone();
        let item = finished.to_item();
        let mut only_outcome = Item::new();
        for name in ["outcome", "status", "error", "signatureVerified"] {
            if let Some(v) = item.get(name) {
                only_outcome.insert(name.to_string(), v.clone());
            }
        }
        let set = SetExpression::of(&only_outcome, &[], &[]);
        self.client
            .update_item()
            .table_name(table)
            .set_key(Some(key_of(&item, &["orderId", SORT_KEY])))
            .update_expression(set.expression)
            .set_expression_attribute_names(Some(set.names))
            .set_expression_attribute_values(Some(set.values))
            .condition_expression("attribute_exists(orderId)")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("UpdateItem", table, &e))
    }
}

#[async_trait]
impl ErrorLogStore for DynamoStore {
    async fn put_error(&self, table: &str, entry: &ErrorLogEntry) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk(&entry.to_item())))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("PutItem", table, &e))
    }
}

#[async_trait]
impl AlertGate for DynamoStore {
    async fn try_open(
        &self,
        table: &str,
        key: &str,
        now: DateTime<Utc>,
        cooldown: Duration,
    ) -> Result<bool, StoreError> {
        let cutoff = now.timestamp() - cooldown.as_secs() as i64;
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("alertKey", AttributeValue::S(key.to_string()))
            .update_expression("SET sentAt = :now, #ttl = :ttl")
            .condition_expression("attribute_not_exists(alertKey) OR sentAt <= :cutoff")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .expression_attribute_values(":cutoff", AttributeValue::N(cutoff.to_string()))
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((now.timestamp() + 2 * cooldown.as_secs() as i64).to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }

    async fn release(
        &self,
        table: &str,
        key: &str,
        taken_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Only the take of `taken_at`: one taken since by another container stays.
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("alertKey", AttributeValue::S(key.to_string()))
            .update_expression("SET sentAt = :zero")
            .condition_expression("sentAt = :taken")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(
                ":taken",
                AttributeValue::N(taken_at.timestamp().to_string()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_expression_skips_keys_and_keeps_created_at() {
        let item: Item = serde_json::from_value(json!({
            "orderId": {"S": "1"}, "success": {"BOOL": true}, "created_at": {"S": "t"}
        }))
        .unwrap();
        let set = SetExpression::of(&item, &["orderId"], &["created_at"]);
        assert_eq!(set.names.len(), 2);
        assert!(!set.names.values().any(|n| n == "orderId"));
        let created = set
            .names
            .iter()
            .find(|(_, n)| *n == "created_at")
            .unwrap()
            .0;
        assert!(set
            .expression
            .contains(&format!("{created} = if_not_exists({created}, ")));
    }

    #[test]
    fn attributes_convert_both_ways() {
        let item: Item = serde_json::from_value(json!({
            "a": {"S": "x"}, "b": {"N": "1.5"}, "c": {"BOOL": false},
            "d": {"M": {"e": {"L": [{"S": "y"}]}}}
        }))
        .unwrap();
        assert_eq!(from_sdk(&to_sdk(&item)), item);
    }
}
