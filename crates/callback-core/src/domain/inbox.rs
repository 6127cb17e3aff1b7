//! The inbox (SPEC 4.1 step 3): every delivery, duplicates and rejects included, with its body,
//! headers minus secrets, source IP, function and outcome. Nothing a gateway sent is lost.
//! Key: hash `orderId`, range `receivedAt#requestId`.
//!
//! Within DynamoDB's limits (SPEC 4.6): the body kept is redacted and at most its first 64 KiB,
//! with the full body's byte length (`bodyBytes`) and SHA-256 (`bodySha256`) beside it, so a 2 MB
//! body is still recorded (and answered 413). A delivery whose body names no usable order id
//! (none, not text, blank, with control characters, or too long for a key) is filed under one of [`UNKNOWN_PARTITIONS`]
//! partitions `UNKNOWN#0` .. `UNKNOWN#15`, chosen from a hash of its request id: a flood of
//! garbage is spread over several partition keys instead of making one hot key (DynamoDB
//! throttles a single key at about 1000 writes a second). To read them all, query each of
//! [`unknown_partitions`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use crate::domain::clock::isoformat;
use crate::domain::delivery::{Body, Delivery};
use crate::domain::item::{Attr, DecodeError, Item, ItemBuilder, ItemReader};
use crate::domain::limits::{
    fit_item, fits_key, prefix, sha256_hex, Shrink, KEPT_PREFIX_BYTES, MAX_ID_BYTES,
    MAX_RANGE_KEY_BYTES,
};
use crate::domain::redact::redact_text;

/// The `orderId` prefix of a delivery whose body names no usable order id.
pub const UNKNOWN_ORDER: &str = "UNKNOWN";
/// How many partitions deliveries without an order id are spread over.
pub const UNKNOWN_PARTITIONS: u8 = 16;
/// The range key attribute.
pub const SORT_KEY: &str = "receivedAt#requestId";
/// Room left in an inbox item for the outcome and error set when the delivery finishes.
const OUTCOME_HEADROOM: usize = 4 * 1024;

/// The partition of a delivery without an order id: `UNKNOWN#<0..15>` from its request id.
pub fn unknown_partition(request_id: &str) -> String {
    let first = sha256_hex(request_id.as_bytes());
    let n = u8::from_str_radix(&first[..2], 16).unwrap_or(0) % UNKNOWN_PARTITIONS;
    format!("{UNKNOWN_ORDER}#{n}")
}

/// Every partition [`unknown_partition`] can choose.
pub fn unknown_partitions() -> Vec<String> {
    (0..UNKNOWN_PARTITIONS)
        .map(|n| format!("{UNKNOWN_ORDER}#{n}"))
        .collect()
}

/// The body as kept: redacted, at most [`KEPT_PREFIX_BYTES`], and what the whole body was.
struct KeptBody {
    text: String,
    encoding: &'static str,
    bytes: usize,
    sha256: String,
    truncated: bool,
}

