//! The wallet / bank-app / Amex callback body (SPEC 4.1): parsed once into validated types.
//! Field aliases follow the original (`orderId` or `order_id`, the first that is present and not
//! empty); every rejection names the field and says what is wrong. Values are held to what
//! DynamoDB stores ([`crate::domain::limits`]): ids in bytes, the amount on its decimal text.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::domain::error::ValidationError;
use crate::domain::limits::{check_id_bytes, check_number_text};

/// A shop order id: non-empty text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, ValidationError> {
        check_id(field, value)?;
        Ok(OrderId(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{field} must not be blank"),
        ));
    }
    check_id_bytes(field, value)?;
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(())
}

/// A paid amount: a JSON number, zero or more, within DynamoDB's number range, kept as sent
/// (`2339.0` stays `2339.0`).
#[derive(Clone, Debug, PartialEq)]
pub struct Amount(Number);

impl Amount {
    pub fn zero() -> Self {
        Amount(Number::from(0))
    }
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        match value {
            Value::Null => Ok(Amount::zero()),
            Value::Number(n) => {
                let negative = n.as_f64().is_some_and(|f| f < 0.0);
                if negative {
                    Err(ValidationError::new(
                        "amount",
                        "amount must not be negative",
                    ))
                } else {
                    check_number_text("amount", &n.to_string())?;
                    Ok(Amount(n.clone()))
                }
            }
            other => Err(ValidationError::new(
                "amount",
                format!("amount must be a number, got {}", describe(other)),
            )),
        }
    }
    pub fn as_number(&self) -> &Number {
        &self.0
    }
}

/// A validated callback.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackPayload {
    pub order_id: OrderId,
    pub payment_id: String,
    pub success: bool,
    pub user_id: String,
    pub amount: Amount,
    pub message: String,
    /// The body object as received: stored in the record and passed to process-paid.
    pub body: Map<String, Value>,
}

/// Parses the body text of a request into a JSON object.
pub fn parse_object(text: &str) -> Result<Map<String, Value>, ValidationError> {
    if text.trim().is_empty() {
        return Err(ValidationError::new("body", "body is empty"));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => {
            check_amount_text(text)?;
            Ok(map)
        }
        Ok(other) => Err(ValidationError::new(
            "body",
            format!("body must be a JSON object, got {}", describe(&other)),
        )),
        Err(e) => Err(ValidationError::new(
            "body",
            format!("body is not valid JSON: {e}"),
        )),
    }
}

/// A top-level `amount` number is checked on its own digits: serde_json reads it through an f64,
/// which would turn 39 digits into 17 that DynamoDB takes.
fn check_amount_text(text: &str) -> Result<(), ValidationError> {
    let raw: HashMap<String, &RawValue> = serde_json::from_str(text).unwrap_or_default();
    match raw.get("amount").map(|r| r.get().trim()) {
        Some(t) if t.starts_with('-') || t.starts_with(|c: char| c.is_ascii_digit()) => {
            if t.starts_with('-') && t.trim_start_matches(['-', '0', '.']).is_empty() {
                return Ok(()); // -0: zero
            }
            if t.starts_with('-') {
                return Err(ValidationError::new(
                    "amount",
                    "amount must not be negative",
                ));
            }
            check_number_text("amount", t)
        }
        _ => Ok(()),
    }
}

/// The first of the aliases present with a value that is neither null nor "" (the original's
/// `body.get("orderId") or body.get("order_id")`).
pub fn aliased<'a>(body: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .filter_map(|n| body.get(*n))
        .find(|v| !matches!(v, Value::Null) && v.as_str() != Some(""))
}

fn required_text(
    body: &Map<String, Value>,
    field: &'static str,
    aliases: &[&str],
) -> Result<String, ValidationError> {
    match aliased(body, aliases) {
        None => Err(ValidationError::new(
            field,
            format!("{field} is required in body"),
        )),
        Some(Value::String(s)) => {
            check_id(field, s)?;
            Ok(s.clone())
        }
        Some(other) => Err(ValidationError::new(
            field,
            format!("{field} must be a string, got {}", describe(other)),
        )),
    }
}

