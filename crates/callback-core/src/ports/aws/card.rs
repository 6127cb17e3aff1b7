//! DynamoDB adapter of the card-path ports: notify records, card payment records (through
//! `chargeId-index`), the shop's order table, and the paid-order ledger. Every state change is
//! one conditional write done by DynamoDB, never read-then-write.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::dynamodb::{
    from_sdk, is_condition_failed, store_error, to_sdk, DynamoStore, SetExpression,
};
use crate::domain::card::{CardPayment, NotifyRecord};
use crate::domain::clock::isoformat;
use crate::domain::item::{Attr, Item};
use crate::domain::ledger::{
    epoch_text, ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState, PaidOrderStatus,
};
use crate::ports::error::StoreError;
use crate::ports::{CardStore, OrderStore, PaidOrderLedger};

/// Tries at a free `created_at` for one notify record (one microsecond apart).
const NOTIFY_KEY_ATTEMPTS: usize = 8;

/// The GSI of the card payment record table on `chargeId`.
pub const CHARGE_ID_INDEX: &str = "chargeId-index";

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

impl DynamoStore {
    async fn get(
        &self,
        operation_table: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(operation_table)
            .key(key, s(value))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", operation_table, &e))?;
        Ok(out.item().map(from_sdk))
    }

    /// `SET` of the claim's `attributes` (all but `orderId`; `created_at` only when absent), and
    /// `REMOVE` of what the claim does not carry, under `condition`. `None` when the write
    /// happened; when the condition failed, `Some` of the item as it stood (DynamoDB returns it
    /// with `ReturnValuesOnConditionCheckFailure=ALL_OLD`; read again if it did not).
    async fn ledger_write(
        &self,
        table: &str,
        claim: &PaidClaim,
        mut attributes: Item,
        now: DateTime<Utc>,
        condition: &str,
        extra: &[(&str, &str, AttributeValue)],
    ) -> Result<Option<Option<Item>>, StoreError> {
        attributes.insert("created_at".into(), Attr::S(isoformat(now)));
        let set = SetExpression::of(&attributes, &["orderId"], &["created_at"]);
        let mut expression = set.expression;
        let mut names = set.names;
        let removed: Vec<String> = claim
            .absent_attributes()
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let n = format!("#r{i}");
                names.insert(n.clone(), name.to_string());
                n
            })
            .collect();
        if !removed.is_empty() {
            expression = format!("{expression} REMOVE {}", removed.join(", "));
        }
        let mut request = self
            .client()
            .update_item()
            .table_name(table)
            .key("orderId", s(&claim.order_id))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(set.values))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#oid", "orderId");
        for (name, attribute, value) in extra {
            request = request
                .expression_attribute_names(format!("#{name}"), *attribute)
                .expression_attribute_values(format!(":{name}"), value.clone());
        }
        match request.send().await {
            Ok(_) => Ok(None),
            Err(e) if is_condition_failed(&e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        c.item().map(from_sdk)
                    }
                    _ => None,
                };
                match old {
                    Some(item) => Ok(Some(Some(item))),
                    None => Ok(Some(self.get(table, "orderId", &claim.order_id).await?)),
                }
            }
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }
}

#[async_trait]
impl CardStore for DynamoStore {
    async fn save_notify(&self, table: &str, record: &NotifyRecord) -> Result<(), StoreError> {
        // Never over another delivery: a taken (chargeId, created_at) moves one microsecond on.
        let mut record = record.clone();
        for _ in 0..NOTIFY_KEY_ATTEMPTS {
            let result = self
                .client()
                .put_item()
                .table_name(table)
                .set_item(Some(to_sdk(&record.to_item())))
                .condition_expression("attribute_not_exists(chargeId)")
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failed(&e) => {
                    record = record.one_microsecond_later().ok_or_else(|| {
                        StoreError::new("PutItem", table, "created_at is not a timestamp")
                    })?;
                }
                Err(e) => return Err(store_error("PutItem", table, &e)),
            }
        }
        Err(StoreError::new(
            "PutItem",
            table,
            "no free created_at for this notify record",
        ))
    }

    async fn card_payment_by_charge(
        &self,
        table: &str,
        charge_id: &str,
    ) -> Result<Option<CardPayment>, StoreError> {
        let out = self
            .client()
            .query()
            .table_name(table)
            .index_name(CHARGE_ID_INDEX)
            .key_condition_expression("#c = :c")
            .expression_attribute_names("#c", "chargeId")
            .expression_attribute_values(":c", s(charge_id))
            .send()
            .await
            .map_err(|e| store_error("Query", table, &e))?;
        let items = out.items();
        if items.len() > 1 {
            tracing::warn!(
                charge_id,
                records = items.len(),
                "several card payment records for one charge; using the first"
            );
        }
        let Some(found) = items.first().map(from_sdk) else {
            return Ok(None);
        };
        // A GSI may project only keys: read the record itself when the index copy lacks the order.
        let item = if found.contains_key("orderId") {
            found
        } else {
            let token = match found.get("token") {
                Some(Attr::S(t)) => t.clone(),
                _ => return Err(StoreError::new("Query", table, "index item has no token")),
            };
            match self.get(table, "token", &token).await? {
                Some(i) => i,
                None => return Ok(None),
            }
        };
        CardPayment::from_item(&item)
            .map(Some)
            .map_err(|e| StoreError::new("Query", table, e))
    }

    async fn set_checksum_verified(
        &self,
        table: &str,
        token: &str,
        verified: bool,
    ) -> Result<(), StoreError> {
        // `false` only where no notify verified it: a forged notify must not downgrade the flag.
        let condition = if verified {
            "attribute_exists(#t)"
        } else {
            "attribute_exists(#t) AND (attribute_not_exists(#v) OR #v <> :true)"
        };
        let mut request = self
            .client()
            .update_item()
            .table_name(table)
            .key("token", s(token))
            .update_expression("SET #v = :v")
            .condition_expression(condition)
            .expression_attribute_names("#v", "checksumVerified")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":v", AttributeValue::Bool(verified));
        if !verified {
            request = request.expression_attribute_values(":true", AttributeValue::Bool(true));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            // Verified by an earlier notify (kept), or deleted since the query.
            Err(e) if is_condition_failed(&e) => {
                tracing::info!(
                    token,
                    verified,
                    "checksumVerified left as it was (verified before, or the record is gone)"
                );
                Ok(())
            }
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }
}

