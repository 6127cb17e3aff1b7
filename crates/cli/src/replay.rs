//! `payment3 replay <orderId>`: re-drives stored deliveries into their functions through the
//! Lambda Invoke API (IAM-guarded; never the public route), in the replay envelope of
//! notes/REPLAY_ENVELOPE.md: `{"payment3Replay": {delivery, verified, operator}, "event": <REST v1
//! event rebuilt from the inbox entry>}`. The function keeps the replay as a new inbox entry with
//! `replayOf`.
//!
//! Safe to repeat because every function is idempotent: a callback record never loses a stored
//! success, process-paid moves the ledger `PENDING -> PAID` with one conditional write (a second
//! run is `already_paid`), a notify record is appended, and a processed webhook-id changes
//! nothing again. A stored signature is stale by now, so the envelope carries whether the original
//! was verified; an unverified or rejected delivery is replayed only with `--force`.

use std::collections::BTreeMap;

use callback_core::domain::callback::CallbackPayload;
use callback_core::domain::card::NotifyBody;
use callback_core::ports::Invoker;
use callback_core::InboxOutcome;
use serde_json::{json, Value};

use crate::context::Context;
use crate::error::CliError;
use crate::functions::{Receiver, NOTIFY};
use crate::read::StoredDelivery;
use crate::trace::{gather, replay_of, Gathered, Signature};

/// Whether a delivery may be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    Ready,
    /// Only with `--force`: unverified, or rejected the first time.
    NeedsForce(String),
    /// Never: a replay itself, or not a delivery of a function that keeps an inbox.
    Never(String),
}

#[derive(Clone, Debug)]
pub struct Candidate {
    pub delivery: StoredDelivery,
    pub receiver: Option<Receiver>,
    /// What the envelope says: the original's signature (callbacks) or checksum (notify).
    pub verified: bool,
    pub eligibility: Eligibility,
    /// What re-driving it would do.
    pub would: String,
}

impl Candidate {
    pub fn key(&self) -> String {
        self.delivery.entry.sort_key()
    }
}

/// Every stored delivery of the order (its own and its charges'), oldest first, judged.
pub fn candidates(g: &Gathered) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = g
        .deliveries
        .iter()
        .map(|d| {
            let e = &d.entry;
            let receiver = Receiver::from_inbox(&e.function);
            let verified = match (Signature::of(d), e.function == NOTIFY) {
                (Signature::Verified, _) => true,
                (Signature::NotRecorded, true) => g
                    .notifies
                    .iter()
                    .any(|n| n.request_id == e.request_id && n.checksum_verified),
                _ => false,
            };
            let eligibility = if let Some((of, _)) = replay_of(d) {
                Eligibility::Never(format!("it is a replay of {of}; replay the original"))
            } else if receiver.is_none() {
                Eligibility::Never(format!("{} keeps no replayable deliveries", e.function))
            } else if let InboxOutcome::Rejected { status, error } = &e.outcome {
                Eligibility::NeedsForce(format!("it was rejected ({status}: {error})"))
            } else if !verified {
                Eligibility::NeedsForce(if e.function == NOTIFY {
                    "its checksum was not verified".into()
                } else {
                    "its signature was not verified".into()
                })
            } else {
                Eligibility::Ready
            };
            let would = match receiver {
                Some(r) => predict(r, d, g),
                None => "nothing".into(),
            };
            Candidate {
                delivery: d.clone(),
                receiver,
                verified,
                eligibility,
                would,
            }
        })
        .collect();
    out.sort_by_key(|a| a.key());
    out
}

