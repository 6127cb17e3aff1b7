//! The two HTTP services of the dunning function, on reqwest (rustls, timeouts):
//! [`DunningClient`] asks the dunning service for a retry date (short timeout: a slow answer is
//! no answer, the fallback schedule takes over); [`RechargeClient`] tells Recharge the date.
//! Error texts never carry the API token (reqwest names the URL, never the headers).

use std::time::Duration;

use async_trait::async_trait;
use callback_core::redact_text;
use reqwest::Url;
use serde_json::{json, Value};

use crate::domain::charge::ChargeFailure;
use crate::domain::schedule::RetryDate;
use crate::ports::{AdvisorError, RechargeApi, RechargeApiError, RetryDateAdvisor};

/// Recharge's API version this client speaks (`X-Recharge-Version`).
pub const RECHARGE_API_VERSION: &str = "2021-01";

/// At most 200 characters of a body, redacted: enough to say what was wrong.
fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
    redact_text(&text)
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

fn base_url(base: &str) -> Result<Url, String> {
    Url::parse(base.trim_end_matches('/'))
        .ok()
        .filter(|u| !u.cannot_be_a_base())
        .ok_or_else(|| format!("{base:?} is not an http(s) base URL"))
}

/// The dunning service: `POST {base}/v1/retry-date` -> `{"retry_date": "YYYY-MM-DD"}`.
#[derive(Clone, Debug)]
pub struct DunningClient {
    http: reqwest::Client,
    url: Url,
    timeout: Duration,
}

impl DunningClient {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let mut url = base_url(base)?;
        url.path_segments_mut()
            .map_err(|_| "not a base URL".to_string())?
            .pop_if_empty()
            .extend(["v1", "retry-date"]);
        Ok(DunningClient {
            http: client(timeout)?,
            url,
            timeout,
        })
    }
}

/// Reads the service's answer: a JSON object whose `retry_date` is a string.
pub fn parse_retry_date(body: &[u8]) -> Result<String, AdvisorError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| AdvisorError::Nonsense(format!("not JSON: {}", snippet(body))))?;
    match value.get("retry_date") {
        Some(Value::String(date)) => Ok(date.clone()),
        Some(other) => Err(AdvisorError::Nonsense(format!(
            "retry_date is not a string: {}",
            snippet(other.to_string().as_bytes())
        ))),
        None => Err(AdvisorError::Nonsense(format!(
            "no retry_date in {}",
            snippet(body)
        ))),
    }
}

#[async_trait]
impl RetryDateAdvisor for DunningClient {
    async fn retry_date(&self, charge: &ChargeFailure) -> Result<String, AdvisorError> {
        let request = json!({
            "charge_id": charge.charge_id,
            "customer_id": charge.customer_id,
            "amount": charge.amount,
            "currency": charge.currency,
            "error_type": charge.error_type,
            "attempt_count": charge.attempt,
        });
        let sent = async {
            let response = self
                .http
                .post(self.url.clone())
                .header("accept", "application/json")
                .json(&request)
                .send()
                .await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = sent.await.map_err(|e| {
            if e.is_timeout() {
                AdvisorError::Timeout(self.timeout.as_millis())
            } else {
                AdvisorError::Unreachable(redact_text(&e.to_string()))
            }
        })?;
        if !(200..300).contains(&status) {
            return Err(AdvisorError::Status(status));
        }
        parse_retry_date(&body)
    }
}

/// Recharge's API (`RECHARGE_API_BASE`, e.g. `https://api.rechargeapps.com`).
#[derive(Clone, Debug)]
pub struct RechargeClient {
    http: reqwest::Client,
    base: Url,
}

impl RechargeClient {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        Ok(RechargeClient {
            http: client(timeout)?,
            base: base_url(base)?,
        })
    }

    /// `{base}/charges/{id}/change_next_charge_date`, the id percent-encoded as one segment.
    pub fn change_date_url(&self, charge_id: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["charges", charge_id, "change_next_charge_date"]);
        }
        url
    }
}

