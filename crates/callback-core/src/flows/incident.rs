//! The error path of every function (SPEC 6): an error-log item, a Sentry event (tagged and
//! flushed before the handler returns), and an SES alert at most once per cooldown for the same
//! function and error kind. Money alerts (a payment not applied, a second payment to refund, a
//! charge with no order) are keyed per order (or charge), so one order's alert never hides
//! another's. The cooldown is taken only once the e-mail was sent: a failed send holds nothing.
//! Reporting never fails the function: each step that fails is logged and the next one still runs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::clock::isoformat;
use crate::domain::error_log::ErrorLogEntry;
use crate::domain::limits::{truncated_json, KEPT_PREFIX_BYTES};
use crate::domain::redact::{redact_text, redact_value};
use crate::flows::error::CallbackError;
use crate::flows::settings::Settings;
use crate::ports::{AlertGate, ErrorLogStore, Mail, Mailer};

/// What went wrong, and where.
pub struct Incident<'a> {
    /// `walletcallback`, `notify`, ...: the error log's `function_name` and the Sentry tag.
    pub function: &'a str,
    pub error: &'a CallbackError,
    pub order_id: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    /// The event (already redacted by [`crate::domain::delivery::Delivery`], redacted again here).
    pub event: &'a Value,
    pub request_id: &'a str,
}