#[async_trait]
impl OrderStore for DynamoStore {
    async fn order_item(&self, table: &str, order_id: &str) -> Result<Option<Item>, StoreError> {
        self.get(table, "orderId", order_id).await
    }

    async fn mark_order_paid(
        &self,
        table: &str,
        update: &OrderPaidUpdate,
    ) -> Result<OrderMark, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(table)
            .key("orderId", s(&update.order_id))
            .update_expression("SET #ps = :ps, #pa = :pa, #pt = :pt, #pi = :pi")
            // Never over a paid order: the Python stack paid orders without a ledger entry.
            .condition_expression(
                "attribute_exists(#oid) AND (attribute_not_exists(#ps) OR #ps <> :ps)",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#oid", "orderId")
            .expression_attribute_names("#ps", "paymentStatus")
            .expression_attribute_names("#pa", "paidAt")
            .expression_attribute_names("#pt", "paymentType")
            .expression_attribute_names("#pi", "paymentId")
            .expression_attribute_values(":ps", s(&update.payment_status))
            .expression_attribute_values(":pa", s(&update.paid_at))
            .expression_attribute_values(":pt", s(&update.payment_type))
            .expression_attribute_values(":pi", s(&update.payment_id))
            .send()
            .await;
        let old = match result {
            Ok(_) => return Ok(OrderMark::Marked),
            Err(e) if is_condition_failed(&e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) if c.item().is_some() => {
                    c.item().map(from_sdk)
                }
                _ => self.get(table, "orderId", &update.order_id).await?,
            },
            Err(e) => return Err(store_error("UpdateItem", table, &e)),
        };
        Ok(match old {
            None => OrderMark::Missing,
            Some(item) => OrderMark::AlreadyPaid {
                payment_id: match item.get("paymentId") {
                    Some(Attr::S(p)) => Some(p.clone()),
                    Some(Attr::N(p)) => Some(p.clone()),
                    _ => None,
                },
            },
        })
    }
}

#[async_trait]
impl PaidOrderLedger for DynamoStore {
    async fn paid_state(
        &self,
        table: &str,
        order_id: &str,
    ) -> Result<Option<PaidOrderState>, StoreError> {
        self.get(table, "orderId", order_id)
            .await?
            .map(|i| {
                PaidOrderState::from_item(&i).map_err(|e| StoreError::new("GetItem", table, e))
            })
            .transpose()
    }

    async fn claim_paid(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<ClaimResult, StoreError> {
        let held = self
            .ledger_write(
                table,
                claim,
                claim.attributes(PaidOrderStatus::Paid, now),
                now,
                "attribute_not_exists(#oid) OR #st <> :st \
                 OR (#ed = :ed AND #pid = :pid AND #eca < :eca)",
                &[
                    ("st", "status", s(PaidOrderStatus::Paid.as_str())),
                    ("ed", "effectsDone", AttributeValue::Bool(false)),
                    ("pid", "paymentId", s(&claim.payment_id)),
                    (
                        "eca",
                        "effectsClaimedAt",
                        AttributeValue::N(epoch_text(stale_before)),
                    ),
                ],
            )
            .await?;
        match held {
            None => Ok(ClaimResult::Won),
            Some(old) => Ok(ClaimResult::Held(
                old.map(|i| PaidOrderState::from_item(&i))
                    .transpose()
                    .map_err(|e| StoreError::new("UpdateItem", table, e))?,
            )),
        }
    }

    async fn finish_paid(
        &self,
        table: &str,
        order_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client()
            .update_item()
            .table_name(table)
            .key("orderId", s(order_id))
            .update_expression("SET #ed = :ed, #u = :u")
            // Fenced: a run whose claim was taken over after the lease does not finish.
            .condition_expression("#ct = :ct")
            .expression_attribute_names("#ct", "claimToken")
            .expression_attribute_names("#ed", "effectsDone")
            .expression_attribute_names("#u", "updated_at")
            .expression_attribute_values(":ct", s(token))
            .expression_attribute_values(":ed", AttributeValue::Bool(true))
            .expression_attribute_values(":u", s(&isoformat(now)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }

    async fn mark_failed(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let held = self
            .ledger_write(
                table,
                claim,
                claim.attributes(PaidOrderStatus::Failed, now),
                now,
                "attribute_not_exists(#oid) OR #st = :st",
                &[("st", "status", s(PaidOrderStatus::Pending.as_str()))],
            )
            .await?;
        Ok(held.is_none())
    }

    async fn note_pending(
        &self,
        table: &str,
        claim: &PaidClaim,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = claim.attributes(PaidOrderStatus::Pending, now);
        item.insert("created_at".into(), Attr::S(isoformat(now)));
        let result = self
            .client()
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk(&item)))
            .condition_expression("attribute_not_exists(#oid)")
            .expression_attribute_names("#oid", "orderId")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(store_error("PutItem", table, &e)),
        }
    }
}
