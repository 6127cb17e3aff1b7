//! [`CallbackProcessor`]: the whole of SPEC 4.1 for the wallet, bank-app and Amex callbacks,
//! which differ only in their [`RecordTable`]. One road: event -> delivery -> inbox -> validated
//! payload -> record -> dispatch -> reply; a failure at any step takes the error path.

use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::domain::callback::{aliased, CallbackPayload};
use crate::domain::delivery::Delivery;
use crate::domain::inbox::InboxOutcome;
use crate::domain::record::CallbackRecord;
use crate::flows::error::CallbackError;
use crate::flows::inbox::{outcome_of, Inbox};
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::reply::Reply;
use crate::flows::settings::Settings;
use crate::ports::{Ports, SaveOutcome};

/// What differs between the callback functions built on [`crate::CallbackProcessor`].
pub trait RecordTable: Send + Sync + 'static {
    /// `Wallet`, `BankApp`, `Amex`: used in messages ("Wallet callback recorded successfully").
    const LABEL: &'static str;
    /// The function's name in the error log, Sentry tags and alerts (`walletcallback`).
    const FUNCTION: &'static str;
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
    const FUNCTION: &'static str = "walletcallback";
    fn table(settings: &Settings) -> &str {
        &settings.tables.wallet_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_wallet
    }
}

impl RecordTable for BankAppRecords {
    const LABEL: &'static str = "BankApp";
    const FUNCTION: &'static str = "bankappcallback";
    fn table(settings: &Settings) -> &str {
        &settings.tables.wallet_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_wallet
    }
}

impl RecordTable for AmexRecords {
    const LABEL: &'static str = "Amex";
    const FUNCTION: &'static str = "amexcallback";
    fn table(settings: &Settings) -> &str {
        &settings.tables.amex_callback_record
    }
    fn process_paid_function(settings: &Settings) -> &str {
        &settings.functions.process_paid_amex
    }
}

/// Handles one kind of callback.
pub struct CallbackProcessor<R: RecordTable> {
    settings: Arc<Settings>,
    ports: Ports,
    reporter: IncidentReporter,
    _table: PhantomData<R>,
}

