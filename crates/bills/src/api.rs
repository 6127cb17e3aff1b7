//! The balance API (`GET /paymentbalance/id?InvoiceID=<n>`) and the payment API
//! (`POST /paymentbalance`), on API Gateway proxy events (REST v1; HTTP API v2 and function
//! URLs read the same way), with CORS for the bill-pay page on another origin.

use std::sync::Arc;

use base64::Engine;
use callback_core::{CallbackError, Clock, Incident, IncidentReporter, ValidationError};
use serde_json::{json, Map, Value};

use crate::domain::{validate_payment, Bill, InvoiceId, PaymentForm};
use crate::ports::{BillStore, Executions};
use crate::settings::BillSettings;

/// The largest request body read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A response in the proxy shape, with the CORS headers.
pub fn respond(settings: &BillSettings, status: u16, body: &Value) -> Value {
    json!({
        "statusCode": status,
        "headers": {
            "Content-Type": "application/json",
            "Access-Control-Allow-Origin": settings.allowed_origin,
            "Access-Control-Allow-Methods": "GET,POST,OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
        "body": body.to_string(),
        "isBase64Encoded": false,
    })
}

fn method(event: &Value) -> String {
    event
        .get("httpMethod")
        .or_else(|| event.pointer("/requestContext/http/method"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn header(event: &Value, name: &str) -> Option<String> {
    event
        .get("headers")?
        .as_object()?
        .iter()
        .find_map(|(k, v)| {
            k.eq_ignore_ascii_case(name)
                .then(|| v.as_str().map(String::from))
                .flatten()
        })
}

/// The JSON rendering of a bill: the seed page's `{"Item": {...}}`, numbers as numbers with
/// their exact decimal text.
pub fn item_json(bill: &Bill) -> Value {
    let number =
        |text: String| -> Value { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    let mut item = json!({
        "InvoiceID": number(bill.invoice.to_string()),
        "CustomerName": bill.customer_name,
        "Balance": number(bill.balance.to_string()),
        "IsProcessed": if bill.processed { 1 } else { 0 },
    });
    if let Some(p) = &bill.paid_at {
        item["PaidAt"] = json!(p);
    }
    if let Some(r) = &bill.payment_ref {
        item["PaymentRef"] = json!(r);
    }
    json!({ "Item": item })
}

pub struct BillApi {
    pub settings: Arc<BillSettings>,
    pub bills: Arc<dyn BillStore>,
    pub executions: Arc<dyn Executions>,
    pub clock: Arc<dyn Clock>,
    pub incidents: Arc<IncidentReporter>,
}

impl BillApi {
    async fn incident(
        &self,
        function: &str,
        error: &CallbackError,
        invoice: Option<&str>,
        event: &Value,
        request_id: &str,
    ) {
        self.incidents
            .report(
                Incident {
                    function,
                    error,
                    order_id: invoice,
                    charge_id: None,
                    event,
                    request_id,
                },
                self.clock.now(),
            )
            .await;
    }

    fn internal(&self, request_id: &str) -> Value {
        respond(
            &self.settings,
            500,
            &json!({"message": format!("internal error (request id {request_id})")}),
        )
    }

    /// `GET /paymentbalance/id?InvoiceID=<n>`.
    pub async fn balance(&self, event: Value, request_id: &str) -> Value {
        if method(&event) == "OPTIONS" {
            return respond(&self.settings, 204, &json!({}));
        }
        let given = event
            .pointer("/queryStringParameters/InvoiceID")
            .and_then(|v| {
                v.as_str()
                    .map(String::from)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .unwrap_or_default();
        let invoice = match InvoiceId::parse(&given) {
            Ok(id) => id,
            Err(message) => return respond(&self.settings, 400, &json!({"message": message})),
        };
        match self.bills.bill(&self.settings.bills_table, invoice).await {
            Ok(Some(bill)) => respond(&self.settings, 200, &item_json(&bill)),
            Ok(None) => respond(
                &self.settings,
                404,
                &json!({"message": format!("no bill with InvoiceID {invoice}")}),
            ),
            Err(e) => {
                let err = CallbackError::Store(e);
                let safe = json!({"queryStringParameters": event.get("queryStringParameters")});
                self.incident(
                    "billsbalance",
                    &err,
                    Some(&invoice.to_string()),
                    &safe,
                    request_id,
                )
                .await;
                self.internal(request_id)
            }
        }
    }

    /// The body of a payment request as fields: JSON, or a form-encoded body.
    fn form(event: &Value) -> Result<Map<String, Value>, String> {
        let raw = match event.get("body") {
            None | Some(Value::Null) => return Err("the body is empty".into()),
            Some(Value::Object(o)) => return Ok(o.clone()), // a direct invoke
            Some(Value::String(s)) => {
                if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|_| "the body is marked base64 but is not".to_string())?
                } else {
                    s.clone().into_bytes()
                }
            }
            Some(_) => return Err("the body is not a JSON object".into()),
        };
        if raw.len() > MAX_BODY_BYTES {
            return Err(format!("the body is over {MAX_BODY_BYTES} bytes"));
        }
        let form_encoded = header(event, "content-type").is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if form_encoded {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw)
                .map_err(|_| "the form body cannot be read".to_string())?;
            return Ok(pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect());
        }
        match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(o)) => Ok(o),
            _ => Err("the body is not a JSON object".into()),
        }
    }

    /// `POST /paymentbalance`.
    pub async fn pay(&self, event: Value, request_id: &str) -> Value {
        if method(&event) == "OPTIONS" {
            return respond(&self.settings, 204, &json!({}));
        }
        let fields = match Self::form(&event) {
            Ok(f) => f,
            Err(message) => {
                return respond(
                    &self.settings,
                    400,
                    &json!({"Status": "Rejected", "Errors": [{"field": "body", "message": message}]}),
                )
            }
        };
        let form = PaymentForm::new(fields);
        let safe_event = json!({"body": form.redacted()});
        let invoice = form.invoice();
        let bill = match invoice {
            None => None,
            Some(id) => match self.bills.bill(&self.settings.bills_table, id).await {
                Ok(b) => b,
                Err(e) => {
                    let err = CallbackError::Store(e);
                    self.incident(
                        "billspay",
                        &err,
                        Some(&id.to_string()),
                        &safe_event,
                        request_id,
                    )
                    .await;
                    return self.internal(request_id);
                }
            },
        };
        let today = self.clock.now().date_naive();
        let payment = match validate_payment(&form, bill.as_ref(), today) {
            Ok(p) => p,
            Err(problems) => {
                tracing::info!(invoice = ?invoice.map(|i| i.0), problems = problems.len(), "payment refused");
                return respond(
                    &self.settings,
                    400,
                    &json!({"Status": "Rejected", "Errors": problems}),
                );
            }
        };
        let Some(state_machine) = self.settings.state_machine_arn.as_deref() else {
            let err = CallbackError::Internal("BILL_PAYMENT_STATE_MACHINE_ARN is not set".into());
            self.incident(
                "billspay",
                &err,
                Some(&payment.invoice.to_string()),
                &safe_event,
                request_id,
            )
            .await;
            return self.internal(request_id);
        };
        let ttl = self.clock.now().timestamp() + self.settings.error_log_ttl_seconds;
        let input = payment.execution_input(ttl).to_string();
        let name = payment.execution_name();
        let arn = execution_arn(state_machine, &name);
        // The name is the payment's (InvoiceID and PaymentRef): a second submit of the same payment
        // starts nothing. Step Functions answers it in one of two ways: ExecutionAlreadyExists
        // ("AlreadySubmitted"), or, while the first execution still runs with the same input (the
        // same second), the first execution itself, as if just started (StartExecution is
        // idempotent for standard workflows): "Submitted" with the same ExecutionArn.
        match self.executions.start(state_machine, &name, &input).await {
            Ok(started) => {
                tracing::info!(invoice = payment.invoice.0, execution = %name, started, "payment submitted");
                respond(
                    &self.settings,
                    200,
                    &json!({
                        "Status": if started { "Submitted" } else { "AlreadySubmitted" },
                        "InvoiceID": payment.invoice.0,
                        "Amount": serde_json::from_str::<Value>(&payment.amount.to_string()).unwrap_or(Value::Null),
                        "PaymentRef": payment.payment_ref,
                        "CardLast4": payment.card_last4,
                        "ExecutionArn": arn,
                    }),
                )
            }
            Err(message) => {
                let err = CallbackError::Internal(format!("StartExecution failed: {message}"));
                self.incident(
                    "billspay",
                    &err,
                    Some(&payment.invoice.to_string()),
                    &safe_event,
                    request_id,
                )
                .await;
                self.internal(request_id)
            }
        }
    }
}

/// The execution ARN Step Functions gives an execution of this name.
pub fn execution_arn(state_machine: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// A validation failure as the error path's error (unused by the APIs, which answer 400
/// without an alert: a customer's typo is not an incident).
pub fn invalid(field: &'static str, message: &str) -> CallbackError {
    CallbackError::Invalid(ValidationError::new(field, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MemoryBills;
    use callback_core::ports::memory::MemoryAws;
    use callback_core::{Settings, SystemClock};
    use rust_decimal::Decimal;

    fn api() -> (BillApi, MemoryBills, Arc<MemoryAws>) {
        let mem = MemoryBills::default();
        mem.insert(Bill {
            invoice: InvoiceId(7),
            customer_name: "Jane".into(),
            balance: Decimal::new(5125, 1),
            processed: false,
            paid_at: None,
            payment_ref: None,
        });
        let aws = Arc::new(MemoryAws::default());
        let ports = aws.ports(Arc::new(SystemClock));
        let settings = Arc::new(Settings::for_branch("t"));
        let incidents = Arc::new(IncidentReporter::new(
            settings,
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        ));
        let api = BillApi {
            settings: Arc::new(BillSettings::for_branch(
                "t",
                Some("arn:aws:states:r:1:stateMachine:sm".into()),
            )),
            bills: Arc::new(mem.clone()),
            executions: Arc::new(mem.clone()),
            clock: Arc::new(SystemClock),
            incidents,
        };
        (api, mem, aws)
    }

    fn body(v: &Value) -> Value {
        serde_json::from_str(v["body"].as_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn balance_answers() {
        let (api, _, _) = api();
        let ok = api
            .balance(
                json!({"httpMethod": "GET", "queryStringParameters": {"InvoiceID": "7"}}),
                "r",
            )
            .await;
        assert_eq!(ok["statusCode"], 200);
        assert_eq!(ok["headers"]["Access-Control-Allow-Origin"], "*");
        assert_eq!(
            body(&ok),
            json!({"Item": {"InvoiceID": 7, "CustomerName": "Jane", "Balance": 512.5, "IsProcessed": 0}})
        );
        let missing = api
            .balance(
                json!({"httpMethod": "GET", "queryStringParameters": {"InvoiceID": "8"}}),
                "r",
            )
            .await;
        assert_eq!(missing["statusCode"], 404);
        let bad = api
            .balance(
                json!({"httpMethod": "GET", "queryStringParameters": {"InvoiceID": "abc"}}),
                "r",
            )
            .await;
        assert_eq!(bad["statusCode"], 400);
        let none = api
            .balance(
                json!({"httpMethod": "GET", "queryStringParameters": null}),
                "r",
            )
            .await;
        assert_eq!(none["statusCode"], 400);
        let pre = api.balance(json!({"httpMethod": "OPTIONS"}), "r").await;
        assert_eq!(pre["statusCode"], 204);
    }

    #[tokio::test]
    async fn pay_starts_one_execution_without_the_card_number() {
        let (api, mem, aws) = api();
        let form = json!({"InvoiceID": "7", "BillingAmount": "512.50", "CardNumber": "4242424242424242",
                          "ExpiryDate": "12/99", "EmailId": "j@example.com", "Choices": "email", "WaitSeconds": "1"});
        let event = json!({"httpMethod": "POST", "body": form.to_string()});
        let first = api.pay(event.clone(), "r1").await;
        assert_eq!(first["statusCode"], 200, "{first}");
        assert_eq!(body(&first)["Status"], "Submitted");
        let second = api.pay(event, "r2").await;
        assert_eq!(body(&second)["Status"], "AlreadySubmitted");
        let executions = mem.executions.lock().unwrap().clone();
        assert_eq!(executions.len(), 1);
        assert!(!executions[0].1.contains("4242424242424242"));
        assert!(!first.to_string().contains("4242424242424242"));
        assert!(aws.items("payment3-callback-error-log-t").is_empty());
    }

    #[tokio::test]
    async fn pay_reports_every_problem_and_form_bodies_work() {
        let (api, mem, _) = api();
        let event = json!({"httpMethod": "POST", "headers": {"content-type": "application/x-www-form-urlencoded"},
                           "body": "InvoiceID=7&BillingAmount=1&CardNumber=1234&ExpiryDate=01%2F20&Choices=text&WaitSeconds=999"});
        let r = api.pay(event, "r").await;
        assert_eq!(r["statusCode"], 400);
        let errors = body(&r)["Errors"].as_array().unwrap().len();
        assert_eq!(errors, 5, "{r}");
        assert!(mem.executions.lock().unwrap().is_empty());
        let junk = api
            .pay(json!({"httpMethod": "POST", "body": "not json"}), "r")
            .await;
        assert_eq!(junk["statusCode"], 400);
    }

    #[tokio::test]
    async fn a_store_failure_is_a_500_and_an_incident_without_the_card() {
        let (api, mem, aws) = api();
        *mem.fail.lock().unwrap() = true;
        let form =
            json!({"InvoiceID": "7", "BillingAmount": "512.50", "CardNumber": "4242424242424242"});
        let r = api
            .pay(
                json!({"httpMethod": "POST", "body": form.to_string()}),
                "r9",
            )
            .await;
        assert_eq!(r["statusCode"], 500);
        assert!(body(&r)["message"].as_str().unwrap().contains("r9"));
        let errors = aws.items("payment3-callback-error-log-t");
        assert_eq!(errors.len(), 1);
        let text = format!("{errors:?}");
        assert!(
            !text.contains("4242424242424242") && text.contains("****4242"),
            "{text}"
        );
    }
}
