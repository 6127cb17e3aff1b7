//! Start-up shared by every binary: logging, Sentry, the AWS clients (built once per container)
//! and the Lambda runtime loop. Each `functions/*/src/main.rs` is a call into here.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::domain::clock::{Clock, SystemClock};
use crate::flows::error::CallbackError;
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::processor::CallbackProcessor;
use crate::flows::processor::RecordTable;
use crate::flows::settings::{CallbackAuthSettings, Settings};
use crate::ports::aws::{
    dynamodb::DynamoStore, lambda::LambdaInvoker, secrets::SecretsManagerSource, ses::SesMailer,
};
use crate::ports::Ports;

/// The original ran in ap-southeast-1; used when no region is configured.
const DEFAULT_REGION: &str = "ap-southeast-1";

/// AWS configuration from the environment. Timeouts are short so that an unreachable service
/// turns into a 5xx (and a gateway retry) well before the Lambda timeout.
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(
            aws_config::meta::region::RegionProviderChain::default_provider()
                .or_else(Region::new(DEFAULT_REGION)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(12))
                .build(),
        )
        .load()
        .await
}

/// The AWS DynamoDB store, shared by every store port.
pub fn dynamo_store(config: &SdkConfig) -> Arc<DynamoStore> {
    Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(config)))
}

/// Every port on its AWS adapter.
pub fn aws_ports(config: &SdkConfig) -> Ports {
    let store = dynamo_store(config);
    Ports {
        records: store.clone(),
        inbox: store.clone(),
        errors: store.clone(),
        alert_gate: store,
        invoker: Arc::new(LambdaInvoker::new(aws_sdk_lambda::Client::new(config))),
        mailer: Arc::new(SesMailer::new(aws_sdk_ses::Client::new(config))),
        secrets: Arc::new(SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(config),
        )),
        clock: Arc::new(SystemClock),
    }
}

/// Sentry, when `SENTRY_DSN` is set. Keep the guard alive for the life of the process.
pub fn init_sentry(settings: &Settings) -> Option<sentry::ClientInitGuard> {
    let dsn = settings.sentry_dsn.as_deref()?;
    let mut options = sentry::ClientOptions::default();
    options.environment = Some(settings.branch.clone().into());
    options.release = sentry::release_name!();
    // No request bodies, no IPs: events carry only what we put in them (redacted).
    options.send_default_pii = false;
    Some(sentry::init((dsn, options)))
}

/// Runs a Lambda function: tracing, settings, Sentry, then `serve` inside a Tokio runtime.
/// Sentry is started before the runtime, as its documentation asks.
pub fn run<F, Fut>(serve: F) -> Result<(), Error>
where
    F: FnOnce(Arc<Settings>) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    crate::runtime::logging::init_redacting_subscriber();
    let settings = Arc::new(Settings::from_env()?);
    let _sentry = init_sentry(&settings);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings))
}

/// The whole `main` of a callback function (wallet, bank app, Amex).
pub fn run_callback<R: RecordTable>() -> Result<(), Error> {
    run(|settings| async move {
        let auth = CallbackAuthSettings::from_env(&settings)?;
        let ports = aws_ports(&aws_config().await);
        let guard = PanicGuard::new(settings.clone(), &ports);
        let processor = Arc::new(CallbackProcessor::<R>::with_auth(settings, &auth, ports));
        serve(R::FUNCTION, guard, move |event, request_id| {
            let processor = processor.clone();
            async move {
                let response = processor.handle(event, &request_id).await;
                Ok(answered(R::FUNCTION, response))
            }
        })
        .await
    })
}

// ---- The card path: notify, delayed notify, process-paid ----

use crate::flows::notify::{CardNotify, DELAYED_NOTIFY_FUNCTION, NOTIFY_FUNCTION};
use crate::flows::paid::ProcessPaid;
use crate::flows::settings::{CardSettings, ProcessPaidSettings};
use crate::ports::kbank::KBankClient;
use crate::ports::CardPorts;