/// The deliveries to re-drive: the one named, or else the latest replayable one of each
/// function (with `--force`, the latest of each function that is not a replay).
pub fn select<'a>(
    all: &'a [Candidate],
    delivery: Option<&str>,
    force: bool,
) -> Result<Vec<&'a Candidate>, CliError> {
    if let Some(key) = delivery {
        let c = all.iter().find(|c| c.key() == key).ok_or_else(|| {
            CliError::Refused(format!(
                "no delivery {key} for this order; the deliveries are listed above (receivedAt#requestId)"
            ))
        })?;
        return match &c.eligibility {
            Eligibility::Ready => Ok(vec![c]),
            Eligibility::NeedsForce(why) if force => {
                eprintln!("replaying although {why} (--force)");
                Ok(vec![c])
            }
            Eligibility::NeedsForce(why) => Err(CliError::Refused(format!(
                "not replaying {key}: {why}. Add --force if you are sure the delivery is genuine."
            ))),
            Eligibility::Never(why) => {
                Err(CliError::Refused(format!("not replaying {key}: {why}")))
            }
        };
    }
    let mut latest: BTreeMap<&str, &Candidate> = BTreeMap::new();
    for c in all {
        let ok = match &c.eligibility {
            Eligibility::Ready => true,
            Eligibility::NeedsForce(_) => force,
            Eligibility::Never(_) => false,
        };
        if ok {
            latest.insert(&c.delivery.entry.function, c); // oldest first: the last one stays
        }
    }
    let mut chosen: Vec<&Candidate> = latest.into_values().collect();
    chosen.sort_by_key(|c| c.key());
    Ok(chosen)
}

/// What re-driving a delivery would do, given what the tables say now.
fn predict(r: Receiver, d: &StoredDelivery, g: &Gathered) -> String {
    let body = &d.entry.body;
    let ledger = match &g.ledger {
        Some(l) if l.status == "PAID" => format!(
            "the ledger is already PAID by {} {}, so process-paid answers already_paid (or refuses a second payment) and nothing changes",
            l.payment_type.as_deref().unwrap_or("?"),
            l.payment_id.as_deref().unwrap_or("?")
        ),
        Some(l) => format!(
            "the ledger is {}: process-paid would apply the payment if it checks out",
            l.status
        ),
        None => "no ledger entry yet: process-paid would apply the payment if it checks out (amount against the order total)".into(),
    };
    if r == Receiver::Notify {
        return match NotifyBody::parse(body) {
            Ok(n) => format!(
                "re-verify the checksum, write a notify record for charge {} ({}/{}), queue delayed notify and run process-paid for the charge; {ledger}",
                n.charge_id.as_str(),
                n.status,
                n.transaction_state
            ),
            Err(e) => format!("refused again: {}", e.message),
        };
    }
    match CallbackPayload::parse(body) {
        Ok(p) if p.success => format!(
            "write the {} record (success, paymentId {}) and dispatch process-paid; {ledger}",
            r.label(),
            p.payment_id
        ),
        Ok(p) => format!(
            "write the {} record success=false for paymentId {} (a stored success is kept); nothing is dispatched",
            r.label(),
            p.payment_id
        ),
        Err(e) => format!("refused again: {}", e.message),
    }
}

/// The replay envelope (notes/REPLAY_ENVELOPE.md) for a stored delivery.
pub fn envelope(c: &Candidate, operator: &str, replay_request_id: &str) -> Value {
    let e = &c.delivery.entry;
    let route = c.receiver.map(Receiver::route).unwrap_or("/");
    let multi: BTreeMap<&String, Vec<&String>> =
        e.headers.iter().map(|(k, v)| (k, vec![v])).collect();
    json!({
        "payment3Replay": {
            "delivery": e.sort_key(),
            "verified": c.verified,
            "operator": operator,
        },
        "event": {
            "resource": route,
            "path": route,
            "httpMethod": "POST",
            "headers": e.headers,
            "multiValueHeaders": multi,
            "queryStringParameters": null,
            "multiValueQueryStringParameters": null,
            "pathParameters": null,
            "stageVariables": null,
            "requestContext": {
                "resourceId": "replay",
                "resourcePath": route,
                "httpMethod": "POST",
                "extendedRequestId": replay_request_id,
                "path": route,
                "accountId": "replay",
                "protocol": "HTTP/1.1",
                "stage": "replay",
                "domainPrefix": "replay",
                "requestTimeEpoch": chrono::Utc::now().timestamp_millis(),
                "requestId": replay_request_id,
                "identity": {"sourceIp": e.source_ip},
                "domainName": "replay",
                "apiId": "replay",
            },
            "body": e.body,
            "isBase64Encoded": e.body_encoding == "base64",
        }
    })
}

