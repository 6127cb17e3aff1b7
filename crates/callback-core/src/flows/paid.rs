//! Process-paid (SPEC 4.4): applies a payment to an order exactly once.
//!
//! Road: event -> [`ProcessPaidRequest`] -> is it paid? (card and QR ask KBank; wallet, bank
//! app and Amex carry `success`) -> the order check (exists, total matches within 0.01) -> one
//! conditional write on the paid-order ledger -> the winner alone updates the order and sends
//! the paid notice -> [`Outcome`].
//!
//! Ledger rules (`payment3-paid-order-<branch>`, hash `orderId`, `status`):
//! - `PENDING` or no entry -> `PAID` | `FAILED`; never out of `PAID`.
//! - `FAILED` -> `PAID` is allowed: a customer whose first payment failed may pay again, and that
//!   money must reach the order. `FAILED` is a record, not a verdict.
//! - The `PAID` write also claims the side effects (`effectsDone: false`, `effectsClaimedAt`);
//!   the winner sets `effectsDone: true` once the order is updated. If the winner dies in between,
//!   a retry of the same payment may re-claim after [`EFFECTS_LEASE`]; until then everyone else
//!   answers `already_paid`. The order update is idempotent, so the crash case costs at most a
//!   second paid notice, never a lost update.
//! - A different payment confirmed for an order already paid (the customer paid twice) changes
//!   nothing, answers `already_paid`, and goes down the error path as `SecondPayment` so
//!   someone refunds it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::domain::callback::{aliased, describe, OrderId};
use crate::domain::charge::{ChargeId, ChargeState};
use crate::domain::clock::isoformat;
use crate::domain::error::ValidationError;
use crate::domain::item::{Attr, DecodeError, Item, ItemReader};
use crate::domain::ledger::{OrderPaidUpdate, PaidClaim, PaidOrderStatus, PaymentType};
use crate::domain::money::{decimal_from_raw, decimal_from_value, differs, parse_decimal};
use crate::flows::error::CallbackError;
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::settings::{ProcessPaidKind, ProcessPaidSettings, Settings};
use crate::ports::secret_cache::SecretCache;
use crate::ports::ChargeInquiry;
use crate::ports::{CardPorts, Mail, Ports};

/// How long a winner's claim on the side effects holds before a retry may take them over.
pub const EFFECTS_LEASE: Duration = Duration::from_secs(60);

/// A process-paid event, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessPaidRequest {
    pub order_id: OrderId,
    pub payment_type: PaymentType,
    pub success: Option<bool>,
    /// The KBank charge (card, QR).
    pub charge_id: Option<ChargeId>,
    /// The charge id for card and QR, else `paymentId`.
    pub payment_id: String,
    pub amount: Option<Decimal>,
}

fn text_of(
    body: &Map<String, Value>,
    names: &[&str],
    field: &'static str,
) -> Result<Option<String>, ValidationError> {
    match aliased(body, names) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Shops send numeric order ids too; their text is the id.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(ValidationError::new(
            field,
            format!("{field} must be a string, got {}", describe(other)),
        )),
    }
}

