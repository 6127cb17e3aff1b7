//! [`CallbackProcessor`]: the whole of SPEC 4.1 and 4.5 for the wallet, bank-app and Amex
//! callbacks, which differ only in their [`RecordTable`]. One road: event -> delivery ->
//! signature -> validated payload -> {record, inbox entry, dispatch} in one concurrent round ->
//! reply; a failure at any step takes the error path and still keeps the delivery in the inbox.

use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::domain::callback::{aliased, CallbackPayload};
use crate::domain::delivery::Delivery;
use crate::domain::inbox::{InboxEntry, InboxOutcome};
use crate::domain::record::CallbackRecord;
use crate::domain::signature::{
    replay_key, CallbackKeys, SignatureError, SignedHeaders, ID_HEADER, MAX_WEBHOOK_ID_BYTES,
};
use crate::flows::error::CallbackError;
use crate::flows::inbox::{outcome_of, Inbox};
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::reply::Reply;
use crate::flows::settings::{AuthPolicy, CallbackAuthSettings, Settings};
use crate::ports::error::SecretError;
use crate::ports::secret_cache::SecretCache;
use crate::ports::{Ports, SaveOutcome};

/// What differs between the callback functions built on [`crate::CallbackProcessor`].
pub trait RecordTable: Send + Sync + 'static {
    /// `Wallet`, `BankApp`, `Amex`: used in messages ("Wallet callback recorded successfully").
    const LABEL: &'static str;
    /// The function's name in the error log, Sentry tags and alerts (`walletcallback`).
    const FUNCTION: &'static str;
    /// The gateway's name in the signing keys secret and the auth policy (`wallet`).
    const GATEWAY: &'static str;
    /// The `paymentType` process-paid is told (and the order gets): the function's, never the body's.
    const PAYMENT_TYPE: &'static str;
    /// The table its records go to.
    fn table(settings: &Settings) -> &str;
    /// The process-paid function a successful callback is handed to.
    fn process_paid_function(settings: &Settings) -> &str;
}

/// TrueMoney Wallet, Rabbit LINE Pay: `POST /wallet/callback`.
pub struct WalletRecords;
/// The KBank bank app: `POST /bankapp/callback`; shares the wallet table and process-paid.
pub struct BankAppRecords;
/// American Express: `POST /amex/callback`.
pub struct AmexRecords;

impl RecordTable for WalletRecords {
    const LABEL: &'static str = "Wallet";
    const PAYMENT_TYPE: &'static str = "wallet";
    const FUNCTION: &'static str = "walletcallback";
    const GATEWAY: &'static str = "wallet";
    fn table(settings: &Settings) -> &str {
        &settings.tables.wallet_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_wallet
    }
}

impl RecordTable for BankAppRecords {
    const LABEL: &'static str = "BankApp";
    const PAYMENT_TYPE: &'static str = "bankapp";
    const FUNCTION: &'static str = "bankappcallback";
    const GATEWAY: &'static str = "bankapp";
    fn table(settings: &Settings) -> &str {
        &settings.tables.wallet_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_wallet
    }
}

impl RecordTable for AmexRecords {
    const LABEL: &'static str = "Amex";
    const PAYMENT_TYPE: &'static str = "amex";
    const FUNCTION: &'static str = "amexcallback";
    const GATEWAY: &'static str = "amex";
    fn table(settings: &Settings) -> &str {
        &settings.tables.amex_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_amex
    }
}

/// What the signature check of a delivery concluded (SPEC 4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// Signed by one of the gateway's keys (or an operator's replay of a verified delivery):
    /// its `webhook-id`, which the record write checks for replays.
    Verified { webhook_id: Option<String> },
    /// Not signed, or not by a current key: why.
    Unverified(String),
}

impl Authenticity {
    pub fn verified(&self) -> bool {
        matches!(self, Authenticity::Verified { .. })
    }
}

/// Handles one kind of callback.
pub struct CallbackProcessor<R: RecordTable> {
    settings: Arc<Settings>,
    policy: AuthPolicy,
    keys: SecretCache<CallbackKeys>,
    ports: Ports,
    reporter: IncidentReporter,
    _table: PhantomData<R>,
}

fn parse_keys(name: &str, text: &str) -> Result<CallbackKeys, SecretError> {
    CallbackKeys::parse(text).map_err(|message| SecretError {
        name: name.to_string(),
        message,
    })
}

impl<R: RecordTable> CallbackProcessor<R> {
    /// A processor with the default authentication: `enforce`, keys from
    /// `payment3-callback-keys-<branch>`.
    pub fn new(settings: Arc<Settings>, ports: Ports) -> Self {
        let auth = CallbackAuthSettings::for_branch(&settings.branch);
        CallbackProcessor::with_auth(settings, &auth, ports)
    }

    pub fn with_auth(settings: Arc<Settings>, auth: &CallbackAuthSettings, ports: Ports) -> Self {
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        let keys = SecretCache::with_parser(
            ports.secrets.clone(),
            ports.clock.clone(),
            auth.secret_name.clone(),
            auth.refresh,
            parse_keys,
        );
        CallbackProcessor {
            settings,
            policy: auth.policy_for(R::GATEWAY),
            keys,
            ports,
            reporter,
            _table: PhantomData,
        }
    }

