//! `POST /recharge/webhook` (SPEC 9). One road: delivery -> inbox -> digest -> topic -> charge ->
//! hand-off -> reply. Recharge waits 5 s and retries a failed delivery for 48 h, so the webhook
//! does only what must happen before it answers: keep the delivery, verify it, and queue the
//! work for the dunning function (an async invoke, retried by Lambda, failures to the queue).
//!
//! Answers: 200 (kept, and handed off when the topic is acted on), 401 (digest missing or wrong:
//! kept, error path, nothing handed off), 400 (verified but unusable), 413 (too large), 500 (the
//! delivery could not be kept or handed off: Recharge retries).

use std::sync::Arc;

use callback_core::domain::delivery::Body;
use callback_core::flows::inbox::outcome_of;
use callback_core::{
    CallbackError, Delivery, Inbox, InboxOutcome, Incident, IncidentReporter, Ports, Reply,
    SecretCache, Settings, ValidationError,
};
use serde_json::{json, Map, Value};

use crate::domain::charge::{charge_id_of, inbox_key, topic_of, ChargeFailure, DunningJob};
use crate::domain::signature::{self, SignatureError};
use crate::flows::settings::WebhookSettings;
use crate::ports::secret::client_secret;

/// The webhook's name in the error log, Sentry tags and alerts.
pub const WEBHOOK_FUNCTION: &str = "rechargewebhook";

const FAILURE_MESSAGE: &str = "Failed to process Recharge webhook";

/// The two headers the webhook reads, taken from the raw event (the delivery's own header map
/// is redacted for storage, which could alter a digest that happens to look like a card number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RechargeHeaders {
    pub signature: Option<String>,
    pub topic: Option<String>,
}

/// What went wrong with a delivery.
enum Failure {
    Unverified(SignatureError),
    Other(CallbackError),
}

/// The Recharge webhook.
pub struct RechargeWebhook {
    settings: Arc<Settings>,
    webhook: Arc<WebhookSettings>,
    ports: Ports,
    reporter: IncidentReporter,
    client_secret: SecretCache,
}

impl RechargeWebhook {
    pub fn new(settings: Arc<Settings>, webhook: Arc<WebhookSettings>, ports: Ports) -> Self {
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        let client_secret = SecretCache::with_parser(
            ports.secrets.clone(),
            ports.clock.clone(),
            webhook.secret.name.clone(),
            webhook.secret.refresh,
            client_secret,
        );
        RechargeWebhook {
            settings,
            webhook,
            ports,
            reporter,
            client_secret,
        }
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ports.clock.now()
    }

    /// Handles one delivery and returns the Lambda response. Never fails, never panics on input.
    pub async fn handle_delivery(&self, delivery: Delivery, headers: RechargeHeaders) -> Value {
        // Size first (413 before parsing); the body is parsed once, for every step.
        let sized = delivery.check_size();
        let body = sized.is_ok().then(|| delivery.body_object());
        let charge_id = body
            .as_ref()
            .and_then(|b| b.as_ref().ok())
            .and_then(charge_id_of);
        let filed_under = charge_id.as_deref().map(inbox_key);

        // The delivery is kept before anything else can fail.
        let inbox = Inbox::new(
            self.ports.inbox.clone(),
            &self.settings.tables.callback_inbox,
            self.settings.inbox_ttl,
        );
        let mut entry = match inbox
            .keep(&delivery, WEBHOOK_FUNCTION, filed_under.as_deref())
            .await
        {
            Ok(entry) => entry,
            Err(e) => {
                let err = CallbackError::from(e);
                return self
                    .fail(&delivery, Failure::Other(err), charge_id.as_deref())
                    .await;
            }
        };

        let result = match (sized, body) {
            (Ok(()), Some(body)) => self.process(&delivery, &headers, body).await,
            (Err(e), _) => Err(Failure::Other(e.into())),
            (Ok(()), None) => Err(Failure::Other(CallbackError::Internal(
                "the body was not read".into(),
            ))),
        };
        let (outcome, reply) = match result {
            Ok((outcome, reply)) => (outcome, reply),
            Err(failure) => {
                let outcome = match &failure {
                    Failure::Unverified(e) => InboxOutcome::Rejected {
                        status: 401,
                        error: e.to_string(),
                    },
                    Failure::Other(err) => outcome_of(err),
                };
                (
                    outcome,
                    self.fail(&delivery, failure, charge_id.as_deref()).await,
                )
            }
        };
        inbox.finish(&mut entry, outcome).await;
        tracing::info!(
            function = WEBHOOK_FUNCTION,
            charge_id = charge_id.as_deref(),
            outcome = entry.outcome.name(),
            "recharge webhook handled"
        );
        reply
    }

