//! The dunning function (SPEC 9), invoked asynchronously by the webhook with a [`DunningJob`].
//!
//! `charge/failed`: claim the (charge, attempt) in the ledger, decide the retry date (the dunning
//! service's, checked against the date rules, else the built-in schedule), record the decision,
//! tell Recharge, record its answer. The states and why they make this happen once are in
//! [`crate::domain::dunning`]. A Recharge 5xx, 429 or timeout releases the claim and fails the
//! invocation (Lambda retries; the next run takes over and sends the recorded date); a 4xx is
//! recorded and alerted and ends there. `charge/max_retries_reached`: recorded once (attempt 0
//! of the charge) and alerted; nothing is rescheduled.
//!
//! `Ok` is the run's result (its `outcome` says what happened); `Err` asks Lambda to retry.

use std::sync::Arc;

use callback_core::{CallbackError, Incident, IncidentReporter, Ports, SecretCache, Settings};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::domain::charge::{inbox_key, ChargeFailure, DunningJob, Topic};
use crate::domain::dunning::{Changes, DateSource, Decision, DunningRecord, DunningState, Held};
use crate::domain::schedule::{fallback_date, RetryDate, FALLBACK_DAYS};
use crate::flows::settings::DunningSettings;
use crate::ports::secret::api_token;
use crate::ports::{DunningLedger, RechargeApi, RechargeApiError, RetryDateAdvisor};

/// The dunning function's name in the error log, Sentry tags and alerts.
pub const DUNNING_FUNCTION: &str = "rechargedunning";

/// The Recharge-specific ports of the dunning function.
#[derive(Clone)]
pub struct DunningPorts {
    pub ledger: Arc<dyn DunningLedger>,
    /// `None` when no dunning service is configured: every date is the fallback's.
    pub advisor: Option<Arc<dyn RetryDateAdvisor>>,
    pub recharge: Arc<dyn RechargeApi>,
}

/// The dunning function.
pub struct RechargeDunning {
    recharge: Arc<DunningSettings>,
    ports: Ports,
    dunning: DunningPorts,
    reporter: IncidentReporter,
    api_token: SecretCache,
}

/// How a run ended, for its result and its log line.
struct Ended {
    outcome: &'static str,
    record: DunningRecord,
}

impl RechargeDunning {
    pub fn new(
        settings: Arc<Settings>,
        recharge: Arc<DunningSettings>,
        ports: Ports,
        dunning: DunningPorts,
    ) -> Self {
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        let api_token = SecretCache::with_parser(
            ports.secrets.clone(),
            ports.clock.clone(),
            recharge.secret.name.clone(),
            recharge.secret.refresh,
            api_token,
        );
        RechargeDunning {
            recharge,
            ports,
            dunning,
            reporter,
            api_token,
        }
    }

