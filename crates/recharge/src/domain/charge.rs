//! What a Recharge webhook says about a charge: its topic, and the failed charge it names.
//! Parsed once by the webhook; the dunning function receives the parsed [`DunningJob`].

use callback_core::domain::money::decimal_from_value;
use callback_core::ValidationError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The header that names a delivery's topic (the body's `topic` is the fallback).
pub const TOPIC_HEADER: &str = "x-recharge-topic";

/// Ids longer than this are refused (DynamoDB key attributes, SPEC 4.6).
const MAX_ID_BYTES: usize = 1024;

/// The topics this system acts on; every other topic is kept and answered 200.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// `charge/failed`: ask for a retry date and reschedule the charge.
    ChargeFailed,
    /// `charge/max_retries_reached`: recorded and alerted, never rescheduled.
    MaxRetriesReached,
    /// Anything else (`charge/paid`, `subscription/created`, ...): kept only.
    Other(String),
}

impl Topic {
    pub fn parse(text: &str) -> Topic {
        match text.trim() {
            "charge/failed" => Topic::ChargeFailed,
            "charge/max_retries_reached" => Topic::MaxRetriesReached,
            other => Topic::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Topic::ChargeFailed => "charge/failed",
            Topic::MaxRetriesReached => "charge/max_retries_reached",
            Topic::Other(t) => t,
        }
    }

    /// Whether the dunning function has work for this topic.
    pub fn acted_on(&self) -> bool {
        !matches!(self, Topic::Other(_))
    }
}

/// The topic of a delivery: the header when present, else the body's `topic`.
pub fn topic_of(header: Option<&str>, body: Option<&Map<String, Value>>) -> Option<Topic> {
    header
        .filter(|h| !h.trim().is_empty())
        .map(Topic::parse)
        .or_else(|| {
            body.and_then(|b| b.get("topic"))
                .and_then(Value::as_str)
                .filter(|t| !t.trim().is_empty())
                .map(Topic::parse)
        })
}

/// A failed charge, as the dunning service and the ledger need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeFailure {
    /// Recharge's charge id (a number in Recharge's JSON; kept as its text).
    pub charge_id: String,
    /// Which failed attempt this is, from 1 (`charge_attempts`); 0 when a
    /// `charge/max_retries_reached` names none.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The amount as decimal text (`total_price`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Recharge's `error_type` (`CARD_DECLINED`, `INSUFFICIENT_FUNDS`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

/// The charge object of a webhook body: `{"charge": {...}}`, or the charge itself.
fn charge_object(body: &Map<String, Value>) -> &Map<String, Value> {
    match body.get("charge") {
        Some(Value::Object(charge)) => charge,
        _ => body,
    }
}

/// An id written as a JSON number or a non-empty string.
fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

fn short_text(
    value: Option<&Value>,
    field: &'static str,
) -> Result<Option<String>, ValidationError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ValidationError::new(
            field,
            format!("{field} is longer than {MAX_ID_BYTES} bytes"),
        )),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ValidationError::new(
            field,
            format!("{field} must be a string"),
        )),
    }
}

impl ChargeFailure {
    /// Reads the charge of a `charge/failed` (attempt required) or `charge/max_retries_reached`
    /// (attempt optional) body.
    pub fn from_body(body: &Map<String, Value>, topic: &Topic) -> Result<Self, ValidationError> {
        let charge = charge_object(body);
        let charge_id = id_text(charge.get("id")).ok_or_else(|| {
            ValidationError::new("charge.id", "charge.id is required (a number or a string)")
        })?;
        if charge_id.len() > MAX_ID_BYTES {
            return Err(ValidationError::new(
                "charge.id",
                format!("charge.id is longer than {MAX_ID_BYTES} bytes"),
            ));
        }
        let attempt = match charge.get("charge_attempts") {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(a @ 1..=1000) => a as u32,
                _ => {
                    return Err(ValidationError::new(
                        "charge.charge_attempts",
                        "charge.charge_attempts must be a whole number from 1 to 1000",
                    ))
                }
            },
            None | Some(Value::Null) if *topic == Topic::MaxRetriesReached => 0,
            None | Some(Value::Null) => {
                return Err(ValidationError::new(
                    "charge.charge_attempts",
                    "charge.charge_attempts is required for charge/failed",
                ))
            }
            Some(_) => {
                return Err(ValidationError::new(
                    "charge.charge_attempts",
                    "charge.charge_attempts must be a number",
                ))
            }
        };
        let customer_id = id_text(charge.get("customer_id")).or_else(|| {
            charge
                .get("customer")
                .and_then(Value::as_object)
                .and_then(|c| id_text(c.get("id")))
        });
        if customer_id.as_ref().is_some_and(|c| c.len() > MAX_ID_BYTES) {
            return Err(ValidationError::new(
                "charge.customer_id",
                format!("charge.customer_id is longer than {MAX_ID_BYTES} bytes"),
            ));
        }
        let amount = match charge.get("total_price").or_else(|| charge.get("amount")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                decimal_from_value(v)
                    .ok_or_else(|| {
                        ValidationError::new(
                            "charge.total_price",
                            "charge.total_price must be a decimal number",
                        )
                    })?
                    .to_string(),
            ),
        };
        Ok(ChargeFailure {
            charge_id,
            attempt,
            customer_id,
            amount,
            currency: short_text(charge.get("currency"), "charge.currency")?,
            error_type: short_text(charge.get("error_type"), "charge.error_type")?,
        })
    }

    /// Where the webhook's deliveries about this charge are filed in the inbox (its `orderId`).
    pub fn inbox_key(&self) -> String {
        inbox_key(&self.charge_id)
    }
}