impl CallbackPayload {
    /// Validates a body object (SPEC 4.1 step 1).
    pub fn from_object(body: Map<String, Value>) -> Result<Self, ValidationError> {
        let order_id = OrderId::parse(
            "orderId",
            &required_text(&body, "orderId", &["orderId", "order_id"])?,
        )?;
        let payment_id = required_text(&body, "paymentId", &["paymentId", "payment_id"])?;
        let success = match body.get("success") {
            None | Some(Value::Null) => {
                return Err(ValidationError::new(
                    "success",
                    "success is required in body",
                ))
            }
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ValidationError::new(
                    "success",
                    format!(
                        "success must be a JSON boolean (true or false), got {}",
                        describe(other)
                    ),
                ))
            }
        };
        let user_id = required_text(&body, "userId", &["userId", "user_id"])?;
        let amount = Amount::parse(body.get("amount").unwrap_or(&Value::Null))?;
        let message = match body.get("message") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ValidationError::new(
                    "message",
                    format!("message must be a string, got {}", describe(other)),
                ))
            }
        };
        Ok(CallbackPayload {
            order_id,
            payment_id,
            success,
            user_id,
            amount,
            message,
            body,
        })
    }

    /// Parses and validates body text.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Self::from_object(parse_object(text)?)
    }
}