    /// One invocation: the job as the webhook sent it.
    pub async fn handle(&self, event: Value, request_id: &str) -> Result<Value, CallbackError> {
        let job: DunningJob = match serde_json::from_value(event.clone()) {
            Ok(job) => job,
            Err(e) => {
                // A retry cannot fix a malformed job: recorded, alerted, not retried.
                let err = CallbackError::Rejected {
                    kind: "InvalidDunningJob",
                    message: format!("not a dunning job: {e}"),
                };
                self.report(&err, None, &event, request_id).await;
                return Ok(json!({"outcome": "rejected", "error": err.to_string()}));
            }
        };
        let ended = match Topic::parse(&job.topic) {
            Topic::ChargeFailed => self.reschedule(&job, request_id).await,
            Topic::MaxRetriesReached => self.max_retries_reached(&job, request_id).await,
            Topic::Other(topic) => {
                let err = CallbackError::Rejected {
                    kind: "InvalidDunningJob",
                    message: format!("the dunning function has nothing to do for topic {topic:?}"),
                };
                self.report(&err, Some(&job.charge.charge_id), &event, request_id)
                    .await;
                return Ok(json!({"outcome": "rejected", "error": err.to_string()}));
            }
        };
        match ended {
            Ok(Ended { outcome, record }) => {
                tracing::info!(
                    function = DUNNING_FUNCTION,
                    charge_id = %record.charge.charge_id,
                    attempt = record.charge.attempt,
                    outcome,
                    state = record.state.name(),
                    retry_date = record.retry_date.as_deref(),
                    "dunning run finished"
                );
                Ok(json!({
                    "outcome": outcome,
                    "chargeId": record.charge.charge_id,
                    "attempt": record.charge.attempt,
                    "state": record.state.name(),
                    "retryDate": record.retry_date,
                    "dateSource": record.date_source,
                    "reason": record.reason,
                }))
            }
            Err(err) => Err(err),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    async fn report(
        &self,
        err: &CallbackError,
        charge_id: Option<&str>,
        event: &Value,
        request_id: &str,
    ) {
        // Filed like the webhook's inbox entries, so the error log's orderId-index finds both.
        let filed_under = charge_id.map(inbox_key);
        self.reporter
            .report(
                Incident {
                    function: DUNNING_FUNCTION,
                    error: err,
                    order_id: filed_under.as_deref(),
                    charge_id,
                    event,
                    request_id,
                },
                self.now(),
            )
            .await;
    }

    /// A claim on the attempt: a new one, or a takeover of a released or abandoned one. `Err`
    /// when another run holds it (Lambda retries this one later). `Ok(None)`: already finished.
    async fn claim(
        &self,
        job: &DunningJob,
        request_id: &str,
    ) -> Result<Option<(DunningRecord, Held)>, CallbackError> {
        let now = self.now();
        let token = uuid::Uuid::new_v4().to_string();
        let lease_until = now.timestamp() + self.recharge.claim_lease.as_secs() as i64;
        let mine = Held {
            token: token.clone(),
            state: None,
        };
        let fresh = DunningRecord::claimed(
            &job.charge,
            &job.topic,
            &token,
            lease_until,
            request_id,
            now,
        );
        if self
            .dunning
            .ledger
            .insert_dunning(&self.recharge.tables.recharge_dunning, &fresh)
            .await?
        {
            return Ok(Some((fresh, mine)));
        }
        let charge = &job.charge;
        let busy = || {
            CallbackError::Internal(format!(
                "charge {} attempt {} is being handled by another run; retry later",
                charge.charge_id, charge.attempt
            ))
        };
        let Some(mut existing) = self
            .dunning
            .ledger
            .load_dunning(
                &self.recharge.tables.recharge_dunning,
                &charge.charge_id,
                charge.attempt,
            )
            .await?
        else {
            return Err(busy());
        };
        if existing.state.is_final() {
            return Ok(None);
        }
        if !existing.can_take_over(now) {
            tracing::warn!(
                charge_id = %charge.charge_id,
                attempt = charge.attempt,
                "claimed by another run whose lease is live; failing so Lambda retries"
            );
            return Err(busy());
        }
        let seen = Held {
            token: existing.claim_token.clone().unwrap_or_default(),
            state: Some(existing.state),
        };
        let takeovers = existing.takeovers + 1;
        let changes = Changes::new(now)
            .claim(&token, lease_until, takeovers)
            .into_item();
        if !self
            .dunning
            .ledger
            .update_dunning(
                &self.recharge.tables.recharge_dunning,
                &charge.charge_id,
                charge.attempt,
                &seen,
                &changes,
            )
            .await?
        {
            return Err(busy());
        }
        tracing::info!(charge_id = %charge.charge_id, attempt = charge.attempt, takeovers, "attempt taken over");
        existing.state = DunningState::Claimed;
        existing.claim_token = Some(token);
        existing.lease_until = Some(lease_until);
        existing.takeovers = takeovers;
        Ok(Some((existing, mine)))
    }

    /// `charge/failed`.
    async fn reschedule(&self, job: &DunningJob, request_id: &str) -> Result<Ended, CallbackError> {
        let charge = &job.charge;
        let event = serde_json::to_value(job).unwrap_or(Value::Null);
        let Some((mut record, mine)) = self.claim(job, request_id).await? else {
            let record = self
                .dunning
                .ledger
                .load_dunning(
                    &self.recharge.tables.recharge_dunning,
                    &charge.charge_id,
                    charge.attempt,
                )
                .await?
                .ok_or_else(|| CallbackError::Internal("the ledger item vanished".into()))?;
            return Ok(Ended {
                outcome: "duplicate",
                record,
            });
        };
        let update = |changes: Changes| {
            let item = changes.into_item();
            let ledger = self.dunning.ledger.clone();
            let table = &self.recharge.tables.recharge_dunning;
            let held = mine.clone();
            let (id, attempt) = (charge.charge_id.clone(), charge.attempt);
            async move {
                ledger
                    .update_dunning(table, &id, attempt, &held, &item)
                    .await
            }
        };
        let lost = || {
            CallbackError::Internal(format!(
                "charge {} attempt {}: the claim was taken over by another run",
                charge.charge_id, charge.attempt
            ))
        };

        // The decision: a recorded one still valid today is kept (a takeover sends the same date).
        let today = self.now().date_naive();
        let recorded = record.decision().filter(|d| match &d.retry_date {
            Some(text) => RetryDate::parse(text, today).is_ok(),
            None => true,
        });
        let decision = match recorded {
            Some(d) => d,
            None => {
                let d = self.decide(charge, today).await;
                if !update(Changes::new(self.now()).decision(&d)).await? {
                    return Err(lost());
                }
                record.retry_date = d.retry_date.clone();
                record.date_source = Some(d.source.name().to_string());
                record.reason = Some(d.reason.clone());
                d
            }
        };
        let Some(date_text) = decision.retry_date.clone() else {
            if !update(Changes::new(self.now()).state(DunningState::Stopped)).await? {
                return Err(lost());
            }
            record.state = DunningState::Stopped;
            return Ok(Ended {
                outcome: "stopped",
                record,
            });
        };
        let date = RetryDate::parse(&date_text, today)
            .map_err(|e| CallbackError::Internal(format!("recorded date unusable: {e}")))?;

        let token = match self.api_token.get().await {
            Ok(t) => t,
            Err(e) => {
                // Release so the retry can take over at once, then retry.
                let _ = update(Changes::new(self.now()).state(DunningState::Retry)).await;
                let err = CallbackError::from(e);
                self.report(&err, Some(&charge.charge_id), &event, request_id)
                    .await;
                return Err(err);
            }
        };
        let calls = record.recharge_calls + 1;
        let answer = self
            .dunning
            .recharge
            .change_next_charge_date(&charge.charge_id, &date, token.expose())
            .await;
        record.recharge_calls = calls;
        match answer {
            Ok(status) => {
                let changes = Changes::new(self.now())
                    .state(DunningState::Scheduled)
                    .recharge_answer(calls, Some(status), None);
                if !update(changes).await? {
                    // Recharge has the date; only our bookkeeping lost the race. Nothing to redo.
                    tracing::warn!(charge_id = %charge.charge_id, "rescheduled, but the claim was taken over before it was recorded");
                }
                record.state = DunningState::Scheduled;
                record.recharge_status = Some(status);
                Ok(Ended {
                    outcome: "scheduled",
                    record,
                })
            }
            Err(e) => {
                let text = e.to_string();
                let retry = e.retryable();
                let state = if retry {
                    DunningState::Retry
                } else {
                    DunningState::Refused
                };
                let changes = Changes::new(self.now()).state(state).recharge_answer(
                    calls,
                    e.status(),
                    Some(&text),
                );
                let recorded = update(changes).await;
                let err = recharge_error(&e, charge);
                self.report(&err, Some(&charge.charge_id), &event, request_id)
                    .await;
                recorded?;
                if retry {
                    Err(err)
                } else {
                    record.state = DunningState::Refused;
                    record.recharge_status = e.status();
                    record.last_error = Some(text);
                    Ok(Ended {
                        outcome: "refused",
                        record,
                    })
                }
            }
        }
    }

    /// The retry date for a failed attempt, and why.
    async fn decide(&self, charge: &ChargeFailure, today: chrono::NaiveDate) -> Decision {
        let why_not = match &self.dunning.advisor {
            None => "no dunning service is configured (DUNNING_API_BASE)".to_string(),
            Some(advisor) => match advisor.retry_date(charge).await {
                Ok(text) => match RetryDate::parse(&text, today) {
                    Ok(date) => {
                        return Decision {
                            retry_date: Some(date.to_string()),
                            source: DateSource::DunningService,
                            reason: format!("the dunning service proposed {date}"),
                        }
                    }
                    Err(e) => format!("the dunning service's date was refused: {e}"),
                },
                Err(e) => e.to_string(),
            },
        };
        match fallback_date(charge.attempt, today) {
            Some(date) => Decision {
                retry_date: Some(date.to_string()),
                source: DateSource::Fallback,
                reason: format!(
                    "{why_not}; built-in schedule: attempt {} -> +{} days",
                    charge.attempt,
                    (date.date() - today).num_days()
                ),
            },
            None => Decision {
                retry_date: None,
                source: DateSource::Fallback,
                reason: format!(
                    "{why_not}; the built-in schedule has no retry after attempt {}",
                    FALLBACK_DAYS.len()
                ),
            },
        }
    }

    /// `charge/max_retries_reached`: one record per charge (attempt 0), alerted once.
    async fn max_retries_reached(
        &self,
        job: &DunningJob,
        request_id: &str,
    ) -> Result<Ended, CallbackError> {
        let attempts = job.charge.attempt;
        let charge = ChargeFailure {
            attempt: 0,
            ..job.charge.clone()
        };
        let mut record =
            DunningRecord::max_retries_reached(&charge, &job.topic, request_id, self.now());
        record.reason = Some(format!(
            "Recharge reached the maximum number of retries ({} attempts); not rescheduled",
            if attempts == 0 {
                "?".to_string()
            } else {
                attempts.to_string()
            }
        ));
        if !self
            .dunning
            .ledger
            .insert_dunning(&self.recharge.tables.recharge_dunning, &record)
            .await?
        {
            let record = self
                .dunning
                .ledger
                .load_dunning(&self.recharge.tables.recharge_dunning, &charge.charge_id, 0)
                .await?
                .unwrap_or(record);
            return Ok(Ended {
                outcome: "duplicate",
                record,
            });
        }
        let err = CallbackError::Rejected {
            kind: "RechargeMaxRetriesReached",
            message: format!(
                "Recharge charge {} reached its maximum retries{}: the subscription payment failed for good; \
                 contact the customer{}",
                charge.charge_id,
                if attempts == 0 { String::new() } else { format!(" after {attempts} attempts") },
                charge.customer_id.as_deref().map(|c| format!(" ({c})")).unwrap_or_default(),
            ),
        };
        let event = serde_json::to_value(job).unwrap_or(Value::Null);
        self.report(&err, Some(&charge.charge_id), &event, request_id)
            .await;
        Ok(Ended {
            outcome: "max-retries-recorded",
            record,
        })
    }
}

/// The error path's view of a failed Recharge call: retryable ones are a 5xx, refusals are not.
fn recharge_error(e: &RechargeApiError, charge: &ChargeFailure) -> CallbackError {
    let message = format!(
        "change_next_charge_date for charge {} attempt {}: {e}",
        charge.charge_id, charge.attempt
    );
    if e.retryable() {
        CallbackError::Internal(message)
    } else {
        CallbackError::Rejected {
            kind: "RechargeRefused",
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::settings::DunningSettings;
    use crate::ports::memory::{MemoryLedger, ScriptedAdvisor, ScriptedRecharge};
    use crate::ports::AdvisorError;
    use callback_core::domain::clock::{Clock, ManualClock};
    use callback_core::ports::memory::MemoryAws;
    use chrono::TimeZone;

    const TABLE: &str = "payment3-recharge-dunning-dev";

    struct World {
        aws: Arc<MemoryAws>,
        clock: Arc<ManualClock>,
        ledger: Arc<MemoryLedger>,
        advisor: Arc<ScriptedAdvisor>,
        recharge: Arc<ScriptedRecharge>,
        dunning: RechargeDunning,
    }

    /// Given the dunning service's answers and Recharge's, on 30 November 2026.
    fn world(
        advice: Vec<Result<String, AdvisorError>>,
        answers: Vec<Result<u16, RechargeApiError>>,
    ) -> World {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret(
            "recharge-dev",
            r#"{"clientSecret": "cs_test", "apiToken": "tok_test"}"#,
        );
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap(),
        ));
        let ledger = Arc::new(MemoryLedger::default());
        let advisor = Arc::new(ScriptedAdvisor::answering(advice));
        let recharge = Arc::new(ScriptedRecharge::answering(answers));
        let dunning = RechargeDunning::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(DunningSettings::for_branch("dev")),
            aws.ports(clock.clone()),
            DunningPorts {
                ledger: ledger.clone(),
                advisor: Some(advisor.clone()),
                recharge: recharge.clone(),
            },
        );
        World {
            aws,
            clock,
            ledger,
            advisor,
            recharge,
            dunning,
        }
    }

    fn job(topic: &str, attempt: u32) -> Value {
        json!({
            "topic": topic,
            "charge": {"chargeId": "389001234", "attempt": attempt, "customerId": "77001",
                       "amount": "49.90", "currency": "USD", "errorType": "CARD_DECLINED"},
            "requestId": "req-1", "receivedAt": "2026-11-30T08:00:00"
        })
    }

    fn failed(attempt: u32) -> Value {
        job("charge/failed", attempt)
    }

    fn dates(w: &World) -> Vec<String> {
        w.recharge.calls().into_iter().map(|c| c.date).collect()
    }

    fn errors(w: &World) -> Vec<callback_core::domain::error_log::ErrorLogEntry> {
        w.aws.error_log("payment3-callback-error-log-dev")
    }

    #[tokio::test]
    async fn the_dunning_services_date_goes_to_recharge_once() {
        let w = world(vec![Ok("2026-12-04".into())], vec![]);
        let out = w.dunning.handle(failed(1), "r1").await.unwrap();
        assert_eq!(out["outcome"], "scheduled");
        assert_eq!(out["dateSource"], "dunning-service");
        let calls = w.recharge.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (
                calls[0].charge_id.as_str(),
                calls[0].date.as_str(),
                calls[0].api_token.as_str()
            ),
            ("389001234", "2026-12-04", "tok_test")
        );
        let r = w.ledger.record(TABLE, "389001234", 1).unwrap();
        assert_eq!(r.state, DunningState::Scheduled);
        assert_eq!(r.retry_date.as_deref(), Some("2026-12-04"));
        assert_eq!(
            r.reason.as_deref(),
            Some("the dunning service proposed 2026-12-04")
        );
        assert_eq!((r.recharge_calls, r.recharge_status), (1, Some(200)));
        // The dunning service was told the charge.
        assert_eq!(
            w.advisor.calls.lock().unwrap()[0].error_type.as_deref(),
            Some("CARD_DECLINED")
        );
    }