    /// Verify, then act on the topic.
    async fn process(
        &self,
        delivery: &Delivery,
        headers: &RechargeHeaders,
        body: Result<Map<String, Value>, ValidationError>,
    ) -> Result<(InboxOutcome, Value), Failure> {
        let secret = self
            .client_secret
            .get()
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        let raw: &[u8] = match &delivery.body {
            Body::Empty => b"",
            Body::Text(t) | Body::NotBase64(t) => t.as_bytes(),
            Body::Binary(b) => b,
            // A direct invoke with an already-parsed body has no raw bytes to verify.
            Body::Object(_) => return Err(Failure::Unverified(SignatureError::Mismatch)),
        };
        let digest = headers.signature.as_deref();
        match signature::verify(digest, secret.expose(), raw) {
            Ok(()) => {}
            // The secret may have been rotated: one forced read (rate-limited by the cache).
            Err(SignatureError::Mismatch) => {
                match self.client_secret.refresh_after_refusal(&secret).await {
                    Ok(Some(rotated)) => signature::verify(digest, rotated.expose(), raw)
                        .map_err(Failure::Unverified)?,
                    _ => return Err(Failure::Unverified(SignatureError::Mismatch)),
                }
            }
            Err(e) => return Err(Failure::Unverified(e)),
        }

        let body = body.map_err(|e| Failure::Other(e.into()))?;
        let topic = topic_of(headers.topic.as_deref(), Some(&body)).ok_or_else(|| {
            Failure::Other(
                ValidationError::new(
                    "topic",
                    "topic is missing: no X-Recharge-Topic header and no topic in the body",
                )
                .into(),
            )
        })?;
        if !topic.acted_on() {
            let reply = Reply::json(
                200,
                &json!({"success": true, "message": "Recharge webhook kept", "topic": topic.name()}),
            );
            return Ok((InboxOutcome::Recorded, reply.into_event()));
        }
        let charge =
            ChargeFailure::from_body(&body, &topic).map_err(|e| Failure::Other(e.into()))?;
        let job = DunningJob {
            topic: topic.name().to_string(),
            charge: charge.clone(),
            request_id: delivery.request_id.clone(),
            received_at: callback_core::isoformat(delivery.received_at),
        };
        let payload = serde_json::to_vec(&job).map_err(|e| {
            Failure::Other(CallbackError::Internal(format!(
                "the job does not serialise: {e}"
            )))
        })?;
        self.ports
            .invoker
            .invoke_event(&self.webhook.dunning_function, &payload)
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        let reply = Reply::json(
            200,
            &json!({
                "success": true,
                "message": "Recharge webhook received",
                "topic": topic.name(),
                "chargeId": charge.charge_id,
                "attempt": charge.attempt,
            }),
        );
        Ok((InboxOutcome::Dispatched, reply.into_event()))
    }