/// The card-path stores on DynamoDB.
pub fn card_ports(store: Arc<DynamoStore>) -> CardPorts {
    CardPorts {
        cards: store.clone(),
        orders: store.clone(),
        ledger: store,
    }
}

/// A Lambda invoker for synchronous invokes of process-paid: the shared client's 5 s attempt
/// timeout would cut off a process-paid that is waiting on KBank.
pub fn sync_invoker(config: &SdkConfig, timeout: Duration) -> Arc<LambdaInvoker> {
    let lambda = aws_sdk_lambda::config::Builder::from(config)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
        .build();
    Arc::new(LambdaInvoker::new(aws_sdk_lambda::Client::from_conf(
        lambda,
    )))
}

/// Notify's whole wait on process-paid. It must end inside notify's Lambda timeout (28 s), which
/// ends inside API Gateway's 29 s: tests/test_template.py checks the three against the template.
const NOTIFY_SYNC_INVOKE: Duration = Duration::from_secs(20);
/// Delayed notify's: two runs and `DELAYED_NOTIFY_SECONDS` (at most 100) must fit in its 240 s.
const DELAYED_SYNC_INVOKE: Duration = Duration::from_secs(60);

async fn card_notify(
    settings: Arc<Settings>,
    sync_timeout: Duration,
) -> Result<(Arc<CardNotify>, PanicGuard), Error> {
    let card_settings = Arc::new(CardSettings::from_env(&settings)?);
    let config = aws_config().await;
    let store = dynamo_store(&config);
    let mut ports = aws_ports(&config);
    ports.invoker = sync_invoker(&config, sync_timeout);
    let guard = PanicGuard::new(settings.clone(), &ports);
    let kbank = Arc::new(KBankClient::new(
        &card_settings.kbank_api_base,
        card_settings.kbank_timeout,
    )?);
    let notify =
        CardNotify::new(settings, card_settings, ports, card_ports(store)).with_inquiry(kbank);
    Ok((Arc::new(notify), guard))
}

/// The whole `main` of notify.
pub fn run_notify() -> Result<(), Error> {
    run(|settings| async move {
        let (notify, guard) = card_notify(settings, NOTIFY_SYNC_INVOKE).await?;
        serve(NOTIFY_FUNCTION, guard, move |event, request_id| {
            let notify = notify.clone();
            async move {
                let response = notify.notify(event, &request_id).await;
                Ok(answered(NOTIFY_FUNCTION, response))
            }
        })
        .await
    })
}

/// The whole `main` of delayed notify: a failure fails the invocation so Lambda retries it.
pub fn run_delayed_notify() -> Result<(), Error> {
    run(|settings| async move {
        let (notify, guard) = card_notify(settings, DELAYED_SYNC_INVOKE).await?;
        serve(DELAYED_NOTIFY_FUNCTION, guard, move |event, request_id| {
            let notify = notify.clone();
            async move {
                notify
                    .delayed_notify(event, &request_id)
                    .await
                    .map_err(Error::from)
            }
        })
        .await
    })
}

/// The whole `main` of process-paid (all three deployed functions; the kind comes from
/// `PROCESS_PAID_KIND` or the function name). A retryable failure fails the invocation.
pub fn run_process_paid() -> Result<(), Error> {
    run(|settings| async move {
        let paid = Arc::new(ProcessPaidSettings::from_env(&settings)?);
        let kbank = Arc::new(KBankClient::new(&paid.kbank_api_base, paid.kbank_timeout)?);
        let config = aws_config().await;
        let store = dynamo_store(&config);
        tracing::info!(kind = paid.kind.name(), kbank = %paid.kbank_api_base, "process-paid starting");
        let ports = aws_ports(&config);
        let guard = PanicGuard::new(settings.clone(), &ports);
        let process = Arc::new(ProcessPaid::new(
            settings,
            paid,
            ports,
            card_ports(store),
            kbank,
        ));
        serve(process.function(), guard, move |event, request_id| {
            let process = process.clone();
            async move {
                process
                    .handle(event, &request_id)
                    .await
                    .map_err(Error::from)
            }
        })
        .await
    })
}