/// Sends incidents down the error path.
pub struct IncidentReporter {
    settings: Arc<Settings>,
    errors: Arc<dyn ErrorLogStore>,
    gate: Arc<dyn AlertGate>,
    mailer: Arc<dyn Mailer>,
    /// Per-container cooldown in front of the shared one: a flood in one container costs no
    /// DynamoDB calls, and alerts stay limited while DynamoDB itself is down.
    local_gate: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl IncidentReporter {
    pub fn new(
        settings: Arc<Settings>,
        errors: Arc<dyn ErrorLogStore>,
        gate: Arc<dyn AlertGate>,
        mailer: Arc<dyn Mailer>,
    ) -> Self {
        IncidentReporter {
            settings,
            errors,
            gate,
            mailer,
            local_gate: Mutex::new(HashMap::new()),
        }
    }

    /// Runs the whole error path. Never fails.
    pub async fn report(&self, incident: Incident<'_>, now: DateTime<Utc>) {
        let bounded = bounded_event(incident.event);
        let incident = Incident {
            event: &bounded,
            ..incident
        };
        let error_text = redact_text(&incident.error.to_string());
        let kind = incident.error.kind();
        // Ids come from the request as sent: a card number posted as an order id is masked too.
        let order_id = incident.order_id.map(redact_text);
        let charge_id = incident.charge_id.map(redact_text);
        tracing::error!(
            function = incident.function,
            error_type = kind,
            order_id = order_id.as_deref(),
            charge_id = charge_id.as_deref(),
            request_id = incident.request_id,
            error = %error_text,
            "callback failed"
        );

        let entry = ErrorLogEntry {
            id: uuid::Uuid::new_v4().to_string(),
            function_name: incident.function.to_string(),
            error: error_text.clone(),
            error_type: kind.to_string(),
            order_id: incident.order_id.map(String::from),
            charge_id: incident.charge_id.map(String::from),
            event: Some(redact_value(incident.event)),
            request_id: incident.request_id.to_string(),
            status: incident.error.status(),
            created_at: isoformat(now),
            ttl: now.timestamp() + self.settings.error_log_ttl.as_secs() as i64,
        };
        if let Err(e) = self
            .errors
            .put_error(&self.settings.tables.callback_error_log, &entry)
            .await
        {
            tracing::error!(error = %e, "could not write the error log item");
        }

        capture_in_sentry(&incident, &error_text).await;
        self.alert(&incident, kind, &error_text, now).await;
    }

    async fn alert(
        &self,
        incident: &Incident<'_>,
        kind: &str,
        error_text: &str,
        now: DateTime<Utc>,
    ) {
        let alerts = &self.settings.alerts;
        let Some(from) = alerts.from.clone().filter(|_| !alerts.to.is_empty()) else {
            tracing::warn!("ALERT_EMAIL_FROM or ALERT_EMAIL_TO is not set: no alert e-mail");
            return;
        };
        let key = alert_key(incident, kind);
        if !self.local_gate_open(&key, now, alerts.cooldown) {
            tracing::info!(key, "alert suppressed: cooldown (this container)");
            return;
        }
        let table = &self.settings.tables.alert_cooldown;
        let mut taken = false;
        match self.gate.try_open(table, &key, now, alerts.cooldown).await {
            Ok(true) => taken = true,
            Ok(false) => {
                tracing::info!(key, "alert suppressed: cooldown");
                return;
            }
            // Fail open: an alert while DynamoDB is down matters more than a duplicate.
            Err(e) => tracing::warn!(error = %e, "alert cooldown unavailable; sending"),
        }
        let mail = Mail {
            from,
            to: alerts.to.clone(),
            subject: format!(
                "[payment3][{}] {} error",
                self.settings.branch, incident.function
            ),
            body: format!(
                "Function: {}\nError type: {}\nError: {}\nOrder: {}\nCharge: {}\nRequest id: {}\n\
                 Further alerts of this kind are held for {} s; every occurrence is in {}.\n\nEvent:\n{}\n",
                incident.function,
                kind,
                error_text,
                incident.order_id.map(redact_text).as_deref().unwrap_or("-"),
                incident.charge_id.map(redact_text).as_deref().unwrap_or("-"),
                incident.request_id,
                alerts.cooldown.as_secs(),
                self.settings.tables.callback_error_log,
                alert_event(incident.event),
            ),
        };
        if let Err(e) = self.mailer.send(&mail).await {
            // The cooldown counts only alerts that went out: give the gates back.
            tracing::error!(error = %e, key, "could not send the alert e-mail");
            self.local_gate_release(&key, now);
            if taken {
                if let Err(e) = self.gate.release(table, &key, now).await {
                    tracing::warn!(error = %e, key, "the alert cooldown could not be given back");
                }
            }
        }
    }

    fn local_gate_open(&self, key: &str, now: DateTime<Utc>, cooldown: Duration) -> bool {
        let mut sent = self.local_gate.lock().unwrap_or_else(|p| p.into_inner());
        let cooldown = chrono::Duration::from_std(cooldown).unwrap_or(chrono::Duration::MAX);
        match sent.get(key) {
            Some(last) if now.signed_duration_since(*last) < cooldown => false,
            _ => {
                sent.insert(key.to_string(), now);
                true
            }
        }
    }

    fn local_gate_release(&self, key: &str, taken_at: DateTime<Utc>) {
        let mut sent = self.local_gate.lock().unwrap_or_else(|p| p.into_inner());
        if sent.get(key) == Some(&taken_at) {
            sent.remove(key);
        }
    }
}

/// The most of an event the error path works on. Its log item keeps less anyway (an item is at
/// most 400 KB), and redacting megabytes (several passes of regexes) runs in the handler's task:
/// a 6 MB body took long enough there that the inbox write running beside it (`tokio::join!`)
/// timed out (the hostile suite's 2mb-emoji cases, 500 instead of 413).
const MAX_REPORTED_EVENT_BYTES: usize = 256 * 1024;

/// The event, or for a larger one its prefix with its length and SHA-256 (of the text as
/// received: a hash of over 256 KiB reveals nothing). The prefix ends before any trailing digits,
/// spaces or dashes, so a card number cut at the boundary cannot slip past the redaction.
fn bounded_event(event: &Value) -> Cow<'_, Value> {
    let text = event.to_string();
    if text.len() <= MAX_REPORTED_EVENT_BYTES {
        return Cow::Borrowed(event);
    }
    let mut bounded = truncated_json(&text, KEPT_PREFIX_BYTES);
    if let Some(Value::String(p)) = bounded.get_mut("prefix") {
        let kept = p
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ' || c == '-')
            .len();
        p.truncate(kept);
    }
    Cow::Owned(bounded)
}

/// The most of the event an alert e-mail shows. A person reads it, and SES refuses a message over
/// 10 MB: a 6 MB body (the hostile suite's) made a 15 MB SendEmail that held the local AWS for
/// seconds. A longer event is shown as its prefix with its length and SHA-256; the error log keeps
/// what fits in an item.
const ALERT_EVENT_BYTES: usize = 16 * 1024;

fn alert_event(event: &Value) -> String {
    let text = serde_json::to_string_pretty(&redact_value(event)).unwrap_or_default();
    if text.len() <= ALERT_EVENT_BYTES {
        return text;
    }
    serde_json::to_string_pretty(&truncated_json(&text, ALERT_EVENT_BYTES)).unwrap_or_default()
}

/// The cooldown key: `function#kind`; for a money alert also the order (else the charge), so
/// one order's alert never hides another's.
fn alert_key(incident: &Incident<'_>, kind: &str) -> String {
    let base = format!("{}#{}", incident.function, kind);
    if !incident.error.is_money() {
        return base;
    }
    match incident.order_id.or(incident.charge_id) {
        Some(id) => format!("{base}#{id}"),
        None => base,
    }
}

