//! The KBank charge inquiry (SPEC 4.4 step 1): `GET {KBANK_API_BASE}/card/v2/charge/{chargeId}`
//! with `x-api-key: <secretKey>`. Behind the [`ChargeInquiry`] trait so process-paid can be
//! tested without a network; [`KBankClient`] is the real one, on reqwest.
//!
//! A timeout, a connection error, a 5xx, 408, 425, 429 or a 2xx body that is not the expected
//! charge is retryable (the function fails, Lambda retries: a rate limit during a sale must not
//! leave paid orders unpaid); any other 4xx is a refusal (401/403: process-paid forces one read
//! of the secret first). Redirects are not followed (the `x-api-key` header would go with them)
//! and a body is read up to [`MAX_BODY_BYTES`].

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::domain::charge::{Charge, ChargeId};
use crate::domain::money::decimal_from_raw;
use crate::domain::redact::redact_text;
use crate::domain::secret::SecretKey;
use crate::ports::error::GatewayError;
use crate::ports::ChargeInquiry;

/// Parses an inquiry answer: a JSON object with at least `id`, `amount`, `currency`, `status`
/// and `transaction_state`; the amount is read from its JSON text, never through a float.
pub fn parse_charge(body: &[u8]) -> Result<Charge, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| GatewayError::Unexpected("the body is not UTF-8 text".into()))?;
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(text)
        .map_err(|_| GatewayError::Unexpected(format!("not a JSON object: {}", snippet(text))))?;
    let text_field = |name: &str| -> Result<String, GatewayError> {
        let raw = fields
            .get(name)
            .ok_or_else(|| GatewayError::Unexpected(format!("{name} is missing")))?;
        match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::String(s)) => Ok(s),
            _ => Err(GatewayError::Unexpected(format!("{name} is not a string"))),
        }
    };
    let amount = fields
        .get("amount")
        .ok_or_else(|| GatewayError::Unexpected("amount is missing".into()))
        .and_then(|raw| {
            decimal_from_raw(raw)
                .ok_or_else(|| GatewayError::Unexpected("amount is not a decimal number".into()))
        })?;
    let reference_order = match fields.get("reference_order") {
        None => None,
        Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::Null) => None,
            Ok(serde_json::Value::String(s)) if s.trim().is_empty() => None,
            Ok(serde_json::Value::String(s)) => Some(s.trim().to_string()),
            Ok(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => {
                return Err(GatewayError::Unexpected(
                    "reference_order is not a string".into(),
                ))
            }
        },
    };
    Ok(Charge {
        reference_order,
        id: text_field("id")?,
        amount,
        currency: text_field("currency")?,
        status: text_field("status")?,
        transaction_state: text_field("transaction_state")?,
    })
}

/// The largest inquiry answer read; a charge is a few KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// At most 200 characters of a body, redacted: enough to say what was wrong.
fn snippet(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    redact_text(&short)
}

/// The KBank API over HTTPS.
#[derive(Clone, Debug)]
pub struct KBankClient {
    http: reqwest::Client,
    base: String,
}

impl KBankClient {
    /// `base` without a trailing slash; `timeout` bounds the whole request.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GatewayError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(KBankClient {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }
}

#[async_trait]
impl ChargeInquiry for KBankClient {
    async fn charge(&self, id: &ChargeId, key: &SecretKey) -> Result<Charge, GatewayError> {
        let url = format!("{}/card/v2/charge/{}", self.base, id.as_str());
        let response = self
            .http
            .get(&url)
            .header("x-api-key", key.expose())
            .header("accept", "application/json")
            .send()
            .await
            // reqwest's error text names the URL, never the headers.
            .map_err(|e| GatewayError::Unreachable(redact_text(&e.to_string())))?;
        let status = response.status().as_u16();
        let body = read_capped(response).await?;
        match status {
            200..=299 => parse_charge(&body),
            408 | 425 | 429 => Err(GatewayError::Throttled { status }),
            500..=599 => Err(GatewayError::ServerError { status }),
            _ => Err(GatewayError::Refused {
                status,
                body: snippet(&String::from_utf8_lossy(&body)),
            }),
        }
    }
}

