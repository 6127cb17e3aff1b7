//! The inbox (SPEC 4.1 step 3): every delivery, duplicates and rejects included, with its raw
//! body, headers minus secrets, source IP, function and outcome. Nothing a gateway sent is lost.
//! Key: hash `orderId`, range `receivedAt#requestId`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::clock::isoformat;
use crate::domain::delivery::Delivery;
use crate::domain::item::{DecodeError, Item, ItemBuilder, ItemReader};
use crate::domain::redact::redact_text;

/// The `orderId` of a delivery whose body names none.
pub const UNKNOWN_ORDER: &str = "UNKNOWN";
/// The range key attribute.
pub const SORT_KEY: &str = "receivedAt#requestId";

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboxOutcome {
    /// Stored on arrival; replaced when the handler finishes.
    Received,
    /// The record was written (a `success: false`, nothing to dispatch).
    Recorded,
    /// The record was written and process-paid was invoked.
    Dispatched,
    /// A `success: false` arrived after a success; the success was kept.
    KeptEarlierSuccess,
    /// Refused (bad input): the gateway got a 4xx.
    Rejected { status: u16, error: String },
    /// Failed inside (AWS down): the gateway got a 5xx and will retry.
    Failed { status: u16, error: String },
}

impl InboxOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            InboxOutcome::Received => "received",
            InboxOutcome::Recorded => "recorded",
            InboxOutcome::Dispatched => "dispatched",
            InboxOutcome::KeptEarlierSuccess => "kept-earlier-success",
            InboxOutcome::Rejected { .. } => "rejected",
            InboxOutcome::Failed { .. } => "failed",
        }
    }

    /// The HTTP status answered, when the delivery is finished.
    pub fn status(&self) -> Option<u16> {
        match self {
            InboxOutcome::Received => None,
            InboxOutcome::Recorded
            | InboxOutcome::Dispatched
            | InboxOutcome::KeptEarlierSuccess => Some(200),
            InboxOutcome::Rejected { status, .. } | InboxOutcome::Failed { status, .. } => {
                Some(*status)
            }
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            InboxOutcome::Rejected { error, .. } | InboxOutcome::Failed { error, .. } => {
                Some(error)
            }
            _ => None,
        }
    }
}

/// One delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxEntry {
    pub order_id: String,
    pub received_at: String,
    pub request_id: String,
    /// `walletcallback`, `notify`, ...
    pub function: String,
    /// The body as received (card numbers masked); base64 when it was not text.
    pub body: String,
    /// `text`, `json` (a parsed object from a direct invoke) or `base64`.
    pub body_encoding: String,
    pub headers: BTreeMap<String, String>,
    pub source_ip: Option<String>,
    pub outcome: InboxOutcome,
    /// Epoch seconds after which DynamoDB may delete the entry.
    pub ttl: i64,
    /// Whether the callback's signature (SPEC 4.5) was verified; `None` where nothing is signed.
    pub signature_verified: Option<bool>,
    /// A replay's original entry (`receivedAt#requestId`): a replay is a new entry, never an
    /// overwrite of the original.
    pub replay_of: Option<String>,
    /// Who ran the replay.
    pub replay_operator: Option<String>,
}

impl InboxEntry {
    /// The entry of a delivery on arrival; `order_id` is whatever the body names, if anything.
    pub fn received(
        delivery: &Delivery,
        function: &str,
        order_id: Option<&str>,
        ttl_seconds: u64,
    ) -> Self {
        let (body, encoding) = delivery.body_text();
        InboxEntry {
            order_id: order_id
                .filter(|o| !o.is_empty())
                .unwrap_or(UNKNOWN_ORDER)
                .to_string(),
            received_at: isoformat(delivery.received_at),
            request_id: delivery.request_id.clone(),
            function: function.to_string(),
            body: redact_text(&body),
            body_encoding: encoding.to_string(),
            headers: delivery.headers.clone(),
            source_ip: delivery.source_ip.clone(),
            outcome: InboxOutcome::Received,
            ttl: delivery.received_at.timestamp() + ttl_seconds as i64,
            signature_verified: None,
            replay_of: delivery.replay_of.clone(),
            replay_operator: delivery.replay_operator.clone(),
        }
    }

    pub fn sort_key(&self) -> String {
        format!("{}#{}", self.received_at, self.request_id)
    }

