//! `payment3-salary-import-<branch>`: an S3 notification (direct, or wrapped in SQS/SNS) in,
//! each `salary/*.csv` object imported by [`SalaryImport`], a summary out. A failed import takes
//! the error path (error log, Sentry, alert) and fails the invocation, so Lambda (or the queue)
//! delivers the event again and the import resumes where it stopped.

use std::sync::Arc;

use callback_core::runtime::start::{aws_config, aws_ports, run, serve, PanicGuard};
use callback_core::{isoformat, CallbackError, Incident, IncidentReporter};
use chrono::Utc;
use lambda_runtime::Error;
use s3_import::event::parse_notification;
use s3_import::objects::{s3_client, ObjectStore, S3Objects};
use serde_json::{json, Value};

use crate::flows::import::{FileOutcome, SalaryImport};
use crate::ports::dynamodb::DynamoLedger;
use crate::ports::SalaryLedger;
use crate::runtime::config::SalarySettings;

/// The error log's `function_name`.
const FUNCTION: &str = "salaryimport";

pub struct SalaryHandler {
    pub objects: Arc<dyn ObjectStore>,
    pub ledger: Arc<dyn SalaryLedger>,
    pub incidents: IncidentReporter,
}

impl SalaryHandler {
    /// Imports every object of the event; the first failure fails the invocation.
    pub async fn handle(&self, event: Value, request_id: &str) -> Result<Value, Error> {
        let notification = match parse_notification(&event) {
            Ok(n) => n,
            Err(e) => {
                // Not an S3 notification: retrying cannot help; report it and answer.
                let error = CallbackError::Internal(e.to_string());
                self.report(&error, &event, request_id).await;
                return Ok(json!({"imported": [], "error": e.to_string()}));
            }
        };
        let mut files = Vec::new();
        for object in &notification.created {
            let import = SalaryImport::new(self.objects.clone(), self.ledger_for(&object.key));
            let now = isoformat(Utc::now());
            match import.import(object, &now).await {
                Ok(outcome) => files.push(summary(&object.key, &outcome)),
                Err(e) => {
                    let error =
                        CallbackError::Internal(format!("salary import of {}: {e}", object.key));
                    self.report(&error, &event, request_id).await;
                    return Err(error.into());
                }
            }
        }
        Ok(json!({"files": files, "ignored": notification.ignored}))
    }

    async fn report(&self, error: &CallbackError, event: &Value, request_id: &str) {
        let incident = Incident {
            function: FUNCTION,
            error,
            order_id: None,
            charge_id: None,
            event,
            request_id,
        };
        self.incidents.report(incident, Utc::now()).await;
    }

    /// The ledger, wrapped to crash part-way when a debug build's test asks for it.
    fn ledger_for(&self, key: &str) -> Arc<dyn SalaryLedger> {
        #[cfg(debug_assertions)]
        if let Some(after) = test_fault::take(key) {
            tracing::warn!(
                key,
                after,
                "test fault: this import crashes after {after} batches"
            );
            return Arc::new(crate::ports::fault::CrashAfter::new(
                self.ledger.clone(),
                after,
            ));
        }
        let _ = key;
        self.ledger.clone()
    }
}

fn summary(key: &str, outcome: &FileOutcome) -> Value {
    match outcome {
        FileOutcome::Imported(report) => json!({
            "key": key, "outcome": "imported", "rows": report.rows, "added": report.written,
            "addedBefore": report.kept, "rejected": report.rejected,
        }),
        FileOutcome::AlreadyImported(id) => {
            json!({"key": key, "outcome": "already_imported", "import": id.as_str()})
        }
        FileOutcome::NotASalaryFile(_) => json!({"key": key, "outcome": "not_a_salary_file"}),
        FileOutcome::Gone(_) => json!({"key": key, "outcome": "gone"}),
    }
}

/// Debug builds only: a one-shot crash, asked for by writing `{"key": K, "afterBatches": N}` to
/// the file named by `SALARY_TEST_FAULT_FILE`. The import of `K` that reads it deletes it and
/// fails after N batches went through, so the next delivery runs normally.
#[cfg(debug_assertions)]
mod test_fault {
    pub fn take(key: &str) -> Option<u64> {
        let path = crate::runtime::config::test_fault_file()?;
        let fault: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        if fault.get("key")?.as_str()? != key {
            return None;
        }
        let after = fault.get("afterBatches")?.as_u64()?;
        std::fs::remove_file(&path).ok()?;
        Some(after)
    }
}

/// The whole `main` of `functions/salary-import`.
pub fn run_salary_import() -> Result<(), Error> {
    run(|settings| async move {
        let config = aws_config().await;
        let ports = aws_ports(&config);
        let salary = SalarySettings::from_env();
        let guard = PanicGuard::new(settings.clone(), &ports);
        let handler = Arc::new(SalaryHandler {
            objects: Arc::new(S3Objects::new(s3_client(&config))),
            ledger: Arc::new(DynamoLedger::new(
                aws_sdk_dynamodb::Client::new(&config),
                salary.salary_table,
                salary.ledger_table,
            )),
            incidents: IncidentReporter::new(
                settings,
                ports.errors,
                ports.alert_gate,
                ports.mailer,
            ),
        });
        serve(FUNCTION, guard, move |event, request_id| {
            let handler = handler.clone();
            async move { handler.handle(event, &request_id).await }
        })
        .await
    })
}