// ---- One invocation: a panic goes down the error path, an HTTP answer is logged for the alarms ----

/// Runs the Lambda loop with `handler`, each invocation under `guard` (see [`PanicGuard::run`]).
/// `function` is the error log's `function_name` (`walletcallback`, `notify`, ...).
pub async fn serve<F, Fut>(
    function: &'static str,
    guard: PanicGuard,
    handler: F,
) -> Result<(), Error>
where
    F: Fn(Value, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Error>> + Send,
{
    let handler = Arc::new(handler);
    let guard = Arc::new(guard);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = handler.clone();
        let guard = guard.clone();
        async move {
            let request_id = event.context.request_id.clone();
            let payload = event.payload;
            guard
                .run(function, &request_id, async {
                    test_panic(&payload);
                    handler(payload, request_id.clone()).await
                })
                .await
        }
    }))
    .await
}

/// Logs the status of an HTTP function's answer and hands the answer back. The stack's metric
/// filters count these lines (template.yaml:
/// `{ $.fields.message = "answered" && $.fields.status >= 500 }` for answered 5xx, `= 401` for rejected signatures and checksums): keep the message and
/// the field names, or change the filters with them (tests/test_template.py checks both).
pub fn answered(function: &str, response: Value) -> Value {
    let status = response
        .get("statusCode")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    tracing::info!(function, status, "answered");
    response
}

/// What turns a panic in a handler into the error path and one failed invocation. The release
/// profile keeps `panic = "unwind"` (Cargo.toml) so that there is something to catch.
pub struct PanicGuard {
    reporter: IncidentReporter,
    clock: Arc<dyn Clock>,
}

impl PanicGuard {
    pub fn new(settings: Arc<Settings>, ports: &Ports) -> Self {
        PanicGuard {
            reporter: IncidentReporter::new(
                settings,
                ports.errors.clone(),
                ports.alert_gate.clone(),
                ports.mailer.clone(),
            ),
            clock: ports.clock.clone(),
        }
    }

    /// Runs one invocation's work. If it panics, the error path runs (error-log item with
    /// `errorType` `InternalError` and the panic message, Sentry, alert) and the invocation fails,
    /// so Lambda counts an error (and retries an async event); the container lives on.
    pub async fn run<T>(
        &self,
        function: &str,
        request_id: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut work = std::pin::pin!(work);
        let caught = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
                Err(payload) => Poll::Ready(Err(payload)),
            }
        })
        .await;
        let payload = match caught {
            Ok(result) => return result,
            Err(payload) => payload,
        };
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let error = CallbackError::Internal(format!("panic: {message}"));
        self.reporter
            .report(
                Incident {
                    function,
                    error: &error,
                    order_id: None,
                    charge_id: None,
                    // The raw Lambda event is not kept: a panic may come before any redaction.
                    event: &Value::Null,
                    request_id,
                },
                self.clock.now(),
            )
            .await;
        Err(format!("{function} panicked (request id {request_id}); the error path ran").into())
    }
}

/// The event field that makes [`serve`] panic inside the guard, in debug builds only: how the
/// end-to-end tests show a panic ending in one failed invocation with the error path run.
/// API Gateway cannot send it (its events carry the request body in `body`, a string), and a
/// release build (`sam build`, `cargo lambda build --release`) does not contain this check.
pub const TEST_PANIC_FIELD: &str = "payment3TestPanic";

#[cfg(debug_assertions)]
fn test_panic(event: &Value) {
    if event.get(TEST_PANIC_FIELD) == Some(&Value::Bool(true)) {
        panic!("test panic requested by the event ({TEST_PANIC_FIELD})");
    }
}

