//! From a Lambda event to what the flows take. The webhook's two headers are read from the raw
//! event, before callback-core redacts the delivery's header map for storage.

use callback_core::Delivery;
use serde_json::Value;

use crate::domain::charge::TOPIC_HEADER;
use crate::domain::signature::SIGNATURE_HEADER;
use crate::flows::dunning::RechargeDunning;
use crate::flows::webhook::{RechargeHeaders, RechargeWebhook};

/// A header of an HTTP event (REST v1 `headers`/`multiValueHeaders`, v2 `headers`), by name
/// without case; `None` for a direct invocation or an absent header.
pub fn raw_header(event: &Value, name: &str) -> Option<String> {
    let find = |map: Option<&Value>| -> Option<Value> {
        map?.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match find(event.get("headers")) {
        Some(Value::String(s)) => Some(s),
        _ => match find(event.get("multiValueHeaders")) {
            Some(Value::Array(values)) => values.first().and_then(Value::as_str).map(String::from),
            _ => None,
        },
    }
}

impl RechargeHeaders {
    pub fn of(event: &Value) -> Self {
        RechargeHeaders {
            signature: raw_header(event, SIGNATURE_HEADER),
            topic: raw_header(event, TOPIC_HEADER),
        }
    }
}

impl RechargeWebhook {
    /// `POST /recharge/webhook`: never fails, never panics on input.
    pub async fn handle(&self, event: Value, request_id: &str) -> Value {
        let headers = RechargeHeaders::of(&event);
        let delivery = Delivery::from_event(event, request_id, self.now());
        self.handle_delivery(delivery, headers).await
    }
}

/// The dunning function takes the job object itself; `RechargeDunning::handle` reads it.
pub fn job_event(event: Value) -> Value {
    match event {
        // A job handed over as JSON text (a replay through the console) is read the same way.
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    }
}

impl RechargeDunning {
    pub async fn handle_event(
        &self,
        event: Value,
        request_id: &str,
    ) -> Result<Value, callback_core::CallbackError> {
        self.handle(job_event(event), request_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_are_found_without_case_in_v1_and_v2_events() {
        let v1 = json!({"headers": {"X-Recharge-Hmac-Sha256": "abc", "X-Recharge-Topic": "charge/failed"}});
        assert_eq!(
            RechargeHeaders::of(&v1),
            RechargeHeaders {
                signature: Some("abc".into()),
                topic: Some("charge/failed".into())
            }
        );
        let multi =
            json!({"headers": null, "multiValueHeaders": {"x-recharge-hmac-sha256": ["d1", "d2"]}});
        assert_eq!(raw_header(&multi, SIGNATURE_HEADER).as_deref(), Some("d1"));
        assert_eq!(raw_header(&json!({"charge": {}}), SIGNATURE_HEADER), None);
        assert_eq!(raw_header(&json!("text"), SIGNATURE_HEADER), None);
    }
}