fn kept_body(body: &Body) -> KeptBody {
    let (raw, encoding): (std::borrow::Cow<'_, [u8]>, &'static str) = match body {
        Body::Empty => (b"".as_slice().into(), "text"),
        Body::Text(t) | Body::NotBase64(t) => (t.as_bytes().into(), "text"),
        Body::Binary(b) => (b.as_slice().into(), "base64"),
        Body::Object(o) => (
            Value::Object(o.clone()).to_string().into_bytes().into(),
            "json",
        ),
    };
    let bytes = raw.len();
    let sha256 = sha256_hex(&raw);
    let (text, truncated) = if encoding == "base64" {
        // 48 KiB of bytes is 64 KiB of base64.
        let keep = raw.len().min(KEPT_PREFIX_BYTES / 4 * 3);
        (
            base64::engine::general_purpose::STANDARD.encode(&raw[..keep]),
            keep < raw.len(),
        )
    } else {
        let text = String::from_utf8_lossy(&raw);
        // Redact a little more than is kept (a card number across the cut is still masked),
        // then cut: redaction may lengthen the text.
        let redacted = redact_text(prefix(&text, KEPT_PREFIX_BYTES + 256));
        let kept = prefix(&redacted, KEPT_PREFIX_BYTES).to_string();
        let truncated = kept.len() < redacted.len() || text.len() > KEPT_PREFIX_BYTES + 256;
        (kept, truncated)
    };
    KeptBody {
        text,
        encoding,
        bytes,
        sha256,
        truncated,
    }
}

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
    /// A verified `webhook-id` already processed for this gateway (SPEC 4.5): answered 200, the
    /// record not rewritten. A success is dispatched again, so that a gateway's retry after a
    /// failed dispatch is never lost; process-paid applies a payment once.
    AlreadyProcessed,
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
            InboxOutcome::AlreadyProcessed => "already-processed",
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
            | InboxOutcome::KeptEarlierSuccess
            | InboxOutcome::AlreadyProcessed => Some(200),
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
    /// The body as received, redacted, at most its first 64 KiB; base64 when it was not text.
    pub body: String,
    /// `text`, `json` (a parsed object from a direct invoke) or `base64`.
    pub body_encoding: String,
    /// The whole body's length in bytes, as received.
    pub body_bytes: u64,
    /// The whole body's SHA-256 (lowercase hex), as received.
    pub body_sha256: String,
    /// Whether `body` is only the first part of it.
    pub body_truncated: bool,
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
        let body = kept_body(&delivery.body);
        let received_at = isoformat(delivery.received_at);
        // The request id is part of the range key: bounded, with room for the time and `#`.
        let request_id = prefix(
            &delivery.request_id,
            MAX_RANGE_KEY_BYTES - received_at.len() - 1,
        )
        .to_string();
        InboxEntry {
            order_id: order_id
                .filter(|o| {
                    !o.trim().is_empty()
                        && fits_key(o, MAX_ID_BYTES)
                        && !o.chars().any(char::is_control)
                })
                .map(String::from)
                .unwrap_or_else(|| unknown_partition(&delivery.request_id)),
            received_at,
            request_id,
            function: function.to_string(),
            body: body.text,
            body_encoding: body.encoding.to_string(),
            body_bytes: body.bytes as u64,
            body_sha256: body.sha256,
            body_truncated: body.truncated,
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
            .integer("bodyBytes", self.body_bytes as i64)
            .unicode("bodySha256", &self.body_sha256)
            .boolean("bodyTruncated", self.body_truncated)
            .json_opt("headers", Some(&headers))
            .unicode_opt("sourceIp", self.source_ip.clone())
            .unicode("outcome", self.outcome.name())
            // The error may quote the body ("got string \"4111...\""): redacted like it.
            .unicode_opt("error", self.outcome.error().map(redact_text))
            .integer("ttl", self.ttl)
            .unicode_opt("replayOf", self.replay_of.clone())
            .unicode_opt("replayOperator", self.replay_operator.clone());
        if let Some(verified) = self.signature_verified {
            b = b.boolean("signatureVerified", verified);
        }
        if let Some(status) = self.outcome.status() {
            b = b.integer("status", status.into());
        }
        let mut item = b.build();
        // Only a direct invoke can carry headers or a source IP this large; the body is bounded.
        fit_item(
            &mut item,
            &[
                ("headers", Shrink::Json),
                ("sourceIp", Shrink::Text),
                ("error", Shrink::Text),
            ],
            OUTCOME_HEADROOM,
        );
        item
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
            "already-processed" => InboxOutcome::AlreadyProcessed,
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
            body_bytes: r
                .number_opt("bodyBytes")?
                .and_then(|n| n.as_u64())
                .unwrap_or_default(),
            body_sha256: r.unicode_opt("bodySha256")?.unwrap_or_default().to_string(),
            body_truncated: matches!(item.get("bodyTruncated"), Some(Attr::Bool(true))),
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
    fn deliveries_without_an_order_id_are_spread_over_the_unknown_partitions() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let d =
                Delivery::from_event(json!({"body": "garbage"}), &format!("req-{i}"), Utc::now());
            let e = InboxEntry::received(&d, "amexcallback", None, 1);
            assert!(unknown_partitions().contains(&e.order_id), "{}", e.order_id);
            // The same request id always lands in the same partition.
            assert_eq!(e.order_id, unknown_partition(&format!("req-{i}")));
            seen.insert(e.order_id);
        }
        assert_eq!(seen.len(), UNKNOWN_PARTITIONS as usize);
    }

    #[test]
    fn an_order_id_unfit_for_a_key_is_filed_as_unknown() {
        let d = Delivery::from_event(json!({"body": "{}"}), "r", Utc::now());
        for bad in ["", "   ", "\u{0}", "a\nb", &"😀".repeat(1000)] {
            let e = InboxEntry::received(&d, "walletcallback", Some(bad), 1);
            assert_eq!(e.order_id, unknown_partition("r"));
        }
    }

    #[test]
    fn a_huge_body_keeps_its_first_64_kib_its_length_and_hash() {
        let body = format!(
            "{{\"card\": \"4111 1111 1111 1111\", \"pad\": \"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        );
        let d = Delivery::from_event(json!({"body": body}), "r", Utc::now());
        let e = InboxEntry::received(&d, "walletcallback", None, 1);
        assert_eq!(e.body_bytes, body.len() as u64);
        assert_eq!(e.body_sha256, sha256_hex(body.as_bytes()));
        assert!(e.body_truncated);
        assert!(e.body.len() <= KEPT_PREFIX_BYTES);
        assert!(
            e.body.starts_with("{\"card\": \"411111******1111\""),
            "{}",
            &e.body[..40]
        );
        let item = e.to_item();
        assert!(crate::domain::limits::check_item(&item, "orderId", Some(SORT_KEY)).is_ok());
        assert_eq!(InboxEntry::from_item(&item).unwrap(), e);
    }

    #[test]
    fn binary_bodies_keep_a_base64_prefix() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
        let d = Delivery {
            body: Body::Binary(bytes.clone()),
            ..Delivery::from_event(json!({}), "r", Utc::now())
        };
        let e = InboxEntry::received(&d, "notify", None, 1);
        assert_eq!(e.body_encoding, "base64");
        assert!(e.body.len() <= KEPT_PREFIX_BYTES);
        assert!(e.body_truncated);
        assert_eq!(e.body_sha256, sha256_hex(&bytes));
    }

    #[test]
    fn huge_headers_from_a_direct_invoke_still_fit() {
        let mut d = Delivery::from_event(json!({"body": "{}"}), "r", Utc::now());
        d.headers.insert("x-pad".into(), "y".repeat(600_000));
        d.source_ip = Some("z".repeat(600_000));
        let item = InboxEntry::received(&d, "wallet", Some("1"), 1).to_item();
        assert!(crate::domain::limits::check_item(&item, "orderId", Some(SORT_KEY)).is_ok());
    }
}