impl ProcessPaidRequest {
    /// Reads the event: a JSON object, JSON text of one, or either wrapped in `{"body": ...}`.
    pub fn parse(event: &Value, kind: ProcessPaidKind) -> Result<Self, ValidationError> {
        let (body, raw_amount) = event_object(event)?;
        let order_id = text_of(&body, &["orderId", "order_id"], "orderId")?
            .ok_or_else(|| ValidationError::new("orderId", "orderId is required"))?;
        let order_id = OrderId::parse("orderId", &order_id)?;
        let payment_type = match text_of(&body, &["paymentType", "payment_type"], "paymentType")? {
            None => PaymentType::default_for(kind),
            Some(t) => PaymentType::parse(&t).ok_or_else(|| {
                ValidationError::new(
                    "paymentType",
                    format!(
                        "paymentType must be card, qr, wallet, bankapp or amex, got {:?}",
                        t.chars().take(40).collect::<String>()
                    ),
                )
            })?,
        };
        let success = match body.get("success") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(ValidationError::new(
                    "success",
                    format!("success must be a JSON boolean, got {}", describe(other)),
                ))
            }
        };
        let amount = match (raw_amount, body.get("amount")) {
            (Some(d), _) => Some(d),
            (None, None | Some(Value::Null)) => None,
            (None, Some(v)) => Some(decimal_from_value(v).ok_or_else(|| {
                ValidationError::new(
                    "amount",
                    format!("amount must be a number, got {}", describe(v)),
                )
            })?),
        };
        let (charge_id, payment_id) = if payment_type.asks_kbank() {
            let text =
                text_of(&body, &["chargeId", "charge_id"], "chargeId")?.ok_or_else(|| {
                    ValidationError::new(
                        "chargeId",
                        format!(
                            "chargeId is required for {} payments",
                            payment_type.as_str()
                        ),
                    )
                })?;
            let id = ChargeId::parse("chargeId", &text)?;
            let payment_id = id.as_str().to_string();
            (Some(id), payment_id)
        } else {
            let id = text_of(&body, &["paymentId", "payment_id"], "paymentId")?
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| ValidationError::new("paymentId", "paymentId is required"))?;
            (None, id)
        };
        Ok(ProcessPaidRequest {
            order_id,
            payment_type,
            success,
            charge_id,
            payment_id,
            amount,
        })
    }
}

/// The object of an event, and its amount read from the JSON text when there is text.
fn event_object(event: &Value) -> Result<(Map<String, Value>, Option<Decimal>), ValidationError> {
    match event {
        Value::String(text) => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                ValidationError::new("body", format!("event is not valid JSON: {e}"))
            })?;
            let raw: HashMap<String, &RawValue> = serde_json::from_str(text).unwrap_or_default();
            let (body, _) = event_object(&value)?;
            Ok((body, raw.get("amount").and_then(|r| decimal_from_raw(r))))
        }
        Value::Object(map) => {
            let names_order = map.contains_key("orderId") || map.contains_key("order_id");
            match map.get("body") {
                Some(inner @ (Value::String(_) | Value::Object(_))) if !names_order => {
                    event_object(inner)
                }
                _ => Ok((map.clone(), None)),
            }
        }
        other => Err(ValidationError::new(
            "body",
            format!("event must be a JSON object, got {}", describe(other)),
        )),
    }
}

/// An order of the shop, as far as process-paid needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub order_id: String,
    /// `data.grandTotal`; `None` when absent or not a number.
    pub grand_total: Option<Decimal>,
}

impl Order {
    /// `data` may be a map (M) or JSON text (S); `grandTotal` a number or numeric text.
    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        let order_id = match item.get("orderId") {
            Some(Attr::N(n)) => n.clone(),
            _ => r.unicode("orderId")?.to_string(),
        };
        let grand_total = match item.get("data") {
            Some(Attr::M(data)) => match data.get("grandTotal") {
                Some(Attr::N(n)) | Some(Attr::S(n)) => parse_decimal(n),
                _ => None,
            },
            Some(Attr::S(text)) => serde_json::from_str::<HashMap<String, &RawValue>>(text)
                .ok()
                .and_then(|d| d.get("grandTotal").and_then(|r| decimal_from_raw(r))),
            _ => None,
        };
        Ok(Order {
            order_id,
            grand_total,
        })
    }
}

/// What process-paid did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This run applied the payment (order updated, notice sent).
    Paid,
    /// The order was already paid: nothing done.
    AlreadyPaid,
    /// The gateway does not report the charge paid yet.
    Pending,
    /// The payment failed (the gateway or the callback says so).
    Failed,
    /// Not applied: bad event, no such order, amount mismatch, gateway refused; alerted.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Paid => "paid",
            Outcome::AlreadyPaid => "already_paid",
            Outcome::Pending => "pending",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        [
            Outcome::Paid,
            Outcome::AlreadyPaid,
            Outcome::Pending,
            Outcome::Failed,
            Outcome::Rejected,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
    /// The order is paid after this run (by it or before it).
    pub fn is_paid(self) -> bool {
        matches!(self, Outcome::Paid | Outcome::AlreadyPaid)
    }
}