/// The body, up to [`MAX_BODY_BYTES`]; more is an unexpected answer, not a memory problem.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, GatewayError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GatewayError::Unreachable(redact_text(&e.to_string())))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(GatewayError::Unexpected(format!(
                "the body is over {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::charge::ChargeState;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn parses_a_charge_and_its_state() {
        let c = parse_charge(
            br#"{"id":"chrg_1","object":"charge","amount":2339.00,"currency":"THB",
                 "status":"success","transaction_state":"Authorized","extra":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(c.amount.to_string(), "2339.00");
        assert_eq!(c.state(), ChargeState::Paid);
        let pending = parse_charge(
            br#"{"id":"c","amount":"1","currency":"THB","status":"success","transaction_state":"Pre-Authorized"}"#,
        )
        .unwrap();
        assert_eq!(pending.state(), ChargeState::Pending);
        let failed = parse_charge(
            br#"{"id":"c","amount":1,"currency":"THB","status":"fail","transaction_state":"Declined"}"#,
        )
        .unwrap();
        assert_eq!(failed.state(), ChargeState::Failed);
    }

    #[test]
    fn an_unexpected_body_says_what_is_wrong() {
        for (body, needle) in [
            (&b"<html>gateway</html>"[..], "not a JSON object"),
            (br#"{"id":"c","currency":"THB","status":"s","transaction_state":"t"}"#, "amount is missing"),
            (br#"{"id":"c","amount":true,"currency":"THB","status":"s","transaction_state":"t"}"#, "amount is not a decimal"),
            (br#"{"id":"c","amount":1,"currency":"THB","status":5,"transaction_state":"t"}"#, "status is not a string"),
            (br#"[1]"#, "not a JSON object"),
            (&[0xff, 0xfe][..], "not UTF-8"),
        ] {
            let err = parse_charge(body).unwrap_err();
            // A proxy's page or a cut answer: asking again may get the real one.
            assert!(err.retryable());
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn charge_ids_cannot_escape_the_path() {
        assert!(ChargeId::parse("chargeId", "chrg_test_123-x").is_ok());
        for bad in ["", "  ", "../admin", "a/b", "a?b", "chrg 1", "a%2F"] {
            assert!(ChargeId::parse("chargeId", bad).is_err(), "{bad}");
        }
    }

    /// A one-connection-at-a-time HTTP server answering each request with the next canned
    /// response; it records the request head it saw.
    async fn serve(responses: Vec<(u16, &'static str, u64)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            for (status, body, delay_ms) in responses {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                // A redirect points back here: a client that followed it would ask again.
                let location = if (300..400).contains(&status) {
                    "location: /card/v2/charge/elsewhere\r\n"
                } else {
                    ""
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{location}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (base, seen)
    }

    #[tokio::test]
    async fn the_client_sends_the_key_and_maps_each_answer() {
        let ok = r#"{"id":"chrg_1","amount":100.50,"currency":"THB","status":"success","transaction_state":"Authorized"}"#;
        let (base, seen) = serve(vec![
            (200, ok, 0),
            (503, "busy", 0),
            (404, r#"{"error":"charge not found"}"#, 0),
            (200, "<html>", 0),
            (200, ok, 3000),
        ])
        .await;
        // A timeout no loaded machine reaches for the prompt answers (a 1 s one did, under
        // parallel `cargo test`); a short one for the slow answer, which is longer by design.
        let client = KBankClient::new(&base, Duration::from_secs(30)).unwrap();
        let impatient = KBankClient::new(&base, Duration::from_millis(300)).unwrap();
        let id = ChargeId::parse("chargeId", "chrg_1").unwrap();
        let key = SecretKey::new("skey_test_x");

        let charge = client.charge(&id, &key).await.unwrap();
        assert_eq!(charge.amount.to_string(), "100.50");
        let head = seen.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            head.starts_with("get /card/v2/charge/chrg_1 http/1.1"),
            "{head}"
        );
        assert!(head.contains("x-api-key: skey_test_x"), "{head}");

        let busy = client.charge(&id, &key).await.unwrap_err();
        assert_eq!(busy, GatewayError::ServerError { status: 503 });
        assert!(busy.retryable());

        let refused = client.charge(&id, &key).await.unwrap_err();
        assert!(!refused.retryable());
        assert!(refused.to_string().contains("404"), "{refused}");
        assert!(
            refused.to_string().contains("charge not found"),
            "{refused}"
        );

        let garbage = client.charge(&id, &key).await.unwrap_err();
        assert!(matches!(garbage, GatewayError::Unexpected(_)));

        let slow = impatient.charge(&id, &key).await.unwrap_err();
        assert!(matches!(slow, GatewayError::Unreachable(_)), "{slow:?}");
        assert!(slow.retryable());
        assert!(!slow.to_string().contains("skey_test_x"));
    }

    #[tokio::test]
    async fn busy_answers_are_retried_and_redirects_are_not_followed() {
        let (base, seen) = serve(vec![
            (429, r#"{"error":"rate limit"}"#, 0),
            (408, "", 0),
            (425, "", 0),
            (401, r#"{"error":"invalid key"}"#, 0),
            (302, "", 0),
            (
                200,
                Box::leak("x".repeat(MAX_BODY_BYTES + 1).into_boxed_str()),
                0,
            ),
        ])
        .await;
        let client = KBankClient::new(&base, Duration::from_secs(30)).unwrap();
        let id = ChargeId::parse("chargeId", "chrg_1").unwrap();
        let key = SecretKey::new("skey_test_x");
        for status in [429, 408, 425] {
            let err = client.charge(&id, &key).await.unwrap_err();
            assert_eq!(err, GatewayError::Throttled { status });
            assert!(err.retryable());
        }
        let refused = client.charge(&id, &key).await.unwrap_err();
        assert!(refused.key_refused() && !refused.retryable(), "{refused:?}");
        // A redirect is an answer, not an instruction to send the key elsewhere.
        let moved = client.charge(&id, &key).await.unwrap_err();
        assert!(
            matches!(moved, GatewayError::Refused { status: 302, .. }),
            "{moved:?}"
        );
        // A body over the cap is not read into memory: an unexpected answer, asked again later.
        let huge = client.charge(&id, &key).await.unwrap_err();
        assert!(
            matches!(&huge, GatewayError::Unexpected(m) if m.contains("over")),
            "{huge:?}"
        );
        assert_eq!(
            seen.lock().unwrap().len(),
            6,
            "one request per call, none followed"
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_retryable() {
        // A port this test holds bound but never listens on: refused, and no other test can
        // take it meanwhile (a dropped listener's port could be reused by a parallel test).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let base = format!("http://{}", socket.local_addr().unwrap());
        let client = KBankClient::new(&base, Duration::from_secs(30)).unwrap();
        let err = client
            .charge(
                &ChargeId::parse("c", "chrg_1").unwrap(),
                &SecretKey::new("skey_x"),
            )
            .await
            .unwrap_err();
        assert!(err.retryable(), "{err:?}");
    }
}
