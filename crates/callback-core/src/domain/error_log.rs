//! One item of the error log (SPEC 6.1) and its encoding: redacted (the ids too: a card number
//! sent as an order id must not reach the log) and within DynamoDB's 400 KB (a too-large
//! `event` is kept as a prefix with its length and SHA-256).

use serde_json::Value;

use crate::domain::item::{DecodeError, Item, ItemBuilder, ItemReader};
use crate::domain::limits::{fit_item, fits_key, prefix, Shrink, MAX_ID_BYTES};
use crate::domain::redact::{redact_text, redact_value};

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
        let event = self.event.as_ref().map(redact_value);
        let order_id = self.order_id.as_deref().map(redact_text);
        let mut item = ItemBuilder::new()
            .unicode("id", &self.id)
            .unicode("function_name", &self.function_name)
            .unicode("error", redact_text(&self.error))
            .unicode("errorType", &self.error_type)
            // `orderId` is the key of the `orderId-index`: an id no key can hold (empty, over
            // 1024 bytes) is kept as `orderIdAsSent`, a prefix, outside the index.
            .unicode_opt(
                "orderId",
                order_id.clone().filter(|o| fits_key(o, MAX_ID_BYTES)),
            )
            .unicode_opt(
                "orderIdAsSent",
                order_id
                    .filter(|o| !fits_key(o, MAX_ID_BYTES))
                    .map(|o| prefix(&o, MAX_ID_BYTES).to_string()),
            )
            .unicode_opt("chargeId", self.charge_id.as_deref().map(redact_text))
            .json_opt("event", event.as_ref())
            .unicode("requestId", &self.request_id)
            .integer("status", self.status.into())
            .unicode("created_at", &self.created_at)
            .integer("ttl", self.ttl)
            .build();
        fit_item(
            &mut item,
            &[
                ("event", Shrink::Json),
                ("chargeId", Shrink::Text),
                ("error", Shrink::Text),
                ("requestId", Shrink::Text),
            ],
            0,
        );
        item
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::check_item;
    use serde_json::json;

    fn entry(event: Value) -> ErrorLogEntry {
        ErrorLogEntry {
            id: "e-1".into(),
            function_name: "walletcallback".into(),
            error: "body is 2097152 bytes, over the limit".into(),
            error_type: "BodyTooLarge".into(),
            order_id: Some("4111111111111111".into()),
            charge_id: None,
            event: Some(event),
            request_id: "r".into(),
            status: 413,
            created_at: "2026-11-21T00:00:00".into(),
            ttl: 1,
        }
    }

    #[test]
    fn a_2_mb_event_is_truncated_with_its_length_and_hash() {
        let body = format!("{{\"pad\": \"{}\"}}", "\u{1}".repeat(2 * 1024 * 1024));
        let e = entry(json!({"body": body}));
        let item = e.to_item();
        assert!(check_item(&item, "id", None).is_ok());
        let back = ErrorLogEntry::from_item(&item).unwrap();
        let event = back.event.unwrap();
        assert_eq!(event["truncated"], true);
        assert!(event["bytes"].as_u64().unwrap() > 2 * 1024 * 1024);
        assert_eq!(event["sha256"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn an_order_id_no_key_can_hold_stays_out_of_the_index() {
        for bad in ["".to_string(), "😀".repeat(1000)] {
            let mut e = entry(json!({}));
            e.order_id = Some(bad.clone());
            let item = e.to_item();
            assert!(!item.contains_key("orderId"));
            assert!(check_item(&item, "id", None).is_ok());
            if !bad.is_empty() {
                assert!(
                    matches!(&item["orderIdAsSent"], crate::domain::item::Attr::S(s) if s.len() <= 1024)
                );
            }
        }
    }

    #[test]
    fn ids_and_events_are_redacted() {
        let item = entry(json!({"cvv": "123", "note": "skey_live_x"})).to_item();
        let text = serde_json::to_string(&item).unwrap();
        assert!(!text.contains("4111111111111111"), "{text}");
        assert!(!text.contains("live_x"), "{text}");
        assert!(!text.contains("\\\"123"), "{text}");
    }
}