impl<R: RecordTable> CallbackProcessor<R> {
    pub fn new(settings: Arc<Settings>, ports: Ports) -> Self {
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        CallbackProcessor {
            settings,
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
    pub async fn handle_delivery(&self, delivery: Delivery) -> Value {
        // Size first (SPEC 4: 413 before parsing), then the body is parsed once for every step.
        let body = delivery
            .check_size()
            .map_err(CallbackError::from)
            .and_then(|()| delivery.body_object().map_err(CallbackError::from));
        let order_id = body.as_ref().ok().and_then(|b| {
            aliased(b, &["orderId", "order_id"]).and_then(|v| v.as_str().map(String::from))
        });
        // The delivery is kept before anything else can fail.
        let inbox = Inbox::new(
            self.ports.inbox.clone(),
            &self.settings.tables.callback_inbox,
            self.settings.inbox_ttl,
        );
        let mut entry = match inbox
            .keep(&delivery, R::FUNCTION, order_id.as_deref())
            .await
        {
            Ok(entry) => entry,
            Err(e) => {
                let err = CallbackError::from(e);
                return self.fail(&delivery, &err, order_id.as_deref(), None).await;
            }
        };

        let (outcome, reply) = match self.process(body, &delivery).await {
            Ok((payload, outcome)) => {
                let reply = Reply::json(
                    200,
                    &json!({
                        "success": true,
                        "message": format!("{} callback recorded successfully", R::LABEL),
                        "orderId": payload.order_id.as_str(),
                        "paymentId": payload.payment_id,
                        "amount": payload.amount.as_number(),
                    }),
                )
                .into_event();
                (outcome, reply)
            }
            Err((err, payment_id)) => (
                outcome_of(&err),
                self.fail(&delivery, &err, order_id.as_deref(), payment_id.as_deref())
                    .await,
            ),
        };
        inbox.finish(&mut entry, outcome).await;
        tracing::info!(
            function = R::FUNCTION,
            order_id = order_id.as_deref(),
            outcome = entry.outcome.name(),
            "callback handled"
        );
        reply
    }

    /// Validate, save, dispatch. On failure also returns the payment id, if it got that far.
    async fn process(
        &self,
        body: Result<Map<String, Value>, CallbackError>,
        delivery: &Delivery,
    ) -> Result<(CallbackPayload, InboxOutcome), (CallbackError, Option<String>)> {
        let payload = body
            .and_then(|b| CallbackPayload::from_object(b).map_err(CallbackError::from))
            .map_err(|e| (e, None))?;
        let payment_id = Some(payload.payment_id.clone());

        let record = CallbackRecord::new(&payload, delivery.event.clone(), self.ports.clock.now());
        let saved = self
            .ports
            .records
            .save_callback(R::table(&self.settings), &record)
            .await
            .map_err(|e| (CallbackError::from(e), payment_id.clone()))?;

        if saved == SaveOutcome::KeptEarlierSuccess {
            tracing::warn!(
                order_id = payload.order_id.as_str(),
                "success:false after a success: the success is kept"
            );
            return Ok((payload, InboxOutcome::KeptEarlierSuccess));
        }
        if !payload.success {
            return Ok((payload, InboxOutcome::Recorded));
        }
        // The body as received goes on; process-paid parses it itself.
        let dispatch = serde_json::Value::Object(payload.body.clone()).to_string();
        self.ports
            .invoker
            .invoke_event(
                R::process_paid_function(&self.settings),
                dispatch.as_bytes(),
            )
            .await
            .map_err(|e| (CallbackError::from(e), payment_id.clone()))?;
        Ok((payload, InboxOutcome::Dispatched))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::flows::processor::{AmexRecords, BankAppRecords, WalletRecords};
    use crate::ports::memory::{InvocationType, MemoryAws};
    use chrono::{TimeZone, Utc};

    const RECORDS: &str = "payment3-wallet-callback-record-dev";
    const INBOX: &str = "payment3-callback-inbox-dev";
    const ERRORS: &str = "payment3-callback-error-log-dev";

    struct World {
        aws: Arc<MemoryAws>,
        clock: Arc<ManualClock>,
        settings: Arc<Settings>,
    }

    impl World {
        fn new() -> Self {
            World {
                aws: Arc::new(MemoryAws::default()),
                clock: Arc::new(ManualClock::new(
                    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap(),
                )),
                settings: Arc::new(Settings::for_branch("dev")),
            }
        }
        fn processor<R: RecordTable>(&self) -> CallbackProcessor<R> {
            CallbackProcessor::new(self.settings.clone(), self.aws.ports(self.clock.clone()))
        }
        fn tick(&self) {
            self.clock.advance(chrono::Duration::milliseconds(1));
        }
    }

    fn http(body: &str) -> Value {
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
    async fn a_success_is_recorded_dispatched_and_answered() {
        // Given a wallet processor
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        // When a successful callback arrives
        let reply = p.handle(http(&callback(true)), "req-1").await;
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
            let reply = p.handle(http(&callback(true)), request).await;
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
        p.handle(http(&callback(true)), "a").await;
        let created = w
            .aws
            .callback_record(RECORDS, "482500007436")
            .unwrap()
            .created_at;
        w.tick();
        let reply = p.handle(http(&callback(false)), "b").await;
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
        let reply = p.handle(http(&callback(false)), "a").await;
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
        p.handle(http(&callback(true)), "b").await;
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
        let reply = p.handle(http(&body), "req-x").await;
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
            let reply = p.handle(http("{not json"), &format!("r{i}")).await;
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
        let reply = p.handle(http(&big), "r").await;
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
        let reply = p.handle(http(&callback(true)), "a").await;
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
        let retry = p.handle(http(&callback(true)), "b").await;
        assert_eq!(retry["statusCode"], 200);
        assert_eq!(w.aws.invocations().len(), 1);
    }

    #[tokio::test]
    async fn a_store_outage_is_500_without_leaking_the_aws_error() {
        let w = World::new();
        let p = w.processor::<WalletRecords>();
        w.aws.fail_store(true);
        let reply = p.handle(http(&callback(true)), "a").await;
        assert_eq!(reply["statusCode"], 500);
        assert!(!reply["body"].as_str().unwrap().contains("simulated"));
        assert!(w.aws.invocations().is_empty());
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
