//! The card path's data: the KBank notify body (JSON, or form-urlencoded), the notify record
//! (`payment3-credit-card-notify-<branch>`) and the card payment record
//! (`payment3-card-payment-record-<branch>`, written by the shop when the charge is created).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::callback::{aliased, describe, parse_object};
use crate::domain::charge::ChargeId;
use crate::domain::checksum::ChecksumFields;
use crate::domain::clock::{isoformat, parse_isoformat};
use crate::domain::error::ValidationError;
use crate::domain::item::{Attr, DecodeError, Item, ItemBuilder, ItemReader};
use crate::domain::limits::{fit_item, number_problem, NumberProblem, Shrink};
use crate::domain::money::{decimal_text_from_raw, parse_decimal};
use crate::domain::redact::{redact_text, redact_value};

/// How the notify body was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Form,
}

/// A KBank notify, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyBody {
    /// Every field as received (form values are strings): what the notify record keeps.
    pub fields: Map<String, Value>,
    pub encoding: BodyEncoding,
    /// `id` (alias `objectId`).
    pub charge_id: ChargeId,
    /// `amount` as written: a JSON number's own text, or a string's content.
    pub amount: Option<String>,
    pub currency: String,
    pub status: String,
    pub transaction_state: String,
    pub checksum: Option<String>,
}

impl NotifyBody {
    /// Parses body text: JSON, falling back to form-urlencoded.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        match parse_object(text) {
            Ok(fields) => {
                // The amount's own digits, not serde_json's f64 rendering of them.
                let raw: HashMap<String, &RawValue> =
                    serde_json::from_str(text).unwrap_or_default();
                let amount = raw.get("amount").and_then(|r| decimal_text_from_raw(r));
                Self::from_fields(fields, BodyEncoding::Json, amount)
            }
            Err(json_error) => {
                let trimmed = text.trim();
                if trimmed.starts_with('{') || trimmed.starts_with('[') || !trimmed.contains('=') {
                    return Err(json_error);
                }
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_str(trimmed).map_err(|e| {
                        ValidationError::new(
                            "body",
                            format!("body is neither JSON nor a form: {e}"),
                        )
                    })?;
                let fields: Map<String, Value> = pairs
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                let amount = fields
                    .get("amount")
                    .and_then(Value::as_str)
                    .map(String::from);
                Self::from_fields(fields, BodyEncoding::Form, amount)
            }
        }
    }

    /// An already-parsed object (a direct invoke). A number here went through serde_json's f64,
    /// whose shortest text is exact for any amount of up to 15 significant digits.
    pub fn from_object(fields: Map<String, Value>) -> Result<Self, ValidationError> {
        let amount = match fields.get("amount") {
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Self::from_fields(fields, BodyEncoding::Json, amount)
    }

    fn from_fields(
        fields: Map<String, Value>,
        encoding: BodyEncoding,
        amount: Option<String>,
    ) -> Result<Self, ValidationError> {
        let charge_id = match aliased(&fields, &["id", "objectId"]) {
            None => {
                return Err(ValidationError::new(
                    "id",
                    "id (the charge id) is required in body",
                ))
            }
            Some(Value::String(s)) => ChargeId::parse("id", s)?,
            Some(other) => {
                return Err(ValidationError::new(
                    "id",
                    format!("id must be a string, got {}", describe(other)),
                ))
            }
        };
        // An amount DynamoDB cannot store as a number is refused here, not by DynamoDB.
        if let Some(problem) = amount
            .as_deref()
            .and_then(|a| number_problem(a.trim()))
            .filter(|p| *p != NumberProblem::NotANumber)
        {
            return Err(ValidationError::new(
                "amount",
                format!("amount {}", problem.describe()),
            ));
        }
        let text = |name: &str| match fields.get(name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        Ok(NotifyBody {
            charge_id,
            amount,
            currency: text("currency"),
            status: text("status"),
            transaction_state: text("transaction_state"),
            checksum: match fields.get("checksum") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            },
            encoding,
            fields,
        })
    }

    /// What the checksum covers. The charge id is the raw `id` text (KBank hashed what it sent).
    pub fn checksum_fields(&self) -> ChecksumFields<'_> {
        ChecksumFields {
            charge_id: self.charge_id.as_str(),
            amount: self.amount.as_deref(),
            currency: &self.currency,
            status: &self.status,
            transaction_state: &self.transaction_state,
        }
    }

    /// Whether the notify itself says the charge is paid (the redirect page's status when
    /// process-paid did not run).
    pub fn says_paid(&self) -> bool {
        self.status == "success" && self.transaction_state == "Authorized"
    }
}

/// `note` of a notify record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyNote {
    Notify,
    DelayedNotify,
}

impl NotifyNote {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyNote::Notify => "notify",
            NotifyNote::DelayedNotify => "delayed notify",
        }
    }
}