    /// The time on the ports' clock: when a delivery is received.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ports.clock.now()
    }

    /// Handles one delivery and returns the Lambda response. Never fails, never panics on
    /// input: every failure is a response with its status, after the error path. The runtime's
    /// `handle` reads the Lambda event into the delivery.
    ///
    /// Issue 10: every check that needs no AWS call runs first (size, signature with the cached
    /// keys, validation); then every effect goes out in one concurrent round: the record write
    /// (with the replay check as its condition), the inbox entry (written with the outcome it
    /// will most likely have) and, for a success, the dispatch. A second round only corrects the
    /// inbox entry when the outcome differs (a kept success, a replay, a failure) and runs the
    /// error path on a failure.
    pub async fn handle_delivery(&self, delivery: Delivery) -> Value {
        // Size first (SPEC 4: 413 before parsing), then the body is parsed once for every step.
        let body = delivery
            .check_size()
            .map_err(CallbackError::from)
            .and_then(|()| delivery.body_object().map_err(CallbackError::from));
        let order_id = body.as_ref().ok().and_then(|b| {
            aliased(b, &["orderId", "order_id"]).and_then(|v| v.as_str().map(String::from))
        });
        let inbox = Inbox::new(
            self.ports.inbox.clone(),
            &self.settings.tables.callback_inbox,
            self.settings.inbox_ttl,
        );
        let mut entry = inbox.entry(&delivery, R::FUNCTION, order_id.as_deref());

        // A body too large is refused before its signature is looked at (413); anything else
        // must be signed before its content counts for anything (401 before 400).
        let checked = match delivery.check_size() {
            Err(e) => Err(CallbackError::from(e)),
            Ok(()) => {
                let authenticity = self.authenticate(&delivery).await;
                entry.signature_verified = match &authenticity {
                    Ok(a) => Some(a.verified()),
                    Err(CallbackError::Unauthenticated(_)) => Some(false),
                    Err(_) => None,
                };
                authenticity.and_then(|a| {
                    body.and_then(|b| CallbackPayload::from_object(b).map_err(CallbackError::from))
                        .map(|p| (p, a))
                })
            }
        };
        let reply = match checked {
            Ok((payload, authenticity)) => {
                self.take(&inbox, &mut entry, &delivery, payload, &authenticity)
                    .await
            }
            Err(err) => {
                self.refuse(&inbox, &mut entry, &delivery, err, order_id.as_deref())
                    .await
            }
        };
        tracing::info!(
            function = R::FUNCTION,
            order_id = order_id.as_deref(),
            outcome = entry.outcome.name(),
            signature_verified = entry.signature_verified,
            "callback handled"
        );
        reply
    }

    /// A delivery refused before any effect (413, 401, 400, or unreadable keys): its inbox
    /// entry, written with its final outcome, and the error path, concurrently. A delivery that
    /// cannot be kept is a 500, so the gateway sends it again.
    async fn refuse(
        &self,
        inbox: &Inbox,
        entry: &mut InboxEntry,
        delivery: &Delivery,
        err: CallbackError,
        order_id: Option<&str>,
    ) -> Value {
        entry.outcome = outcome_of(&err);
        let (kept, reply) = tokio::join!(
            inbox.append(entry),
            self.fail(delivery, &err, order_id, None)
        );
        match kept {
            Ok(()) => reply,
            Err(e) => {
                self.fail(delivery, &CallbackError::from(e), order_id, None)
                    .await
            }
        }
    }

    /// A valid, authenticated callback (SPEC 4.1 steps 2-5): the record write, the inbox entry
    /// and (for a success) the dispatch in one concurrent round.
    ///
    /// Why each failure still keeps SPEC 4.1: any failed call is a 500, so the gateway retries,
    /// and a retry repeats all three. The record write is idempotent (the same content; a
    /// verified retry finds its webhook-id and writes nothing), the dispatch is too (process-paid
    /// applies a payment once), and the retry is a new inbox entry. So:
    /// - dispatch ok, record write failed: process-paid may pay the order before the record
    ///   exists (it does not read the record); the 500 brings the retry that writes it;
    /// - record written, dispatch failed: the retry dispatches (a seen webhook-id never stops a
    ///   dispatch);
    /// - both done, inbox entry failed: the 500 brings a retry, whose entry is kept.
    async fn take(
        &self,
        inbox: &Inbox,
        entry: &mut InboxEntry,
        delivery: &Delivery,
        payload: CallbackPayload,
        authenticity: &Authenticity,
    ) -> Value {
        let mut record =
            CallbackRecord::new(&payload, delivery.event.clone(), self.ports.clock.now());
        record.signature_verified = Some(authenticity.verified());
        // Replays are recognised per gateway (wallet and bank app share a table).
        let webhook_id = match authenticity {
            Authenticity::Verified {
                webhook_id: Some(id),
            } => Some(format!("{}:{id}", R::GATEWAY)),
            _ => None,
        };
        // The body as received goes on; process-paid parses it itself. A success is dispatched
        // even when its webhook-id turns out to be seen: the gateway may be retrying after a
        // failed dispatch (same id), which must dispatch again; a replay's dispatch finds the
        // payment applied.
        let dispatch = payload
            .success
            .then(|| dispatched_body(&payload.body, R::PAYMENT_TYPE).to_string());
        // The outcome the entry will most likely end with, written in the same round.
        entry.outcome = if payload.success {
            InboxOutcome::Dispatched
        } else {
            InboxOutcome::Recorded
        };
        let (saved, kept, dispatched) = tokio::join!(
            self.ports.records.save_callback(
                R::table(&self.settings),
                &record,
                webhook_id.as_deref()
            ),
            inbox.append(entry),
            async {
                match &dispatch {
                    Some(body) => {
                        self.ports
                            .invoker
                            .invoke_event(R::process_paid_function(&self.settings), body.as_bytes())
                            .await
                    }
                    None => Ok(()),
                }
            }
        );

        let kept_ok = kept.is_ok();
        let failure = match (saved, dispatched, kept) {
            (Err(e), _, _) => Err(CallbackError::from(e)),
            (_, Err(e), _) => Err(CallbackError::from(e)),
            (_, _, Err(e)) => Err(CallbackError::from(e)),
            (Ok(saved), Ok(()), Ok(())) => Ok(saved),
        };
        let outcome = match &failure {
            Err(err) => outcome_of(err),
            Ok(SaveOutcome::KeptEarlierSuccess) => {
                tracing::warn!(
                    order_id = payload.order_id.as_str(),
                    "success:false after a success: the success is kept"
                );
                InboxOutcome::KeptEarlierSuccess
            }
            Ok(SaveOutcome::AlreadyProcessed) => {
                tracing::info!(
                    order_id = payload.order_id.as_str(),
                    "webhook-id already processed: the record is not rewritten"
                );
                InboxOutcome::AlreadyProcessed
            }
            Ok(SaveOutcome::Written) => entry.outcome.clone(),
        };
        // The second round, only on the rare paths: the entry's true outcome, the error path.
        let correct = async {
            if kept_ok && outcome != entry.outcome {
                inbox.finish(entry, outcome).await;
            } else {
                entry.outcome = outcome;
            }
        };
        match failure {
            Ok(_) => {
                correct.await;
                self.success_reply(&payload)
            }
            Err(err) => {
                let order_id = payload.order_id.as_str();
                let ((), reply) = tokio::join!(
                    correct,
                    self.fail(delivery, &err, Some(order_id), Some(&payload.payment_id))
                );
                reply
            }
        }
    }

    fn success_reply(&self, payload: &CallbackPayload) -> Value {
        Reply::json(
            200,
            &json!({
                "success": true,
                "message": format!("{} callback recorded successfully", R::LABEL),
                "orderId": payload.order_id.as_str(),
                "paymentId": payload.payment_id,
                "amount": payload.amount.as_number(),
            }),
        )
        .into_event()
    }

    /// SPEC 4.5: the signature against the gateway's keys, then the policy. `Err` under
    /// `enforce` for a delivery that is not verified (401), or keys that cannot be read (500,
    /// the gateway retries); under `mark` neither stops the delivery.
    async fn authenticate(&self, delivery: &Delivery) -> Result<Authenticity, CallbackError> {
        let authenticity = match self.verify(delivery).await {
            Ok(a) => a,
            Err(e) if self.policy == AuthPolicy::Mark => {
                tracing::warn!(error = %e, "signing keys unavailable; processed unverified (mark)");
                Authenticity::Unverified(format!("signing keys unavailable: {e}"))
            }
            Err(e) => return Err(e.into()),
        };
        match (&authenticity, self.policy) {
            (Authenticity::Unverified(why), AuthPolicy::Enforce) => {
                Err(CallbackError::Unauthenticated(why.clone()))
            }
            (Authenticity::Unverified(why), AuthPolicy::Mark) => {
                tracing::warn!(
                    function = R::FUNCTION,
                    reason = %why,
                    "unverified callback processed (CALLBACK_AUTH_POLICY mark)"
                );
                Ok(authenticity)
            }
            (Authenticity::Verified { .. }, _) => Ok(authenticity),
        }
    }

    /// Whether the delivery is signed by a current key. Reads the keys only for a delivery that
    /// carries the signature headers (cached: free when warm). A signature matching no key forces
    /// one read of the secret (at most one per [`crate::ports::secret_cache::FORCED_READ_GAP`]),
    /// as a gateway may sign with a key added a moment ago.
    async fn verify(&self, delivery: &Delivery) -> Result<Authenticity, SecretError> {
        let unverified = |e: SignatureError| Ok(Authenticity::Unverified(e.to_string()));
        if delivery.replay_verified {
            // An operator's replay of a verified delivery: its timestamp is stale by design.
            let webhook_id = delivery
                .headers
                .get(ID_HEADER)
                .map(|id| id.trim())
                .filter(|id| !id.is_empty() && id.len() <= MAX_WEBHOOK_ID_BYTES)
                .map(String::from);
            return Ok(Authenticity::Verified {
                webhook_id: webhook_id.as_deref().map(replay_key),
            });
        }
        // The headers as received: `delivery.headers` is redacted, and redaction may change
        // what the gateway signed (see `Delivery::signature_headers`).
        let signed = match SignedHeaders::read(&delivery.signature_headers) {
            Ok(s) => s,
            Err(e) => return unverified(e),
        };
        let Some(body) = delivery.raw_body() else {
            return unverified(SignatureError::NoRawBody);
        };
        let now = self.ports.clock.now();
        let keys = self.keys.get().await?;
        let result = match signed.verify(body, keys.of(R::GATEWAY), now) {
            Err(SignatureError::NoMatch) => match self.keys.refresh_after_refusal(&keys).await {
                Ok(Some(fresh)) => signed.verify(body, fresh.of(R::GATEWAY), now),
                Ok(None) => Err(SignatureError::NoMatch),
                Err(e) => {
                    tracing::warn!(error = %e, "forced read of the signing keys failed");
                    Err(SignatureError::NoMatch)
                }
            },
            other => other,
        };
        match result {
            Ok(()) => Ok(Authenticity::Verified {
                webhook_id: Some(replay_key(signed.id)),
            }),
            Err(SignatureError::NoMatch) if keys.of(R::GATEWAY).is_empty() => {
                unverified(SignatureError::NoKeys(R::GATEWAY.to_string()))
            }
            Err(e) => unverified(e),
        }
    }

    async fn fail(
        &self,
        delivery: &Delivery,
        err: &CallbackError,
        order_id: Option<&str>,
        payment_id: Option<&str>,
    ) -> Value {
        self.reporter
            .report(
                Incident {
                    function: R::FUNCTION,
                    error: err,
                    order_id,
                    charge_id: payment_id,
                    event: &delivery.event,
                    request_id: &delivery.request_id,
                },
                self.ports.clock.now(),
            )
            .await;
        let message = format!("Failed to process {} callback", R::LABEL.to_lowercase());
        Reply::failure(err, &delivery.request_id, &message).into_event()
    }
}

