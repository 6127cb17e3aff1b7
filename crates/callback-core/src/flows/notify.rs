//! KBank card notify (SPEC 4.2) and delayed notify (SPEC 4.3, seed 002).
//!
//! Both: parse the body (JSON, else form) -> verify the checksum with the cached secret -> keep
//! a notify record (`note` `notify` | `delayed notify`, `checksumVerified`) -> find the card
//! payment record through `chargeId-index` and mark `checksumVerified` on it -> under
//! `CHECKSUM_POLICY=enforce` a bad checksum stops here (error path, 401) -> run process-paid
//! synchronously for the record's order.
//! Notify then hands the same event to delayed notify once and answers the redirect page;
//! delayed notify waits `DELAYED_NOTIFY_SECONDS` and runs process-paid again unless the first
//! run reported the order paid. Every notify delivery is also kept in the inbox.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::domain::card::{CardPayment, NotifyBody, NotifyNote, NotifyRecord};
use crate::domain::charge::ChargeState;
use crate::domain::checksum;
use crate::domain::checksum::ChecksumError;
use crate::domain::delivery::{Delivery, Readable};
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::flows::error::CallbackError;
use crate::flows::inbox::{outcome_of, Inbox};
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::paid::{inquire, Outcome};
use crate::flows::reply::Reply;
use crate::flows::settings::{CardSettings, ChecksumPolicy, Settings};
use crate::ports::secret_cache::SecretCache;
use crate::ports::{CardPorts, ChargeInquiry, Ports};

/// The error log's `function_name` of each.
pub const NOTIFY_FUNCTION: &str = "notify";
pub const DELAYED_NOTIFY_FUNCTION: &str = "delayednotify";

/// What recording a notify found out.
struct Noted {
    body: NotifyBody,
    card_payment: Option<CardPayment>,
    checksum: Result<(), ChecksumError>,
}

/// Notify and delayed notify, over the same ports.
pub struct CardNotify {
    settings: Arc<Settings>,
    card_settings: Arc<CardSettings>,
    ports: Ports,
    card: CardPorts,
    secret: Arc<SecretCache>,
    reporter: IncidentReporter,
    /// KBank, for delayed notify's question about a charge no card payment record names.
    kbank: Option<Arc<dyn ChargeInquiry>>,
}

impl CardNotify {
    /// Lets delayed notify ask KBank about a charge no card payment record names.
    pub fn with_inquiry(mut self, kbank: Arc<dyn ChargeInquiry>) -> Self {
        self.kbank = Some(kbank);
        self
    }

