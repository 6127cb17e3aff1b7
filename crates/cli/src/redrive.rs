//! `payment3 redrive`: the failed-events queue of the branch (template.yaml `FailedEventsQueue`,
//! the on-failure destination of delayed notify and the three process-paid functions). Each
//! message is Lambda's invocation record: `requestContext` (function ARN, condition, attempts),
//! `requestPayload` (the event), `responseContext` and `responsePayload` (the last error).
//! Dry run by default; with `--yes` each event is invoked again, synchronously, and deleted from
//! the queue only once that invocation succeeded. A redriven event is safe for the same reason a
//! replay is: process-paid and delayed notify are idempotent.

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use callback_core::ports::Invoker;
use serde::Serialize;
use serde_json::Value;

use crate::context::Context;
use crate::error::{is_not_found, CliError};
use crate::functions::name_from_arn;

/// How long a message read here stays hidden from another reader (longer than the slowest
/// function, delayed notify: 240 s). Kept messages are made visible again at once.
const HOLD_SECONDS: i32 = 300;
/// A queue holding more than this is redriven in several runs.
const MAX_MESSAGES: usize = 500;

/// One failed event, as read from its queue message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedEvent {
    pub function: String,
    pub condition: String,
    pub attempts: u64,
    pub failed_at: String,
    pub last_error: String,
    pub payload: Value,
}

impl FailedEvent {
    /// Reads Lambda's invocation record (the on-failure destination's message body).
    pub fn parse(body: &str) -> Result<Self, String> {
        let record: Value =
            serde_json::from_str(body).map_err(|e| format!("not an invocation record: {e}"))?;
        let ctx = record
            .get("requestContext")
            .ok_or("not an invocation record: no requestContext")?;
        let arn = ctx
            .get("functionArn")
            .and_then(Value::as_str)
            .ok_or("not an invocation record: no requestContext.functionArn")?;
        let payload = record
            .get("requestPayload")
            .cloned()
            .ok_or("not an invocation record: no requestPayload")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let response = record.get("responsePayload");
        let last_error = match response {
            Some(Value::Object(r)) => {
                let kind = text(r.get("errorType"));
                let message = text(r.get("errorMessage"));
                match (kind.is_empty(), message.is_empty()) {
                    (false, false) => format!("{kind}: {message}"),
                    (true, false) => message,
                    (false, true) => kind,
                    (true, true) => Value::Object(r.clone()).to_string(),
                }
            }
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let condition = text(ctx.get("condition"));
        Ok(FailedEvent {
            function: name_from_arn(arn).to_string(),
            last_error: if last_error.is_empty() {
                condition.clone()
            } else {
                last_error
            },
            condition,
            attempts: ctx
                .get("approximateInvokeCount")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            failed_at: text(record.get("timestamp")),
            payload,
        })
    }
}

async fn queue_url(ctx: &Context) -> Result<String, CliError> {
    let name = ctx.failed_events_queue();
    match ctx.sqs.get_queue_url().queue_name(&name).send().await {
        Ok(out) => out
            .queue_url()
            .map(String::from)
            .ok_or_else(|| CliError::Aws {
                operation: "GetQueueUrl",
                resource: name.clone(),
                message: "no URL in the answer".into(),
            }),
        Err(e) if is_not_found(&e) => Err(CliError::WrongBranch {
            branch: ctx.branch.clone(),
            region: ctx.region.clone(),
            table: format!("the queue {name}"),
        }),
        Err(e) => Err(CliError::from_sdk("GetQueueUrl", &name, &e)),
    }
}

/// Every message of the queue, each held for [`HOLD_SECONDS`].
async fn read_all(ctx: &Context, url: &str) -> Result<Vec<Message>, CliError> {
    let mut messages: Vec<Message> = Vec::new();
    while messages.len() < MAX_MESSAGES {
        let out = ctx
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(HOLD_SECONDS)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| CliError::from_sdk("ReceiveMessage", url, &e))?;
        let page = out.messages();
        if page.is_empty() {
            break;
        }
        messages.extend(page.iter().cloned());
    }
    Ok(messages)
}

async fn release(ctx: &Context, url: &str, m: &Message) -> Result<(), CliError> {
    if let Some(handle) = m.receipt_handle() {
        ctx.sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| CliError::from_sdk("ChangeMessageVisibility", url, &e))?;
    }
    Ok(())
}