/// The charge id a body names, if any (for filing a delivery before it is verified or valid).
pub fn charge_id_of(body: &Map<String, Value>) -> Option<String> {
    id_text(charge_object(body).get("id")).filter(|id| id.len() <= MAX_ID_BYTES)
}

/// The inbox's `orderId` for a Recharge charge: prefixed, so it never collides with a shop order.
pub fn inbox_key(charge_id: &str) -> String {
    format!("recharge-charge-{charge_id}")
}

/// What the webhook hands to the dunning function (the async invoke's payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DunningJob {
    /// `charge/failed` or `charge/max_retries_reached`.
    pub topic: String,
    pub charge: ChargeFailure,
    /// The webhook delivery it came from (the inbox's request id), for tracing.
    pub request_id: String,
    pub received_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_a_recharge_charge_failed_body() {
        let body = object(json!({"charge": {
            "id": 389001234, "customer_id": 77001, "total_price": "49.90", "currency": "USD",
            "error_type": "CARD_DECLINED", "charge_attempts": 2, "status": "ERROR"
        }}));
        let c = ChargeFailure::from_body(&body, &Topic::ChargeFailed).unwrap();
        assert_eq!(c.charge_id, "389001234");
        assert_eq!(c.attempt, 2);
        assert_eq!(c.customer_id.as_deref(), Some("77001"));
        assert_eq!(c.amount.as_deref(), Some("49.90"));
        assert_eq!(c.currency.as_deref(), Some("USD"));
        assert_eq!(c.error_type.as_deref(), Some("CARD_DECLINED"));
        assert_eq!(c.inbox_key(), "recharge-charge-389001234");
    }

    #[test]
    fn the_attempt_is_required_for_a_failure_but_not_for_max_retries() {
        let body = object(json!({"charge": {"id": "c1"}}));
        assert_eq!(
            ChargeFailure::from_body(&body, &Topic::ChargeFailed)
                .unwrap_err()
                .field,
            "charge.charge_attempts"
        );
        assert_eq!(
            ChargeFailure::from_body(&body, &Topic::MaxRetriesReached)
                .unwrap()
                .attempt,
            0
        );
        for bad in [json!(0), json!(-1), json!(1.5), json!("2"), json!(1001)] {
            let body = object(json!({"charge": {"id": 1, "charge_attempts": bad}}));
            assert!(ChargeFailure::from_body(&body, &Topic::ChargeFailed).is_err());
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_charge() {
        for body in [
            json!({}),
            json!({"charge": {"id": ""}}),
            json!({"charge": {"id": null, "charge_attempts": 1}}),
            json!({"charge": {"id": true, "charge_attempts": 1}}),
            json!({"charge": {"id": "x".repeat(1025), "charge_attempts": 1}}),
            json!({"charge": {"id": 1, "charge_attempts": 1, "total_price": "12,00"}}),
            json!({"charge": {"id": 1, "charge_attempts": 1, "currency": {"a": 1}}}),
        ] {
            assert!(
                ChargeFailure::from_body(&object(body.clone()), &Topic::ChargeFailed).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_topic_comes_from_the_header_then_the_body() {
        let body = object(json!({"topic": "charge/max_retries_reached"}));
        assert_eq!(
            topic_of(Some("charge/failed"), Some(&body)),
            Some(Topic::ChargeFailed)
        );
        assert_eq!(topic_of(None, Some(&body)), Some(Topic::MaxRetriesReached));
        assert_eq!(topic_of(Some(" "), None), None);
        assert_eq!(
            topic_of(Some("subscription/created"), None),
            Some(Topic::Other("subscription/created".into()))
        );
    }

    #[test]
    fn the_job_round_trips_as_json() {
        let job = DunningJob {
            topic: "charge/failed".into(),
            charge: ChargeFailure {
                charge_id: "1".into(),
                attempt: 1,
                customer_id: None,
                amount: Some("10".into()),
                currency: None,
                error_type: None,
            },
            request_id: "r".into(),
            received_at: "2026-11-30T00:00:00".into(),
        };
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains("\"chargeId\":\"1\""));
        assert_eq!(serde_json::from_str::<DunningJob>(&text).unwrap(), job);
    }
}