    /// The time on the ports' clock: when a delivery is received.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ports.clock.now()
    }

    pub fn new(
        settings: Arc<Settings>,
        card_settings: Arc<CardSettings>,
        ports: Ports,
        card: CardPorts,
    ) -> Self {
        let secret = Arc::new(SecretCache::new(
            ports.secrets.clone(),
            ports.clock.clone(),
            card_settings.secret.name.clone(),
            card_settings.secret.refresh,
        ));
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        CardNotify {
            settings,
            card_settings,
            ports,
            card,
            secret,
            reporter,
            kbank: None,
        }
    }

    /// `POST /notify`. Never fails, never panics on input: every failure is a response.
    /// `forward` is the event as received: it goes on to delayed notify, which verifies it again.
    /// The runtime's `notify` reads the Lambda event into the delivery.
    ///
    /// Two rounds of AWS calls besides process-paid's own time (issue 10): the checksum first
    /// (CPU, the cached key), then {inbox entry, delayed-notify invoke, `chargeId-index` Query}
    /// concurrently, then {notify record, card record mark, process-paid} concurrently (all three
    /// need the Query's answer, none needs another's). The inbox entry is written with the
    /// outcome it most likely ends with; it is corrected only when it ends otherwise.
    pub async fn notify_delivery(&self, delivery: Delivery, forward: String) -> Value {
        let body = read_body(&delivery);
        let charge_id = body.as_ref().ok().map(|b| b.charge_id.as_str().to_string());
        // The inbox is keyed by order; KBank names only the charge, so the charge id stands in.
        let inbox = Inbox::new(
            self.ports.inbox.clone(),
            &self.settings.tables.callback_inbox,
            self.settings.inbox_ttl,
        );
        let mut entry = inbox.entry(&delivery, NOTIFY_FUNCTION, charge_id.as_deref());
        let mut kept = false;
        let result = self
            .notify_steps(
                body,
                &delivery,
                forward.as_bytes(),
                &inbox,
                &mut entry,
                &mut kept,
            )
            .await;
        let (outcome, reply) = match result {
            Ok(reply) => (InboxOutcome::Dispatched, reply.into_event()),
            Err((err, order_id)) => {
                let outcome = outcome_of(&err);
                let reply = self
                    .fail(
                        NOTIFY_FUNCTION,
                        &delivery,
                        &err,
                        order_id.as_deref(),
                        charge_id.as_deref(),
                    )
                    .await;
                (outcome, reply)
            }
        };
        let name = outcome.name();
        if kept && outcome != entry.outcome {
            inbox.finish(&mut entry, outcome).await;
        }
        tracing::info!(
            function = NOTIFY_FUNCTION,
            charge_id = charge_id.as_deref(),
            outcome = name,
            "notify handled"
        );
        reply
    }

    async fn notify_steps(
        &self,
        body: Result<NotifyBody, CallbackError>,
        delivery: &Delivery,
        forward: &[u8],
        inbox: &Inbox,
        entry: &mut InboxEntry,
        kept: &mut bool,
    ) -> Result<Reply, (CallbackError, Option<String>)> {
        // Refused before any effect (unreadable body, keys unavailable): the entry is kept with
        // that outcome, and a failure to keep it is the answer (500: KBank's side sends again).
        let checked = match body {
            Ok(body) => self.verify(&body).await.map(|checksum| (body, checksum)),
            Err(e) => Err(e),
        };
        let (body, checksum) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                entry.outcome = outcome_of(&err);
                return match inbox.append(entry).await {
                    Ok(()) => {
                        *kept = true;
                        Err((err, None))
                    }
                    Err(e) => Err((CallbackError::from(e), None)),
                };
            }
        };
        let goes_on =
            checksum.is_ok() || self.card_settings.checksum_policy == ChecksumPolicy::Mark;
        entry.outcome = match (&checksum, goes_on) {
            (Err(problem), false) => outcome_of(&CallbackError::Checksum(problem.to_string())),
            _ => InboxOutcome::Dispatched,
        };

        // Round 1. Delayed notify is the second chance: queued before anything slow (SPEC 4.3),
        // so a notify that times out still leaves it; under `enforce` a bad checksum queues nothing.
        let (appended, dispatched, found) = tokio::join!(
            inbox.append(entry),
            async {
                if goes_on {
                    self.ports
                        .invoker
                        .invoke_event(&self.settings.functions.delayed_notify, forward)
                        .await
                } else {
                    Ok(())
                }
            },
            self.lookup(&body)
        );
        *kept = appended.is_ok();
        let card_payment = found.map_err(|e| (e, None))?;
        let order_id = card_payment.as_ref().and_then(|c| c.order_id.clone());
        appended.map_err(|e| (CallbackError::from(e), order_id.clone()))?;
        dispatched.map_err(|e| (CallbackError::from(e), order_id.clone()))?;
        let noted = Noted {
            body,
            card_payment,
            checksum,
        };
        let policy = self.check_policy(&noted);

        // Round 2: the notify record, the mark, and process-paid (it reads neither record).
        let (recorded, outcome) =
            tokio::join!(self.record(&noted, delivery, NotifyNote::Notify), async {
                match (&order_id, &policy) {
                    (Some(order), Ok(())) => Some(self.process_paid(order, &noted.body).await),
                    _ => None,
                }
            });
        recorded.map_err(|e| (e, order_id.clone()))?;
        policy.map_err(|e| (e, order_id.clone()))?;
        let outcome = outcome.transpose().map_err(|e| (e, order_id.clone()))?;
        Ok(self.redirect(&noted, outcome))
    }

    /// Delayed notify: `Err` makes Lambda retry the event.
    pub async fn delayed_notify_delivery(
        &self,
        delivery: Delivery,
    ) -> Result<Value, CallbackError> {
        let body = read_body(&delivery);
        let charge_id = body.as_ref().ok().map(|b| b.charge_id.as_str().to_string());
        match self.delayed_steps(body, &delivery).await {
            Ok(reply) => Ok(reply.into_event()),
            Err((err, order_id)) => {
                let reply = self
                    .fail(
                        DELAYED_NOTIFY_FUNCTION,
                        &delivery,
                        &err,
                        order_id.as_deref(),
                        charge_id.as_deref(),
                    )
                    .await;
                if err.retryable() {
                    Err(err)
                } else {
                    // A retry of the same event fails the same way: recorded and alerted, done.
                    Ok(reply)
                }
            }
        }
    }

    /// The Query, then {notify record, mark, first process-paid} concurrently; the wait and the
    /// second run follow the first run's answer.
    async fn delayed_steps(
        &self,
        body: Result<NotifyBody, CallbackError>,
        delivery: &Delivery,
    ) -> Result<Reply, (CallbackError, Option<String>)> {
        let body = body.map_err(|e| (e, None))?;
        let checksum = self.verify(&body).await.map_err(|e| (e, None))?;
        let card_payment = self.lookup(&body).await.map_err(|e| (e, None))?;
        let mut noted = Noted {
            body,
            card_payment,
            checksum,
        };
        let order_id = noted.card_payment.as_ref().and_then(|c| c.order_id.clone());
        let policy = self.check_policy(&noted);
        let (recorded, first) = tokio::join!(
            self.record(&noted, delivery, NotifyNote::DelayedNotify),
            async {
                match (&order_id, &policy) {
                    (Some(order), Ok(())) => Some(self.process_paid(order, &noted.body).await),
                    _ => None,
                }
            }
        );
        recorded.map_err(|e| (e, order_id.clone()))?;
        policy.map_err(|e| (e, order_id.clone()))?;
        let (order, first) = match (order_id, first) {
            (Some(order), Some(first)) => (order, first),
            _ => {
                // chargeId-index is eventually consistent, and the shop may write the record
                // after KBank's notify: wait, look again, then ask KBank.
                tracing::info!(charge_id = %noted.body.charge_id, "no card payment record yet; looking again after the wait");
                tokio::time::sleep(self.card_settings.delayed_notify_wait).await;
                noted.card_payment = self
                    .look_again(&noted.body, &noted.checksum)
                    .await
                    .map_err(|e| (e, None))?;
                match noted.card_payment.as_ref().and_then(|c| c.order_id.clone()) {
                    Some(order) => {
                        let first = self.process_paid(&order, &noted.body).await;
                        (order, first)
                    }
                    None => return self.without_order(&noted).await.map_err(|e| (e, None)),
                }
            }
        };
        let order_id = Some(order.clone());
        let first = match first {
            Ok(o) if o.is_paid() => return Ok(self.redirect(&noted, Some(o))),
            Ok(o) => Some(o),
            Err(e) if e.retryable() => {
                // Not the end: the run after the wait is this event's second chance.
                tracing::warn!(order_id = %order, error = %e, "delayed notify's first process-paid failed; running it again after the wait");
                None
            }
            Err(e) => return Err((e, order_id)),
        };
        tracing::info!(order_id = %order, first = first.map(Outcome::as_str), "not paid yet; asking again after the wait");
        tokio::time::sleep(self.card_settings.delayed_notify_wait).await;
        let second = self
            .process_paid(&order, &noted.body)
            .await
            .map_err(|e| (e, order_id.clone()))?;
        Ok(self.redirect(&noted, Some(second)))
    }

    /// The checksum with the cached key; a mismatch forces one read of the secret first (a
    /// rotated key must not refuse genuine notifies).
    async fn verify(&self, body: &NotifyBody) -> Result<Result<(), ChecksumError>, CallbackError> {
        let key = self.secret.get().await?;
        let fields = body.checksum_fields();
        let first = checksum::verify(&fields, body.checksum.as_deref(), key.expose());
        if first != Err(ChecksumError::Mismatch) {
            return Ok(first);
        }
        match self.secret.refresh_after_refusal(&key).await {
            Ok(Some(new_key)) => Ok(checksum::verify(
                &fields,
                body.checksum.as_deref(),
                new_key.expose(),
            )),
            Ok(None) => Ok(first),
            Err(e) => {
                tracing::warn!(error = %e, "forced secret read failed; the checksum is judged on the cached key");
                Ok(first)
            }
        }
    }

    /// The card payment record naming this charge (`chargeId-index`), if the index shows one.
    async fn lookup(&self, body: &NotifyBody) -> Result<Option<CardPayment>, CallbackError> {
        Ok(self
            .card
            .cards
            .card_payment_by_charge(
                &self.settings.tables.card_payment_record,
                body.charge_id.as_str(),
            )
            .await?)
    }

    /// The notify record and the mark on the card payment record, concurrently.
    async fn record(
        &self,
        noted: &Noted,
        delivery: &Delivery,
        note: NotifyNote,
    ) -> Result<(), CallbackError> {
        let mut record = NotifyRecord::new(
            &noted.body,
            note,
            &delivery.event,
            noted.checksum.clone().map_err(|e| e.to_string()),
            &delivery.request_id,
            self.ports.clock.now(),
        );
        record.order_id = noted.card_payment.as_ref().and_then(|c| c.order_id.clone());
        let (saved, marked) = tokio::join!(
            self.card
                .cards
                .save_notify(&self.settings.tables.credit_card_notify, &record),
            self.mark(&noted.body, noted.card_payment.as_ref(), &noted.checksum)
        );
        saved?;
        marked
    }

    /// `checksumVerified` on the card payment record; a bad checksum never turns `true` back to
    /// `false` (the port's write is conditional), since anyone can POST a forged notify.
    async fn mark(
        &self,
        body: &NotifyBody,
        card_payment: Option<&CardPayment>,
        checksum: &Result<(), ChecksumError>,
    ) -> Result<(), CallbackError> {
        match card_payment {
            Some(c) => Ok(self
                .card
                .cards
                .set_checksum_verified(
                    &self.settings.tables.card_payment_record,
                    &c.token,
                    checksum.is_ok(),
                )
                .await?),
            None => {
                tracing::warn!(charge_id = %body.charge_id, "no card payment record for this charge");
                Ok(())
            }
        }
    }

    async fn look_again(
        &self,
        body: &NotifyBody,
        checksum: &Result<(), ChecksumError>,
    ) -> Result<Option<CardPayment>, CallbackError> {
        let found = self.lookup(body).await?;
        self.mark(body, found.as_ref(), checksum).await?;
        Ok(found)
    }

    /// Still no card payment record after the wait: KBank says whether money was taken. An
    /// Authorized charge with no order to pay is an incident; anything else needs nothing.
    async fn without_order(&self, noted: &Noted) -> Result<Reply, CallbackError> {
        let charge_id = &noted.body.charge_id;
        let Some(kbank) = &self.kbank else {
            tracing::warn!(charge_id = %charge_id, "no card payment record and no KBank client to ask");
            return Ok(self.redirect(noted, None));
        };
        let charge = inquire(kbank.as_ref(), &self.secret, charge_id).await?;
        if charge.state() == ChargeState::Paid {
            return Err(CallbackError::Rejected {
                kind: "ChargedWithoutOrder",
                message: format!(
                    "charge {charge_id} of {} {} is Authorized at KBank, but no card payment record names it after {} s: find the order and pay it, or refund the charge",
                    charge.amount,
                    charge.currency.chars().take(16).collect::<String>(),
                    self.card_settings.delayed_notify_wait.as_secs()
                ),
            });
        }
        tracing::info!(charge_id = %charge_id, status = %charge.status, transaction_state = %charge.transaction_state,
            "no card payment record, and KBank does not report the charge paid: nothing to do");
        Ok(self.redirect(noted, None))
    }

    fn check_policy(&self, noted: &Noted) -> Result<(), CallbackError> {
        let Err(problem) = &noted.checksum else {
            return Ok(());
        };
        match self.card_settings.checksum_policy {
            ChecksumPolicy::Enforce => Err(CallbackError::Checksum(problem.to_string())),
            ChecksumPolicy::Mark => {
                tracing::warn!(charge_id = %noted.body.charge_id, problem = %problem,
                    "checksum verification failed; CHECKSUM_POLICY=mark: continuing");
                Ok(())
            }
        }
    }

    /// Runs process-paid (card) synchronously and reads its outcome.
    async fn process_paid(
        &self,
        order_id: &str,
        body: &NotifyBody,
    ) -> Result<Outcome, CallbackError> {
        let payload = json!({"orderId": order_id, "paymentType": "card", "chargeId": body.charge_id.as_str()});
        let answer = self
            .ports
            .invoker
            .invoke_sync(
                &self.settings.functions.process_paid_card,
                payload.to_string().as_bytes(),
            )
            .await?;
        let outcome = serde_json::from_slice::<Value>(&answer).ok().and_then(|v| {
            v.get("outcome")
                .and_then(Value::as_str)
                .and_then(Outcome::parse)
        });
        tracing::info!(order_id, charge_id = %body.charge_id, outcome = outcome.map(Outcome::as_str), "process-paid answered");
        // An answer without a known outcome counts as not paid: delayed notify asks again.
        Ok(outcome.unwrap_or(Outcome::Pending))
    }

    fn redirect(&self, noted: &Noted, outcome: Option<Outcome>) -> Reply {
        let success = match outcome {
            Some(o) => o.is_paid(),
            None => noted.body.says_paid() && noted.checksum.is_ok(),
        };
        let base = noted
            .card_payment
            .as_ref()
            .and_then(|c| c.callback.as_deref())
            .filter(|c| is_plain_http_url(c))
            .unwrap_or(&self.card_settings.shop_url);
        let order_id = noted
            .card_payment
            .as_ref()
            .and_then(|c| c.order_id.as_deref())
            .unwrap_or("");
        Reply::html(
            200,
            redirect_page(
                base,
                order_id,
                success,
                noted.body.amount.as_deref().unwrap_or(""),
            ),
        )
    }

    async fn fail(
        &self,
        function: &str,
        delivery: &Delivery,
        err: &CallbackError,
        order_id: Option<&str>,
        charge_id: Option<&str>,
    ) -> Value {
        self.reporter
            .report(
                Incident {
                    function,
                    error: err,
                    order_id,
                    charge_id,
                    event: &delivery.event,
                    request_id: &delivery.request_id,
                },
                self.ports.clock.now(),
            )
            .await;
        Reply::failure(err, &delivery.request_id, "Failed to process notify").into_event()
    }
}