/// The response of process-paid: the original's `{"statusCode": 200, "body": "\"success\""}`
/// plus the outcome.
pub fn response(outcome: Outcome, order_id: Option<&str>, error: Option<&str>) -> Value {
    let mut r = json!({
        "statusCode": 200,
        "body": "\"success\"",
        "outcome": outcome.as_str(),
    });
    if let Some(o) = order_id {
        r["orderId"] = json!(o);
    }
    if let Some(e) = error {
        r["error"] = json!(e);
    }
    r
}

/// The process-paid function.
pub struct ProcessPaid {
    settings: Arc<Settings>,
    paid: Arc<ProcessPaidSettings>,
    ports: Ports,
    card: CardPorts,
    secret: Arc<SecretCache>,
    kbank: Arc<dyn ChargeInquiry>,
    reporter: IncidentReporter,
}

impl ProcessPaid {
    pub fn new(
        settings: Arc<Settings>,
        paid: Arc<ProcessPaidSettings>,
        ports: Ports,
        card: CardPorts,
        kbank: Arc<dyn ChargeInquiry>,
    ) -> Self {
        let secret = Arc::new(SecretCache::new(
            ports.secrets.clone(),
            ports.clock.clone(),
            paid.secret.name.clone(),
            paid.secret.refresh,
        ));
        let reporter = IncidentReporter::new(
            settings.clone(),
            ports.errors.clone(),
            ports.alert_gate.clone(),
            ports.mailer.clone(),
        );
        ProcessPaid {
            settings,
            paid,
            ports,
            card,
            secret,
            kbank,
            reporter,
        }
    }

