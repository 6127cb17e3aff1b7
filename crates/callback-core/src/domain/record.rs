//! The callback record (SPEC 5). What it stores of the delivery (`body`, `event`, `message`) is
//! redacted (SPEC 4.6: no card number, CVV or secret), and the item stays within DynamoDB's
//! 400 KB (a too-large `event` is kept as a prefix with its length and SHA-256).

use chrono::{DateTime, Utc};
use serde_json::{Number, Value};

use crate::domain::callback::CallbackPayload;
use crate::domain::clock::isoformat;
use crate::domain::item::{DecodeError, Item, ItemBuilder, ItemReader};
use crate::domain::limits::{fit_item, Shrink};
use crate::domain::redact::{redact_text, redact_value};

/// One callback record: the original's `WalletCallbackRecordTable` / `AmexCallbackRecordTable`.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackRecord {
    pub order_id: String,
    pub payment_id: String,
    pub success: bool,
    pub user_id: String,
    pub message: Option<String>,
    pub amount: Option<Number>,
    /// The Lambda event, redacted.
    pub event: Option<Value>,
    /// The body object, redacted.
    pub body: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    /// Whether the callback's signature was verified (SPEC 4.5); `None` on records written
    /// before signatures (and by the Python original).
    pub signature_verified: Option<bool>,
}

impl CallbackRecord {
    /// The record of a validated callback received at `now`: its body, event and message
    /// redacted (the ids are kept as sent: they are what the record is found by).
    pub fn new(payload: &CallbackPayload, event: Value, now: DateTime<Utc>) -> Self {
        let at = isoformat(now);
        CallbackRecord {
            order_id: payload.order_id.as_str().to_string(),
            payment_id: payload.payment_id.clone(),
            success: payload.success,
            user_id: payload.user_id.clone(),
            message: Some(redact_text(&payload.message)),
            amount: Some(payload.amount.as_number().clone()),
            event: Some(redact_value(&event)),
            body: Some(redact_value(&Value::Object(payload.body.clone()))),
            created_at: at.clone(),
            updated_at: at,
            signature_verified: None,
        }
    }

    pub fn to_item(&self) -> Item {
        let mut b = ItemBuilder::new()
            .unicode("orderId", &self.order_id)
            .unicode("paymentId", &self.payment_id)
            .boolean("success", self.success)
            .unicode("userId", &self.user_id)
            .unicode_opt("message", self.message.clone())
            .json_opt("event", self.event.as_ref())
            .json_opt("body", self.body.as_ref())
            .unicode("created_at", &self.created_at)
            .unicode("updated_at", &self.updated_at);
        if let Some(amount) = &self.amount {
            b = b.number("amount", amount);
        }
        if let Some(verified) = self.signature_verified {
            b = b.boolean("signatureVerified", verified);
        }
        let mut item = b.build();
        fit_item(
            &mut item,
            &[
                ("event", Shrink::Json),
                ("body", Shrink::Json),
                ("message", Shrink::Text),
            ],
            0,
        );
        item
    }

    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        Ok(CallbackRecord {
            order_id: r.unicode("orderId")?.to_string(),
            payment_id: r.unicode("paymentId")?.to_string(),
            success: r.boolean("success")?,
            user_id: r.unicode("userId")?.to_string(),
            message: r.unicode_opt("message")?.map(String::from),
            amount: r.number_opt("amount")?,
            event: r.json_opt("event")?,
            body: r.json_opt("body")?,
            created_at: r.unicode("created_at")?.to_string(),
            updated_at: r.unicode("updated_at")?.to_string(),
            signature_verified: match item.get("signatureVerified") {
                Some(_) => Some(r.boolean("signatureVerified")?),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::item::Attr;
    use chrono::TimeZone;
    use serde_json::json;

    fn payload(success: bool) -> CallbackPayload {
        CallbackPayload::parse(
            &json!({"orderId": "482500007436", "paymentId": "pay_1", "success": success,
                    "amount": 2339.0, "userId": "u-1", "message": "ok"})
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn record_item_has_the_pynamodb_types() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 13, 0, 0).unwrap();
        let item = CallbackRecord::new(&payload(true), json!({"body": "x"}), at).to_item();
        assert_eq!(item["orderId"], Attr::S("482500007436".into()));
        assert_eq!(item["success"], Attr::Bool(true));
        assert_eq!(item["amount"], Attr::N("2339.0".into()));
        assert_eq!(item["created_at"], Attr::S("2026-11-21T13:00:00".into()));
        assert_eq!(item["event"], Attr::S("{\"body\":\"x\"}".into()));
        let Attr::S(body) = &item["body"] else {
            panic!("body is not S")
        };
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["paymentId"], "pay_1");
    }

    #[test]
    fn record_round_trips_through_its_item() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 13, 0, 0).unwrap();
        let record = CallbackRecord::new(&payload(false), json!({"k": [1, 2]}), at);
        assert_eq!(
            CallbackRecord::from_item(&record.to_item()).unwrap(),
            record
        );
    }

    #[test]
    fn the_record_stores_no_card_number_cvv_or_key() {
        let p = CallbackPayload::parse(
            &json!({"orderId": "482500007436", "paymentId": "pay_1", "success": true,
                    "userId": "u-1", "cardNumber": "4111111111111111", "cvv": "123",
                    "message": "card 4111 1111 1111 1111 cvv 987 key skey_live_abc"})
            .to_string(),
        )
        .unwrap();
        let event = json!({"body": "{\"cvv\": 123, \"pan\": \"4111-1111-1111-1111\"}",
                           "headers": {"Authorization": "Bearer tok_abcdef"}});
        let item = CallbackRecord::new(&p, event, Utc::now()).to_item();
        let text = serde_json::to_string(&item).unwrap();
        for leak in [
            "4111111111111111",
            "4111 1111",
            "4111-1111",
            "123\\\"",
            "987",
            "live_abc",
            "tok_abcdef",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert!(text.contains("411111******1111"));
        let record = CallbackRecord::from_item(&item).unwrap();
        assert_eq!(record.order_id, "482500007436");
        assert_eq!(record.body.unwrap()["cvv"], "[REDACTED]");
    }

    #[test]
    fn a_huge_event_is_kept_as_a_prefix_and_the_record_still_loads() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 13, 0, 0).unwrap();
        let event = json!({"headers": {"x-pad": "\u{1}".repeat(120_000)}});
        let item = CallbackRecord::new(&payload(true), event, at).to_item();
        assert!(crate::domain::limits::check_item(&item, "orderId", None).is_ok());
        let record = CallbackRecord::from_item(&item).unwrap();
        assert_eq!(record.event.unwrap()["truncated"], true);
        assert!(record.success);
    }

    #[test]
    fn an_item_without_optional_attributes_decodes() {
        // What PynamoDB writes when message, amount, event and body are None.
        let item: Item = serde_json::from_value(json!({
            "orderId": {"S": "1"}, "paymentId": {"S": "p"}, "success": {"BOOL": false},
            "userId": {"S": "u"}, "created_at": {"S": "2025-01-01T00:00:00.000001"},
            "updated_at": {"S": "2025-01-01T00:00:00.000001"}
        }))
        .unwrap();
        let record = CallbackRecord::from_item(&item).unwrap();
        assert_eq!(record.amount, None);
        assert_eq!(record.message, None);
        assert_eq!(record.to_item(), item);
    }
}