/// The notify body, read once: size first (SPEC 4: 413 before parsing), then parsed.
fn read_body(delivery: &Delivery) -> Result<NotifyBody, CallbackError> {
    delivery.check_size()?;
    Ok(match delivery.readable()? {
        Readable::Text(t) => NotifyBody::parse(t)?,
        Readable::Object(o) => NotifyBody::from_object(o.clone())?,
    })
}

/// An `http(s)://` URL with nothing that could break out of an attribute or a URL.
fn is_plain_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() < 512
        && !url.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`' | '\\')
        })
}

/// The page that sends the browser to `{base}/thankyou?orderId=&status=&amount=`.
pub fn redirect_page(base: &str, order_id: &str, success: bool, amount: &str) -> String {
    let query = serde_urlencoded::to_string([
        ("orderId", order_id),
        ("status", if success { "success" } else { "failure" }),
        ("amount", amount),
    ])
    .unwrap_or_default();
    let url = format!("{}/thankyou?{}", base.trim_end_matches('/'), query);
    let href = html_escape(&url);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={href}\">\
         <title>Redirecting</title></head><body><p>Redirecting to <a href=\"{href}\">{href}</a></p></body></html>\n"
    )
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::charge::{Charge, ChargeId};
    use crate::domain::clock::ManualClock;
    use crate::domain::item::{Attr, Item};
    use crate::domain::secret::SecretKey;
    use crate::flows::loopback::LoopbackInvoker;
    use crate::flows::paid::ProcessPaid;
    use crate::flows::settings::ProcessPaidSettings;
    use crate::flows::timed::{Timed, DELAY};
    use crate::ports::error::GatewayError;
    use crate::ports::memory::{InvocationType, MemoryAws, MemoryKBank};
    use crate::ports::{CardStore, ChargeInquiry};
    use async_trait::async_trait;
    use chrono::{TimeZone, Utc};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const KEY: &str = "skey_test_payment3_local";
    const ORDER: &str = "482500007436";
    const CHARGE: &str = "chrg_test_payment3_0001";
    // python3 -c "import hashlib;print(hashlib.sha256(b'chrg_test_payment3_0001'+b'2339.0000'+b'THB'+b'success'+b'Authorized'+b'skey_test_payment3_local').hexdigest())"
    const GOOD: &str = "3537c666f6914b83fd47b397b0da751513d5634ab2b5e02578d1385ae6fdf6ca";
    const NOTIFY_TABLE: &str = "payment3-credit-card-notify-dev";
    const CARDS: &str = "payment3-card-payment-record-dev";
    const ERRORS: &str = "payment3-callback-error-log-dev";
    const INBOX: &str = "payment3-callback-inbox-dev";
    const PROCESS_PAID: &str = "payment3-process-paid-order-internal-dev";
    const DELAYED: &str = "payment3-delayed-notify-dev";

    /// KBank whose charge is pending for the first `pending_calls` inquiries, then Authorized.
    struct AuthorizesLater {
        pending_calls: usize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl ChargeInquiry for AuthorizesLater {
        async fn charge(&self, id: &ChargeId, _key: &SecretKey) -> Result<Charge, GatewayError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Charge {
                id: id.as_str().into(),
                amount: "2339.00".parse().unwrap(),
                currency: "THB".into(),
                status: "success".into(),
                transaction_state: if n < self.pending_calls {
                    "Pre-Authorized"
                } else {
                    "Authorized"
                }
                .into(),
                reference_order: None,
            })
        }
    }

    struct World {
        aws: Arc<MemoryAws>,
        clock: Arc<ManualClock>,
    }

    impl World {
        fn new() -> Self {
            let aws = Arc::new(MemoryAws::default());
            aws.set_secret("kbank-dev", &format!(r#"{{"secretKey": "{KEY}"}}"#));
            let order: Item = [
                ("orderId".to_string(), Attr::S(ORDER.into())),
                (
                    "data".to_string(),
                    Attr::M([("grandTotal".to_string(), Attr::N("2339".into()))].into()),
                ),
            ]
            .into();
            aws.put_item("order-table-dev", ORDER, order);
            let card: Item = [
                ("token".to_string(), Attr::S("tokn_1".into())),
                ("orderId".to_string(), Attr::S(ORDER.into())),
                ("chargeId".to_string(), Attr::S(CHARGE.into())),
                (
                    "callback".to_string(),
                    Attr::S("https://shop.example".into()),
                ),
            ]
            .into();
            aws.put_item(CARDS, "tokn_1", card);
            World {
                aws,
                clock: Arc::new(ManualClock::new(
                    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap(),
                )),
            }
        }

        fn with_kbank(&self, policy: ChecksumPolicy, kbank: Arc<dyn ChargeInquiry>) -> CardNotify {
            self.with_parts(policy, kbank, self.aws.clone())
        }

        /// The card process-paid over the in-memory AWS, asking `kbank`.
        fn card_process_paid(
            &self,
            settings: &Arc<Settings>,
            kbank: Arc<dyn ChargeInquiry>,
        ) -> Arc<ProcessPaid> {
            Arc::new(ProcessPaid::new(
                settings.clone(),
                Arc::new(ProcessPaidSettings::for_kind(
                    crate::flows::settings::ProcessPaidKind::Card,
                    "dev",
                )),
                self.aws.ports(self.clock.clone()),
                self.aws.card_ports(),
                kbank,
            ))
        }

        /// Notify over `cards` in place of the in-memory card store (a lagging index).
        fn with_parts(
            &self,
            policy: ChecksumPolicy,
            kbank: Arc<dyn ChargeInquiry>,
            cards: Arc<dyn CardStore>,
        ) -> CardNotify {
            let settings = Arc::new(Settings::for_branch("dev"));
            let process_paid = self.card_process_paid(&settings, kbank.clone());
            let mut ports = self.aws.ports(self.clock.clone());
            ports.invoker = Arc::new(LoopbackInvoker {
                aws: self.aws.clone(),
                function: PROCESS_PAID.into(),
                process_paid,
            });
            let mut card = CardSettings::for_branch("dev");
            card.checksum_policy = policy;
            card.delayed_notify_wait = Duration::from_millis(1);
            let mut card_ports = self.aws.card_ports();
            card_ports.cards = cards;
            CardNotify::new(settings, Arc::new(card), ports, card_ports).with_inquiry(kbank)
        }

        /// Notify under `enforce` whose inbox, invoker and card store take [`DELAY`] per call
        /// (process-paid itself answers at once): its rounds are its elapsed time.
        fn timed(&self) -> (CardNotify, Arc<Timed>) {
            let kbank = Arc::new(MemoryKBank::with_key(KEY));
            kbank.set_charge(CHARGE, "2339.00", "success", "Authorized");
            let settings = Arc::new(Settings::for_branch("dev"));
            let process_paid = self.card_process_paid(&settings, kbank.clone());
            let timed = Timed::new(
                self.aws.clone(),
                Arc::new(LoopbackInvoker {
                    aws: self.aws.clone(),
                    function: PROCESS_PAID.into(),
                    process_paid,
                }),
            );
            let mut ports = self.aws.ports(self.clock.clone());
            ports.inbox = timed.clone();
            ports.invoker = timed.clone();
            let mut card = CardSettings::for_branch("dev");
            card.delayed_notify_wait = Duration::from_millis(1);
            let mut card_ports = self.aws.card_ports();
            card_ports.cards = timed.clone();
            let n =
                CardNotify::new(settings, Arc::new(card), ports, card_ports).with_inquiry(kbank);
            (n, timed)
        }

        fn notify(&self, policy: ChecksumPolicy) -> CardNotify {
            let kbank = MemoryKBank::with_key(KEY);
            kbank.set_charge(CHARGE, "2339.00", "success", "Authorized");
            self.with_kbank(policy, Arc::new(kbank))
        }

        fn card_record(&self) -> Item {
            self.aws.item(CARDS, "tokn_1").unwrap()
        }
        fn process_paid_calls(&self) -> usize {
            self.aws
                .invocations()
                .iter()
                .filter(|i| i.function == PROCESS_PAID)
                .count()
        }
        fn delayed_calls(&self) -> Vec<Vec<u8>> {
            self.aws
                .invocations()
                .into_iter()
                .filter(|i| i.function == DELAYED && i.kind == InvocationType::Event)
                .map(|i| i.payload)
                .collect()
        }
        fn tick(&self) {
            self.clock.advance(chrono::Duration::milliseconds(1));
        }
    }

    fn body(checksum: Option<&str>) -> String {
        let mut b = json!({"id": CHARGE, "object": "charge", "amount": 2339.00, "currency": "THB",
            "status": "success", "transaction_state": "Authorized"});
        if let Some(c) = checksum {
            b["checksum"] = json!(c);
        }
        // serde_json writes 2339.0; KBank writes 2339.00: keep KBank's text.
        b.to_string().replace("2339.0,", "2339.00,")
    }

    fn http(body: &str, content_type: &str) -> Value {
        json!({
            "resource": "/notify", "path": "/notify", "httpMethod": "POST",
            "headers": {"Content-Type": content_type},
            "requestContext": {"resourcePath": "/notify", "httpMethod": "POST", "stage": "dev",
                "requestId": "gw", "identity": {"sourceIp": "203.0.113.10"}},
            "body": body, "isBase64Encoded": false
        })
    }

    #[tokio::test]
    async fn a_valid_notify_pays_the_order_and_hands_off_to_delayed_notify_once() {
        // Given a card payment for an order and a charge KBank reports Authorized
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        let event = http(&body(Some(GOOD)), "application/json");
        // When KBank posts a notify with a valid checksum
        let reply = n.notify(event.clone(), "req-1").await;
        // Then it answers the redirect page to the shop
        assert_eq!(reply["statusCode"], 200, "{reply}");
        assert_eq!(reply["headers"]["Content-Type"], "text/html; charset=utf-8");
        let page = reply["body"].as_str().unwrap();
        assert!(
            page.contains("https://shop.example/thankyou?orderId=482500007436&amp;status=success&amp;amount=2339.00"),
            "{page}"
        );
        // and the notify is recorded, verified, on the notify table and the card payment record
        let records = w.aws.notify_records(NOTIFY_TABLE, CHARGE);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].note, NotifyNote::Notify);
        assert!(records[0].checksum_verified);
        assert_eq!(records[0].order_id.as_deref(), Some(ORDER));
        assert_eq!(records[0].body["checksum"], GOOD);
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        // and the order is paid, through process-paid
        assert_eq!(w.process_paid_calls(), 1);
        assert_eq!(
            w.aws.item("order-table-dev", ORDER).unwrap()["paymentStatus"],
            Attr::S("PAID".into())
        );
        // and delayed notify got the same event, once
        let delayed = w.delayed_calls();
        assert_eq!(delayed.len(), 1);
        assert_eq!(serde_json::from_slice::<Value>(&delayed[0]).unwrap(), event);
        // and the delivery is in the inbox, under the charge id
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].function, "notify");
        assert_eq!(inbox[0].order_id, CHARGE);
        assert_eq!(inbox[0].outcome, InboxOutcome::Dispatched);
    }

    #[tokio::test]
    async fn a_forged_checksum_under_enforce_is_401_recorded_alerted_and_not_processed() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        let forged = "0".repeat(64);
        let reply = n
            .notify(http(&body(Some(&forged)), "application/json"), "req-2")
            .await;
        assert_eq!(reply["statusCode"], 401);
        let b: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
        assert_eq!(b["error"], "checksum verification failed");
        // Stored with checksumVerified false, on both tables
        let records = w.aws.notify_records(NOTIFY_TABLE, CHARGE);
        assert_eq!(records.len(), 1);
        assert!(!records[0].checksum_verified);
        assert_eq!(
            records[0].checksum_error.as_deref(),
            Some("checksum does not match")
        );
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(false));
        // Alerted
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, "ChecksumError");
        assert_eq!(errors[0].function_name, "notify");
        assert_eq!(errors[0].charge_id.as_deref(), Some(CHARGE));
        assert_eq!(w.aws.mails().len(), 1);
        assert_eq!(w.aws.mails()[0].subject, "[payment3][dev] notify error");
        // Never reaches process-paid, no delayed notify, order untouched
        assert!(w.aws.invocations().is_empty());
        assert!(!w
            .aws
            .item("order-table-dev", ORDER)
            .unwrap()
            .contains_key("paymentStatus"));
        assert!(matches!(
            w.aws.inbox(INBOX)[0].outcome,
            InboxOutcome::Rejected { status: 401, .. }
        ));
    }

    #[tokio::test]
    async fn a_missing_or_short_checksum_under_enforce_is_401_too() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        for (i, checksum) in [None, Some(""), Some(&GOOD[..63]), Some("zz")]
            .into_iter()
            .enumerate()
        {
            w.tick();
            let reply = n
                .notify(http(&body(checksum), "application/json"), &format!("r{i}"))
                .await;
            assert_eq!(reply["statusCode"], 401, "{checksum:?}");
        }
        assert!(w.aws.invocations().is_empty());
        // One alert for the flood.
        assert_eq!(w.aws.mails().len(), 1);
    }

    #[tokio::test]
    async fn a_bad_checksum_under_mark_is_marked_and_processed() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Mark);
        let reply = n
            .notify(http(&body(Some(&"0".repeat(64))), "application/json"), "r")
            .await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(false));
        assert!(!w.aws.notify_records(NOTIFY_TABLE, CHARGE)[0].checksum_verified);
        assert_eq!(w.process_paid_calls(), 1);
        assert_eq!(w.delayed_calls().len(), 1);
        assert!(w.aws.error_log(ERRORS).is_empty(), "mark only warns");
    }

    #[tokio::test]
    async fn a_form_encoded_notify_is_read() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        let form = format!(
            "id={CHARGE}&amount=2339.00&currency=THB&status=success&transaction_state=Authorized&checksum={GOOD}"
        );
        let reply = n
            .notify(http(&form, "application/x-www-form-urlencoded"), "r")
            .await;
        assert_eq!(reply["statusCode"], 200, "{reply}");
        assert!(w.aws.notify_records(NOTIFY_TABLE, CHARGE)[0].checksum_verified);
        assert_eq!(w.aws.order_updates(), 1);
    }

    #[tokio::test]
    async fn every_repeat_leaves_one_payment() {
        // Given notify delivered three times, and delayed notify run for each, and retried
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        for i in 0..3 {
            w.tick();
            assert_eq!(
                n.notify(
                    http(&body(Some(GOOD)), "application/json"),
                    &format!("n{i}")
                )
                .await["statusCode"],
                200
            );
        }
        for (i, event) in w.delayed_calls().into_iter().enumerate() {
            let event: Value = serde_json::from_slice(&event).unwrap();
            for attempt in 0..2 {
                w.tick();
                n.delayed_notify(event.clone(), &format!("d{i}{attempt}"))
                    .await
                    .unwrap();
            }
        }
        // Then the order was updated once and one notice was sent
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(
            w.aws
                .mails()
                .iter()
                .filter(|m| m.subject.contains("paid"))
                .count(),
            1
        );
        let records = w.aws.notify_records(NOTIFY_TABLE, CHARGE);
        assert_eq!(
            records
                .iter()
                .filter(|r| r.note == NotifyNote::DelayedNotify)
                .count(),
            6
        );
    }

    #[tokio::test]
    async fn a_charge_authorized_later_is_pending_then_paid_by_the_delayed_run() {
        // Given a charge KBank reports Pre-Authorized for the first two inquiries
        let w = World::new();
        let kbank = Arc::new(AuthorizesLater {
            pending_calls: 2,
            calls: AtomicUsize::new(0),
        });
        let n = w.with_kbank(ChecksumPolicy::Enforce, kbank.clone());
        // When notify arrives, the order stays unpaid and the page says failure
        let reply = n
            .notify(http(&body(Some(GOOD)), "application/json"), "n")
            .await;
        assert_eq!(reply["statusCode"], 200);
        assert!(reply["body"].as_str().unwrap().contains("status=failure"));
        assert!(!w
            .aws
            .item("order-table-dev", ORDER)
            .unwrap()
            .contains_key("paymentStatus"));
        assert_eq!(
            w.aws.item("payment3-paid-order-dev", ORDER).unwrap()["status"],
            Attr::S("PENDING".into())
        );
        // Then delayed notify: first run still pending, the run after the wait pays it
        let event: Value = serde_json::from_slice(&w.delayed_calls()[0]).unwrap();
        let reply = n.delayed_notify(event, "d").await.unwrap();
        assert!(reply["body"].as_str().unwrap().contains("status=success"));
        assert_eq!(kbank.calls.load(Ordering::SeqCst), 3);
        assert_eq!(w.process_paid_calls(), 3);
        assert_eq!(
            w.aws.item("order-table-dev", ORDER).unwrap()["paymentStatus"],
            Attr::S("PAID".into())
        );
        assert_eq!(w.aws.order_updates(), 1);
    }

    #[tokio::test]
    async fn delayed_notify_runs_once_when_the_first_run_is_paid() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        let reply = n
            .delayed_notify(http(&body(Some(GOOD)), "application/json"), "d")
            .await
            .unwrap();
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(w.process_paid_calls(), 1);
        let records = w.aws.notify_records(NOTIFY_TABLE, CHARGE);
        assert_eq!(records[0].note, NotifyNote::DelayedNotify);
        // Delayed notify never hands off again, and keeps no inbox entry (it is not a delivery).
        assert!(w.delayed_calls().is_empty());
        assert!(w.aws.inbox(INBOX).is_empty());
    }

    #[tokio::test]
    async fn delayed_notify_fails_for_a_retry_when_process_paid_fails() {
        let w = World::new();
        let kbank = Arc::new(MemoryKBank::with_key(KEY));
        kbank.fail_with(Some(GatewayError::Unreachable("timeout".into())));
        let n = w.with_kbank(ChecksumPolicy::Enforce, kbank.clone());
        // Notify: process-paid fails; delayed notify is still handed the event; KBank gets 500.
        let reply = n
            .notify(http(&body(Some(GOOD)), "application/json"), "n")
            .await;
        assert_eq!(reply["statusCode"], 500);
        assert_eq!(w.delayed_calls().len(), 1);
        // Delayed notify: fails so Lambda retries; error logged.
        let event: Value = serde_json::from_slice(&w.delayed_calls()[0]).unwrap();
        assert!(n.delayed_notify(event.clone(), "d1").await.is_err());
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.function_name == "delayednotify"));
        // The retry after the outage pays the order.
        kbank.fail_with(None);
        kbank.set_charge(CHARGE, "2339.00", "success", "Authorized");
        n.delayed_notify(event, "d2").await.unwrap();
        assert_eq!(w.aws.order_updates(), 1);
    }

    #[tokio::test]
    async fn a_forged_delayed_notify_is_recorded_and_not_retried() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        let reply = n
            .delayed_notify(http(&body(Some(&"1".repeat(64))), "application/json"), "d")
            .await
            .unwrap();
        assert_eq!(reply["statusCode"], 401);
        assert_eq!(w.process_paid_calls(), 0);
        assert!(!w.aws.notify_records(NOTIFY_TABLE, CHARGE)[0].checksum_verified);
    }

    #[tokio::test]
    async fn an_unknown_charge_is_recorded_and_skipped() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Mark);
        let other = body(Some(GOOD)).replace(CHARGE, "chrg_unknown");
        let reply = n.notify(http(&other, "application/json"), "r").await;
        assert_eq!(reply["statusCode"], 200);
        assert!(reply["body"]
            .as_str()
            .unwrap()
            .contains("https://shop.villamarket.com/thankyou?orderId=&amp;status=failure"));
        assert_eq!(w.aws.notify_records(NOTIFY_TABLE, "chrg_unknown").len(), 1);
        assert_eq!(w.process_paid_calls(), 0);
        assert_eq!(w.delayed_calls().len(), 1);
    }

    #[tokio::test]
    async fn a_secret_or_store_outage_is_500_for_a_retry() {
        let w = World::new();
        w.aws.set_secret("kbank-dev", "{}");
        let n = w.notify(ChecksumPolicy::Enforce);
        let reply = n
            .notify(http(&body(Some(GOOD)), "application/json"), "r")
            .await;
        assert_eq!(reply["statusCode"], 500);
        assert!(!reply["body"].as_str().unwrap().contains("secretKey"));
        assert!(w.aws.invocations().is_empty());
    }

    #[tokio::test]
    async fn no_input_makes_it_panic() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        for event in [
            json!(null),
            json!(5),
            json!("text"),
            json!({"body": ""}),
            json!({"body": "=&=&"}),
            json!({"body": "id=%ZZ"}),
            json!({"body": {"id": ["x"]}}),
            json!({"body": {"id": "chrg_1", "amount": {"a": 1}, "checksum": 5}}),
            json!({"body": "{\"id\": \"chrg_1\", \"amount\": 1e400}"}),
            json!({"body": "x".repeat(70_000)}),
        ] {
            w.tick();
            let reply = n.notify(event.clone(), "r").await;
            let status = reply["statusCode"].as_u64().unwrap();
            assert!((400..500).contains(&status), "{event}: {status}");
        }
        assert!(w.aws.invocations().is_empty());
    }

    #[test]
    fn the_redirect_page_escapes_what_it_interpolates() {
        let page = redirect_page("https://shop.example/", "A&B\"<x>", true, "1 000");
        assert!(page.contains("https://shop.example/thankyou?orderId=A%26B%22%3Cx%3E&amp;status=success&amp;amount=1+000"), "{page}");
        assert!(!page.contains("<x>"));
        assert!(!is_plain_http_url("javascript:alert(1)"));
        assert!(!is_plain_http_url("https://x\" onload=\"y"));
        assert!(is_plain_http_url("https://shop.villamarket.com"));
    }

    /// `chargeId-index` as real DynamoDB may serve it: the first `misses` queries do not see a
    /// record that is there (a GSI is eventually consistent, the shop may write it late).
    struct LaggingIndex {
        aws: Arc<MemoryAws>,
        misses: AtomicUsize,
        queries: AtomicUsize,
    }

    #[async_trait]
    impl CardStore for LaggingIndex {
        async fn save_notify(
            &self,
            table: &str,
            record: &NotifyRecord,
        ) -> Result<(), crate::ports::error::StoreError> {
            self.aws.save_notify(table, record).await
        }
        async fn card_payment_by_charge(
            &self,
            table: &str,
            charge_id: &str,
        ) -> Result<Option<CardPayment>, crate::ports::error::StoreError> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            let missed = self
                .misses
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| m.checked_sub(1))
                .is_ok();
            if missed {
                return Ok(None);
            }
            self.aws.card_payment_by_charge(table, charge_id).await
        }
        async fn set_checksum_verified(
            &self,
            table: &str,
            token: &str,
            verified: bool,
        ) -> Result<(), crate::ports::error::StoreError> {
            self.aws.set_checksum_verified(table, token, verified).await
        }
    }

    fn signed(key: &str) -> String {
        let fields = crate::domain::checksum::ChecksumFields {
            charge_id: CHARGE,
            amount: Some("2339.00"),
            currency: "THB",
            status: "success",
            transaction_state: "Authorized",
        };
        crate::domain::checksum::expected_hex(&fields, key).unwrap()
    }

    #[tokio::test]
    async fn a_forged_notify_after_a_genuine_one_does_not_unverify_the_record() {
        let w = World::new();
        let n = w.notify(ChecksumPolicy::Enforce);
        assert_eq!(
            n.notify(http(&body(Some(GOOD)), "application/json"), "g")
                .await["statusCode"],
            200
        );
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        // When someone POSTs a forged notify for the same charge (before: written false)
        w.clock.advance(chrono::Duration::seconds(10));
        let forged = n
            .notify(http(&body(Some(&"0".repeat(64))), "application/json"), "f")
            .await;
        assert_eq!(forged["statusCode"], 401);
        // Then the flag the migration relies on stays true; the forged notify record says false
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        let records = w.aws.notify_records(NOTIFY_TABLE, CHARGE);
        assert_eq!(
            records
                .iter()
                .map(|r| r.checksum_verified)
                .collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[tokio::test]
    async fn a_rotated_key_is_read_again_before_a_notify_is_refused() {
        // Given notify holding the old key in its cache
        let w = World::new();
        let kbank = Arc::new(MemoryKBank::with_key(KEY));
        kbank.set_charge(CHARGE, "2339.00", "success", "Authorized");
        let n = w.with_kbank(ChecksumPolicy::Enforce, kbank.clone());
        n.notify(http(&body(None), "application/json"), "warm")
            .await;
        assert_eq!(w.aws.secret_reads(), 1);
        // When the secret is rotated and KBank signs with the new key, well within
        // SECRET_REFRESH_SECONDS (before: 401 until the refresh, nothing processed)
        const NEW: &str = "skey_test_payment3_rotated";
        w.aws
            .set_secret("kbank-dev", &format!(r#"{{"secretKey": "{NEW}"}}"#));
        kbank.set_key(NEW);
        w.clock.advance(chrono::Duration::seconds(30));
        let reply = n
            .notify(http(&body(Some(&signed(NEW))), "application/json"), "n")
            .await;
        // Then one forced read picks up the new key and the order is paid
        assert_eq!(reply["statusCode"], 200, "{reply}");
        // (notify's first read, its forced read; process-paid's first read, in its own container)
        assert_eq!(w.aws.secret_reads(), 3);
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        assert_eq!(w.aws.order_updates(), 1);
        // And a notify signed with the old key is now refused
        w.clock.advance(chrono::Duration::seconds(30));
        let old = n
            .notify(http(&body(Some(GOOD)), "application/json"), "o")
            .await;
        assert_eq!(old["statusCode"], 401);
    }

    /// Lambda in memory whose synchronous process-paid never answers (a slow day).
    struct HangingProcessPaid(Arc<MemoryAws>);

    #[async_trait]
    impl crate::ports::Invoker for HangingProcessPaid {
        async fn invoke_event(
            &self,
            function: &str,
            payload: &[u8],
        ) -> Result<(), crate::ports::error::InvokeError> {
            self.0.invoke_event(function, payload).await
        }
        async fn invoke_sync(
            &self,
            function: &str,
            payload: &[u8],
        ) -> Result<Vec<u8>, crate::ports::error::InvokeError> {
            self.0.invoke_sync(function, payload).await?;
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn delayed_notify_is_queued_before_process_paid_so_a_notify_killed_by_its_timeout_leaves_it(
    ) {
        // Given a process-paid that does not answer before notify's Lambda timeout
        let w = World::new();
        let mut ports = w.aws.ports(w.clock.clone());
        ports.invoker = Arc::new(HangingProcessPaid(w.aws.clone()));
        let n = CardNotify::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(CardSettings::for_branch("dev")),
            ports,
            w.aws.card_ports(),
        );
        // When notify is cut off by the timeout (before: delayed notify was queued after the
        // synchronous process-paid, so never)
        let cut = tokio::time::timeout(
            Duration::from_millis(200),
            n.notify(http(&body(Some(GOOD)), "application/json"), "n"),
        )
        .await;
        assert!(cut.is_err(), "notify was cut off");
        // Then the second chance exists: delayed notify was queued, before process-paid was asked
        let calls = w.aws.invocations();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].function, DELAYED);
        assert_eq!(calls[0].kind, InvocationType::Event);
        assert_eq!(calls[1].function, PROCESS_PAID);
    }

    #[tokio::test]
    async fn delayed_notify_looks_again_for_a_card_record_the_index_did_not_show() {
        // Given a card payment record the index misses for notify's and delayed notify's first
        // queries
        let w = World::new();
        let kbank = Arc::new(MemoryKBank::with_key(KEY));
        kbank.set_charge(CHARGE, "2339.00", "success", "Authorized");
        let index = Arc::new(LaggingIndex {
            aws: w.aws.clone(),
            misses: AtomicUsize::new(2),
            queries: AtomicUsize::new(0),
        });
        let n = w.with_parts(ChecksumPolicy::Enforce, kbank, index.clone());
        let event = http(&body(Some(GOOD)), "application/json");
        let reply = n.notify(event.clone(), "n").await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(w.process_paid_calls(), 0);
        // When delayed notify runs (before: it returned at once; no log, no alert, order unpaid)
        let reply = n.delayed_notify(event, "d").await.unwrap();
        // Then it waited, looked again, found the record and paid the order
        assert!(
            reply["body"].as_str().unwrap().contains("status=success"),
            "{reply}"
        );
        assert_eq!(index.queries.load(Ordering::SeqCst), 3);
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        assert!(w.aws.error_log(ERRORS).is_empty());
    }

    #[tokio::test]
    async fn an_authorized_charge_that_no_card_record_names_is_an_incident() {
        // Given an Authorized charge at KBank and no card payment record naming it, ever
        let w = World::new();
        let kbank = Arc::new(MemoryKBank::with_key(KEY));
        kbank.set_charge("chrg_orphan", "2339.00", "success", "Authorized");
        kbank.set_charge("chrg_unpaid", "2339.00", "pending", "Pending");
        let n = w.with_kbank(ChecksumPolicy::Mark, kbank.clone());
        // When delayed notify has waited, looked again, and asked KBank
        let orphan = body(Some(GOOD)).replace(CHARGE, "chrg_orphan");
        let reply = n
            .delayed_notify(http(&orphan, "application/json"), "d")
            .await
            .unwrap();
        // Then it is recorded and alerted as money taken with no order (not retried)
        assert_eq!(reply["statusCode"], 422, "{reply}");
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, "ChargedWithoutOrder");
        assert_eq!(errors[0].charge_id.as_deref(), Some("chrg_orphan"));
        assert!(
            errors[0].error.contains("2339.00 THB"),
            "{}",
            errors[0].error
        );
        assert_eq!(w.aws.mails().len(), 1);
        assert_eq!(kbank.calls(), 1);
        // A charge KBank does not report paid needs nothing
        let unpaid = body(Some(GOOD)).replace(CHARGE, "chrg_unpaid");
        let reply = n
            .delayed_notify(http(&unpaid, "application/json"), "d2")
            .await
            .unwrap();
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(w.aws.error_log(ERRORS).len(), 1);
        // KBank unreachable: the invocation fails so Lambda retries it
        kbank.fail_with(Some(GatewayError::Throttled { status: 429 }));
        assert!(n
            .delayed_notify(http(&orphan, "application/json"), "d3")
            .await
            .is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_genuine_notify_is_two_rounds_of_concurrent_calls() {
        // Given AWS calls of 10 ms each
        let w = World::new();
        let (n, timed) = w.timed();
        // When a genuine notify arrives
        let started = tokio::time::Instant::now();
        let reply = n
            .notify(http(&body(Some(GOOD)), "application/json"), "n")
            .await;
        // Then it is answered after two rounds (before: inbox, {delayed notify | Query, notify
        // record, mark}, process-paid, inbox outcome = 6 calls' time): {inbox entry, delayed
        // notify, Query}, then {notify record, mark, process-paid}; no outcome correction
        assert_eq!(reply["statusCode"], 200);
        assert!(reply["body"].as_str().unwrap().contains("status=success"));
        assert_eq!(started.elapsed(), 2 * DELAY);
        assert_eq!(timed.max_in_flight(), 3);
        assert_eq!(
            timed.calls(),
            [
                "card.mark",
                "card.query",
                "inbox.append",
                "invoke.event",
                "invoke.sync",
                "notify.put"
            ]
        );
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(w.card_record()["checksumVerified"], Attr::Bool(true));
        assert_eq!(w.delayed_calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forged_notify_is_two_rounds_and_its_inbox_entry_needs_no_correction() {
        let w = World::new();
        let (n, timed) = w.timed();
        let started = tokio::time::Instant::now();
        let reply = n
            .notify(http(&body(Some(&"0".repeat(64))), "application/json"), "n")
            .await;
        assert_eq!(reply["statusCode"], 401);
        // {inbox entry (written as refused), Query}, then {notify record, mark}: nothing queued,
        // process-paid not asked, the entry's outcome right the first time
        assert_eq!(started.elapsed(), 2 * DELAY);
        assert_eq!(
            timed.calls(),
            ["card.mark", "card.query", "inbox.append", "notify.put"]
        );
        assert!(w.delayed_calls().is_empty());
        assert_eq!(w.process_paid_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_notify_is_two_rounds_when_its_first_run_pays() {
        let w = World::new();
        let (n, timed) = w.timed();
        let started = tokio::time::Instant::now();
        let reply = n
            .delayed_notify(http(&body(Some(GOOD)), "application/json"), "d")
            .await
            .unwrap();
        assert!(reply["body"].as_str().unwrap().contains("status=success"));
        // The Query, then {notify record, mark, process-paid} (before: 4 calls one after the other)
        assert_eq!(started.elapsed(), 2 * DELAY);
        assert_eq!(timed.max_in_flight(), 3);
        assert_eq!(
            timed.calls(),
            ["card.mark", "card.query", "invoke.sync", "notify.put"]
        );
        assert_eq!(w.aws.order_updates(), 1);
    }
}