    /// The function's name in the error log and alerts.
    pub fn function(&self) -> &'static str {
        match self.paid.kind {
            ProcessPaidKind::Card => "processpaidorder",
            ProcessPaidKind::Wallet => "processpaidwalletorder",
            ProcessPaidKind::Amex => "processpaidamexorder",
        }
    }

    /// Handles one event. `Err` only for failures a retry can fix (Lambda retries the event);
    /// everything else is an outcome, after the error path where something is wrong.
    pub async fn handle(&self, event: Value, request_id: &str) -> Result<Value, CallbackError> {
        let request = match ProcessPaidRequest::parse(&event, self.paid.kind) {
            Ok(r) => r,
            Err(e) => {
                let err = CallbackError::from(e);
                let order = event_object(&event).ok().and_then(|(b, _)| {
                    aliased(&b, &["orderId", "order_id"])
                        .and_then(Value::as_str)
                        .map(String::from)
                });
                self.report(&err, order.as_deref(), None, &event, request_id)
                    .await;
                let public = err.public_message(request_id);
                return Ok(self.finish(Outcome::Rejected, order.as_deref(), Some(&public)));
            }
        };
        let order_id = request.order_id.as_str().to_string();
        match self.apply(&request).await {
            Ok(outcome) => Ok(self.finish(outcome, Some(&order_id), None)),
            Err(err) => {
                self.report(
                    &err,
                    Some(&order_id),
                    Some(&request.payment_id),
                    &event,
                    request_id,
                )
                .await;
                if err.retryable() {
                    Err(err)
                } else if err.kind() == "SecondPayment" {
                    // Recorded and alerted above; the order itself is paid.
                    let public = err.public_message(request_id);
                    Ok(self.finish(Outcome::AlreadyPaid, Some(&order_id), Some(&public)))
                } else {
                    let public = err.public_message(request_id);
                    Ok(self.finish(Outcome::Rejected, Some(&order_id), Some(&public)))
                }
            }
        }
    }

    fn finish(&self, outcome: Outcome, order_id: Option<&str>, error: Option<&str>) -> Value {
        tracing::info!(
            function = self.function(),
            order_id,
            outcome = outcome.as_str(),
            "process-paid done"
        );
        response(outcome, order_id, error)
    }

    async fn report(
        &self,
        err: &CallbackError,
        order_id: Option<&str>,
        payment_id: Option<&str>,
        event: &Value,
        request_id: &str,
    ) {
        self.reporter
            .report(
                Incident {
                    function: self.function(),
                    error: err,
                    order_id,
                    charge_id: payment_id,
                    event,
                    request_id,
                },
                self.ports.clock.now(),
            )
            .await;
    }

    async fn apply(&self, request: &ProcessPaidRequest) -> Result<Outcome, CallbackError> {
        let table = &self.settings.tables.paid_order;
        let order_id = request.order_id.as_str();
        let mut claim = PaidClaim {
            order_id: order_id.to_string(),
            payment_type: request.payment_type,
            payment_id: request.payment_id.clone(),
            charge_id: request.charge_id.as_ref().map(|c| c.as_str().to_string()),
            amount: request.amount,
        };

        // Already paid and finished: no need to ask the gateway again.
        if let Some(state) = self.card.ledger.paid_state(table, order_id).await? {
            // The same payment again: nothing to ask. Another payment is checked on (it may be
            // a second real payment, which needs a refund).
            let same = state
                .payment_id
                .as_deref()
                .is_none_or(|p| p == claim.payment_id);
            if state.status == PaidOrderStatus::Paid && state.effects_done && same {
                return Ok(Outcome::AlreadyPaid);
            }
        }

        // Is it paid, and how much?
        if request.payment_type.asks_kbank() {
            let charge_id = request.charge_id.as_ref().ok_or_else(|| {
                CallbackError::Internal("card payment without a charge id".into())
            })?;
            let key = self.secret.get().await?;
            let charge = self.kbank.charge(charge_id, &key).await?;
            if charge.id != charge_id.as_str() {
                return Err(crate::ports::error::GatewayError::Unexpected(format!(
                    "asked for charge {charge_id}, got {}",
                    charge.id.chars().take(64).collect::<String>()
                ))
                .into());
            }
            match charge.state() {
                ChargeState::Paid => claim.amount = Some(charge.amount),
                ChargeState::Pending => {
                    tracing::info!(order_id, charge_id = %charge_id, status = %charge.status,
                        transaction_state = %charge.transaction_state, "charge not paid yet");
                    self.card
                        .ledger
                        .note_pending(table, &claim, self.ports.clock.now())
                        .await?;
                    return Ok(Outcome::Pending);
                }
                ChargeState::Failed => return self.failed(&claim).await,
            }
        } else {
            match request.success {
                Some(true) => {}
                Some(false) => return self.failed(&claim).await,
                None => {
                    return Err(ValidationError::new(
                        "success",
                        format!(
                            "success is required for {} payments",
                            request.payment_type.as_str()
                        ),
                    )
                    .into())
                }
            }
        }

        // The order check.
        let paid_amount = claim.amount.ok_or_else(|| CallbackError::Rejected {
            kind: "AmountMissing",
            message: format!(
                "order {order_id}: the payment carries no amount to check against the total"
            ),
        })?;
        let item = self
            .card
            .orders
            .order_item(&self.settings.tables.order, order_id)
            .await?
            .ok_or_else(|| CallbackError::Rejected {
                kind: "OrderNotFound",
                message: format!("order {order_id} does not exist; the payment was not applied"),
            })?;
        let order = Order::from_item(&item).map_err(|e| CallbackError::Rejected {
            kind: "OrderUnreadable",
            message: format!("order {order_id} cannot be read: {e}"),
        })?;
        let total = order.grand_total.ok_or_else(|| CallbackError::Rejected {
            kind: "OrderTotalMissing",
            message: format!(
                "order {order_id} has no data.grandTotal; the payment was not applied"
            ),
        })?;
        if differs(paid_amount, total) {
            return Err(CallbackError::Rejected {
                kind: "AmountMismatch",
                message: format!(
                    "order {order_id}: paid {paid_amount} but the total is {total}; the payment was not applied"
                ),
            });
        }

        // The one write that wins.
        let now = self.ports.clock.now();
        let stale_before = now
            - chrono::Duration::from_std(EFFECTS_LEASE).unwrap_or(chrono::Duration::seconds(60));
        if !self
            .card
            .ledger
            .claim_paid(table, &claim, now, stale_before)
            .await?
        {
            let state = self.card.ledger.paid_state(table, order_id).await?;
            if let Some(first) = state
                .and_then(|s| s.payment_id)
                .filter(|p| *p != claim.payment_id)
            {
                return Err(CallbackError::Rejected {
                    kind: "SecondPayment",
                    message: format!(
                        "order {order_id} is already paid by {first}; payment {} of {paid_amount} was also confirmed: refund it",
                        claim.payment_id
                    ),
                });
            }
            return Ok(Outcome::AlreadyPaid);
        }
        let update = OrderPaidUpdate {
            order_id: order_id.to_string(),
            payment_status: PaidOrderStatus::Paid.as_str().to_string(),
            paid_at: isoformat(now),
            payment_type: claim.payment_type.as_str().to_string(),
            payment_id: claim.payment_id.clone(),
        };
        // A failure here leaves the claim unfinished: the retry re-claims after the lease.
        self.card
            .orders
            .mark_order_paid(&self.settings.tables.order, &update)
            .await?;
        self.send_paid_notice(&claim, paid_amount, &update.paid_at)
            .await;
        self.card
            .ledger
            .finish_paid(table, order_id, self.ports.clock.now())
            .await?;
        Ok(Outcome::Paid)
    }

    async fn failed(&self, claim: &PaidClaim) -> Result<Outcome, CallbackError> {
        let table = &self.settings.tables.paid_order;
        if self
            .card
            .ledger
            .mark_failed(table, claim, self.ports.clock.now())
            .await?
        {
            return Ok(Outcome::Failed);
        }
        // Lost: the entry is FAILED already, or PAID (which a failure never undoes).
        match self.card.ledger.paid_state(table, &claim.order_id).await? {
            Some(s) if s.status == PaidOrderStatus::Paid => Ok(Outcome::AlreadyPaid),
            _ => Ok(Outcome::Failed),
        }
    }

    async fn send_paid_notice(&self, claim: &PaidClaim, amount: Decimal, paid_at: &str) {
        let (Some(from), false) = (
            self.paid.notice_from.clone(),
            self.paid.notice_to.is_empty(),
        ) else {
            tracing::info!(order_id = %claim.order_id, "no PAID_NOTICE_EMAIL_FROM/TO: no paid notice e-mail");
            return;
        };
        let mail = Mail {
            from,
            to: self.paid.notice_to.clone(),
            subject: format!(
                "[payment3][{}] order {} paid",
                self.settings.branch, claim.order_id
            ),
            body: format!(
                "Order: {}\nPayment type: {}\nPayment id: {}\nAmount: {}\nPaid at: {} UTC\n",
                claim.order_id,
                claim.payment_type.as_str(),
                claim.payment_id,
                amount,
                paid_at
            ),
        };
        // The payment is applied; a lost notice is logged, not a reason to fail.
        if let Err(e) = self.ports.mailer.send(&mail).await {
            tracing::error!(order_id = %claim.order_id, error = %e, "could not send the paid notice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::Clock;
    use crate::domain::clock::ManualClock;
    use crate::domain::ledger::PaidOrderState;
    use crate::ports::error::GatewayError;
    use crate::ports::memory::{MemoryAws, MemoryKBank};
    use crate::ports::PaidOrderLedger;
    use chrono::{TimeZone, Utc};

    const ORDERS: &str = "order-table-dev";
    const LEDGER: &str = "payment3-paid-order-dev";
    const ERRORS: &str = "payment3-callback-error-log-dev";
    const KEY: &str = "skey_test_payment3_local";
    const ORDER: &str = "482500007436";

    struct World {
        aws: Arc<MemoryAws>,
        kbank: Arc<MemoryKBank>,
        clock: Arc<ManualClock>,
    }

    impl World {
        fn new() -> Self {
            let aws = Arc::new(MemoryAws::default());
            aws.set_secret("kbank-dev", &format!(r#"{{"secretKey": "{KEY}"}}"#));
            let w = World {
                aws,
                kbank: Arc::new(MemoryKBank::with_key(KEY)),
                clock: Arc::new(ManualClock::new(
                    Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap(),
                )),
            };
            w.order_with_data(Attr::M(
                [("grandTotal".to_string(), Attr::N("2339.00".into()))].into(),
            ));
            w.kbank
                .set_charge("chrg_1", "2339.00", "success", "Authorized");
            w
        }
        fn order_with_data(&self, data: Attr) {
            let item: Item = [
                ("orderId".to_string(), Attr::S(ORDER.into())),
                ("data".to_string(), data),
            ]
            .into();
            self.aws.put_item(ORDERS, ORDER, item);
        }
        fn process(&self, kind: ProcessPaidKind) -> ProcessPaid {
            ProcessPaid::new(
                Arc::new(Settings::for_branch("dev")),
                Arc::new(ProcessPaidSettings::for_kind(kind, "dev")),
                self.aws.ports(self.clock.clone()),
                self.aws.card_ports(),
                self.kbank.clone(),
            )
        }
        fn ledger(&self) -> Option<PaidOrderState> {
            self.aws
                .item(LEDGER, ORDER)
                .map(|i| PaidOrderState::from_item(&i).unwrap())
        }
        fn order(&self) -> Item {
            self.aws.item(ORDERS, ORDER).unwrap()
        }
        fn notices(&self) -> usize {
            self.aws
                .mails()
                .iter()
                .filter(|m| m.subject.contains("paid"))
                .count()
        }
    }

    fn card_event(charge: &str) -> Value {
        json!({"orderId": ORDER, "paymentType": "card", "chargeId": charge})
    }

    async fn outcome(p: &ProcessPaid, event: Value) -> String {
        let r = p.handle(event, "req").await.expect("no retryable failure");
        assert_eq!(r["statusCode"], 200);
        assert_eq!(r["body"], "\"success\"");
        r["outcome"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn an_authorized_charge_is_paid_once() {
        // Given an order of 2339.00 and a charge KBank reports Authorized
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        // When process-paid runs
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        // Then the order is paid, the ledger says PAID, one notice went out
        let order = w.order();
        assert_eq!(order["paymentStatus"], Attr::S("PAID".into()));
        assert_eq!(order["paymentType"], Attr::S("card".into()));
        assert_eq!(order["paymentId"], Attr::S("chrg_1".into()));
        assert!(matches!(order.get("paidAt"), Some(Attr::S(_))));
        let ledger = w.ledger().unwrap();
        assert_eq!(ledger.status, PaidOrderStatus::Paid);
        assert!(ledger.effects_done);
        assert_eq!(
            w.aws.item(LEDGER, ORDER).unwrap()["amount"],
            Attr::N("2339.00".into())
        );
        assert_eq!(w.notices(), 1);
        assert_eq!(w.aws.mails()[0].to, vec!["orders@example.com".to_string()]);
        // And running it again is already_paid without asking KBank again
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
        assert_eq!(w.kbank.calls(), 1);
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(w.notices(), 1);
    }

    #[tokio::test]
    async fn a_charge_not_yet_authorized_is_pending_then_paid() {
        let w = World::new();
        w.kbank
            .set_charge("chrg_1", "2339.00", "success", "Pre-Authorized");
        let p = w.process(ProcessPaidKind::Card);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "pending");
        assert!(!w.order().contains_key("paymentStatus"));
        assert_eq!(w.ledger().unwrap().status, PaidOrderStatus::Pending);
        assert_eq!(w.notices(), 0);
        // The gateway authorizes it; the next run applies it.
        w.kbank
            .set_charge("chrg_1", "2339.00", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        assert_eq!(w.aws.order_updates(), 1);
    }

    #[tokio::test]
    async fn a_failed_charge_is_failed_and_a_new_payment_can_still_pay() {
        let w = World::new();
        w.kbank.set_charge("chrg_1", "2339.00", "fail", "Declined");
        let p = w.process(ProcessPaidKind::Card);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "failed");
        assert_eq!(w.ledger().unwrap().status, PaidOrderStatus::Failed);
        assert_eq!(w.aws.order_updates(), 0);
        // The customer pays again with another card: FAILED -> PAID.
        w.kbank
            .set_charge("chrg_2", "2339.00", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_2")).await, "paid");
        assert_eq!(w.ledger().unwrap().status, PaidOrderStatus::Paid);
        // A late failure never takes the order out of PAID.
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
        assert_eq!(w.ledger().unwrap().status, PaidOrderStatus::Paid);
    }

    #[tokio::test]
    async fn a_missing_order_or_a_different_amount_is_rejected_and_alerted() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        w.kbank
            .set_charge("chrg_9", "100.00", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_9")).await, "rejected");
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors[0].error_type, "AmountMismatch");
        assert!(
            errors[0]
                .error
                .contains("paid 100.00 but the total is 2339.00"),
            "{}",
            errors[0].error
        );
        assert_eq!(w.aws.mails().len(), 1, "alerted");
        assert!(w.ledger().is_none());
        assert_eq!(w.aws.order_updates(), 0);

        let other = json!({"orderId": "no-such-order", "chargeId": "chrg_1"});
        assert_eq!(outcome(&p, other).await, "rejected");
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.error_type == "OrderNotFound"));
        // Within a cent is the same amount.
        w.kbank
            .set_charge("chrg_3", "2339.01", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_3")).await, "paid");
    }

    #[tokio::test]
    async fn the_order_document_may_be_json_text() {
        let w = World::new();
        w.order_with_data(Attr::S(r#"{"grandTotal": 2339.0, "items": []}"#.into()));
        assert_eq!(
            outcome(&w.process(ProcessPaidKind::Card), card_event("chrg_1")).await,
            "paid"
        );
    }

    #[tokio::test]
    async fn wallet_and_amex_payments_carry_their_result() {
        let w = World::new();
        let wallet = w.process(ProcessPaidKind::Wallet);
        // A failure first (JSON text event, as an async invoke payload may be).
        let failed =
            json!({"order_id": ORDER, "payment_id": "pay_0", "success": false, "amount": 2339.0});
        assert_eq!(
            outcome(&wallet, Value::String(failed.to_string())).await,
            "failed"
        );
        let paid = r#"{"orderId": "482500007436", "paymentId": "pay_1", "success": true, "amount": 2339.00, "userId": "u"}"#;
        assert_eq!(outcome(&wallet, Value::String(paid.into())).await, "paid");
        assert_eq!(w.order()["paymentType"], Attr::S("wallet".into()));
        assert_eq!(w.order()["paymentId"], Attr::S("pay_1".into()));
        assert_eq!(w.kbank.calls(), 0, "wallet payments do not ask KBank");
        // Amex, bank app: their own types.
        let amex = w.process(ProcessPaidKind::Amex);
        let again =
            json!({"orderId": ORDER, "paymentId": "amex_1", "success": true, "amount": 2339});
        assert_eq!(outcome(&amex, again).await, "already_paid");
        let bank = json!({"orderId": "x", "paymentType": "bankapp", "paymentId": "b", "success": true, "amount": 1});
        assert_eq!(outcome(&wallet, bank).await, "rejected");
    }

    #[tokio::test]
    async fn bad_events_are_rejected_with_the_reason() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        for (event, needle) in [
            (json!({}), "orderId is required"),
            (
                json!({"orderId": ORDER}),
                "chargeId is required for card payments",
            ),
            (
                json!({"orderId": ORDER, "paymentType": "cash", "chargeId": "c"}),
                "paymentType must be",
            ),
            (
                json!({"orderId": ORDER, "chargeId": "../../admin"}),
                "chargeId may hold only",
            ),
            (
                json!({"orderId": ORDER, "paymentType": "wallet", "paymentId": "p"}),
                "success is required",
            ),
            (json!("{not json"), "event is not valid JSON"),
            (json!([1]), "event must be a JSON object"),
            (json!(null), "event must be a JSON object"),
        ] {
            let r = p.handle(event.clone(), "req").await.unwrap();
            assert_eq!(r["outcome"], "rejected", "{event}");
            assert!(
                r["error"].as_str().unwrap().contains(needle),
                "{event}: {}",
                r["error"]
            );
        }
        assert_eq!(w.aws.order_updates(), 0);
    }

    #[tokio::test]
    async fn an_unreachable_gateway_fails_for_a_retry_and_a_refusal_does_not() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        w.kbank
            .fail_with(Some(GatewayError::Unreachable("timed out".into())));
        let err = p.handle(card_event("chrg_1"), "req").await.unwrap_err();
        assert!(err.retryable());
        assert_eq!(w.aws.error_log(ERRORS)[0].error_type, "GatewayUnreachable");
        w.kbank
            .fail_with(Some(GatewayError::ServerError { status: 502 }));
        assert!(p.handle(card_event("chrg_1"), "req").await.is_err());
        w.kbank.fail_with(None);
        // Unknown charge: KBank answers 404; not retried, alerted.
        assert_eq!(outcome(&p, card_event("chrg_unknown")).await, "rejected");
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.error_type == "GatewayRefused"));
        // The retry after the outage applies the payment.
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
    }

    #[tokio::test]
    async fn ten_runs_at_once_update_the_order_once() {
        // Given one paid charge and ten concurrent process-paid runs for it
        let w = World::new();
        let p = Arc::new(w.process(ProcessPaidKind::Card));
        let runs: Vec<_> = (0..12)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.handle(card_event("chrg_1"), &format!("r{i}")).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in runs {
            outcomes.push(
                r.await.unwrap().unwrap()["outcome"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        // Then exactly one applied it, the rest saw it paid
        assert_eq!(
            outcomes.iter().filter(|o| *o == "paid").count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| *o == "already_paid").count(),
            11,
            "{outcomes:?}"
        );
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(w.notices(), 1);
    }

    #[tokio::test]
    async fn a_winner_that_died_before_the_order_update_is_taken_over_after_the_lease() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        // The ledger write wins, then DynamoDB fails before the order update.
        let claim = PaidClaim {
            order_id: ORDER.into(),
            payment_type: PaymentType::Card,
            payment_id: "chrg_1".into(),
            charge_id: Some("chrg_1".into()),
            amount: Some(Decimal::new(233900, 2)),
        };
        let now = w.clock.now();
        assert!(w.aws.claim_paid(LEDGER, &claim, now, now).await.unwrap());
        // Within the lease another run does not touch the order.
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
        assert_eq!(w.aws.order_updates(), 0);
        // After it, the retry of that payment finishes the job.
        w.clock.advance(chrono::Duration::seconds(61));
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        assert_eq!(w.aws.order_updates(), 1);
        assert!(w.ledger().unwrap().effects_done);
        // A different payment never takes over someone else's claim.
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
    }

    #[tokio::test]
    async fn a_store_outage_is_retried_not_lost() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        w.aws.fail_store(true);
        assert!(p
            .handle(card_event("chrg_1"), "r")
            .await
            .unwrap_err()
            .retryable());
        w.aws.fail_store(false);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
    }

    #[tokio::test]
    async fn a_second_confirmed_payment_is_already_paid_and_alerted_for_a_refund() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        // The customer paid again with another card, and KBank confirms that charge too.
        w.kbank
            .set_charge("chrg_2", "2339.00", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_2")).await, "already_paid");
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, "SecondPayment");
        assert!(
            errors[0].error.contains("already paid by chrg_1"),
            "{}",
            errors[0].error
        );
        assert_eq!(w.aws.order_updates(), 1);
        assert_eq!(w.order()["paymentId"], Attr::S("chrg_1".into()));
        // A second charge that never went through is not a second payment.
        w.kbank
            .set_charge("chrg_3", "2339.00", "success", "Pre-Authorized");
        assert_eq!(outcome(&p, card_event("chrg_3")).await, "pending");
        assert_eq!(w.aws.error_log(ERRORS).len(), 1);
    }
}