#[cfg(not(debug_assertions))]
fn test_panic(_event: &Value) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;
    use crate::ports::memory::MemoryAws;
    use chrono::TimeZone;
    use serde_json::json;

    fn guard(aws: &Arc<MemoryAws>) -> (PanicGuard, Arc<Settings>) {
        let settings = Arc::new(Settings::for_branch("test"));
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 11, 30, 7, 0, 0).unwrap(),
        ));
        (
            PanicGuard::new(settings.clone(), &aws.ports(clock)),
            settings,
        )
    }

    #[tokio::test]
    async fn a_panic_fails_the_invocation_and_runs_the_error_path() {
        let aws = Arc::new(MemoryAws::default());
        let (guard, settings) = guard(&aws);
        let result: Result<Value, Error> = guard
            .run("walletcallback", "req-panic", async {
                tokio::task::yield_now().await;
                let items: Vec<u8> = Vec::new();
                Ok(json!(items[3]))
            })
            .await;
        let err = result.expect_err("a panic must fail the invocation");
        assert!(err.to_string().contains("req-panic"), "{err}");
        let errors = aws.error_log(&settings.tables.callback_error_log);
        assert_eq!(errors.len(), 1, "one error-log item");
        assert_eq!(errors[0].function_name, "walletcallback");
        assert_eq!(errors[0].error_type, "InternalError");
        assert!(
            errors[0].error.starts_with("panic: index out of bounds"),
            "{}",
            errors[0].error
        );
        assert_eq!(errors[0].request_id, "req-panic");
        assert_eq!(aws.mails().len(), 1, "the alert went out");
    }

    #[tokio::test]
    async fn without_a_panic_the_result_passes_through_and_nothing_is_reported() {
        let aws = Arc::new(MemoryAws::default());
        let (guard, settings) = guard(&aws);
        let ok: Result<Value, Error> = guard
            .run("notify", "r1", async { Ok(json!({"statusCode": 200})) })
            .await;
        assert_eq!(ok.unwrap(), json!({"statusCode": 200}));
        let failed: Result<Value, Error> = guard
            .run("notify", "r2", async { Err("retry me".into()) })
            .await;
        assert_eq!(failed.unwrap_err().to_string(), "retry me");
        assert!(aws
            .error_log(&settings.tables.callback_error_log)
            .is_empty());
    }

    /// A writer the JSON subscriber writes into.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The shape template.yaml's metric filters read (`$.fields.message`, `$.fields.status`,
    /// `$.fields.error_type`), from the formatter lambda_runtime uses under `LogFormat: JSON`
    /// (`tracing_subscriber::fmt().json()`, `init_default_subscriber`).
    #[tokio::test]
    async fn the_answered_and_incident_lines_are_json_with_their_fields_under_fields() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_target(false)
            .without_time()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let aws = Arc::new(MemoryAws::default());
        let (guard, _) = guard(&aws);
        let _default = tracing::subscriber::set_default(subscriber);
        answered("notify", json!({"statusCode": 401, "body": "{}"}));
        let _ = guard
            .run::<Value>("processpaidorder", "r", async { panic!("boom") })
            .await;
        drop(_default);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        let answered_line = lines
            .iter()
            .find(|l| l["fields"]["message"] == "answered")
            .expect("an answered line");
        assert_eq!(answered_line["fields"]["status"], json!(401));
        assert_eq!(answered_line["fields"]["function"], json!("notify"));
        let incident = lines
            .iter()
            .find(|l| l["fields"]["message"] == "callback failed")
            .expect("the error path's line");
        assert_eq!(incident["fields"]["error_type"], json!("InternalError"));
        assert_eq!(incident["fields"]["function"], json!("processpaidorder"));
    }

    #[test]
    fn the_test_panic_is_only_for_the_marker() {
        test_panic(&json!({"body": "{\"payment3TestPanic\": true}"}));
        test_panic(&json!({"payment3TestPanic": "true"}));
        let caught = std::panic::catch_unwind(|| test_panic(&json!({"payment3TestPanic": true})));
        assert_eq!(caught.is_err(), cfg!(debug_assertions));
    }
}
