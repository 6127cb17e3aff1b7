//! [`DunningLedger`] on DynamoDB: conditional writes only (never read-then-write for a decision).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use callback_core::ports::aws::dynamodb::{
    from_sdk, is_condition_failed, store_error, to_sdk, DynamoStore, SetExpression,
};
use callback_core::{Item, StoreError};

use crate::domain::dunning::{DunningRecord, Held, ATTEMPT, CHARGE_ID};
use crate::ports::DunningLedger;

#[async_trait]
impl DunningLedger for DynamoStore {
    async fn insert_dunning(
        &self,
        table: &str,
        record: &DunningRecord,
    ) -> Result<bool, StoreError> {
        let result = self
            .client()
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk(&record.to_item())))
            .condition_expression("attribute_not_exists(chargeId)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(store_error("PutItem", table, &e)),
        }
    }

    async fn load_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
    ) -> Result<Option<DunningRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(table)
            .key(CHARGE_ID, AttributeValue::S(charge_id.to_string()))
            .key(ATTEMPT, AttributeValue::N(attempt.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", table, &e))?;
        out.item()
            .map(|item| {
                DunningRecord::from_item(&from_sdk(item))
                    .map_err(|e| StoreError::new("GetItem", table, e))
            })
            .transpose()
    }

    async fn update_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
        held: &Held,
        changes: &Item,
    ) -> Result<bool, StoreError> {
        let set = SetExpression::of(changes, &[], &[]);
        let mut condition = "#held_token = :held_token".to_string();
        let mut request = self
            .client()
            .update_item()
            .table_name(table)
            .key(CHARGE_ID, AttributeValue::S(charge_id.to_string()))
            .key(ATTEMPT, AttributeValue::N(attempt.to_string()))
            .update_expression(set.expression)
            .set_expression_attribute_names(Some(set.names))
            .set_expression_attribute_values(Some(set.values))
            .expression_attribute_names("#held_token", "claimToken")
            .expression_attribute_values(":held_token", AttributeValue::S(held.token.clone()));
        if let Some(state) = held.state {
            condition.push_str(" AND #held_state = :held_state");
            request = request
                .expression_attribute_names("#held_state", "state")
                .expression_attribute_values(":held_state", AttributeValue::S(state.name().into()));
        }
        match request.condition_expression(condition).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", table, &e)),
        }
    }
}