async fn capture_in_sentry(incident: &Incident<'_>, error_text: &str) {
    let enabled = sentry::Hub::current()
        .client()
        .is_some_and(|c| c.is_enabled());
    if !enabled {
        return;
    }
    sentry::with_scope(
        |scope| {
            if let Some(o) = incident.order_id {
                scope.set_tag("orderId", redact_text(o));
            }
            if let Some(c) = incident.charge_id {
                scope.set_tag("chargeId", redact_text(c));
            }
            scope.set_tag("function", incident.function);
            scope.set_tag("errorType", incident.error.kind());
            scope.set_extra("requestId", incident.request_id.into());
        },
        || sentry::capture_message(error_text, sentry::Level::Error),
    );
    // Lambda may freeze the container as soon as the handler returns: flush now, the client of
    // the hub that captured it (the blocking thread's own hub may be another).
    if let Some(client) = sentry::Hub::current().client() {
        let _ =
            tokio::task::spawn_blocking(move || client.flush(Some(Duration::from_secs(2)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::ValidationError;
    use crate::ports::error::StoreError;
    use crate::ports::memory::MemoryAws;
    use chrono::TimeZone;
    use serde_json::json;

    fn reporter(aws: &Arc<MemoryAws>) -> IncidentReporter {
        IncidentReporter::new(
            Arc::new(Settings::for_branch("dev")),
            aws.clone(),
            aws.clone(),
            aws.clone(),
        )
    }

    /// An incident with no order or charge id.
    fn incident<'a>(
        function: &'a str,
        error: &'a CallbackError,
        event: &'a Value,
        request_id: &'a str,
    ) -> Incident<'a> {
        Incident {
            function,
            error,
            order_id: None,
            charge_id: None,
            event,
            request_id,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    #[tokio::test]
    async fn writes_an_error_log_item_and_one_alert_per_cooldown() {
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let err = CallbackError::from(ValidationError::new(
            "success",
            "success is required in body",
        ));
        let event = json!({"body": "{\"secretKey\": \"skey_abc\"}"});
        for second in [0, 10, 299] {
            r.report(
                Incident {
                    function: "walletcallback",
                    error: &err,
                    order_id: Some("1"),
                    charge_id: None,
                    event: &event,
                    request_id: "req",
                },
                at(second),
            )
            .await;
        }
        let logged = aws.error_log("payment3-callback-error-log-dev");
        assert_eq!(logged.len(), 3);
        assert_eq!(logged[0].error_type, "ValidationError");
        assert_eq!(logged[0].function_name, "walletcallback");
        assert!(!logged[0]
            .event
            .as_ref()
            .unwrap()
            .to_string()
            .contains("skey_abc"));
        let mails = aws.mails();
        assert_eq!(mails.len(), 1, "one alert within the cooldown");
        assert_eq!(mails[0].subject, "[payment3][dev] walletcallback error");
        assert!(!mails[0].body.contains("skey_abc"));

        // After the cooldown, the next incident alerts again.
        r.report(incident("walletcallback", &err, &event, "req"), at(301))
            .await;
        assert_eq!(aws.mails().len(), 2);
    }

    #[tokio::test]
    async fn the_cooldown_is_shared_between_containers() {
        let aws = Arc::new(MemoryAws::default());
        // Two reporters: two Lambda containers over the same cooldown table.
        let (a, b) = (reporter(&aws), reporter(&aws));
        let err = CallbackError::from(ValidationError::new("body", "body is empty"));
        let event = json!({});
        for r in [&a, &b] {
            r.report(incident("amexcallback", &err, &event, "r"), at(5))
                .await;
        }
        assert_eq!(aws.mails().len(), 1);
    }

    #[tokio::test]
    async fn a_failing_mailer_or_store_does_not_stop_the_error_path() {
        let aws = Arc::new(MemoryAws::default());
        aws.fail_mail(true);
        aws.fail_store(true);
        let r = reporter(&aws);
        let err = CallbackError::Store(StoreError::new("PutItem", "t", "down"));
        r.report(incident("walletcallback", &err, &json!({}), "r"), at(0))
            .await;
        // Nothing panicked, nothing was written, and the attempt was made.
        assert!(aws.error_log("payment3-callback-error-log-dev").is_empty());
        assert_eq!(aws.mail_attempts(), 1);
    }

    #[test]
    fn sentry_gets_the_error_with_its_tags() {
        let events = sentry::test::with_captured_events(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let aws = Arc::new(MemoryAws::default());
                let err = CallbackError::from(ValidationError::new(
                    "paymentId",
                    "paymentId is required in body with skey_secret123",
                ));
                reporter(&aws)
                    .report(
                        Incident {
                            function: "walletcallback",
                            error: &err,
                            order_id: Some("482500007436"),
                            charge_id: Some("pay_1"),
                            event: &json!({}),
                            request_id: "req-s",
                        },
                        at(0),
                    )
                    .await;
            });
        });
        assert_eq!(events.len(), 1);
        let tags = &events[0].tags;
        assert_eq!(
            tags.get("orderId").map(String::as_str),
            Some("482500007436")
        );
        assert_eq!(tags.get("chargeId").map(String::as_str), Some("pay_1"));
        assert_eq!(
            tags.get("function").map(String::as_str),
            Some("walletcallback")
        );
        let message = events[0].message.clone().unwrap_or_default();
        assert!(message.starts_with("paymentId is required"), "{message}");
        assert!(!message.contains("secret123"), "{message}");
    }

    #[tokio::test]
    async fn without_sentry_the_error_path_still_logs() {
        // No client bound: the error path still logs and alerts.
        let aws = Arc::new(MemoryAws::default());
        let err = CallbackError::from(ValidationError::new("body", "body is empty"));
        reporter(&aws)
            .report(incident("walletcallback", &err, &json!({}), "r"), at(0))
            .await;
        assert_eq!(aws.error_log("payment3-callback-error-log-dev").len(), 1);
    }

    #[tokio::test]
    async fn different_error_kinds_have_their_own_cooldown() {
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let invalid = CallbackError::from(ValidationError::new("body", "body is empty"));
        let store = CallbackError::Store(StoreError::new("PutItem", "t", "down"));
        for err in [&invalid, &store] {
            r.report(incident("walletcallback", err, &json!({}), "r"), at(0))
                .await;
        }
        assert_eq!(aws.mails().len(), 2);
    }

    fn second_payment(order: &str) -> CallbackError {
        CallbackError::Rejected {
            kind: "SecondPayment",
            message: format!("order {order} is already paid by chrg_1; refund chrg_2"),
        }
    }

    #[tokio::test]
    async fn one_orders_money_alert_never_hides_anothers() {
        // Given a SecondPayment alert for one order
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let event = json!({});
        let (a, b) = (second_payment("A"), second_payment("B"));
        for (order, err, at_s) in [("A", &a, 0), ("B", &b, 10), ("A", &a, 20)] {
            r.report(
                Incident {
                    function: "processpaidorder",
                    error: err,
                    order_id: Some(order),
                    charge_id: Some("chrg_2"),
                    event: &event,
                    request_id: "r",
                },
                at(at_s),
            )
            .await;
        }
        // Then order B's refund alert goes out within A's cooldown (before: held for 300 s), and
        // A's repeat is held
        let mails = aws.mails();
        assert_eq!(mails.len(), 2, "{mails:?}");
        assert!(mails[0].body.contains("Order: A\n"));
        assert!(mails[1].body.contains("Order: B\n"));
        // A second container over the same gate holds A too
        reporter(&aws)
            .report(
                Incident {
                    function: "processpaidorder",
                    error: &a,
                    order_id: Some("A"),
                    charge_id: None,
                    event: &event,
                    request_id: "r",
                },
                at(30),
            )
            .await;
        assert_eq!(aws.mails().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_send_does_not_take_the_cooldown() {
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let err = second_payment("A");
        let event = json!({});
        let incident = |_: ()| Incident {
            function: "processpaidorder",
            error: &err,
            order_id: Some("A"),
            charge_id: None,
            event: &event,
            request_id: "r",
        };
        // Given SES failing for the first alert
        aws.fail_mail(true);
        r.report(incident(()), at(0)).await;
        assert_eq!(aws.mail_attempts(), 1);
        assert!(aws.mails().is_empty());
        // When the next occurrence comes within the cooldown, with SES back
        aws.fail_mail(false);
        r.report(incident(()), at(5)).await;
        // Then it is sent (before: the gate was closed before the failed send: nothing for 300 s)
        assert_eq!(aws.mails().len(), 1);
        // and now the cooldown holds
        r.report(incident(()), at(6)).await;
        assert_eq!(aws.mails().len(), 1);
        assert_eq!(aws.mail_attempts(), 2);
    }

    /// A Sentry transport that delivers each event 300 ms after it is handed one (as the real
    /// HTTP transport does, in the background): only a flush makes it arrive before return.
    struct SlowTransport {
        delivered: Arc<Mutex<Vec<sentry::Envelope>>>,
        pending: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl sentry::Transport for SlowTransport {
        fn send_envelope(&self, envelope: sentry::Envelope) {
            use std::sync::atomic::Ordering;
            self.pending.fetch_add(1, Ordering::SeqCst);
            let (delivered, pending) = (self.delivered.clone(), self.pending.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                delivered.lock().unwrap().push(envelope);
                pending.fetch_sub(1, Ordering::SeqCst);
            });
        }
        fn flush(&self, timeout: Duration) -> bool {
            let until = std::time::Instant::now() + timeout;
            while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                if std::time::Instant::now() > until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            true
        }
    }

    #[test]
    fn the_sentry_event_is_delivered_before_the_report_returns() {
        // Given a Sentry client whose transport delivers in the background, 300 ms later
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, p) = (delivered.clone(), pending.clone());
        let factory = move |_: &sentry::ClientOptions| -> Arc<dyn sentry::Transport> {
            Arc::new(SlowTransport {
                delivered: d.clone(),
                pending: p.clone(),
            })
        };
        let mut options = sentry::ClientOptions::default();
        options.dsn = "https://public@sentry.example.com/1".parse().ok();
        options.transport = Some(Arc::new(factory));
        let client = sentry::Client::from(options);
        let hub = Arc::new(sentry::Hub::new(
            Some(Arc::new(client)),
            Arc::new(Default::default()),
        ));
        // When a handler reports an incident (on this thread's hub, not the process's)
        sentry::Hub::run(hub, || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let aws = Arc::new(MemoryAws::default());
                let err = CallbackError::from(ValidationError::new("body", "body is empty"));
                reporter(&aws)
                    .report(incident("walletcallback", &err, &json!({}), "r"), at(0))
                    .await;
            });
            // Then the event has reached Sentry when report returns: the handler may return and
            // Lambda freeze the container right after (without the flush: 0 here)
            assert_eq!(delivered.lock().unwrap().len(), 1);
        });
    }

    #[tokio::test]
    async fn an_alert_shows_a_bounded_part_of_a_huge_event() {
        // Given an incident whose event is a 6 MB body (4-byte characters, escaped in JSON)
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let err = CallbackError::from(ValidationError::new("body", "body is too large"));
        let event = json!({"body": "\u{1F600}".repeat(1_500_000)});
        r.report(incident("walletcallback", &err, &event, "req"), at(0))
            .await;
        // Then its alert carries a prefix with the length and hash, not the 6 MB (before: the
        // whole event, pretty-printed: a SendEmail of 15 MB once form-encoded)
        let mails = aws.mails();
        assert_eq!(mails.len(), 1);
        assert!(mails[0].body.len() < 128 * 1024, "{}", mails[0].body.len());
        assert!(mails[0].body.contains("\"truncated\": true"));
        assert!(mails[0].body.contains("\"sha256\""));
        // And a small event is shown whole
        let small = json!({"body": "{\"orderId\": \"1\"}"});
        let other = CallbackError::from(ValidationError::new("success", "success is required"));
        r.report(incident("bankappcallback", &other, &small, "req"), at(0))
            .await;
        assert!(aws.mails()[1].body.contains("orderId"));
        assert!(!aws.mails()[1].body.contains("truncated"));
    }

    #[tokio::test]
    async fn a_huge_event_is_cut_before_the_error_path_redacts_it() {
        // Given an event over 256 KiB ending its prefix in the middle of a card number
        let aws = Arc::new(MemoryAws::default());
        let r = reporter(&aws);
        let err = CallbackError::from(ValidationError::new("body", "body is too large"));
        let head = format!("{{\"body\":\"{}", "x".repeat(KEPT_PREFIX_BYTES - 20));
        let raw = format!("{head}4111 1111 1111 1111{}\"}}", "y".repeat(300 * 1024));
        let event: Value = serde_json::from_str(&raw).unwrap();
        let started = std::time::Instant::now();
        r.report(incident("walletcallback", &err, &event, "req"), at(0))
            .await;
        // Then the error log keeps its prefix, length and hash, with no digits of the card
        let logged = aws.error_log("payment3-callback-error-log-dev");
        let kept = logged[0].event.as_ref().unwrap();
        assert_eq!(kept["truncated"], true);
        assert_eq!(
            kept["bytes"].as_u64().unwrap() as usize,
            event.to_string().len()
        );
        assert!(
            !kept.to_string().contains("4111"),
            "a card number cut at the prefix's end is kept"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