/// Names a JSON value's type and, for short scalars, the value: `string "true"`, `number 5`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good() -> Value {
        json!({
            "orderId": "482500007436",
            "paymentId": "pay_wallet_1234567890",
            "success": true,
            "amount": 2339.0,
            "userId": "b5f392f7-6d89-433c-b24f-bf6a772cab1a",
            "message": "Payment successful"
        })
    }

    fn error_of(v: Value) -> ValidationError {
        CallbackPayload::from_object(obj(v)).unwrap_err()
    }

    #[test]
    fn parses_the_seed_example() {
        let p = CallbackPayload::from_object(obj(good())).unwrap();
        assert_eq!(p.order_id.as_str(), "482500007436");
        assert_eq!(p.payment_id, "pay_wallet_1234567890");
        assert!(p.success);
        assert_eq!(p.amount.as_number().to_string(), "2339.0");
        assert_eq!(p.message, "Payment successful");
    }

    #[test]
    fn accepts_snake_case_aliases_and_defaults() {
        let p = CallbackPayload::from_object(obj(json!({
            "order_id": "A1", "payment_id": "P1", "success": false, "user_id": "U1"
        })))
        .unwrap();
        assert_eq!(p.order_id.as_str(), "A1");
        assert_eq!(p.payment_id, "P1");
        assert_eq!(p.user_id, "U1");
        assert_eq!(p.amount, Amount::zero());
        assert_eq!(p.message, "");
    }

    #[test]
    fn an_empty_camel_case_value_falls_back_to_the_alias() {
        let p = CallbackPayload::from_object(obj(json!({
            "orderId": "", "order_id": "A2", "paymentId": "P", "success": true, "userId": "U"
        })))
        .unwrap();
        assert_eq!(p.order_id.as_str(), "A2");
    }

    #[test]
    fn each_missing_field_is_named() {
        for (field, message) in [
            ("orderId", "orderId is required in body"),
            ("paymentId", "paymentId is required in body"),
            ("success", "success is required in body"),
            ("userId", "userId is required in body"),
        ] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            let err = error_of(v);
            assert_eq!(err.field, field);
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn success_as_a_string_is_not_a_boolean() {
        let mut v = good();
        v["success"] = json!("true");
        let err = error_of(v);
        assert_eq!(err.field, "success");
        assert_eq!(
            err.message,
            "success must be a JSON boolean (true or false), got string \"true\""
        );
    }

    #[test]
    fn wrong_types_are_rejected_with_the_type_seen() {
        for (field, value, needle) in [
            (
                "orderId",
                json!(482500007436u64),
                "orderId must be a string, got number",
            ),
            (
                "userId",
                json!({"id": 1}),
                "userId must be a string, got an object",
            ),
            (
                "amount",
                json!("2339.00"),
                "amount must be a number, got string",
            ),
            ("amount", json!(-1), "amount must not be negative"),
            (
                "message",
                json!(5),
                "message must be a string, got number 5",
            ),
            ("orderId", json!("   "), "orderId must not be blank"),
            (
                "orderId",
                json!("a\u{0000}b"),
                "orderId contains control characters",
            ),
        ] {
            let mut v = good();
            v[field] = value;
            let err = error_of(v);
            assert_eq!(err.field, field);
            assert!(err.message.starts_with(needle), "{field}: {}", err.message);
        }
    }

    #[test]
    fn an_overlong_id_is_rejected_in_bytes() {
        let mut v = good();
        v["orderId"] = json!("9".repeat(1025));
        assert_eq!(
            error_of(v).message,
            "orderId is 1025 bytes in UTF-8, over the limit of 1024 bytes"
        );
        for field in ["paymentId", "userId"] {
            let mut v = good();
            v[field] = json!("😀".repeat(1000));
            let err = error_of(v);
            assert_eq!(err.field, field);
            assert!(err.message.contains("4000 bytes"), "{}", err.message);
        }
        // 256 emoji are exactly 1024 bytes: accepted.
        let mut v = good();
        v["orderId"] = json!("😀".repeat(256));
        assert!(CallbackPayload::from_object(obj(v)).is_ok());
    }

    #[test]
    fn amounts_dynamodb_cannot_store_are_rejected_on_their_text() {
        let body = |amount: &str| {
            format!(
                r#"{{"orderId":"1","paymentId":"p","success":true,"userId":"u","amount":{amount}}}"#
            )
        };
        for (amount, needle) in [
            ("1e308", "larger than DynamoDB can store"),
            ("1e126", "larger than DynamoDB can store"),
            ("1e-320", "closer to zero than DynamoDB can store"),
            ("1e-131", "closer to zero than DynamoDB can store"),
            (
                "123456789012345678901234567890123456789",
                "more than 38 significant digits",
            ),
            ("-1", "must not be negative"),
            ("-1e-320", "must not be negative"),
        ] {
            let err = CallbackPayload::parse(&body(amount)).unwrap_err();
            assert_eq!(err.field, "amount", "{amount}");
            assert!(err.message.contains(needle), "{amount}: {}", err.message);
        }
        for ok in [
            "0",
            "-0",
            "0.0",
            "2339.00",
            "1e125",
            "1E-130",
            "12345678901234567890123456789012345678",
        ] {
            let r = CallbackPayload::parse(&body(ok));
            assert!(r.is_ok(), "{ok}: {r:?}");
        }
        // An already-parsed object (a direct invoke) is checked on the number it holds.
        let mut v = good();
        v["amount"] = json!(1e308);
        assert_eq!(error_of(v).field, "amount");
    }

    #[test]
    fn body_text_problems_are_named() {
        assert_eq!(parse_object("").unwrap_err().message, "body is empty");
        assert_eq!(parse_object("  \n").unwrap_err().message, "body is empty");
        assert!(parse_object("{\"orderId\": ")
            .unwrap_err()
            .message
            .starts_with("body is not valid JSON: EOF while parsing"));
        assert_eq!(
            parse_object("[1,2]").unwrap_err().message,
            "body must be a JSON object, got an array"
        );
        assert_eq!(
            parse_object("\"x\"").unwrap_err().message,
            "body must be a JSON object, got string \"x\""
        );
    }

    #[test]
    fn null_amount_and_message_take_their_defaults() {
        let mut v = good();
        v["amount"] = Value::Null;
        v["message"] = Value::Null;
        let p = CallbackPayload::from_object(obj(v)).unwrap();
        assert_eq!(p.amount, Amount::zero());
        assert_eq!(p.message, "");
    }
}