    #[tokio::test]
    async fn redeliveries_of_the_same_attempt_reschedule_once() {
        let w = world(vec![Ok("2026-12-04".into())], vec![]);
        let mut outcomes = Vec::new();
        for i in 0..5 {
            let out = w.dunning.handle(failed(2), &format!("r{i}")).await.unwrap();
            outcomes.push(out["outcome"].as_str().unwrap().to_string());
        }
        assert_eq!(
            outcomes,
            [
                "scheduled",
                "duplicate",
                "duplicate",
                "duplicate",
                "duplicate"
            ]
        );
        assert_eq!(w.recharge.calls().len(), 1);
        assert_eq!(
            w.advisor.call_count(),
            1,
            "duplicates do not ask the dunning service"
        );
        // A new attempt of the same charge is a new decision.
        w.dunning.handle(failed(3), "r9").await.unwrap();
        assert_eq!(w.recharge.calls().len(), 2);
    }

    #[tokio::test]
    async fn two_concurrent_runs_call_recharge_once() {
        let w = world(vec![Ok("2026-12-04".into())], vec![]);
        let (a, b) = tokio::join!(
            w.dunning.handle(failed(1), "a"),
            w.dunning.handle(failed(1), "b")
        );
        let results = [a, b];
        assert_eq!(w.recharge.calls().len(), 1);
        let oks = results.iter().filter(|r| r.is_ok()).count();
        // The loser either saw the winner's live claim (fails, so Lambda retries it) or its end.
        for r in &results {
            match r {
                Ok(v) => {
                    assert!(["scheduled", "duplicate"].contains(&v["outcome"].as_str().unwrap()))
                }
                Err(e) => assert!(
                    e.retryable() && e.to_string().contains("another run"),
                    "{e}"
                ),
            }
        }
        assert!(oks >= 1);
        // Lambda's retry of the loser finds the attempt done.
        let again = w.dunning.handle(failed(1), "a2").await.unwrap();
        assert_eq!(again["outcome"], "duplicate");
        assert_eq!(w.recharge.calls().len(), 1);
        assert!(
            errors(&w).is_empty(),
            "a concurrent duplicate is not an incident"
        );
    }

