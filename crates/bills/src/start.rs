//! Start-up of the three bill functions: clients built once per container, then the Lambda loop.
//! Each `functions/bills-*/src/main.rs` is one call into here.

use std::sync::Arc;

use callback_core::runtime::start::{answered, aws_config, aws_ports, run, serve, PanicGuard};
use callback_core::{
    CallbackError, Clock, Incident, IncidentReporter, Settings, SystemClock, ValidationError,
};
use lambda_runtime::Error;
use s3_import::dynamo::Retry;
use s3_import::event::parse_notification;
use s3_import::objects::{s3_client, S3Objects};
use serde_json::{json, Value};

use crate::api::BillApi;
use crate::import::{Importer, Outcome};
use crate::ports::SfnExecutions;
use crate::settings::{BillSettings, PaymentWorkflow};

/// The error path of a bill function: its reporter, and the guard that sends a panic down it
/// (one failed invocation). Both over the same ports, built once.
fn error_path(
    settings: &Arc<Settings>,
    config: &aws_config::SdkConfig,
) -> (Arc<IncidentReporter>, PanicGuard) {
    let ports = aws_ports(config);
    let guard = PanicGuard::new(settings.clone(), &ports);
    let reporter = Arc::new(IncidentReporter::new(
        settings.clone(),
        ports.errors,
        ports.alert_gate,
        ports.mailer,
    ));
    (reporter, guard)
}

/// `payment3-bills-import-<branch>`.
pub fn run_import() -> Result<(), Error> {
    run(|settings| async move {
        let bills = BillSettings::from_env()?;
        let config = aws_config().await;
        let importer = Arc::new(Importer {
            objects: Arc::new(S3Objects::new(s3_client(&config))),
            db: Arc::new(aws_sdk_dynamodb::Client::new(&config)),
            clock: Arc::new(SystemClock),
            table: bills.bills_table.clone(),
            in_flight: bills.import_in_flight,
            retry: Retry::default(),
        });
        let (incidents, guard) = error_path(&settings, &config);
        serve("billsimport", guard, move |event, request_id| {
            let (importer, incidents) = (importer.clone(), incidents.clone());
            async move { handle_import(&importer, &incidents, event, &request_id).await }
        })
        .await
    })
}

/// One import event: every object in it. A failed object fails the invocation (S3's event is
/// retried); bad rows and unreadable events are reported, not retried.
pub async fn handle_import(
    importer: &Importer,
    incidents: &IncidentReporter,
    event: Value,
    request_id: &str,
) -> Result<Value, Error> {
    let report = |error: CallbackError, key: Option<String>, event: Value| async move {
        incidents
            .report(
                Incident {
                    function: "billsimport",
                    error: &error,
                    order_id: key.as_deref(),
                    charge_id: None,
                    event: &event,
                    request_id,
                },
                SystemClock.now(),
            )
            .await;
    };
    let notification = match parse_notification(&event) {
        Ok(n) => n,
        Err(e) => {
            report(
                CallbackError::Invalid(ValidationError::new("event", e.to_string())),
                None,
                event.clone(),
            )
            .await;
            return Ok(json!({"error": e.to_string()}));
        }
    };
    let mut results = Vec::new();
    for ignored in &notification.ignored {
        tracing::info!(event = %ignored, "not an object creation; ignored");
    }
    for object in &notification.created {
        let about = json!({"bucket": object.bucket, "key": object.key, "etag": object.etag});
        match importer.import(object).await {
            Ok(Outcome::Imported(r)) => {
                tracing::info!(key = %r.key, rows = r.rows, written = r.written, kept = r.kept, rejected = r.rejected, calls = r.calls, "bills imported");
                if r.rejected > 0 {
                    let error = CallbackError::Rejected {
                        kind: "BillRowsRejected",
                        message: format!(
                            "{} of {} rows of s3://{}/{} rejected; see {}",
                            r.rejected,
                            r.rows,
                            r.bucket,
                            r.key,
                            s3_import::report::report_key(&r.key)
                        ),
                    };
                    report(error, Some(r.key.clone()), about.clone()).await;
                }
                results.push(json!({"key": r.key, "outcome": "imported", "rows": r.rows, "written": r.written,
                                    "kept": r.kept, "rejected": r.rejected, "calls": r.calls}));
            }
            Ok(Outcome::Duplicate(r)) => {
                tracing::info!(key = %r.key, "already imported (same eTag); nothing done");
                results.push(json!({"key": r.key, "outcome": "duplicate"}));
            }
            Ok(Outcome::Skipped(why)) => {
                tracing::info!(key = %object.key, %why, "skipped");
                results.push(json!({"key": object.key, "outcome": "skipped", "reason": why}));
            }
            Err(e) => {
                report(
                    CallbackError::Internal(format!("bills import failed: {e}")),
                    Some(object.key.clone()),
                    about,
                )
                .await;
                return Err(format!(
                    "import of s3://{}/{} failed; the event will be retried",
                    object.bucket, object.key
                )
                .into());
            }
        }
    }
    Ok(json!({"objects": results, "ignored": notification.ignored}))
}

fn api(
    state_machine_arn: Option<String>,
    config: &aws_config::SdkConfig,
    incidents: Arc<IncidentReporter>,
) -> Result<Arc<BillApi>, Error> {
    let bills = Arc::new(BillSettings {
        state_machine_arn,
        ..BillSettings::from_env()?
    });
    Ok(Arc::new(BillApi {
        settings: bills,
        bills: Arc::new(aws_sdk_dynamodb::Client::new(config)),
        executions: Arc::new(SfnExecutions::new(aws_sdk_sfn::Client::new(config))),
        clock: Arc::new(SystemClock),
        incidents,
    }))
}

/// `payment3-bills-balance-<branch>`.
pub fn run_balance() -> Result<(), Error> {
    run(|settings| async move {
        let config = aws_config().await;
        let (incidents, guard) = error_path(&settings, &config);
        let api = api(None, &config, incidents)?;
        serve("billsbalance", guard, move |event, request_id| {
            let api = api.clone();
            async move {
                Ok::<Value, Error>(answered(
                    "billsbalance",
                    api.balance(event, &request_id).await,
                ))
            }
        })
        .await
    })
}

/// `payment3-bills-pay-<branch>`.
pub fn run_pay() -> Result<(), Error> {
    run(|settings| async move {
        let config = aws_config().await;
        let (incidents, guard) = error_path(&settings, &config);
        let api = api(PaymentWorkflow::from_env(), &config, incidents)?;
        serve("billspay", guard, move |event, request_id| {
            let api = api.clone();
            async move { Ok::<Value, Error>(answered("billspay", api.pay(event, &request_id).await)) }
        })
        .await
    })
}
