//! From a Lambda event to a [`Delivery`], handed to a flow, whose reply is the Lambda response.
//!
//! HTTP events (API Gateway REST v1, HTTP API v2, function URLs) are read with lambda_http, which
//! decodes base64 bodies. Anything else is a direct invocation: `{"body": "<json text>"}`,
//! `{"body": {...}}` or the callback object itself, as the original accepted.
//! Reading an event never fails: what cannot be understood becomes a body that fails validation.
//!
//! An operator's replay (`payment3 replay`, notes/REPLAY_ENVELOPE.md) arrives as a direct invoke
//! `{"payment3Replay": {"delivery", "verified", "operator"}, "event": {...}}`: the event inside is
//! read as any delivery and marked as a replay. Only a non-HTTP event is read as an envelope: an
//! API Gateway or function-URL event always has `requestContext` at top level, so nobody on the
//! public route can send one; the Invoke API that can is IAM-guarded.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lambda_http::{request::RequestContext, RequestExt};
use serde_json::Value;

use crate::domain::delivery::{Body, Delivery, EventKind};
use crate::domain::redact::{redact_headers, redact_value};
use crate::domain::signature::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::flows::error::CallbackError;
use crate::flows::notify::CardNotify;
use crate::flows::processor::{CallbackProcessor, RecordTable};

impl<R: RecordTable> CallbackProcessor<R> {
    /// Handles one Lambda event (SPEC 4.1) and returns the Lambda response.
    pub async fn handle(&self, event: Value, request_id: &str) -> Value {
        let delivery = Delivery::from_event(event, request_id, self.now());
        self.handle_delivery(delivery).await
    }
}

impl CardNotify {
    /// `POST /notify` (SPEC 4.2): never fails, never panics on input.
    pub async fn notify(&self, event: Value, request_id: &str) -> Value {
        let forward = event.to_string();
        let delivery = Delivery::from_event(event, request_id, self.now());
        self.notify_delivery(delivery, forward).await
    }

    /// Delayed notify (SPEC 4.3): `Err` makes Lambda retry the event.
    pub async fn delayed_notify(
        &self,
        event: Value,
        request_id: &str,
    ) -> Result<Value, CallbackError> {
        let delivery = Delivery::from_event(event, request_id, self.now());
        self.delayed_notify_delivery(delivery).await
    }
}

fn is_http_event(event: &Value) -> bool {
    event.get("requestContext").is_some_and(Value::is_object)
        || event.get("httpMethod").is_some()
        || event.get("routeKey").is_some()
}

/// The envelope key of an operator's replay.
pub const REPLAY_ENVELOPE: &str = "payment3Replay";

/// What the envelope says about the replay.
struct ReplayMark {
    of: String,
    verified: bool,
    operator: Option<String>,
}

/// Splits a replay envelope into its mark and the event inside; `None` when `event` is not one
/// (an HTTP event never is). An envelope without a `delivery` string or an `event` object is not
/// one either: it is read as a direct invoke, whose body then fails validation.
fn unwrap_replay(event: &mut Value) -> Option<ReplayMark> {
    if is_http_event(event) {
        return None;
    }
    let map = event.as_object_mut()?;
    let mark = map.get(REPLAY_ENVELOPE)?.as_object()?;
    let of = mark
        .get("delivery")
        .and_then(Value::as_str)
        .filter(|d| !d.trim().is_empty())?
        .to_string();
    // Anything but a JSON `true` is unverified: the signature is then checked as usual.
    let verified = mark.get("verified").and_then(Value::as_bool) == Some(true);
    let operator = mark
        .get("operator")
        .and_then(Value::as_str)
        .map(|o| o.chars().take(256).collect::<String>());
    if !map.get("event").is_some_and(Value::is_object) {
        return None;
    }
    let inner = map.remove("event")?;
    *event = inner;
    Some(ReplayMark {
        of,
        verified,
        operator,
    })
}

impl Delivery {
    pub fn from_event(mut event: Value, request_id: &str, received_at: DateTime<Utc>) -> Self {
        let replay = unwrap_replay(&mut event);
        let delivery = Delivery::read(event, request_id, received_at);
        match replay {
            Some(mark) => Delivery {
                replay_of: Some(mark.of),
                replay_verified: mark.verified,
                replay_operator: mark.operator,
                ..delivery
            },
            None => delivery,
        }
    }