/// One item of `payment3-credit-card-notify-<branch>`.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyRecord {
    pub charge_id: String,
    pub created_at: String,
    pub note: NotifyNote,
    /// The whole body, redacted (card numbers masked).
    pub body: Value,
    /// The Lambda event, redacted.
    pub event: Value,
    pub checksum_verified: bool,
    /// Why the checksum failed, when it did.
    pub checksum_error: Option<String>,
    pub order_id: Option<String>,
    pub amount: Option<String>,
    pub status: String,
    pub transaction_state: String,
    pub request_id: String,
}

impl NotifyRecord {
    pub fn new(
        body: &NotifyBody,
        note: NotifyNote,
        event: &Value,
        verified: Result<(), String>,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Self {
        NotifyRecord {
            charge_id: body.charge_id.as_str().to_string(),
            created_at: isoformat(now),
            note,
            body: redact_value(&Value::Object(body.fields.clone())),
            event: redact_value(event),
            checksum_verified: verified.is_ok(),
            checksum_error: verified.err().map(|e| redact_text(&e)),
            order_id: None,
            amount: body.amount.clone(),
            status: redact_text(&body.status),
            transaction_state: redact_text(&body.transaction_state),
            request_id: request_id.to_string(),
        }
    }

    /// The same record one microsecond later: the range key `created_at` of two deliveries
    /// received in the same microsecond must still differ, so neither overwrites the other.
    pub fn one_microsecond_later(&self) -> Option<Self> {
        let at = parse_isoformat(&self.created_at)? + chrono::Duration::microseconds(1);
        Some(NotifyRecord {
            created_at: isoformat(at),
            ..self.clone()
        })
    }

    pub fn to_item(&self) -> Item {
        let mut item = ItemBuilder::new()
            .unicode("chargeId", &self.charge_id)
            .unicode("created_at", &self.created_at)
            .unicode("updated_at", &self.created_at)
            .unicode("note", self.note.as_str())
            .json_opt("body", Some(&self.body))
            .json_opt("event", Some(&self.event))
            .boolean("checksumVerified", self.checksum_verified)
            .unicode_opt("checksumError", self.checksum_error.clone())
            .unicode_opt("orderId", self.order_id.clone())
            .unicode("status", &self.status)
            .unicode("transaction_state", &self.transaction_state)
            .unicode("requestId", &self.request_id)
            .build();
        // NumberAttribute: the amount's decimal text, when it is one.
        if let Some(d) = self.amount.as_deref().and_then(parse_decimal) {
            item.insert("amount".into(), Attr::N(d.to_string()));
        }
        fit_item(
            &mut item,
            &[
                ("event", Shrink::Json),
                ("body", Shrink::Json),
                ("status", Shrink::Text),
                ("transaction_state", Shrink::Text),
                ("checksumError", Shrink::Text),
            ],
            0,
        );
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        let note = match r.unicode("note")? {
            "delayed notify" => NotifyNote::DelayedNotify,
            _ => NotifyNote::Notify,
        };
        Ok(NotifyRecord {
            charge_id: r.unicode("chargeId")?.into(),
            created_at: r.unicode("created_at")?.into(),
            note,
            body: r.json_opt("body")?.unwrap_or(Value::Null),
            event: r.json_opt("event")?.unwrap_or(Value::Null),
            checksum_verified: r.boolean("checksumVerified")?,
            checksum_error: r.unicode_opt("checksumError")?.map(String::from),
            order_id: r.unicode_opt("orderId")?.map(String::from),
            amount: match item.get("amount") {
                Some(Attr::N(n)) => Some(n.clone()),
                _ => None,
            },
            status: r.unicode_opt("status")?.unwrap_or_default().into(),
            transaction_state: r
                .unicode_opt("transaction_state")?
                .unwrap_or_default()
                .into(),
            request_id: r.unicode_opt("requestId")?.unwrap_or_default().into(),
        })
    }
}

/// The card payment record of a charge: which order, which shop to send the customer back to.
#[derive(Clone, Debug, PartialEq)]
pub struct CardPayment {
    /// Hash key.
    pub token: String,
    pub order_id: Option<String>,
    pub charge_id: Option<String>,
    /// The shop's base URL for the redirect page.
    pub callback: Option<String>,
    pub checksum_verified: Option<bool>,
}

impl CardPayment {
    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        // The shop may store numbers as N; accept either for the ids.
        let text = |name: &str| -> Result<Option<String>, DecodeError> {
            match item.get(name) {
                Some(Attr::N(n)) => Ok(Some(n.clone())),
                _ => Ok(r
                    .unicode_opt(name)?
                    .filter(|s| !s.is_empty())
                    .map(String::from)),
            }
        };
        Ok(CardPayment {
            token: r.unicode("token")?.into(),
            order_id: text("orderId")?,
            charge_id: text("chargeId")?,
            callback: r
                .unicode_opt("callback")?
                .filter(|s| !s.is_empty())
                .map(String::from),
            checksum_verified: match item.get("checksumVerified") {
                Some(Attr::Bool(b)) => Some(*b),
                _ => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn json_amounts_keep_their_digits() {
        let b = NotifyBody::parse(
            r#"{"id":"chrg_1","amount":2339.50,"currency":"THB","status":"success",
                "transaction_state":"Authorized","checksum":"ab","card":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(b.amount.as_deref(), Some("2339.50"));
        assert_eq!(b.encoding, BodyEncoding::Json);
        assert!(b.says_paid());
        assert_eq!(b.fields["card"], json!({"x": 1}));
    }

    #[test]
    fn form_bodies_are_read_too() {
        let b = NotifyBody::parse(
            "objectId=chrg_2&amount=100.00&currency=THB&status=success&transaction_state=Authorized&checksum=ff",
        )
        .unwrap();
        assert_eq!(b.charge_id.as_str(), "chrg_2");
        assert_eq!(b.amount.as_deref(), Some("100.00"));
        assert_eq!(b.encoding, BodyEncoding::Form);
        assert_eq!(b.checksum.as_deref(), Some("ff"));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert_eq!(NotifyBody::parse("").unwrap_err().message, "body is empty");
        assert!(NotifyBody::parse("{\"id\": ")
            .unwrap_err()
            .message
            .starts_with("body is not valid JSON"));
        assert_eq!(
            NotifyBody::parse(r#"{"amount": 1}"#).unwrap_err().message,
            "id (the charge id) is required in body"
        );
        assert_eq!(
            NotifyBody::parse("amount=1").unwrap_err().message,
            "id (the charge id) is required in body"
        );
        assert!(NotifyBody::parse(r#"{"id": "../x"}"#).is_err());
        assert!(NotifyBody::parse(r#"{"id": 5}"#)
            .unwrap_err()
            .message
            .contains("number 5"));
    }

    #[test]
    fn a_notify_record_has_the_pynamodb_types_and_round_trips() {
        let body = NotifyBody::parse(
            r#"{"id":"chrg_1","amount":"2339.00","currency":"THB","status":"success","transaction_state":"Authorized","card_number":"4111 1111 1111 1111"}"#,
        )
        .unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
        let rec = NotifyRecord::new(
            &body,
            NotifyNote::DelayedNotify,
            &json!({}),
            Err("checksum is missing".into()),
            "r",
            at,
        );
        let item = rec.to_item();
        assert_eq!(item["note"], Attr::S("delayed notify".into()));
        assert_eq!(item["checksumVerified"], Attr::Bool(false));
        assert_eq!(item["amount"], Attr::N("2339.00".into()));
        assert_eq!(item["created_at"], Attr::S("2026-11-21T09:00:00".into()));
        let Attr::S(stored) = &item["body"] else {
            panic!("body is not S")
        };
        assert!(!stored.contains("4111 1111 1111 1111"), "{stored}");
        assert_eq!(
            NotifyRecord::from_item(&item)
                .unwrap()
                .checksum_error
                .as_deref(),
            Some("checksum is missing")
        );
    }

    #[test]
    fn amounts_dynamodb_cannot_store_are_refused_naming_the_field() {
        for body in [
            r#"{"id":"chrg_1","amount":1e308}"#,
            r#"{"id":"chrg_1","amount":"1e-320"}"#,
            "id=chrg_1&amount=123456789012345678901234567890123456789",
        ] {
            assert_eq!(
                NotifyBody::parse(body).unwrap_err().field,
                "amount",
                "{body}"
            );
        }
        // Not a number at all: left to the checksum, as before.
        assert!(NotifyBody::parse("id=chrg_1&amount=abc").is_ok());
    }

    #[test]
    fn a_notify_record_redacts_every_text_it_keeps() {
        let body = NotifyBody::parse(
            r#"{"id":"chrg_1","amount":"1.00","status":"4111 1111 1111 1111","transaction_state":"cvv 987","cvc":"123"}"#,
        )
        .unwrap();
        let rec = NotifyRecord::new(
            &body,
            NotifyNote::Notify,
            &json!({"h": "skey_live_z"}),
            Err("bad for skey_live_z".into()),
            "r",
            Utc::now(),
        );
        let text = serde_json::to_string(&rec.to_item()).unwrap();
        for leak in ["4111 1111", "987", "live_z", "\"123"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
    }

    #[test]
    fn a_card_payment_record_decodes() {
        let item: Item = serde_json::from_value(json!({
            "token": {"S": "tok_1"}, "orderId": {"S": "482500007436"}, "chargeId": {"S": "chrg_1"},
            "callback": {"S": "https://shop.example"}, "amount": {"N": "2339"}
        }))
        .unwrap();
        let c = CardPayment::from_item(&item).unwrap();
        assert_eq!(c.order_id.as_deref(), Some("482500007436"));
        assert_eq!(c.callback.as_deref(), Some("https://shop.example"));
        assert_eq!(c.checksum_verified, None);
    }
}
