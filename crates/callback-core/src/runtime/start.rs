//! Start-up shared by every binary: logging, Sentry, the AWS clients (built once per container)
//! and the Lambda runtime loop. Each `functions/*/src/main.rs` is a call into here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::domain::clock::SystemClock;
use crate::flows::processor::CallbackProcessor;
use crate::flows::processor::RecordTable;
use crate::flows::settings::Settings;
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
    lambda_runtime::tracing::init_default_subscriber();
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
        let ports = aws_ports(&aws_config().await);
        let processor = Arc::new(CallbackProcessor::<R>::new(settings, ports));
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let processor = processor.clone();
            async move {
                Ok::<Value, Error>(
                    processor
                        .handle(event.payload, &event.context.request_id)
                        .await,
                )
            }
        }))
        .await
    })
}

// ---- The card path: notify, delayed notify, process-paid ----

use crate::flows::notify::CardNotify;
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

/// Notify's whole wait on process-paid; its Lambda timeout is 30 s.
const NOTIFY_SYNC_INVOKE: Duration = Duration::from_secs(25);
/// Delayed notify's (timeout 240 s, two runs and a wait).
const DELAYED_SYNC_INVOKE: Duration = Duration::from_secs(60);

async fn card_notify(
    settings: Arc<Settings>,
    sync_timeout: Duration,
) -> Result<Arc<CardNotify>, Error> {
    let card_settings = Arc::new(CardSettings::from_env(&settings)?);
    let config = aws_config().await;
    let store = dynamo_store(&config);
    let mut ports = aws_ports(&config);
    ports.invoker = sync_invoker(&config, sync_timeout);
    Ok(Arc::new(CardNotify::new(
        settings,
        card_settings,
        ports,
        card_ports(store),
    )))
}

/// The whole `main` of notify.
pub fn run_notify() -> Result<(), Error> {
    run(|settings| async move {
        let notify = card_notify(settings, NOTIFY_SYNC_INVOKE).await?;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let notify = notify.clone();
            async move {
                Ok::<Value, Error>(
                    notify
                        .notify(event.payload, &event.context.request_id)
                        .await,
                )
            }
        }))
        .await
    })
}

/// The whole `main` of delayed notify: a failure fails the invocation so Lambda retries it.
pub fn run_delayed_notify() -> Result<(), Error> {
    run(|settings| async move {
        let notify = card_notify(settings, DELAYED_SYNC_INVOKE).await?;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let notify = notify.clone();
            async move {
                notify
                    .delayed_notify(event.payload, &event.context.request_id)
                    .await
                    .map_err(Error::from)
            }
        }))
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
        let process = Arc::new(ProcessPaid::new(
            settings,
            paid,
            aws_ports(&config),
            card_ports(store),
            kbank,
        ));
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let process = process.clone();
            async move {
                process
                    .handle(event.payload, &event.context.request_id)
                    .await
                    .map_err(Error::from)
            }
        }))
        .await
    })
}