    pub fn to_item(&self) -> Item {
        let headers = serde_json::to_value(&self.headers).unwrap_or(Value::Null);
        let mut b = ItemBuilder::new()
            .unicode("orderId", &self.order_id)
            .unicode(SORT_KEY, self.sort_key())
            .unicode("receivedAt", &self.received_at)
            .unicode("requestId", &self.request_id)
            .unicode("function", &self.function)
            .unicode("body", &self.body)
            .unicode("bodyEncoding", &self.body_encoding)
            .json_opt("headers", Some(&headers))
            .unicode_opt("sourceIp", self.source_ip.clone())
            .unicode("outcome", self.outcome.name())
            .unicode_opt("error", self.outcome.error())
            .integer("ttl", self.ttl)
            .unicode_opt("replayOf", self.replay_of.clone())
            .unicode_opt("replayOperator", self.replay_operator.clone());
        if let Some(verified) = self.signature_verified {
            b = b.boolean("signatureVerified", verified);
        }
        if let Some(status) = self.outcome.status() {
            b = b.integer("status", status.into());
        }
        b.build()
    }

    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        let status = r
            .number_opt("status")?
            .and_then(|n| n.as_u64())
            .unwrap_or(0) as u16;
        let error = r.unicode_opt("error")?.unwrap_or_default().to_string();
        let outcome = match r.unicode("outcome")? {
            "received" => InboxOutcome::Received,
            "recorded" => InboxOutcome::Recorded,
            "dispatched" => InboxOutcome::Dispatched,
            "kept-earlier-success" => InboxOutcome::KeptEarlierSuccess,
            "rejected" => InboxOutcome::Rejected { status, error },
            _ => InboxOutcome::Failed { status, error },
        };
        let headers = r
            .json_opt("headers")?
            .and_then(|h| serde_json::from_value(h).ok())
            .unwrap_or_default();
        Ok(InboxEntry {
            order_id: r.unicode("orderId")?.to_string(),
            received_at: r.unicode("receivedAt")?.to_string(),
            request_id: r.unicode("requestId")?.to_string(),
            function: r.unicode("function")?.to_string(),
            body: r.unicode("body")?.to_string(),
            body_encoding: r.unicode("bodyEncoding")?.to_string(),
            headers,
            source_ip: r.unicode_opt("sourceIp")?.map(String::from),
            outcome,
            ttl: r
                .number_opt("ttl")?
                .and_then(|n| n.as_i64())
                .unwrap_or_default(),
            signature_verified: match item.get("signatureVerified") {
                Some(_) => Some(r.boolean("signatureVerified")?),
                None => None,
            },
            replay_of: r.unicode_opt("replayOf")?.map(String::from),
            replay_operator: r.unicode_opt("replayOperator")?.map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    #[test]
    fn entry_round_trips_and_masks_card_numbers() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 1, 2, 3).unwrap();
        let d = Delivery::from_event(
            json!({"body": "{\"orderId\":\"1\",\"card\":\"4111111111111111\"}"}),
            "req-9",
            at,
        );
        let mut e = InboxEntry::received(&d, "walletcallback", Some("1"), 60);
        assert_eq!(e.sort_key(), "2026-11-21T01:02:03#req-9");
        assert!(e.body.contains("411111******1111"));
        assert_eq!(e.ttl, at.timestamp() + 60);
        e.outcome = InboxOutcome::Rejected {
            status: 400,
            error: "success is required in body".into(),
        };
        let back = InboxEntry::from_item(&e.to_item()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_replay_is_marked_on_its_entry() {
        let mut d = Delivery::from_event(json!({"body": "{}"}), "req-2", Utc::now());
        d.replay_of = Some("2026-11-21T01:02:03#req-9".into());
        d.replay_operator = Some("alice".into());
        let mut e = InboxEntry::received(&d, "walletcallback", Some("1"), 60);
        e.signature_verified = Some(false);
        let item = e.to_item();
        assert_eq!(
            item["replayOf"],
            crate::domain::item::Attr::S("2026-11-21T01:02:03#req-9".into())
        );
        assert_eq!(
            item["replayOperator"],
            crate::domain::item::Attr::S("alice".into())
        );
        assert_eq!(
            item["signatureVerified"],
            crate::domain::item::Attr::Bool(false)
        );
        assert_eq!(InboxEntry::from_item(&item).unwrap(), e);
        // An entry of an unsigned kind (notify) has none of them.
        let plain = InboxEntry::received(
            &Delivery::from_event(json!({"body": "{}"}), "r", Utc::now()),
            "notify",
            None,
            60,
        );
        let item = plain.to_item();
        for name in ["replayOf", "replayOperator", "signatureVerified"] {
            assert!(!item.contains_key(name), "{name}");
        }
    }

    #[test]
    fn a_delivery_without_an_order_id_is_filed_under_unknown() {
        let d = Delivery::from_event(json!({"body": "garbage"}), "r", Utc::now());
        let e = InboxEntry::received(&d, "amexcallback", None, 1);
        assert_eq!(e.order_id, UNKNOWN_ORDER);
    }
}