/// Who runs the replay: `--operator`, else `$USER`.
pub fn operator(given: Option<&str>) -> String {
    given
        .map(String::from)
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-operator".into())
}

pub struct Options<'a> {
    pub order_id: &'a str,
    pub delivery: Option<&'a str>,
    pub charges: &'a [String],
    pub yes: bool,
    pub force: bool,
    pub operator: String,
}

pub async fn run(ctx: &Context, o: Options<'_>) -> Result<(), CliError> {
    ctx.check_branch().await?;
    let g = gather(ctx, o.order_id, o.charges).await?;
    if g.is_empty() {
        return Err(CliError::UnknownOrder(o.order_id.to_string()));
    }
    let all = candidates(&g);
    if all.is_empty() {
        return Err(CliError::Refused(format!(
            "order {} has no stored delivery to replay (trace it: payment3 trace {})",
            o.order_id, o.order_id
        )));
    }
    println!(
        "deliveries of order {} on branch {}:",
        o.order_id, ctx.branch
    );
    for c in &all {
        let e = &c.delivery.entry;
        let mark = match &c.eligibility {
            Eligibility::Ready => "ok".to_string(),
            Eligibility::NeedsForce(why) => format!("needs --force: {why}"),
            Eligibility::Never(why) => format!("never: {why}"),
        };
        println!(
            "  {}  {:<16} {:<20} {}",
            c.key(),
            e.function,
            e.outcome.name(),
            mark
        );
    }
    let chosen = select(&all, o.delivery, o.force)?;
    if chosen.is_empty() {
        return Err(CliError::Refused(
            "nothing to replay: no delivery is verified and accepted (see above); name one with --delivery and add --force if you are sure it is genuine".into(),
        ));
    }
    println!("\nwould re-drive (through the Lambda Invoke API, marked as a replay in the inbox):");
    for c in &chosen {
        let r = c.receiver.expect("chosen deliveries have a receiver");
        println!(
            "  {} -> {}\n      {}",
            c.key(),
            r.function_name(&ctx.branch, &ctx.function_suffix),
            c.would
        );
    }
    println!("  Safe to repeat: the functions are idempotent (a stored success is kept, a payment is applied once).");
    if !o.yes {
        println!("\ndry run: nothing was invoked. Add --yes to re-drive.");
        return Ok(());
    }
    let mut failed = 0;
    for c in &chosen {
        let r = c.receiver.expect("chosen deliveries have a receiver");
        let function = r.function_name(&ctx.branch, &ctx.function_suffix);
        let request_id = format!("replay-{}", uuid::Uuid::new_v4());
        let payload = envelope(c, &o.operator, &request_id).to_string();
        match ctx.lambda.invoke_sync(&function, payload.as_bytes()).await {
            Ok(answer) => {
                let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                let status = answer
                    .get("statusCode")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let body = answer.get("body").and_then(Value::as_str).unwrap_or("");
                println!(
                    "replayed {} -> {function}: {status} {}",
                    c.key(),
                    body.chars().take(200).collect::<String>()
                );
                if !(200..300).contains(&status) {
                    failed += 1;
                }
            }
            Err(e) => {
                failed += 1;
                println!("replay of {} FAILED: {e}", c.key());
            }
        }
    }
    if failed > 0 {
        return Err(CliError::Aws {
            operation: "Invoke",
            resource: "replay".into(),
            message: format!("{failed} of {} replays did not succeed", chosen.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::LedgerFacts;
    use callback_core::InboxEntry;
    use std::collections::BTreeMap;

    fn delivery(
        at: &str,
        function: &str,
        outcome: InboxOutcome,
        verified: Option<bool>,
    ) -> StoredDelivery {
        let entry = InboxEntry {
            order_id: "482500007436".into(),
            received_at: at.into(),
            request_id: format!("req-{at}"),
            function: function.into(),
            body: r#"{"orderId":"482500007436","paymentId":"pay_1","success":true,"amount":2339.0,"userId":"u"}"#.into(),
            body_encoding: "text".into(),
            body_bytes: 93,
            body_sha256: String::new(),
            body_truncated: false,
            headers: BTreeMap::from([("content-type".to_string(), "application/json".to_string())]),
            source_ip: Some("203.0.113.9".into()),
            outcome,
            ttl: 0,
            signature_verified: verified,
            replay_of: None,
            replay_operator: None,
        };
        StoredDelivery { entry }
    }

    fn paid() -> Gathered {
        Gathered {
            ledger: Some(LedgerFacts {
                status: "PAID".into(),
                payment_type: Some("wallet".into()),
                payment_id: Some("pay_1".into()),
                charge_id: None,
                amount: None,
                paid_at: None,
                created_at: None,
                updated_at: None,
                effects_done: true,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_verified_accepted_originals_are_chosen_without_force() {
        let mut g = paid();
        g.deliveries = vec![
            delivery(
                "2026-11-30T07:00:01",
                "walletcallback",
                InboxOutcome::Dispatched,
                Some(true),
            ),
            delivery(
                "2026-11-30T07:00:02",
                "walletcallback",
                InboxOutcome::Dispatched,
                Some(false),
            ),
            delivery(
                "2026-11-30T07:00:03",
                "walletcallback",
                InboxOutcome::Rejected {
                    status: 401,
                    error: "bad signature".into(),
                },
                Some(false),
            ),
        ];
        let mut replay = delivery(
            "2026-11-30T07:00:04",
            "walletcallback",
            InboxOutcome::Dispatched,
            Some(true),
        );
        replay.entry.replay_of = Some("2026-11-30T07:00:01#req-2026-11-30T07:00:01".into());
        g.deliveries.push(replay);
        let all = candidates(&g);
        let chosen = select(&all, None, false).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].delivery.entry.received_at, "2026-11-30T07:00:01");
        assert!(
            chosen[0].would.contains("already PAID"),
            "{}",
            chosen[0].would
        );
        // with --force the latest non-replay of the function is taken
        let forced = select(&all, None, true).unwrap();
        assert_eq!(forced[0].delivery.entry.received_at, "2026-11-30T07:00:03");
        // naming a rejected one needs --force; a replay is never replayed
        let rejected = all[2].key();
        assert!(matches!(
            select(&all, Some(&rejected), false),
            Err(CliError::Refused(_))
        ));
        assert_eq!(select(&all, Some(&rejected), true).unwrap().len(), 1);
        assert!(matches!(
            select(&all, Some(&all[3].key()), true),
            Err(CliError::Refused(_))
        ));
        assert!(matches!(
            select(&all, Some("nope"), true),
            Err(CliError::Refused(_))
        ));
    }

    #[test]
    fn the_envelope_rebuilds_a_rest_event_from_the_entry() {
        let mut g = paid();
        g.deliveries = vec![delivery(
            "2026-11-30T07:00:01",
            "walletcallback",
            InboxOutcome::Dispatched,
            Some(true),
        )];
        let c = &candidates(&g)[0];
        let env = envelope(c, "alice", "replay-1");
        assert_eq!(
            env["payment3Replay"]["delivery"],
            "2026-11-30T07:00:01#req-2026-11-30T07:00:01"
        );
        assert_eq!(env["payment3Replay"]["verified"], true);
        assert_eq!(env["payment3Replay"]["operator"], "alice");
        // not an HTTP event at the top level: only a direct (IAM) invoke can carry it
        assert!(env.get("requestContext").is_none());
        assert_eq!(env["event"]["path"], "/wallet/callback");
        assert_eq!(env["event"]["body"], c.delivery.entry.body);
        assert_eq!(env["event"]["isBase64Encoded"], false);
        assert_eq!(
            env["event"]["requestContext"]["identity"]["sourceIp"],
            "203.0.113.9"
        );
        assert_eq!(env["event"]["headers"]["content-type"], "application/json");
    }
}
