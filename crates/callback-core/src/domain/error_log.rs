//! One item of the error log (SPEC 6.1) and its encoding.

use serde_json::Value;

use crate::domain::item::{DecodeError, Item, ItemBuilder, ItemReader};

/// One item of `payment3-callback-error-log-<branch>`.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorLogEntry {
    pub id: String,
    pub function_name: String,
    pub error: String,
    pub error_type: String,
    pub order_id: Option<String>,
    pub charge_id: Option<String>,
    /// The event, redacted.
    pub event: Option<Value>,
    pub request_id: String,
    pub status: u16,
    pub created_at: String,
    pub ttl: i64,
}

impl ErrorLogEntry {
    pub fn to_item(&self) -> Item {
        ItemBuilder::new()
            .unicode("id", &self.id)
            .unicode("function_name", &self.function_name)
            .unicode("error", &self.error)
            .unicode("errorType", &self.error_type)
            .unicode_opt("orderId", self.order_id.clone())
            .unicode_opt("chargeId", self.charge_id.clone())
            .json_opt("event", self.event.as_ref())
            .unicode("requestId", &self.request_id)
            .integer("status", self.status.into())
            .unicode("created_at", &self.created_at)
            .integer("ttl", self.ttl)
            .build()
    }

    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        Ok(ErrorLogEntry {
            id: r.unicode("id")?.into(),
            function_name: r.unicode("function_name")?.into(),
            error: r.unicode("error")?.into(),
            error_type: r.unicode("errorType")?.into(),
            order_id: r.unicode_opt("orderId")?.map(String::from),
            charge_id: r.unicode_opt("chargeId")?.map(String::from),
            event: r.json_opt("event")?,
            request_id: r.unicode_opt("requestId")?.unwrap_or_default().into(),
            status: r
                .number_opt("status")?
                .and_then(|n| n.as_u64())
                .unwrap_or(0) as u16,
            created_at: r.unicode("created_at")?.into(),
            ttl: r.number_opt("ttl")?.and_then(|n| n.as_i64()).unwrap_or(0),
        })
    }
}
