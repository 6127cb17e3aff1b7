//! Start-up shared by every binary: logging, Sentry, the AWS clients (built once per container)
//! and the Lambda runtime loop. Each `functions/*/src/main.rs` is a call into here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::adapters::{
    dynamodb::DynamoStore, lambda::LambdaInvoker, secrets::SecretsManagerSource, ses::SesMailer,
};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::ports::Ports;
use crate::processor::CallbackProcessor;
use crate::record::RecordTable;

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