    fn read(event: Value, request_id: &str, received_at: DateTime<Utc>) -> Self {
        let redacted = redact_value(&event);
        let base = Delivery {
            request_id: request_id.to_string(),
            received_at,
            kind: EventKind::Direct,
            headers: BTreeMap::new(),
            signature_headers: BTreeMap::new(),
            source_ip: None,
            body: Body::Empty,
            event: redacted,
            replay_of: None,
            replay_verified: false,
            replay_operator: None,
        };
        // lambda_http panics on a body flagged base64 that is not base64: such an event takes
        // the direct road, where the body is refused with that reason.
        if is_http_event(&event) && !has_undecodable_base64_body(&event) {
            if let Ok(request) = lambda_http::request::from_str(&event.to_string()) {
                return base.with_http(request);
            }
        }
        Delivery {
            headers: redact_headers(direct_headers(&event)),
            signature_headers: signature_headers(direct_headers(&event)),
            body: direct_body(event),
            ..base
        }
    }

    fn with_http(self, request: lambda_http::Request) -> Self {
        let (kind, source_ip) = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(ctx)) => {
                (EventKind::RestV1, ctx.identity.source_ip.clone())
            }
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                (EventKind::HttpV2, ctx.http.source_ip.clone())
            }
            _ => (EventKind::RestV1, None),
        };
        let text_headers = || {
            request
                .headers()
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        };
        let headers = redact_headers(text_headers());
        let signature_headers = signature_headers(text_headers());
        let body = match request.into_body() {
            lambda_http::Body::Empty => Body::Empty,
            lambda_http::Body::Text(t) => Body::Text(t),
            lambda_http::Body::Binary(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Body::Text(text),
                Err(e) => Body::Binary(e.into_bytes()),
            },
            _ => Body::Empty,
        };
        Delivery {
            kind,
            source_ip,
            headers,
            signature_headers,
            body,
            ..self
        }
    }
}

fn has_undecodable_base64_body(event: &Value) -> bool {
    use base64::Engine as _;
    event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true)
        && event
            .get("body")
            .and_then(Value::as_str)
            .is_some_and(|b| base64::engine::general_purpose::STANDARD.decode(b).is_err())
}

/// The Standard Webhooks headers as received (names lower-cased): see
/// [`Delivery::signature_headers`].
fn signature_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER].contains(&k.as_str()))
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// A direct invoke may carry `headers` beside its `body` (as a proxy event does): the signature
/// headers of SPEC 4.5 among them. The text ones, as sent; non-text values dropped.
fn direct_headers(event: &Value) -> impl Iterator<Item = (&str, &str)> {
    event
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
}

fn direct_body(event: Value) -> Body {
    let Value::Object(mut map) = event else {
        return match event {
            Value::String(s) if s.is_empty() => Body::Empty,
            Value::String(s) => Body::Text(s),
            Value::Null => Body::Empty,
            other => Body::Text(other.to_string()),
        };
    };
    match map.remove("body") {
        // The original: event.get("body", event).
        None => Body::Object(map),
        Some(Value::Null) => Body::Empty,
        Some(Value::String(s)) if s.is_empty() => Body::Empty,
        Some(Value::String(s)) => {
            let base64 = map.get("isBase64Encoded").and_then(Value::as_bool) == Some(true);
            if base64 {
                decode_base64(&s)
            } else {
                Body::Text(s)
            }
        }
        Some(Value::Object(o)) => Body::Object(o),
        Some(other) => Body::Text(other.to_string()),
    }
}