    /// The error path, then the reply.
    async fn fail(&self, delivery: &Delivery, failure: Failure, charge_id: Option<&str>) -> Value {
        let (err, reply) = match failure {
            Failure::Unverified(e) => {
                let reply = Reply::json(
                    401,
                    &json!({"success": false, "error": e.to_string(), "message": FAILURE_MESSAGE}),
                );
                (CallbackError::Checksum(e.to_string()), reply)
            }
            Failure::Other(err) => {
                let reply = Reply::failure(&err, &delivery.request_id, FAILURE_MESSAGE);
                (err, reply)
            }
        };
        // Filed like the inbox entry, so the error log's orderId-index finds both.
        let filed_under = charge_id.map(inbox_key);
        self.reporter
            .report(
                Incident {
                    function: WEBHOOK_FUNCTION,
                    error: &err,
                    order_id: filed_under.as_deref(),
                    charge_id,
                    event: &delivery.event,
                    request_id: &delivery.request_id,
                },
                self.now(),
            )
            .await;
        reply.into_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::signature::expected_hex;
    use callback_core::domain::clock::ManualClock;
    use callback_core::ports::memory::MemoryAws;
    use chrono::{TimeZone, Utc};

    const SECRET: &str = "cs_test_webhook";
    const INBOX: &str = "payment3-callback-inbox-dev";
    const BODY: &str = r#"{"charge":{"id":389001234,"customer_id":77001,"total_price":"49.90","currency":"USD","error_type":"CARD_DECLINED","charge_attempts":1}}"#;

    fn setup() -> (Arc<MemoryAws>, RechargeWebhook) {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret(
            "recharge-dev",
            &format!(r#"{{"clientSecret": "{SECRET}", "apiToken": "tok"}}"#),
        );
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap(),
        ));
        let webhook = RechargeWebhook::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(WebhookSettings::for_branch("dev")),
            aws.ports(clock),
        );
        (aws, webhook)
    }

    fn event(body: &str, digest: Option<&str>, topic: Option<&str>) -> Value {
        let mut headers = serde_json::Map::new();
        headers.insert("Content-Type".into(), json!("application/json"));
        if let Some(d) = digest {
            headers.insert("X-Recharge-Hmac-Sha256".into(), json!(d));
        }
        if let Some(t) = topic {
            headers.insert("X-Recharge-Topic".into(), json!(t));
        }
        json!({
            "resource": "/recharge/webhook", "path": "/recharge/webhook", "httpMethod": "POST",
            "headers": headers,
            "requestContext": {"resourcePath": "/recharge/webhook", "httpMethod": "POST",
                "path": "/dev/recharge/webhook", "stage": "dev", "requestId": "r-1",
                "accountId": "123456789012", "apiId": "abc", "identity": {"sourceIp": "203.0.113.9"}},
            "body": body, "isBase64Encoded": false
        })
    }

    fn signed(body: &str, topic: &str) -> Value {
        event(
            body,
            Some(&expected_hex(SECRET, body.as_bytes())),
            Some(topic),
        )
    }

    fn status(reply: &Value) -> u64 {
        reply["statusCode"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn a_signed_failure_is_kept_handed_off_and_answered_200() {
        let (aws, w) = setup();
        let reply = w.handle(signed(BODY, "charge/failed"), "req-1").await;
        assert_eq!(status(&reply), 200, "{reply}");
        let invoked = aws.invocations();
        assert_eq!(invoked.len(), 1);
        assert_eq!(invoked[0].function, "payment3-recharge-dunning-dev");
        let job: DunningJob = serde_json::from_slice(&invoked[0].payload).unwrap();
        assert_eq!(
            (
                job.topic.as_str(),
                job.charge.charge_id.as_str(),
                job.charge.attempt
            ),
            ("charge/failed", "389001234", 1)
        );
        assert_eq!(job.request_id, "req-1");
        let inbox = aws.inbox(INBOX);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].order_id, "recharge-charge-389001234");
        assert_eq!(inbox[0].outcome, InboxOutcome::Dispatched);
        assert_eq!(inbox[0].body, BODY, "the raw body is kept");
        assert!(aws.error_log("payment3-callback-error-log-dev").is_empty());
    }

    #[tokio::test]
    async fn a_forged_or_missing_digest_is_401_kept_alerted_and_changes_nothing() {
        let (aws, w) = setup();
        let forged = expected_hex("not-the-secret", BODY.as_bytes());
        let tampered = BODY.replace("49.90", "0.01");
        for (i, (ev, why)) in [
            (
                event(BODY, Some(&forged), Some("charge/failed")),
                "does not match",
            ),
            (event(BODY, None, Some("charge/failed")), "is missing"),
            (
                event(
                    &tampered,
                    Some(&expected_hex(SECRET, BODY.as_bytes())),
                    Some("charge/failed"),
                ),
                "does not match",
            ),
            (
                event(BODY, Some("abc"), Some("charge/failed")),
                "has 3 characters",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let reply = w.handle(ev, &format!("r{i}")).await;
            assert_eq!(status(&reply), 401);
            let body: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
            assert!(body["error"].as_str().unwrap().contains(why), "{body}");
        }
        assert!(aws.invocations().is_empty(), "nothing handed off");
        let inbox = aws.inbox(INBOX);
        assert_eq!(inbox.len(), 4);
        assert!(inbox
            .iter()
            .all(|e| e.outcome.name() == "rejected" && e.outcome.status() == Some(401)));
        let logged = aws.error_log("payment3-callback-error-log-dev");
        assert_eq!(logged.len(), 4);
        assert_eq!(logged[0].function_name, "rechargewebhook");
        assert_eq!(logged[0].error_type, "ChecksumError");
        assert_eq!(aws.mails().len(), 1, "one alert per cooldown");
    }

    #[tokio::test]
    async fn a_rotated_client_secret_is_picked_up_at_the_first_mismatch() {
        let (aws, w) = setup();
        assert_eq!(
            status(&w.handle(signed(BODY, "charge/failed"), "r1").await),
            200
        );
        // Recharge now signs with a new secret, within the cache's refresh interval.
        aws.set_secret(
            "recharge-dev",
            r#"{"clientSecret": "cs_rotated", "apiToken": "tok"}"#,
        );
        let ev = event(
            BODY,
            Some(&expected_hex("cs_rotated", BODY.as_bytes())),
            Some("charge/failed"),
        );
        assert_eq!(status(&w.handle(ev, "r2").await), 200);
        assert_eq!(aws.invocations().len(), 2);
    }

    #[tokio::test]
    async fn other_topics_are_kept_and_answered_200() {
        let (aws, w) = setup();
        let body = r#"{"subscription":{"id":5}}"#;
        let reply = w.handle(signed(body, "subscription/created"), "r").await;
        assert_eq!(status(&reply), 200);
        assert!(aws.invocations().is_empty());
        assert_eq!(aws.inbox(INBOX)[0].outcome, InboxOutcome::Recorded);
        // The topic may come from the body when the header is absent.
        let body = r#"{"topic":"charge/max_retries_reached","charge":{"id":7}}"#;
        let ev = event(body, Some(&expected_hex(SECRET, body.as_bytes())), None);
        assert_eq!(status(&w.handle(ev, "r2").await), 200);
        let invoked = aws.invocations();
        let job: DunningJob = serde_json::from_slice(&invoked[0].payload).unwrap();
        assert_eq!(
            (job.topic.as_str(), job.charge.attempt),
            ("charge/max_retries_reached", 0)
        );
    }

    #[tokio::test]
    async fn a_signed_but_unusable_body_is_400_with_the_reason() {
        let (aws, w) = setup();
        let body = r#"{"charge":{"id":389001234}}"#;
        let reply = w.handle(signed(body, "charge/failed"), "r").await;
        assert_eq!(status(&reply), 400);
        assert!(reply["body"]
            .as_str()
            .unwrap()
            .contains("charge_attempts is required"));
        let no_topic = r#"{"charge":{"id":1}}"#;
        let ev = event(
            no_topic,
            Some(&expected_hex(SECRET, no_topic.as_bytes())),
            None,
        );
        assert_eq!(status(&w.handle(ev, "r2").await), 400);
        assert!(aws.invocations().is_empty());
        assert_eq!(aws.error_log("payment3-callback-error-log-dev").len(), 2);
    }

    #[tokio::test]
    async fn a_failed_hand_off_is_500_so_recharge_delivers_again() {
        let (aws, w) = setup();
        aws.fail_invoke(true);
        let reply = w.handle(signed(BODY, "charge/failed"), "r").await;
        assert_eq!(status(&reply), 500);
        assert!(reply["body"]
            .as_str()
            .unwrap()
            .contains("internal error (request id r)"));
        assert_eq!(aws.inbox(INBOX)[0].outcome.name(), "failed");
    }

    #[tokio::test]
    async fn an_inbox_outage_is_500_and_nothing_is_handed_off() {
        let (aws, w) = setup();
        aws.fail_store(true);
        let reply = w.handle(signed(BODY, "charge/failed"), "r").await;
        assert_eq!(status(&reply), 500);
        assert!(aws.invocations().is_empty());
    }

    #[tokio::test]
    async fn a_parsed_body_cannot_be_verified_and_an_oversized_one_is_413() {
        let (aws, w) = setup();
        let direct = json!({"body": {"charge": {"id": 1, "charge_attempts": 1}}});
        assert_eq!(status(&w.handle(direct, "r").await), 401);
        let big = format!(r#"{{"charge":{{"id":1,"pad":"{}"}}}}"#, "x".repeat(70_000));
        assert_eq!(
            status(&w.handle(signed(&big, "charge/failed"), "r2").await),
            413
        );
        assert!(aws.invocations().is_empty());
    }
}