/// The fields of a callback body that process-paid reads (SPEC 4.4), as the gateway sent them,
/// except `paymentType`, which the function sets (see [`dispatched_body`]). Nothing else travels
/// on: a card number, CVV or key a gateway put in the body (or its `message`) never reaches the
/// invoke payload, which Lambda keeps for its retries and puts in the on-failure queue.
const DISPATCHED_FIELDS: &[&str] = &[
    "orderId",
    "order_id",
    "paymentId",
    "payment_id",
    "success",
    "amount",
    "userId",
    "user_id",
    "chargeId",
    "charge_id",
];

/// The dispatched body: [`DISPATCHED_FIELDS`] as sent, its payment type set by the function (a
/// bank-app payment stays `bankapp`; a gateway cannot choose another family).
fn dispatched_body(body: &Map<String, Value>, payment_type: &str) -> Value {
    let mut dispatched: Map<String, Value> = body
        .iter()
        .filter(|(name, _)| DISPATCHED_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    dispatched.insert("paymentType".into(), Value::from(payment_type));
    Value::Object(dispatched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::{Clock, ManualClock};
    use crate::domain::signature::WebhookKey;
    use crate::flows::processor::{AmexRecords, BankAppRecords, WalletRecords};
    use crate::ports::memory::{InvocationType, MemoryAws};
    use chrono::{TimeZone, Utc};

    const RECORDS: &str = "payment3-wallet-callback-record-dev";
    const INBOX: &str = "payment3-callback-inbox-dev";
    const ERRORS: &str = "payment3-callback-error-log-dev";

    /// The signing key the test gateways use (any 24 bytes, base64).
    const KEY: &str = "whsec_dGVzdC1rZXktb2YtdGhlLWdhdGV3YXlzISE=";
    /// A key the gateways do not use.
    const OTHER_KEY: &str = "whsec_YW5vdGhlci1rZXktbm9ib2R5LWhhcyEh";
    const KEYS_SECRET: &str = "payment3-callback-keys-dev";

    struct World {
        aws: Arc<MemoryAws>,
        clock: Arc<ManualClock>,
        settings: Arc<Settings>,
        auth: CallbackAuthSettings,
        ids: std::sync::atomic::AtomicUsize,
    }

    impl World {
        fn new() -> Self {
            let aws = Arc::new(MemoryAws::default());
            aws.set_secret(
                KEYS_SECRET,
                &json!({"wallet": [KEY], "bankapp": [KEY], "amex": [KEY]}).to_string(),
            );
            World {
                aws,
                clock: Arc::new(ManualClock::new(
                    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap(),
                )),
                settings: Arc::new(Settings::for_branch("dev")),
                auth: CallbackAuthSettings::for_branch("dev"),
                ids: Default::default(),
            }
        }
        fn mark() -> Self {
            World {
                auth: CallbackAuthSettings {
                    policy: AuthPolicy::Mark,
                    ..CallbackAuthSettings::for_branch("dev")
                },
                ..World::new()
            }
        }
        fn processor<R: RecordTable>(&self) -> CallbackProcessor<R> {
            CallbackProcessor::with_auth(
                self.settings.clone(),
                &self.auth,
                self.aws.ports(self.clock.clone()),
            )
        }
        fn tick(&self) {
            self.clock.advance(chrono::Duration::milliseconds(1));
        }
        /// A delivery signed now with the gateways' key, with a new webhook-id.
        fn http(&self, body: &str) -> Value {
            let n = self.ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.signed(body, &format!("msg_{n}"), KEY, 0)
        }
        /// A delivery signed with `key`, as webhook `id`, `skew` seconds from now.
        fn signed(&self, body: &str, id: &str, key: &str, skew: i64) -> Value {
            let ts = self.clock.now().timestamp() + skew;
            let sig = WebhookKey::parse(key)
                .unwrap()
                .sign(id, ts, body.as_bytes());
            let mut event = unsigned(body);
            event["headers"]["webhook-id"] = json!(id);
            event["headers"]["webhook-timestamp"] = json!(ts.to_string());
            event["headers"]["webhook-signature"] = json!(sig);
            event
        }
    }

    fn unsigned(body: &str) -> Value {
        json!({
            "resource": "/wallet/callback", "path": "/wallet/callback", "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "requestContext": {"resourcePath": "/wallet/callback", "httpMethod": "POST",
                "stage": "dev", "requestId": "gw", "identity": {"sourceIp": "203.0.113.9"}},
            "body": body, "isBase64Encoded": false
        })
    }

    fn callback(success: bool) -> String {
        json!({"orderId": "482500007436", "paymentId": "pay_1", "success": success,
               "amount": 2339.0, "userId": "u-1", "message": "m"})
        .to_string()
    }

    fn reply_body(reply: &Value) -> Value {
        serde_json::from_str(reply["body"].as_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn the_dispatch_carries_only_what_process_paid_reads() {
        // Given a success whose body also holds a card number, a CVV and a key
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let body = json!({"orderId": "482500007436", "paymentId": "pay_1", "success": true,
                          "amount": 2339.0, "userId": "u-1", "cardNumber": "4111111111111111",
                          "cvv": "123", "message": "card 4111 1111 1111 1111 key skey_test_abc"})
        .to_string();
        // When it is handled
        let reply = p.handle(w.http(&body), "req-1").await;
        assert_eq!(reply["statusCode"], 200);
        // Then process-paid gets the ids, success and amount, and nothing else
        let calls = w.aws.invocations();
        assert_eq!(calls.len(), 1);
        let sent: Value = serde_json::from_slice(&calls[0].payload).unwrap();
        assert_eq!(
            sent,
            json!({"orderId": "482500007436", "paymentId": "pay_1", "success": true,
                   "amount": 2339.0, "userId": "u-1", "paymentType": "wallet"})
        );
        let text = String::from_utf8(calls[0].payload.clone()).unwrap();
        for secret in ["4111", "cvv", "123", "skey_"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[tokio::test]
    async fn a_success_is_recorded_dispatched_and_answered() {
        // Given a wallet processor
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        // When a successful callback arrives
        let reply = p.handle(w.http(&callback(true)), "req-1").await;
        // Then it answers 200 with the original's body
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(reply["headers"]["Content-Type"], "application/json");
        let body = reply_body(&reply);
        assert_eq!(body["message"], "Wallet callback recorded successfully");
        assert_eq!(body["orderId"], "482500007436");
        assert_eq!(body["paymentId"], "pay_1");
        assert_eq!(body["amount"], 2339.0);
        // and the record, the inbox entry and the dispatch exist
        let record = w.aws.callback_record(RECORDS, "482500007436").unwrap();
        assert!(record.success);
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].outcome, InboxOutcome::Dispatched);
        assert_eq!(inbox[0].source_ip.as_deref(), Some("203.0.113.9"));
        let calls = w.aws.invocations();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].function,
            "payment3-process-paid-wallet-order-internal-dev"
        );
        assert_eq!(calls[0].kind, InvocationType::Event);
        let sent: Value = serde_json::from_slice(&calls[0].payload).unwrap();
        assert_eq!(sent["orderId"], "482500007436");
    }

    #[tokio::test]
    async fn two_deliveries_leave_one_record_two_inbox_entries_two_dispatches() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        for request in ["a", "b"] {
            let reply = p.handle(w.http(&callback(true)), request).await;
            assert_eq!(reply["statusCode"], 200);
            w.tick();
        }
        assert_eq!(w.aws.items(RECORDS).len(), 1);
        assert!(
            w.aws
                .callback_record(RECORDS, "482500007436")
                .unwrap()
                .success
        );
        assert_eq!(w.aws.inbox(INBOX).len(), 2);
        assert_eq!(w.aws.invocations().len(), 2);
    }

    #[tokio::test]
    async fn a_failure_after_a_success_keeps_the_success() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        p.handle(w.http(&callback(true)), "a").await;
        let created = w
            .aws
            .callback_record(RECORDS, "482500007436")
            .unwrap()
            .created_at;
        w.tick();
        let reply = p.handle(w.http(&callback(false)), "b").await;
        assert_eq!(reply["statusCode"], 200);
        let record = w.aws.callback_record(RECORDS, "482500007436").unwrap();
        assert!(record.success, "success must not regress");
        assert_eq!(record.created_at, created);
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox[1].outcome, InboxOutcome::KeptEarlierSuccess);
        // Nothing dispatched for the failure.
        assert_eq!(w.aws.invocations().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_payment_is_recorded_and_not_dispatched() {
        let w = World::new();
        let p = w.processor::<BankAppRecords>();
        let reply = p.handle(w.http(&callback(false)), "a").await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(
            reply_body(&reply)["message"],
            "BankApp callback recorded successfully"
        );
        assert!(
            !w.aws
                .callback_record(RECORDS, "482500007436")
                .unwrap()
                .success
        );
        assert!(w.aws.invocations().is_empty());
        // A later success overwrites the failure.
        w.tick();
        p.handle(w.http(&callback(true)), "b").await;
        assert!(
            w.aws
                .callback_record(RECORDS, "482500007436")
                .unwrap()
                .success
        );
    }

    #[tokio::test]
    async fn bad_input_is_400_with_the_reason_logged_and_kept() {
        let w = World::new();
        let p = w.processor::<AmexRecords>();
        let body =
            json!({"orderId": "9", "paymentId": "p", "success": "true", "userId": "u"}).to_string();
        let reply = p.handle(w.http(&body), "req-x").await;
        assert_eq!(reply["statusCode"], 400);
        let b = reply_body(&reply);
        assert_eq!(b["success"], false);
        assert_eq!(
            b["error"],
            "success must be a JSON boolean (true or false), got string \"true\""
        );
        assert_eq!(b["message"], "Failed to process amex callback");
        // No record, no dispatch; one error log item, one alert; the delivery is in the inbox.
        assert!(w.aws.items("payment3-amex-callback-record-dev").is_empty());
        assert!(w.aws.invocations().is_empty());
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].function_name, "amexcallback");
        assert_eq!(errors[0].order_id.as_deref(), Some("9"));
        assert_eq!(w.aws.mails().len(), 1);
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox[0].order_id, "9");
        assert_eq!(inbox[0].body, body);
        assert!(matches!(
            inbox[0].outcome,
            InboxOutcome::Rejected { status: 400, .. }
        ));
    }

    #[tokio::test]
    async fn a_flood_of_bad_requests_sends_one_alert() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        for i in 0..20 {
            let reply = p.handle(w.http("{not json"), &format!("r{i}")).await;
            assert_eq!(reply["statusCode"], 400);
            w.tick();
        }
        assert_eq!(w.aws.error_log(ERRORS).len(), 20);
        assert_eq!(w.aws.mails().len(), 1);
        assert_eq!(w.aws.inbox(INBOX).len(), 20);
    }

    #[tokio::test]
    async fn an_oversized_body_is_413() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000));
        let reply = p.handle(w.http(&big), "r").await;
        assert_eq!(reply["statusCode"], 413);
        assert!(reply_body(&reply)["error"]
            .as_str()
            .unwrap()
            .contains("over the limit"));
        assert_eq!(w.aws.error_log(ERRORS)[0].error_type, "BodyTooLarge");
    }

    #[tokio::test]
    async fn a_failed_dispatch_is_500_and_the_retry_dispatches() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        w.aws.fail_invoke(true);
        let reply = p.handle(w.http(&callback(true)), "a").await;
        assert_eq!(reply["statusCode"], 500);
        let b = reply_body(&reply);
        assert_eq!(b["error"], "internal error (request id a)");
        // The record is saved; the gateway will retry.
        assert!(
            w.aws
                .callback_record(RECORDS, "482500007436")
                .unwrap()
                .success
        );
        w.aws.fail_invoke(false);
        w.tick();
        let retry = p.handle(w.http(&callback(true)), "b").await;
        assert_eq!(retry["statusCode"], 200);
        assert_eq!(w.aws.invocations().len(), 1);
    }

    #[tokio::test]
    async fn a_store_outage_is_500_without_leaking_the_aws_error() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        w.aws.fail_store(true);
        let reply = p.handle(w.http(&callback(true)), "a").await;
        assert_eq!(reply["statusCode"], 500);
        assert!(!reply["body"].as_str().unwrap().contains("simulated"));
        // The dispatch went out beside the failed writes (one round, issue 10): the 500 brings
        // the gateway's retry, which writes the record; process-paid applies the payment once.
        assert_eq!(w.aws.invocations().len(), 1);
        assert!(w.aws.items(RECORDS).is_empty());
        // The alert still goes out even though DynamoDB (the error log) is down.
        assert_eq!(w.aws.mails().len(), 1);
    }

    #[tokio::test]
    async fn no_input_makes_it_panic() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        for event in [
            json!(null),
            json!(5),
            json!("text"),
            json!([]),
            json!({"body": 5}),
            json!({"body": [1]}),
            json!({"body": "", "isBase64Encoded": true}),
            json!({"body": "%%%", "isBase64Encoded": true}),
            json!({"httpMethod": 5, "requestContext": "x"}),
            json!({"requestContext": {}, "body": null}),
            json!({"body": "{\"orderId\": {\"$gt\": 1}}"}),
        ] {
            w.tick();
            let reply = p.handle(event.clone(), "r").await;
            let status = reply["statusCode"].as_u64().unwrap();
            assert!((400..500).contains(&status), "{event}: {status}");
        }
    }

    // ---- SPEC 4.5: signatures ----

    #[tokio::test]
    async fn an_unsigned_success_is_401_under_enforce_and_changes_nothing() {
        // Given the default policy (enforce)
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        // When anyone POSTs a success without a signature
        let reply = p.handle(unsigned(&callback(true)), "anon").await;
        // Then it is 401 with the reason, nothing saved, nothing dispatched
        assert_eq!(reply["statusCode"], 401);
        let b = reply_body(&reply);
        assert_eq!(b["success"], false);
        assert_eq!(
            b["error"],
            "signature verification failed: missing webhook-id header"
        );
        assert_eq!(b["message"], "Failed to process wallet callback");
        assert!(w.aws.items(RECORDS).is_empty());
        assert!(w.aws.invocations().is_empty());
        // and it is kept in the inbox, unverified, and takes the error path
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].signature_verified, Some(false));
        assert!(matches!(
            inbox[0].outcome,
            InboxOutcome::Rejected { status: 401, .. }
        ));
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors[0].error_type, "SignatureError");
        assert_eq!(w.aws.mails().len(), 1);
        // The keys were not even read for it.
        assert_eq!(w.aws.secret_reads(), 0);
    }

    #[tokio::test]
    async fn a_wrong_key_a_forged_or_empty_signature_is_401() {
        let w = World::new();
        let p = w.processor::<AmexRecords>();
        let body = callback(true);
        let mut cases = vec![
            ("wrong key", w.signed(&body, "msg_a", OTHER_KEY, 0)),
            ("empty", w.signed(&body, "msg_b", KEY, 0)),
            ("forged body", w.signed(&callback(false), "msg_c", KEY, 0)),
        ];
        cases[1].1["headers"]["webhook-signature"] = json!("v1,");
        // A signature of another body on this body
        cases[2].1["body"] = json!(body);
        for (what, event) in cases {
            w.tick();
            let reply = p.handle(event, what).await;
            assert_eq!(reply["statusCode"], 401, "{what}");
            assert_eq!(
                reply_body(&reply)["error"],
                "signature verification failed: no valid v1 signature",
                "{what}"
            );
        }
        assert!(w.aws.items("payment3-amex-callback-record-dev").is_empty());
        assert!(w.aws.invocations().is_empty());
        assert_eq!(w.aws.inbox(INBOX).len(), 3);
        // A flood of forgeries is one alert per cooldown, and one forced key read per 5 s.
        assert_eq!(w.aws.mails().len(), 1);
        assert_eq!(w.aws.secret_reads(), 2);
    }

    #[tokio::test]
    async fn stale_and_future_timestamps_are_refused() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        for (skew, status) in [(-301, 401), (301, 401), (-300, 200), (300, 200)] {
            w.tick();
            let id = format!("msg_skew_{skew}");
            let reply = p
                .handle(w.signed(&callback(true), &id, KEY, skew), &id)
                .await;
            assert_eq!(reply["statusCode"], status, "skew {skew}");
        }
        let errors: Vec<_> = w
            .aws
            .error_log(ERRORS)
            .into_iter()
            .map(|e| e.error)
            .collect();
        assert!(errors[0].contains("301 s old"), "{errors:?}");
        assert!(errors[1].contains("301 s ahead"), "{errors:?}");
        assert_eq!(w.aws.invocations().len(), 2);
    }

    #[tokio::test]
    async fn a_replayed_delivery_is_200_and_rewrites_nothing() {
        // Given a signed success, processed
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let first = w.signed(&callback(true), "msg_once", KEY, 0);
        assert_eq!(p.handle(first.clone(), "a").await["statusCode"], 200);
        let record = w.aws.callback_record(RECORDS, "482500007436").unwrap();
        assert_eq!(record.signature_verified, Some(true));
        // When the same delivery (same webhook-id, same signature) is replayed within 300 s
        w.clock.advance(chrono::Duration::seconds(60));
        let reply = p.handle(first, "b").await;
        // Then it is answered 200, the record is not rewritten, and it is kept in the inbox
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(
            w.aws.callback_record(RECORDS, "482500007436").unwrap(),
            record
        );
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox[1].outcome, InboxOutcome::AlreadyProcessed);
        assert_eq!(inbox[1].signature_verified, Some(true));
        // Its dispatch goes out again (a retry after a failed dispatch looks the same); the
        // payment is applied once by process-paid (tested end to end).
        assert_eq!(w.aws.invocations().len(), 2);
        // The same webhook-id from another gateway is another delivery.
        let bankapp = w.processor::<BankAppRecords>();
        let other = w.signed(&callback(true), "msg_once", KEY, 0);
        bankapp.handle(other, "c").await;
        assert_eq!(w.aws.inbox(INBOX)[2].outcome, InboxOutcome::Dispatched);
    }

    #[tokio::test]
    async fn a_webhook_id_with_a_card_like_digit_run_verifies_and_is_stored_hashed() {
        // Given genuine deliveries whose webhook-id holds a digit run that passes the card check
        // (ids of this shape failed their signature about 1 in 200 times: the redacted id was
        // verified, not the one the gateway signed). 8782831843704110 passes Luhn.
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let id = "msg_8782831843704110b05494ac6e97b15e";
        assert_ne!(crate::domain::redact::redact_text(id), id);
        let http = w.signed(&callback(true), id, KEY, 0);
        let direct = json!({"body": http["body"], "headers": http["headers"]});
        // When one comes through API Gateway and, as a gateway's retry, once more directly
        assert_eq!(p.handle(http, "a").await["statusCode"], 200);
        w.tick();
        let again = p.handle(direct, "b").await;
        // Then both verify; the second is recognised as the same delivery
        assert_eq!(again["statusCode"], 200);
        let inbox = w.aws.inbox(INBOX);
        assert_eq!(inbox[0].outcome, InboxOutcome::Dispatched);
        assert_eq!(inbox[0].signature_verified, Some(true));
        assert_eq!(inbox[1].outcome, InboxOutcome::AlreadyProcessed);
        // and the digit run is stored nowhere: the replay key is the id's SHA-256
        let stored = format!("{:?} {:?}", w.aws.items(RECORDS), w.aws.items(INBOX));
        assert!(!stored.contains("8782831843704110"), "{stored}");
        let key = crate::domain::signature::replay_key(id);
        assert!(
            key.starts_with("sha256:") && stored.contains(&key),
            "{stored}"
        );
        // An ordinary id is kept as it is
        assert_eq!(crate::domain::signature::replay_key("msg_once"), "msg_once");
    }

    #[tokio::test]
    async fn a_retry_after_a_failed_dispatch_dispatches_though_its_id_was_seen() {
        // Given a signed success whose dispatch fails after the record was written
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let delivery = w.signed(&callback(true), "msg_retry", KEY, 0);
        w.aws.fail_invoke(true);
        assert_eq!(p.handle(delivery.clone(), "a").await["statusCode"], 500);
        // When the gateway retries it (Standard Webhooks keeps the webhook-id)
        w.aws.fail_invoke(false);
        w.clock.advance(chrono::Duration::seconds(30));
        let retry = p.handle(delivery, "b").await;
        // Then the retry dispatches (SPEC 4.1): nothing is lost
        assert_eq!(retry["statusCode"], 200);
        assert_eq!(w.aws.invocations().len(), 1);
    }

    #[tokio::test]
    async fn keys_rotate_several_at_once_and_a_new_key_is_read_at_once() {
        // Given two wallet keys (a rotation under way)
        let w = World::new();
        w.aws.set_secret(
            KEYS_SECRET,
            &json!({"wallet": [OTHER_KEY, KEY]}).to_string(),
        );
        let p = w.processor::<WalletRecords>();
        // Then a delivery signed with either passes
        for (id, key) in [("msg_k1", KEY), ("msg_k2", OTHER_KEY)] {
            w.tick();
            let r = p.handle(w.signed(&callback(true), id, key, 0), id).await;
            assert_eq!(r["statusCode"], 200, "{id}");
        }
        assert_eq!(w.aws.secret_reads(), 1);
        // When a third key is added and a gateway signs with it at once (within the cache time)
        let third = "whsec_dGhpcmQta2V5LWFkZGVkLWp1c3Qtbm93IQ==";
        w.aws
            .set_secret(KEYS_SECRET, &json!({"wallet": [KEY, third]}).to_string());
        w.tick();
        let r = p
            .handle(w.signed(&callback(true), "msg_k3", third, 0), "k3")
            .await;
        // Then the mismatch forces one read, and the delivery passes
        assert_eq!(r["statusCode"], 200);
        assert_eq!(w.aws.secret_reads(), 2);
        // and the retired key no longer does
        w.clock.advance(chrono::Duration::seconds(6));
        let r = p
            .handle(w.signed(&callback(true), "msg_k4", OTHER_KEY, 0), "k4")
            .await;
        assert_eq!(r["statusCode"], 401);
    }

    #[tokio::test]
    async fn a_gateway_without_keys_is_refused_under_enforce() {
        let w = World::new();
        w.aws
            .set_secret(KEYS_SECRET, &json!({"wallet": [KEY]}).to_string());
        let p = w.processor::<AmexRecords>();
        let r = p.handle(w.signed(&callback(true), "m", KEY, 0), "r").await;
        assert_eq!(r["statusCode"], 401);
        assert_eq!(
            reply_body(&r)["error"],
            "signature verification failed: no signing key is configured for amex"
        );
    }

    #[tokio::test]
    async fn unreadable_keys_are_500_under_enforce_and_unverified_under_mark() {
        let w = World::new();
        w.aws.set_secret(KEYS_SECRET, "not json");
        let p = w.processor::<WalletRecords>();
        let r = p.handle(w.http(&callback(true)), "r").await;
        assert_eq!(r["statusCode"], 500);
        assert!(w.aws.invocations().is_empty());
        assert!(!r["body"].as_str().unwrap().contains("not json"));

        let m = World::mark();
        m.aws.set_secret(KEYS_SECRET, "not json");
        let p = m.processor::<WalletRecords>();
        let r = p.handle(m.http(&callback(true)), "r").await;
        assert_eq!(r["statusCode"], 200);
        let record = m.aws.callback_record(RECORDS, "482500007436").unwrap();
        assert_eq!(record.signature_verified, Some(false));
    }

    #[tokio::test]
    async fn under_mark_an_unsigned_callback_is_processed_and_marked_unverified() {
        // Given the mark policy (switching from the Python stack)
        let w = World::mark();
        let p = w.processor::<WalletRecords>();
        // When an unsigned success arrives, then a signed one for another order
        let reply = p.handle(unsigned(&callback(true)), "old-gw").await;
        // Then it is processed as before, and marked
        assert_eq!(reply["statusCode"], 200);
        let record = w.aws.callback_record(RECORDS, "482500007436").unwrap();
        assert_eq!(record.signature_verified, Some(false));
        assert_eq!(w.aws.inbox(INBOX)[0].signature_verified, Some(false));
        assert_eq!(w.aws.invocations().len(), 1);
        assert!(w.aws.error_log(ERRORS).is_empty());
        let other = callback(true).replace("482500007436", "482500007437");
        w.tick();
        assert_eq!(p.handle(w.http(&other), "new-gw").await["statusCode"], 200);
        let record = w.aws.callback_record(RECORDS, "482500007437").unwrap();
        assert_eq!(record.signature_verified, Some(true));
    }

    #[tokio::test]
    async fn the_policy_can_differ_per_gateway() {
        let mut w = World::mark();
        w.auth
            .overrides
            .insert("wallet".into(), AuthPolicy::Enforce);
        let wallet = w.processor::<WalletRecords>();
        let bankapp = w.processor::<BankAppRecords>();
        assert_eq!(
            wallet.handle(unsigned(&callback(true)), "a").await["statusCode"],
            401
        );
        assert_eq!(
            bankapp.handle(unsigned(&callback(true)), "b").await["statusCode"],
            200
        );
    }

    #[tokio::test]
    async fn a_body_the_signature_cannot_cover_is_refused() {
        // A direct invoke of an already-parsed object has no bytes to verify.
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let body: Value = serde_json::from_str(&callback(true)).unwrap();
        let r = p
            .handle(
                json!({"body": body, "headers": {"webhook-id": "m", "webhook-timestamp": "1",
                                                 "webhook-signature": "v1,AAAA"}}),
                "r",
            )
            .await;
        assert_eq!(r["statusCode"], 401);
        assert!(reply_body(&r)["error"]
            .as_str()
            .unwrap()
            .contains("parsed object"));
    }

    #[tokio::test]
    async fn a_signed_direct_invoke_is_taken() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let signed = w.signed(&callback(true), "msg_direct", KEY, 0);
        let direct = json!({"body": signed["body"], "headers": signed["headers"]});
        assert_eq!(p.handle(direct, "r").await["statusCode"], 200);
    }

    #[tokio::test]
    async fn an_operators_replay_of_a_verified_delivery_counts_as_verified() {
        // Given a signed delivery whose dispatch failed, replayed by an operator an hour later
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        let original = w.signed(&callback(true), "msg_op", KEY, 0);
        w.aws.fail_invoke(true);
        assert_eq!(p.handle(original.clone(), "orig").await["statusCode"], 500);
        w.aws.fail_invoke(false);
        w.clock.advance(chrono::Duration::hours(1));
        let envelope = |verified: bool| {
            json!({"payment3Replay": {"delivery": "2026-11-21T09:00:00#orig", "verified": verified,
                                      "operator": "alice"},
                   "event": original.clone()})
        };
        // When it says the original was unverified, the stale signature is checked: 401
        let r = p.handle(envelope(false), "replay-1").await;
        assert_eq!(r["statusCode"], 401);
        // When it says verified, it is taken (the record is not rewritten) and dispatched
        let r = p.handle(envelope(true), "replay-2").await;
        assert_eq!(r["statusCode"], 200);
        assert_eq!(w.aws.invocations().len(), 1);
        let inbox = w.aws.inbox(INBOX);
        let replay = inbox.iter().find(|e| e.request_id == "replay-2").unwrap();
        assert_eq!(
            replay.replay_of.as_deref(),
            Some("2026-11-21T09:00:00#orig")
        );
        assert_eq!(replay.replay_operator.as_deref(), Some("alice"));
        assert_eq!(replay.signature_verified, Some(true));
        assert_eq!(replay.outcome, InboxOutcome::AlreadyProcessed);
        // and the original entry is untouched
        let orig = inbox.iter().find(|e| e.request_id == "orig").unwrap();
        assert_eq!(orig.replay_of, None);
        assert!(matches!(orig.outcome, InboxOutcome::Failed { .. }));
    }

    // ---- Issue 10: one round trip on the warm path ----

    use crate::flows::timed::{Timed, DELAY};

    /// A wallet processor whose record store, inbox and invoker are [`Timed`]; the keys are read
    /// once before the measured call.
    async fn probed() -> (World, Arc<Timed>, CallbackProcessor<WalletRecords>) {
        let w = World::new();
        let probe = Timed::new(w.aws.clone(), w.aws.clone());
        let mut ports = w.aws.ports(w.clock.clone());
        ports.records = probe.clone();
        ports.inbox = probe.clone();
        ports.invoker = probe.clone();
        let p = CallbackProcessor::<WalletRecords>::with_auth(w.settings.clone(), &w.auth, ports);
        // Warm the key cache (what the first callback of a container pays once).
        let other = callback(true).replace("482500007436", "482500000000");
        assert_eq!(p.handle(w.http(&other), "warm-up").await["statusCode"], 200);
        probe.reset();
        (w, probe, p)
    }

    async fn timed(
        p: &CallbackProcessor<WalletRecords>,
        event: Value,
        id: &str,
    ) -> (Value, std::time::Duration) {
        let started = tokio::time::Instant::now();
        let reply = p.handle(event, id).await;
        (reply, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_success_is_one_round_of_three_concurrent_calls() {
        // Given a warm wallet function whose AWS calls each take one round trip
        let (w, probe, p) = probed().await;
        // When a signed success arrives
        let (reply, took) = timed(&p, w.http(&callback(true)), "r").await;
        // Then the record write, the inbox entry and the dispatch were all in flight at once,
        // nothing else was called (no key read, no second round), and it took one round trip
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(probe.calls(), ["inbox.append", "invoke.event", "record"]);
        assert_eq!(probe.max_in_flight(), 3);
        assert_eq!(took, DELAY);
        assert_eq!(w.aws.secret_reads(), 1);
        // and the inbox entry has its true outcome
        let entry = w.aws.inbox(INBOX).pop().unwrap();
        assert_eq!(entry.request_id, "r");
        assert_eq!(entry.outcome, InboxOutcome::Dispatched);
        assert_eq!(entry.signature_verified, Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_failure_is_one_round_of_two_calls() {
        let (w, probe, p) = probed().await;
        let (reply, took) = timed(&p, w.http(&callback(false)), "r").await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(probe.calls(), ["inbox.append", "record"]);
        assert_eq!((probe.max_in_flight(), took), (2, DELAY));
        let entry = w
            .aws
            .inbox(INBOX)
            .into_iter()
            .find(|e| e.request_id == "r")
            .unwrap();
        assert_eq!(entry.outcome, InboxOutcome::Recorded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_success_and_a_replay_take_a_second_round_to_correct_the_inbox() {
        let (w, probe, p) = probed().await;
        let success = w.signed(&callback(true), "msg_once", KEY, 0);
        assert_eq!(p.handle(success.clone(), "a").await["statusCode"], 200);
        // A failure after the success: kept, corrected in a second round
        probe.reset();
        w.tick();
        let (reply, took) = timed(&p, w.http(&callback(false)), "b").await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(
            probe.calls(),
            ["inbox.append", "inbox.set_outcome", "record"]
        );
        assert_eq!(took, 2 * DELAY);
        // The same signed success again: a replay, corrected in a second round
        probe.reset();
        w.tick();
        let (reply, took) = timed(&p, success, "c").await;
        assert_eq!(reply["statusCode"], 200);
        assert_eq!(
            probe.calls(),
            [
                "inbox.append",
                "inbox.set_outcome",
                "invoke.event",
                "record"
            ]
        );
        assert_eq!(took, 2 * DELAY);
        let outcomes: Vec<_> = w
            .aws
            .inbox(INBOX)
            .into_iter()
            .filter(|e| e.request_id != "warm-up")
            .map(|e| (e.request_id, e.outcome))
            .collect();
        assert!(outcomes.contains(&("b".into(), InboxOutcome::KeptEarlierSuccess)));
        assert!(outcomes.contains(&("c".into(), InboxOutcome::AlreadyProcessed)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_delivery_is_kept_with_its_outcome_in_one_round() {
        let (w, probe, p) = probed().await;
        let (reply, _) = timed(&p, unsigned(&callback(true)), "r").await;
        assert_eq!(reply["statusCode"], 401);
        // The entry is written once, already with its outcome; nothing else of the callback
        assert_eq!(probe.calls(), ["inbox.append"]);
        let entry = w
            .aws
            .inbox(INBOX)
            .into_iter()
            .find(|e| e.request_id == "r")
            .unwrap();
        assert!(matches!(
            entry.outcome,
            InboxOutcome::Rejected { status: 401, .. }
        ));
    }

    /// Every combination of failing calls on a signed success: 5xx, the inbox entry (when it
    /// could be written) says failed, and the gateway's retry (same webhook-id) records,
    /// dispatches and answers 200. Nothing is lost.
    #[tokio::test(start_paused = true)]
    async fn every_failure_combination_is_a_500_and_the_retry_completes_it() {
        let calls = ["record", "inbox.append", "invoke.event"];
        for mask in 1..8u8 {
            let (w, probe, p) = probed().await;
            let failing: Vec<&'static str> = calls
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, c)| *c)
                .collect();
            for c in &failing {
                probe.fail(c);
            }
            let delivery = w.signed(&callback(true), "msg_retried", KEY, 0);
            // When the delivery meets the failures
            let reply = p.handle(delivery.clone(), "first").await;
            // Then it is a 500 with no AWS text, and the error path ran
            assert_eq!(reply["statusCode"], 500, "{failing:?}");
            assert!(!reply["body"].as_str().unwrap().contains("simulated"));
            assert!(!w.aws.error_log(ERRORS).is_empty(), "{failing:?}");
            // and, if its entry could be written, it says failed (corrected in a second round)
            let first = w
                .aws
                .inbox(INBOX)
                .into_iter()
                .find(|e| e.request_id == "first");
            match first {
                Some(e) => {
                    assert!(!failing.contains(&"inbox.append"), "{failing:?}");
                    assert!(
                        matches!(e.outcome, InboxOutcome::Failed { status: 500, .. }),
                        "{failing:?}: {e:?}"
                    );
                }
                None => assert!(failing.contains(&"inbox.append"), "{failing:?}"),
            }
            // When the gateway retries the same delivery with everything up
            probe.recover();
            w.clock.advance(chrono::Duration::seconds(10));
            let dispatched_before = w
                .aws
                .invocations()
                .iter()
                .filter(|i| String::from_utf8_lossy(&i.payload).contains("482500007436"))
                .count();
            let retry = p.handle(delivery, "retry").await;
            // Then it is taken: the record holds the success, and the retry dispatched
            assert_eq!(retry["statusCode"], 200, "{failing:?}");
            let record = w.aws.callback_record(RECORDS, "482500007436").unwrap();
            assert!(record.success, "{failing:?}");
            let dispatched_after = w
                .aws
                .invocations()
                .iter()
                .filter(|i| String::from_utf8_lossy(&i.payload).contains("482500007436"))
                .count();
            assert_eq!(dispatched_after, dispatched_before + 1, "{failing:?}");
            let retry_entry = w
                .aws
                .inbox(INBOX)
                .into_iter()
                .find(|e| e.request_id == "retry")
                .unwrap();
            assert!(
                matches!(
                    retry_entry.outcome,
                    InboxOutcome::Dispatched | InboxOutcome::AlreadyProcessed
                ),
                "{failing:?}: {retry_entry:?}"
            );
        }
    }

    #[test]
    fn each_callback_type_has_its_table_and_target() {
        let s = Settings::for_branch("dev");
        assert_eq!(
            WalletRecords::table(&s),
            "payment3-wallet-callback-record-dev"
        );
        assert_eq!(BankAppRecords::table(&s), WalletRecords::table(&s));
        assert_eq!(AmexRecords::table(&s), "payment3-amex-callback-record-dev");
        assert_eq!(
            BankAppRecords::process_paid_function(&s),
            "payment3-process-paid-wallet-order-internal-dev"
        );
        assert_eq!(
            AmexRecords::process_paid_function(&s),
            "payment3-process-paid-amex-order-internal-dev"
        );
    }
}