fn decode_base64(text: &str) -> Body {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => Body::Text(t),
            Err(e) => Body::Binary(e.into_bytes()),
        },
        // Not base64 after all: keep the text, and let validation name the problem.
        Err(_) => Body::NotBase64(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::MAX_BODY_BYTES;
    use crate::flows::reply::Reply;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap()
    }

    fn rest_v1(body: Value, base64: bool) -> Value {
        json!({
            "resource": "/wallet/callback",
            "path": "/wallet/callback",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json", "X-Api-Key": "secret-value"},
            "multiValueHeaders": {"Content-Type": ["application/json"], "X-Api-Key": ["secret-value"]},
            "queryStringParameters": null,
            "requestContext": {
                "resourcePath": "/wallet/callback", "httpMethod": "POST", "path": "/dev/wallet/callback",
                "stage": "dev", "requestId": "r-1", "accountId": "123456789012", "apiId": "abc",
                "identity": {"sourceIp": "203.0.113.9"}
            },
            "body": body,
            "isBase64Encoded": base64
        })
    }

    #[test]
    fn reads_a_rest_v1_event() {
        let d = Delivery::from_event(rest_v1(json!("{\"a\":1}"), false), "req", now());
        assert_eq!(d.kind, EventKind::RestV1);
        assert_eq!(d.source_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(d.body, Body::Text("{\"a\":1}".into()));
        assert_eq!(d.headers["x-api-key"], crate::domain::redact::REDACTED);
        assert!(!d.event.to_string().contains("secret-value"));
    }

    #[test]
    fn decodes_a_base64_body() {
        // python3 -c "import base64;print(base64.b64encode(b'{\"a\":1}').decode())"
        let d = Delivery::from_event(rest_v1(json!("eyJhIjoxfQ=="), true), "req", now());
        assert_eq!(d.body, Body::Text("{\"a\":1}".into()));
    }

    #[test]
    fn reads_an_http_api_v2_event() {
        let event = json!({
            "version": "2.0", "routeKey": "POST /wallet/callback", "rawPath": "/wallet/callback",
            "rawQueryString": "", "headers": {"content-type": "application/json"},
            "requestContext": {"accountId": "1", "apiId": "a", "domainName": "x", "domainPrefix": "x",
                "http": {"method": "POST", "path": "/wallet/callback", "protocol": "HTTP/1.1",
                         "sourceIp": "198.51.100.7", "userAgent": "gw"},
                "requestId": "r", "routeKey": "POST /wallet/callback", "stage": "$default",
                "time": "21/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
            "body": "{\"b\":2}", "isBase64Encoded": false
        });
        let d = Delivery::from_event(event, "req", now());
        assert_eq!(d.kind, EventKind::HttpV2);
        assert_eq!(d.source_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(d.body, Body::Text("{\"b\":2}".into()));
    }

    #[test]
    fn reads_direct_invocations_like_the_original() {
        let text = Delivery::from_event(json!({"body": "{\"a\":1}"}), "r", now());
        assert_eq!(text.kind, EventKind::Direct);
        assert_eq!(text.body, Body::Text("{\"a\":1}".into()));
        let nested = Delivery::from_event(json!({"body": {"a": 1}}), "r", now());
        assert_eq!(nested.body_object().unwrap()["a"], 1);
        let bare = Delivery::from_event(json!({"orderId": "1"}), "r", now());
        assert_eq!(bare.body_object().unwrap()["orderId"], "1");
        let empty = Delivery::from_event(json!({"body": ""}), "r", now());
        assert_eq!(empty.body_object().unwrap_err().message, "body is empty");
        let weird = Delivery::from_event(json!([1, 2]), "r", now());
        assert!(weird.body_object().is_err());
    }

    #[test]
    fn refuses_oversized_bodies_before_parsing() {
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let d = Delivery::from_event(rest_v1(json!(big), false), "r", now());
        let err = CallbackError::from(d.check_size().unwrap_err());
        assert_eq!(err.status(), 413);
        let exact = "x".repeat(MAX_BODY_BYTES);
        assert!(
            Delivery::from_event(rest_v1(json!(exact), false), "r", now())
                .check_size()
                .is_ok()
        );
    }

    #[test]
    fn a_body_flagged_base64_that_is_not_is_refused_not_a_panic() {
        // lambda_http would panic on this event; it is refused with the reason instead.
        let d = Delivery::from_event(rest_v1(json!("not base64!"), true), "r", now());
        assert_eq!(
            d.body_object().unwrap_err().message,
            "body is marked base64-encoded but is not valid base64"
        );
        assert_eq!(d.body_text(), ("not base64!".to_string(), "text"));
    }

    #[test]
    fn non_utf8_bodies_are_kept_as_base64() {
        // 0xff 0xfe is not UTF-8.
        let d = Delivery::from_event(rest_v1(json!("//4="), true), "r", now());
        assert_eq!(d.body, Body::Binary(vec![0xff, 0xfe]));
        assert_eq!(d.body_text(), ("//4=".to_string(), "base64"));
        assert_eq!(
            d.body_object().unwrap_err().message,
            "body is not UTF-8 text"
        );
    }

    fn envelope(verified: Value) -> Value {
        json!({
            "payment3Replay": {"delivery": "2026-11-20T10:00:00#orig-1", "verified": verified,
                               "operator": "alice"},
            "event": rest_v1(json!("{\"a\":1}"), false)
        })
    }

    #[test]
    fn a_direct_invoke_may_carry_headers() {
        let d = Delivery::from_event(
            json!({"body": "{}", "headers": {"Webhook-Id": "msg_1", "X-Api-Key": "k", "n": 5}}),
            "r",
            now(),
        );
        assert_eq!(d.headers["webhook-id"], "msg_1");
        assert_eq!(d.headers["x-api-key"], crate::domain::redact::REDACTED);
        assert!(!d.headers.contains_key("n"));
        assert_eq!(d.raw_body(), Some(&b"{}"[..]));
        let parsed = Delivery::from_event(json!({"body": {"a": 1}}), "r", now());
        assert_eq!(parsed.raw_body(), None);
    }

    #[test]
    fn a_replay_envelope_is_unwrapped_and_marked() {
        // Given an operator's replay of a stored delivery, sent through the Invoke API
        let d = Delivery::from_event(envelope(json!(true)), "req-new", now());
        // Then the event inside is read as the delivery it was, marked as a replay
        assert_eq!(d.kind, EventKind::RestV1);
        assert_eq!(d.body, Body::Text("{\"a\":1}".into()));
        assert_eq!(d.source_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(d.replay_of.as_deref(), Some("2026-11-20T10:00:00#orig-1"));
        assert!(d.replay_verified);
        assert_eq!(d.replay_operator.as_deref(), Some("alice"));
        assert_eq!(d.request_id, "req-new");
        assert!(d.event.get(REPLAY_ENVELOPE).is_none());
        // Anything but true is unverified
        for verified in [json!(false), json!("true"), json!(null), json!(1)] {
            let d = Delivery::from_event(envelope(verified.clone()), "r", now());
            assert!(d.replay_of.is_some());
            assert!(!d.replay_verified, "{verified}");
        }
    }

    #[test]
    fn nobody_on_the_public_route_can_send_a_replay_envelope() {
        // An HTTP event carrying the envelope keys is an HTTP event: no replay mark.
        let mut event = rest_v1(json!("{\"a\":1}"), false);
        event[REPLAY_ENVELOPE] = json!({"delivery": "x#y", "verified": true});
        event["event"] = rest_v1(json!("{\"b\":2}"), false);
        let d = Delivery::from_event(event, "r", now());
        assert_eq!(d.replay_of, None);
        assert!(!d.replay_verified);
        assert_eq!(d.body, Body::Text("{\"a\":1}".into()));
        // A plain direct invoke is no replay either.
        let d = Delivery::from_event(json!({"body": "{}"}), "r", now());
        assert_eq!(d.replay_of, None);
    }

    #[test]
    fn a_malformed_envelope_is_not_a_replay() {
        for event in [
            json!({"payment3Replay": {"verified": true}, "event": rest_v1(json!("{}"), false)}),
            json!({"payment3Replay": {"delivery": "", "verified": true}, "event": {}}),
            json!({"payment3Replay": {"delivery": "x#y", "verified": true}, "event": "text"}),
            json!({"payment3Replay": "x#y", "event": {}}),
        ] {
            let d = Delivery::from_event(event.clone(), "r", now());
            assert_eq!(d.replay_of, None, "{event}");
            assert!(!d.replay_verified);
            // It is read as a direct invoke, whose body is the envelope: validation refuses it.
            assert_eq!(d.kind, EventKind::Direct);
        }
    }

    #[test]
    fn reply_has_the_proxy_shape() {
        let r = Reply::json(200, &json!({"success": true})).into_event();
        assert_eq!(r["statusCode"], 200);
        assert_eq!(r["headers"]["Content-Type"], "application/json");
        assert_eq!(r["body"], "{\"success\":true}");
    }
}