    #[tokio::test]
    async fn the_fallback_schedule_covers_a_down_slow_or_nonsensical_service() {
        for (advice, attempt, want, why) in [
            (
                Err(AdvisorError::Unreachable("connection refused".into())),
                1,
                "2026-12-03",
                "unreachable",
            ),
            (
                Err(AdvisorError::Timeout(2000)),
                2,
                "2026-12-05",
                "within 2000 ms",
            ),
            (
                Err(AdvisorError::Nonsense("not JSON".into())),
                3,
                "2026-12-07",
                "nonsense",
            ),
            (Ok("2026-11-29".into()), 1, "2026-12-03", "not after today"),
            (Ok("2026-11-30".into()), 1, "2026-12-03", "not after today"),
            (
                Ok("2027-01-15".into()),
                2,
                "2026-12-05",
                "more than 30 days",
            ),
            (Ok("soon".into()), 1, "2026-12-03", "is not a date"),
        ] {
            let w = world(vec![advice], vec![]);
            let out = w.dunning.handle(failed(attempt), "r").await.unwrap();
            assert_eq!(out["outcome"], "scheduled");
            assert_eq!(dates(&w), [want]);
            let r = w.ledger.record(TABLE, "389001234", attempt).unwrap();
            assert_eq!(r.date_source.as_deref(), Some("fallback"));
            let reason = r.reason.unwrap();
            assert!(reason.contains(why), "{reason}");
            assert!(reason.contains("built-in schedule"), "{reason}");
        }
    }