#[async_trait]
impl RechargeApi for RechargeClient {
    async fn change_next_charge_date(
        &self,
        charge_id: &str,
        date: &RetryDate,
        api_token: &str,
    ) -> Result<u16, RechargeApiError> {
        let sent = async {
            let response = self
                .http
                .post(self.change_date_url(charge_id))
                .header("X-Recharge-Access-Token", api_token)
                .header("X-Recharge-Version", RECHARGE_API_VERSION)
                .header("accept", "application/json")
                .json(&json!({"next_charge_date": date.to_string()}))
                .send()
                .await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let (status, body) = sent
            .await
            .map_err(|e| RechargeApiError::Unreachable(redact_text(&e.to_string())))?;
        match status {
            200..=299 => Ok(status),
            408 | 429 | 500..=599 => Err(RechargeApiError::Unavailable { status }),
            _ => Err(RechargeApiError::Refused {
                status,
                body: snippet(&body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-route HTTP server answering every request with `status` and `body` after `delay`;
    /// returns its base URL and what it received.
    async fn server(
        status: u16,
        body: &'static str,
        delay: Duration,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    log.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    tokio::time::sleep(delay).await;
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        (base, seen)
    }

    fn charge() -> ChargeFailure {
        ChargeFailure {
            charge_id: "389001234".into(),
            attempt: 2,
            customer_id: Some("77001".into()),
            amount: Some("49.90".into()),
            currency: Some("USD".into()),
            error_type: Some("CARD_DECLINED".into()),
        }
    }

    fn date() -> RetryDate {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        RetryDate::parse("2026-12-04", today).unwrap()
    }

    #[tokio::test]
    async fn asks_the_dunning_service_with_the_charge() {
        let (base, seen) = server(200, r#"{"retry_date": "2026-12-04"}"#, Duration::ZERO).await;
        let c = DunningClient::new(&base, Duration::from_secs(2)).unwrap();
        assert_eq!(c.retry_date(&charge()).await.unwrap(), "2026-12-04");
        let request = seen.lock().unwrap()[0].clone();
        assert!(request.starts_with("POST /v1/retry-date "), "{request}");
        for part in [
            r#""charge_id":"389001234""#,
            r#""attempt_count":2"#,
            r#""error_type":"CARD_DECLINED""#,
            r#""customer_id":"77001""#,
            r#""amount":"49.90""#,
            r#""currency":"USD""#,
        ] {
            assert!(request.contains(part), "{part} in {request}");
        }
    }

    #[tokio::test]
    async fn a_slow_down_or_nonsense_dunning_service_is_an_error() {
        let (slow, _) = server(
            200,
            r#"{"retry_date": "2026-12-04"}"#,
            Duration::from_secs(3),
        )
        .await;
        let c = DunningClient::new(&slow, Duration::from_millis(300)).unwrap();
        assert_eq!(
            c.retry_date(&charge()).await,
            Err(AdvisorError::Timeout(300))
        );

        let (failing, _) = server(503, "{}", Duration::ZERO).await;
        let c = DunningClient::new(&failing, Duration::from_secs(2)).unwrap();
        assert_eq!(
            c.retry_date(&charge()).await,
            Err(AdvisorError::Status(503))
        );

        let (nonsense, _) = server(200, "<html>maintenance</html>", Duration::ZERO).await;
        let c = DunningClient::new(&nonsense, Duration::from_secs(2)).unwrap();
        assert!(matches!(
            c.retry_date(&charge()).await,
            Err(AdvisorError::Nonsense(_))
        ));

        // Nothing listens on port 9 of localhost.
        let c = DunningClient::new("http://127.0.0.1:9", Duration::from_secs(2)).unwrap();
        assert!(matches!(
            c.retry_date(&charge()).await,
            Err(AdvisorError::Unreachable(_))
        ));
    }

    #[test]
    fn the_answer_must_hold_a_retry_date_string() {
        assert_eq!(parse_retry_date(br#"{"retry_date":"x"}"#).unwrap(), "x");
        for body in [
            &b"[]"[..],
            b"{}",
            br#"{"retry_date": 20261204}"#,
            b"",
            b"null",
        ] {
            assert!(parse_retry_date(body).is_err());
        }
    }

    #[tokio::test]
    async fn tells_recharge_the_date_with_its_headers() {
        let (base, seen) = server(200, r#"{"charge": {}}"#, Duration::ZERO).await;
        let c = RechargeClient::new(&base, Duration::from_secs(2)).unwrap();
        assert_eq!(
            c.change_next_charge_date("389001234", &date(), "tok_abc")
                .await,
            Ok(200)
        );
        let request = seen.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            request.starts_with("post /charges/389001234/change_next_charge_date "),
            "{request}"
        );
        assert!(request.contains("x-recharge-access-token: tok_abc"));
        assert!(request.contains("x-recharge-version: 2021-01"));
        assert!(request.contains(r#"{"next_charge_date":"2026-12-04"}"#));
    }

    #[tokio::test]
    async fn recharge_failures_are_retryable_or_not() {
        let (busy, _) = server(503, "{}", Duration::ZERO).await;
        let c = RechargeClient::new(&busy, Duration::from_secs(2)).unwrap();
        let err = c
            .change_next_charge_date("1", &date(), "t")
            .await
            .unwrap_err();
        assert_eq!(err, RechargeApiError::Unavailable { status: 503 });
        assert!(err.retryable());

        let (refused, _) = server(422, r#"{"errors": "date invalid"}"#, Duration::ZERO).await;
        let c = RechargeClient::new(&refused, Duration::from_secs(2)).unwrap();
        let err = c
            .change_next_charge_date("1", &date(), "t")
            .await
            .unwrap_err();
        assert!(matches!(err, RechargeApiError::Refused { status: 422, .. }));
        assert!(!err.retryable());

        let (slow, _) = server(200, "{}", Duration::from_secs(3)).await;
        let c = RechargeClient::new(&slow, Duration::from_millis(300)).unwrap();
        let err = c
            .change_next_charge_date("1", &date(), "t")
            .await
            .unwrap_err();
        assert!(matches!(err, RechargeApiError::Unreachable(_)) && err.retryable());
    }

    #[test]
    fn a_charge_id_is_one_path_segment() {
        let c = RechargeClient::new("http://recharge.local/api/", Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.change_date_url("1/../x y").as_str(),
            "http://recharge.local/api/charges/1%2F..%2Fx%20y/change_next_charge_date"
        );
    }
}