pub async fn run(ctx: &Context, yes: bool, json: bool) -> Result<(), CliError> {
    let url = queue_url(ctx).await?;
    let messages = read_all(ctx, &url).await?;
    let events: Vec<(&Message, Result<FailedEvent, String>)> = messages
        .iter()
        .map(|m| (m, FailedEvent::parse(m.body().unwrap_or(""))))
        .collect();
    if json && !yes {
        let list: Vec<Value> = events
            .iter()
            .map(|(m, e)| match e {
                Ok(e) => serde_json::json!({"messageId": m.message_id(), "event": e}),
                Err(why) => serde_json::json!({"messageId": m.message_id(), "unreadable": why}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("serialises")
        );
    } else {
        println!(
            "{} failed event(s) in {}",
            events.len(),
            ctx.failed_events_queue()
        );
        for (m, e) in &events {
            match e {
                Ok(e) => println!(
                    "  {}  {}  failed {} time(s) at {} ({}): {}",
                    m.message_id().unwrap_or("?"),
                    e.function,
                    e.attempts,
                    e.failed_at,
                    e.condition,
                    e.last_error.chars().take(300).collect::<String>()
                ),
                Err(why) => println!("  {}  unreadable: {why}", m.message_id().unwrap_or("?")),
            }
        }
    }
    if !yes {
        for m in &messages {
            release(ctx, &url, m).await?;
        }
        if !json {
            println!("dry run: nothing was invoked or deleted. Add --yes to invoke each event again and delete the ones that succeed.");
        }
        return Ok(());
    }
    let (mut done, mut kept) = (0, 0);
    for (m, e) in &events {
        let id = m.message_id().unwrap_or("?");
        let event = match e {
            Ok(e) => e,
            Err(_) => {
                kept += 1;
                release(ctx, &url, m).await?;
                continue;
            }
        };
        let payload = event.payload.to_string();
        match ctx
            .lambda
            .invoke_sync(&event.function, payload.as_bytes())
            .await
        {
            Ok(answer) => {
                ctx.sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| CliError::from_sdk("DeleteMessage", &url, &e))?;
                done += 1;
                println!(
                    "redriven {id} -> {}: ok {}; deleted from the queue",
                    event.function,
                    String::from_utf8_lossy(&answer)
                        .chars()
                        .take(200)
                        .collect::<String>()
                );
            }
            Err(err) => {
                kept += 1;
                release(ctx, &url, m).await?;
                println!(
                    "redrive of {id} -> {} FAILED, kept in the queue: {err}",
                    event.function
                );
            }
        }
    }
    println!("{done} redriven and deleted, {kept} kept in the queue");
    if kept > 0 {
        return Err(CliError::Aws {
            operation: "Invoke",
            resource: ctx.failed_events_queue(),
            message: format!("{kept} event(s) still fail and stay in the queue"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_lambdas_invocation_record() {
        // The record shape Lambda sends to an on-failure destination.
        let body = json!({
            "version": "1.0",
            "timestamp": "2026-11-30T07:00:00.000Z",
            "requestContext": {
                "requestId": "e4b46cbf",
                "functionArn": "arn:aws:lambda:ap-southeast-1:123456789012:function:payment3-process-paid-order-internal-dev:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": {"orderId": "1", "paymentType": "card", "chargeId": "chrg_1"},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "Retryable", "errorMessage": "KBank answered 503"}
        })
        .to_string();
        let e = FailedEvent::parse(&body).unwrap();
        assert_eq!(e.function, "payment3-process-paid-order-internal-dev");
        assert_eq!(e.attempts, 3);
        assert_eq!(e.last_error, "Retryable: KBank answered 503");
        assert_eq!(e.payload["chargeId"], "chrg_1");
    }

    #[test]
    fn an_aged_out_event_names_its_condition() {
        let body = json!({"requestContext": {"functionArn": "f", "condition": "EventAgeExceeded"},
                          "requestPayload": {}, "responsePayload": null})
        .to_string();
        assert_eq!(
            FailedEvent::parse(&body).unwrap().last_error,
            "EventAgeExceeded"
        );
        assert!(FailedEvent::parse("{}").is_err());
        assert!(FailedEvent::parse("nope").is_err());
    }
}