    #[tokio::test]
    async fn without_a_dunning_service_the_schedule_decides_and_stops_after_attempt_3() {
        let w = world(vec![Err(AdvisorError::Status(500))], vec![]);
        let out = w.dunning.handle(failed(4), "r").await.unwrap();
        assert_eq!(out["outcome"], "stopped");
        assert!(w.recharge.calls().is_empty(), "no date, no call");
        let r = w.ledger.record(TABLE, "389001234", 4).unwrap();
        assert_eq!((r.state, r.retry_date), (DunningState::Stopped, None));
        assert!(r.reason.unwrap().contains("no retry after attempt 3"));
    }

    #[tokio::test]
    async fn a_recharge_503_fails_the_run_and_the_retry_sends_the_same_date_once() {
        let unavailable = RechargeApiError::Unavailable { status: 503 };
        let w = world(
            vec![Ok("2026-12-04".into()), Ok("2026-12-20".into())],
            vec![Err(unavailable)],
        );
        // First run: Recharge is unavailable, the invocation fails so Lambda retries.
        let err = w.dunning.handle(failed(1), "r1").await.unwrap_err();
        assert!(err.retryable());
        let r = w.ledger.record(TABLE, "389001234", 1).unwrap();
        assert_eq!(
            (r.state, r.recharge_status, r.recharge_calls),
            (DunningState::Retry, Some(503), 1)
        );
        assert_eq!(errors(&w).len(), 1, "recorded in the error log");
        // Lambda's retry takes the attempt over and sends the recorded date, not a new one.
        w.clock.advance(chrono::Duration::seconds(60));
        let out = w.dunning.handle(failed(1), "r1").await.unwrap();
        assert_eq!(out["outcome"], "scheduled");
        assert_eq!(dates(&w), ["2026-12-04", "2026-12-04"]);
        assert_eq!(w.advisor.call_count(), 1);
        let r = w.ledger.record(TABLE, "389001234", 1).unwrap();
        assert_eq!(
            (r.state, r.recharge_status, r.recharge_calls, r.takeovers),
            (DunningState::Scheduled, Some(200), 2, 1)
        );
        // And nothing more after that.
        w.dunning.handle(failed(1), "r1").await.unwrap();
        assert_eq!(w.recharge.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_recharge_4xx_is_recorded_and_alerted_and_not_retried() {
        let refused = RechargeApiError::Refused {
            status: 422,
            body: "{\"errors\":\"invalid date\"}".into(),
        };
        let w = world(vec![Ok("2026-12-04".into())], vec![Err(refused)]);
        let out = w.dunning.handle(failed(1), "r1").await.unwrap();
        assert_eq!(out["outcome"], "refused");
        let r = w.ledger.record(TABLE, "389001234", 1).unwrap();
        assert_eq!(
            (r.state, r.recharge_status),
            (DunningState::Refused, Some(422))
        );
        assert!(r.last_error.unwrap().contains("invalid date"));
        let logged = errors(&w);
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].error_type, "RechargeRefused");
        assert_eq!(logged[0].charge_id.as_deref(), Some("389001234"));
        assert_eq!(w.aws.mails().len(), 1);
        // A redelivery changes nothing.
        assert_eq!(
            w.dunning.handle(failed(1), "r2").await.unwrap()["outcome"],
            "duplicate"
        );
        assert_eq!(w.recharge.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_run_that_crashed_after_its_claim_is_taken_over_once_its_lease_ends() {
        let w = world(vec![Ok("2026-12-09".into())], vec![]);
        // A run claimed attempt 1 and decided 2026-12-04, then died before calling Recharge.
        let charge: DunningJob = serde_json::from_value(failed(1)).unwrap();
        let now = w.clock.now();
        let mut crashed = DunningRecord::claimed(
            &charge.charge,
            "charge/failed",
            "dead",
            now.timestamp() + 60,
            "r0",
            now,
        );
        crashed.retry_date = Some("2026-12-04".into());
        crashed.date_source = Some("dunning-service".into());
        crashed.reason = Some("the dunning service proposed 2026-12-04".into());
        w.ledger.put(TABLE, &crashed);
        // While its lease is live, nobody calls Recharge: the run fails and is retried later.
        let err = w.dunning.handle(failed(1), "r1").await.unwrap_err();
        assert!(err.retryable());
        assert!(w.recharge.calls().is_empty());
        // After the lease, the retry takes over and sends the recorded date.
        w.clock.advance(chrono::Duration::seconds(61));
        assert_eq!(
            w.dunning.handle(failed(1), "r1").await.unwrap()["outcome"],
            "scheduled"
        );
        assert_eq!(dates(&w), ["2026-12-04"]);
        assert_eq!(w.advisor.call_count(), 0);
    }

    #[tokio::test]
    async fn a_recorded_date_that_has_passed_is_decided_again() {
        let w = world(vec![Ok("2026-12-09".into())], vec![]);
        let charge: DunningJob = serde_json::from_value(failed(1)).unwrap();
        let now = w.clock.now();
        let mut stale = DunningRecord::claimed(&charge.charge, "charge/failed", "t0", 0, "r0", now);
        stale.state = DunningState::Retry;
        stale.retry_date = Some("2026-11-30".into());
        stale.date_source = Some("fallback".into());
        w.ledger.put(TABLE, &stale);
        w.dunning.handle(failed(1), "r1").await.unwrap();
        assert_eq!(dates(&w), ["2026-12-09"]);
    }

    #[tokio::test]
    async fn max_retries_reached_is_recorded_and_alerted_once_and_never_rescheduled() {
        let w = world(vec![Ok("2026-12-04".into())], vec![]);
        let out = w
            .dunning
            .handle(job("charge/max_retries_reached", 4), "r1")
            .await
            .unwrap();
        assert_eq!(out["outcome"], "max-retries-recorded");
        assert_eq!(
            w.dunning
                .handle(job("charge/max_retries_reached", 4), "r2")
                .await
                .unwrap()["outcome"],
            "duplicate"
        );
        let r = w.ledger.record(TABLE, "389001234", 0).unwrap();
        assert_eq!(r.state, DunningState::MaxRetriesReached);
        assert!(r.reason.unwrap().contains("4 attempts"));
        assert!(w.recharge.calls().is_empty());
        assert_eq!(w.advisor.call_count(), 0);
        let logged = errors(&w);
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].error_type, "RechargeMaxRetriesReached");
        let mails = w.aws.mails();
        assert_eq!(mails.len(), 1);
        assert!(mails[0].body.contains("389001234"));
        // Even after an attempt 4 was already recorded as a failure.
        let w = world(vec![Err(AdvisorError::Status(500))], vec![]);
        w.dunning.handle(failed(4), "r").await.unwrap();
        assert_eq!(
            w.dunning
                .handle(job("charge/max_retries_reached", 4), "r")
                .await
                .unwrap()["outcome"],
            "max-retries-recorded"
        );
    }

    #[tokio::test]
    async fn a_malformed_job_is_recorded_and_not_retried() {
        let w = world(vec![], vec![]);
        let out = w.dunning.handle(json!({"charge": "?"}), "r").await.unwrap();
        assert_eq!(out["outcome"], "rejected");
        assert_eq!(errors(&w)[0].error_type, "InvalidDunningJob");
    }

    #[tokio::test]
    async fn a_ledger_outage_fails_the_run_for_a_retry_and_calls_no_one() {
        let w = world(vec![Ok("2026-12-04".into())], vec![]);
        w.ledger.fail_store(true);
        let err = w.dunning.handle(failed(1), "r").await.unwrap_err();
        assert!(err.retryable());
        assert!(w.recharge.calls().is_empty());
        assert_eq!(w.advisor.call_count(), 0);
    }
}
