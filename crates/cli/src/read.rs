//! The reads behind `trace` and `replay`: key lookups and paged queries only, never a scan.
//! Items are decoded by callback-core's own decoders (`InboxEntry::from_item`, ...), so the tool
//! reads exactly what the functions write.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use callback_core::domain::card::{CardPayment, NotifyRecord};
use callback_core::domain::error_log::ErrorLogEntry;
use callback_core::domain::record::CallbackRecord;
use callback_core::ports::aws::dynamodb::from_sdk;
use callback_core::ports::CardStore;
use callback_core::{InboxEntry, Item};

use crate::context::Context;
use crate::error::CliError;

/// The error log's index on `orderId` (template.yaml `CallbackErrorLogTable`).
pub const ERROR_LOG_ORDER_INDEX: &str = "orderId-index";

/// One inbox entry as stored (with `signatureVerified`, `replayOf` where written).
#[derive(Clone, Debug)]
pub struct StoredDelivery {
    pub entry: InboxEntry,
}

/// What the error log could tell.
#[derive(Clone, Debug)]
pub enum ErrorLogLookup {
    Found(Vec<ErrorLogEntry>),
    /// The table has no `orderId-index` (a table created by the Python stack): not searched.
    NoIndex,
}

impl Context {
    /// Every item with this hash key, all pages, oldest first (the range key is time-ordered).
    async fn query_all(
        &self,
        table: &str,
        index: Option<&str>,
        hash_name: &str,
        hash_value: &str,
    ) -> Result<Vec<Item>, CliError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .dynamodb
                .query()
                .table_name(table)
                .set_index_name(index.map(String::from))
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", hash_name)
                .expression_attribute_values(":v", AttributeValue::S(hash_value.into()))
                // A GSI cannot be read consistently; the tables can.
                .consistent_read(index.is_none())
                .set_limit(self.page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| CliError::from_sdk("Query", table, &e))?;
            items.extend(page.items().iter().map(from_sdk));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    async fn get_item(
        &self,
        table: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<Item>, CliError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| CliError::from_sdk("GetItem", table, &e))?;
        Ok(out.item().map(from_sdk))
    }

    /// The inbox entries filed under `key`: an order id, or a charge id (notify files its
    /// deliveries under the charge, KBank names no order).
    pub async fn deliveries(&self, key: &str) -> Result<Vec<StoredDelivery>, CliError> {
        let table = &self.settings.tables.callback_inbox;
        self.query_all(table, None, "orderId", key)
            .await?
            .into_iter()
            .map(|item| {
                let entry = InboxEntry::from_item(&item).map_err(|e| undecodable(table, e))?;
                Ok(StoredDelivery { entry })
            })
            .collect()
    }

    /// The wallet/bank-app record and the Amex record of an order.
    pub async fn callback_records(
        &self,
        order_id: &str,
    ) -> Result<Vec<(&'static str, CallbackRecord)>, CliError> {
        let t = &self.settings.tables;
        let mut found = Vec::new();
        for (which, table) in [
            ("wallet/bank app", &t.wallet_callback_record),
            ("Amex", &t.amex_callback_record),
        ] {
            if let Some(item) = self.get_item(table, "orderId", order_id).await? {
                found.push((
                    which,
                    CallbackRecord::from_item(&item).map_err(|e| undecodable(table, e))?,
                ));
            }
        }
        Ok(found)
    }

    pub async fn notify_records(&self, charge_id: &str) -> Result<Vec<NotifyRecord>, CliError> {
        let table = &self.settings.tables.credit_card_notify;
        self.query_all(table, None, "chargeId", charge_id)
            .await?
            .iter()
            .map(|i| NotifyRecord::from_item(i).map_err(|e| undecodable(table, e)))
            .collect()
    }

    /// The card payment record of a charge, through the `chargeId-index` (the functions' own adapter).
    pub async fn card_payment(&self, charge_id: &str) -> Result<Option<CardPayment>, CliError> {
        let table = &self.settings.tables.card_payment_record;
        self.store
            .card_payment_by_charge(table, charge_id)
            .await
            .map_err(|e| CliError::Aws {
                operation: e.operation,
                resource: e.table,
                message: e.message,
            })
    }

    /// The ledger item (`payment3-paid-order-<branch>`), as stored.
    pub async fn ledger_item(&self, order_id: &str) -> Result<Option<Item>, CliError> {
        self.get_item(&self.settings.tables.paid_order, "orderId", order_id)
            .await
    }

    /// The shop's order item, as stored.
    pub async fn order_item(&self, order_id: &str) -> Result<Option<Item>, CliError> {
        self.get_item(&self.settings.tables.order, "orderId", order_id)
            .await
    }

    /// The error-log entries of an order, through its `orderId-index`.
    pub async fn errors_of_order(&self, order_id: &str) -> Result<ErrorLogLookup, CliError> {
        let table = &self.settings.tables.callback_error_log;
        match self
            .query_all(table, Some(ERROR_LOG_ORDER_INDEX), "orderId", order_id)
            .await
        {
            Ok(items) => Ok(ErrorLogLookup::Found(
                items
                    .iter()
                    .map(|i| ErrorLogEntry::from_item(i).map_err(|e| undecodable(table, e)))
                    .collect::<Result<_, _>>()?,
            )),
            // DynamoDB: ValidationException "The table does not have the specified index".
            Err(CliError::Aws { message, .. }) if message.contains("index") => {
                Ok(ErrorLogLookup::NoIndex)
            }
            Err(e) => Err(e),
        }
    }
}

fn undecodable(table: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Aws {
        operation: "decode",
        resource: table.to_string(),
        message: format!("an item does not decode: {e}"),
    }
}
