//! Process-paid (SPEC 4.4): applies a payment to an order exactly once.
//!
//! Road: event -> [`ProcessPaidRequest`] -> is it paid? (card and QR ask KBank: state, currency,
//! `reference_order`; wallet, bank app and Amex carry `success`) -> the order check (exists, not
//! paid by another payment, total matches within 0.01) -> one conditional write on the
//! paid-order ledger -> the winner alone updates the order and sends the paid notice ->
//! [`Outcome`].
//!
//! Ledger rules (`payment3-paid-order-<branch>`, hash `orderId`, `status`):
//! - `PENDING` or no entry -> `PAID` | `FAILED`; never out of `PAID`.
//! - `FAILED` -> `PAID` is allowed: a customer whose first payment failed may pay again, and that
//!   money must reach the order. `FAILED` is a record, not a verdict.
//! - The `PAID` write also claims the side effects under a token unique to the run
//!   (`claimToken`, `effectsDone: false`, `effectsClaimedAt` to the millisecond). A run that
//!   finds its own token after a failed condition (the SDK retried a write that had succeeded)
//!   goes on with the effects. A claim of another run, not finished, is never `already_paid`:
//!   the run waits a moment for it, then fails for a retry ([`CallbackError::InProgress`]); after
//!   [`EFFECTS_LEASE`] a retry of the same payment takes the claim over.
//! - The effects are fenced: the order update is one conditional write that never goes over a
//!   `PAID` order, and only the run whose token still holds the claim finishes it and sends the
//!   paid notice, so a run taken over cannot send a second one.
//! - The order table counts as well as the ledger (orders paid by the Python stack have no
//!   ledger entry): an order `PAID` by another payment is never written over.
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
use crate::domain::charge::{Charge, ChargeId, ChargeState, DEFAULT_CURRENCY};
use crate::domain::clock::isoformat;
use crate::domain::error::ValidationError;
use crate::domain::item::{Attr, DecodeError, Item, ItemReader};
use crate::domain::ledger::{
    ClaimResult, OrderMark, OrderPaidUpdate, PaidClaim, PaidOrderState, PaidOrderStatus,
    PaymentType,
};
use crate::domain::money::{decimal_from_raw, decimal_from_value, differs, parse_decimal};
use crate::flows::error::CallbackError;
use crate::flows::incident::{Incident, IncidentReporter};
use crate::flows::settings::{ProcessPaidKind, ProcessPaidSettings, Settings};
use crate::ports::error::GatewayError;
use crate::ports::secret_cache::SecretCache;
use crate::ports::ChargeInquiry;
use crate::ports::{CardPorts, Mail, Ports};

/// How long a winner's claim on the side effects holds before a retry may take them over.
pub const EFFECTS_LEASE: Duration = Duration::from_secs(60);

/// How long a run waits for another run's unfinished claim before failing for a retry. The
/// winner's effects take well under a second when AWS is well; 2 s was too short when many runs
/// race (twelve at once, or notify beside delayed notify on a cold container): the losers'
/// polling slowed the winner's own writes, every loser failed with `ClaimInProgress` and notify
/// answered 500 while the order was being paid. 10 s fits inside notify's 25 s synchronous wait
/// and process-paid's 200 s timeout.
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// The first pause between two looks at an unfinished claim; it doubles up to [`CLAIM_POLL_MAX`],
/// so a loser reads the ledger about 15 times in [`CLAIM_WAIT`], not 100.
const CLAIM_POLL_FIRST: Duration = Duration::from_millis(100);
const CLAIM_POLL_MAX: Duration = Duration::from_secs(1);

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
        // The function decides the family (card/QR, wallet/bank app, Amex); within it the type
        // comes from our own dispatcher (the bank-app callback says `bankapp`), never from a
        // gateway's body, which the dispatcher overwrites.
        let named = text_of(&body, &["paymentType", "payment_type"], "paymentType")?;
        let payment_type = match named.as_deref().map(PaymentType::parse) {
            None => PaymentType::default_for(kind),
            Some(Some(t)) if PaymentType::default_for(kind).same_family(t) => t,
            Some(_) => {
                let t = named.unwrap_or_default();
                return Err(ValidationError::new(
                    "paymentType",
                    format!(
                        "paymentType must be {} for this function, got {:?}",
                        PaymentType::default_for(kind).family_names(),
                        t.chars().take(40).collect::<String>()
                    ),
                ));
            }
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
    /// `data.currency` (or `currency`), when the order names one.
    pub currency: Option<String>,
    /// `paymentStatus` as the shop (or the Python stack) left it.
    pub payment_status: Option<String>,
    /// `paymentId` of the payment that paid it.
    pub payment_id: Option<String>,
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
        let text_attr = |a: Option<&Attr>| match a {
            Some(Attr::S(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Some(Attr::N(n)) => Some(n.clone()),
            _ => None,
        };
        let data_currency = match item.get("data") {
            Some(Attr::M(data)) => text_attr(data.get("currency")),
            Some(Attr::S(text)) => serde_json::from_str::<Value>(text).ok().and_then(|d| {
                d.get("currency")
                    .and_then(Value::as_str)
                    .filter(|c| !c.trim().is_empty())
                    .map(|c| c.trim().to_string())
            }),
            _ => None,
        };
        Ok(Order {
            order_id,
            grand_total,
            currency: data_currency.or_else(|| text_attr(item.get("currency"))),
            payment_status: text_attr(item.get("paymentStatus")),
            payment_id: text_attr(item.get("paymentId")),
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
    /// Not applied: bad event, no such order, amount or currency mismatch, gateway refused;
    /// alerted.
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

/// Asks KBank about a charge; a refused key (401/403) forces one read of the secret (it may have
/// been rotated) and one more inquiry with the new key.
pub async fn inquire(
    kbank: &dyn ChargeInquiry,
    secret: &SecretCache,
    charge_id: &ChargeId,
) -> Result<Charge, CallbackError> {
    let key = secret.get().await?;
    let charge = match kbank.charge(charge_id, &key).await {
        Err(e) if e.key_refused() => match secret.refresh_after_refusal(&key).await? {
            Some(new_key) => kbank.charge(charge_id, &new_key).await?,
            None => return Err(e.into()),
        },
        other => other?,
    };
    if charge.id != charge_id.as_str() {
        return Err(GatewayError::Unexpected(format!(
            "asked for charge {charge_id}, got {}",
            charge.id.chars().take(64).collect::<String>()
        ))
        .into());
    }
    Ok(charge)
}

/// A second payment for an order paid by `first`: recorded and alerted for a refund.
fn second_payment(claim: &PaidClaim, first: Option<&str>, amount: Decimal) -> CallbackError {
    CallbackError::Rejected {
        kind: "SecondPayment",
        message: format!(
            "order {} is already paid by {}; payment {} of {amount} was also confirmed: refund it",
            claim.order_id,
            first.unwrap_or("an unrecorded payment"),
            claim.payment_id
        ),
    }
}

/// The charge must be in the order's currency (THB when it names none) and, when KBank keeps
/// the merchant's order reference, name this order.
fn check_charge_fits(charge: &Charge, order: &Order) -> Result<(), CallbackError> {
    let expected = order.currency.as_deref().unwrap_or(DEFAULT_CURRENCY);
    if !charge.in_currency(expected) {
        return Err(CallbackError::Rejected {
            kind: "CurrencyMismatch",
            message: format!(
                "order {}: charge {} is in {} but the order is in {expected}; the payment was not applied",
                order.order_id,
                charge.id,
                charge.currency.chars().take(16).collect::<String>()
            ),
        });
    }
    if let Some(reference) = &charge.reference_order {
        if reference != &order.order_id {
            return Err(CallbackError::Rejected {
                kind: "ReferenceMismatch",
                message: format!(
                    "charge {} names order {} but was applied to order {}; the payment was not applied",
                    charge.id,
                    reference.chars().take(64).collect::<String>(),
                    order.order_id
                ),
            });
        }
    }
    Ok(())
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
            token: uuid::Uuid::new_v4().to_string(),
        };

        // One round for both reads (issue 10): the ledger and the order need only the order id.
        // The order is read even when the ledger says done (one wasted read on a repeat, no
        // extra wait); its read failing does not fail a repeat that needs nothing from it.
        let (ledger, order_read) = tokio::join!(
            self.card.ledger.paid_state(table, order_id),
            self.card
                .orders
                .order_item(&self.settings.tables.order, order_id)
        );
        let ledger = ledger?;
        // Already paid and finished: no need to ask the gateway again.
        if let Some(state) = &ledger {
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
        let mut charge = None;
        if request.payment_type.asks_kbank() {
            let charge_id = request.charge_id.as_ref().ok_or_else(|| {
                CallbackError::Internal("card payment without a charge id".into())
            })?;
            let found = self.inquire(charge_id).await?;
            match found.state() {
                ChargeState::Paid => claim.amount = Some(found.amount),
                ChargeState::Pending => {
                    tracing::info!(order_id, charge_id = %charge_id, status = %found.status,
                        transaction_state = %found.transaction_state, "charge not paid yet");
                    self.card
                        .ledger
                        .note_pending(table, &claim, self.ports.clock.now())
                        .await?;
                    return Ok(Outcome::Pending);
                }
                ChargeState::Failed => return self.failed(&claim).await,
            }
            charge = Some(found);
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
        let item = order_read?.ok_or_else(|| match &charge {
                // KBank took the money and there is nothing to pay with it.
                Some(_) => CallbackError::Rejected {
                    kind: "ChargedWithoutOrder",
                    message: format!(
                        "charge {} of {paid_amount} is Authorized but order {order_id} does not exist: refund it or find the order",
                        claim.payment_id
                    ),
                },
                None => CallbackError::Rejected {
                    kind: "OrderNotFound",
                    message: format!(
                        "order {order_id} does not exist; the payment was not applied"
                    ),
                },
            })?;
        let order = Order::from_item(&item).map_err(|e| CallbackError::Rejected {
            kind: "OrderUnreadable",
            message: format!("order {order_id} cannot be read: {e}"),
        })?;
        if let Some(charge) = &charge {
            check_charge_fits(charge, &order)?;
        }
        // Paid before by another payment: the Python stack kept no ledger, so the order says so.
        if order.payment_status.as_deref() == Some(PaidOrderStatus::Paid.as_str()) {
            match order.payment_id.as_deref() {
                Some(p) if p == claim.payment_id => {
                    if ledger.is_none() {
                        // This very payment, applied by the Python stack.
                        return Ok(Outcome::AlreadyPaid);
                    }
                }
                first => return Err(second_payment(&claim, first, paid_amount)),
            }
        }
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
        match self
            .card
            .ledger
            .claim_paid(table, &claim, now, stale_before)
            .await?
        {
            ClaimResult::Won => {}
            ClaimResult::Held(Some(state))
                if state.claim_token.as_deref() == Some(claim.token.as_str()) =>
            {
                tracing::info!(
                    order_id,
                    "the ledger holds this run's own claim (the write was retried after it succeeded)"
                );
            }
            ClaimResult::Held(state) => return self.held(state, &claim, paid_amount).await,
        }
        self.effects(&claim, paid_amount, now).await
    }

    async fn inquire(&self, charge_id: &ChargeId) -> Result<Charge, CallbackError> {
        inquire(self.kbank.as_ref(), &self.secret, charge_id).await
    }

    /// The claim write lost: the entry as it stood says why.
    async fn held(
        &self,
        state: Option<PaidOrderState>,
        claim: &PaidClaim,
        paid_amount: Decimal,
    ) -> Result<Outcome, CallbackError> {
        let table = &self.settings.tables.paid_order;
        let mut state = state;
        let waited_until = tokio::time::Instant::now() + CLAIM_WAIT;
        let mut pause = CLAIM_POLL_FIRST;
        loop {
            match &state {
                Some(s) if s.status == PaidOrderStatus::Paid => {
                    if s.payment_id.as_deref() != Some(claim.payment_id.as_str()) {
                        return Err(second_payment(claim, s.payment_id.as_deref(), paid_amount));
                    }
                    if s.effects_done {
                        return Ok(Outcome::AlreadyPaid);
                    }
                }
                // Not PAID, yet the write lost: it changed in between; a retry sorts it out.
                _ => {
                    return Err(CallbackError::InProgress(format!(
                        "order {}: the ledger entry changed while claiming it",
                        claim.order_id
                    )))
                }
            }
            // Another run of this payment holds the claim, unfinished: wait for it a moment.
            if tokio::time::Instant::now() >= waited_until {
                return Err(CallbackError::InProgress(format!(
                    "order {}: payment {} is being applied by another run that has not finished; retry",
                    claim.order_id, claim.payment_id
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(CLAIM_POLL_MAX);
            state = self.card.ledger.paid_state(table, &claim.order_id).await?;
        }
    }

    /// The winner's side effects: the order, then the claim finished (fenced by the token), then
    /// the paid notice.
    async fn effects(
        &self,
        claim: &PaidClaim,
        paid_amount: Decimal,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Outcome, CallbackError> {
        let order_id = claim.order_id.as_str();
        let update = OrderPaidUpdate {
            order_id: order_id.to_string(),
            payment_status: PaidOrderStatus::Paid.as_str().to_string(),
            paid_at: isoformat(now),
            payment_type: claim.payment_type.as_str().to_string(),
            payment_id: claim.payment_id.clone(),
        };
        // A failure here leaves the claim unfinished: the retry takes it over after the lease.
        let mark = self
            .card
            .orders
            .mark_order_paid(&self.settings.tables.order, &update)
            .await?;
        let second = match mark {
            OrderMark::Marked => None,
            // Done by this payment before (a run that died before finishing): finish it.
            OrderMark::AlreadyPaid { payment_id: Some(p) } if p == claim.payment_id => None,
            OrderMark::AlreadyPaid { payment_id } => {
                Some(second_payment(claim, payment_id.as_deref(), paid_amount))
            }
            OrderMark::Missing => {
                return Err(CallbackError::Rejected {
                    kind: "OrderNotFound",
                    message: format!(
                        "order {order_id} disappeared before it could be marked paid; payment {} was not applied",
                        claim.payment_id
                    ),
                })
            }
        };
        let finished = self
            .card
            .ledger
            .finish_paid(
                &self.settings.tables.paid_order,
                order_id,
                &claim.token,
                self.ports.clock.now(),
            )
            .await?;
        if let Some(second) = second {
            return Err(second);
        }
        if !finished {
            // Taken over after the lease: the run that holds the claim sends the notice.
            return Err(CallbackError::InProgress(format!(
                "order {order_id}: the claim of payment {} was taken over by another run",
                claim.payment_id
            )));
        }
        self.send_paid_notice(claim, paid_amount, &update.paid_at)
            .await;
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
    use crate::domain::ledger::ClaimResult;
    use crate::domain::ledger::PaidOrderState;
    use crate::ports::error::GatewayError;
    use crate::ports::error::StoreError;
    use crate::ports::memory::{MemoryAws, MemoryKBank};
    use crate::ports::{OrderStore, PaidOrderLedger};
    use chrono::{TimeZone, Utc};
    use std::sync::atomic::{AtomicUsize, Ordering};

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
                .filter(|m| m.subject.ends_with(" paid"))
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

        // An Authorized charge for an order that does not exist: money taken, nothing to pay.
        let other = json!({"orderId": "no-such-order", "chargeId": "chrg_1"});
        assert_eq!(outcome(&p, other).await, "rejected");
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.error_type == "ChargedWithoutOrder"));
        let wallet =
            json!({"orderId": "no-such-order", "paymentId": "p", "success": true, "amount": 1});
        assert_eq!(
            outcome(&w.process(ProcessPaidKind::Wallet), wallet).await,
            "rejected"
        );
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
                "paymentType must be card or qr for this function",
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

    fn claim_of(payment: &str, token: &str) -> PaidClaim {
        PaidClaim {
            order_id: ORDER.into(),
            payment_type: PaymentType::Card,
            payment_id: payment.into(),
            charge_id: Some(payment.into()),
            amount: Some(Decimal::new(233900, 2)),
            token: token.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_winner_that_died_before_the_order_update_is_taken_over_after_the_lease() {
        // Given a run that won the claim at 09:00:00.100 and died before the order update
        let w = World::new();
        w.clock.advance(chrono::Duration::milliseconds(100));
        let p = w.process(ProcessPaidKind::Card);
        let now = w.clock.now();
        let won = w
            .aws
            .claim_paid(LEDGER, &claim_of("chrg_1", "dead-run"), now, now)
            .await
            .unwrap();
        assert_eq!(won, ClaimResult::Won);
        // When another run of that payment comes within the lease, it is not already_paid: it
        // fails for a retry (Lambda retries it), and the order is untouched
        let err = p.handle(card_event("chrg_1"), "r1").await.unwrap_err();
        assert!(err.retryable(), "{err}");
        assert_eq!(err.kind(), "ClaimInProgress");
        assert_eq!(w.aws.order_updates(), 0);
        // And Lambda's retry 60.6 s after the claim (60.5 s into a 60 s lease; whole seconds
        // would make it 60 - 60 = still inside) takes the claim over and pays the order
        w.clock.advance(chrono::Duration::milliseconds(60_600));
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        assert_eq!(w.aws.order_updates(), 1);
        assert!(w.ledger().unwrap().effects_done);
        assert_eq!(w.notices(), 1);
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

    /// DynamoDB as the SDK sees it when a response is lost: the first UpdateItem of a claim is
    /// applied, its answer never arrives, and the SDK's retry of the same write is what the
    /// caller gets (a failed condition, since the first one went through).
    struct RetriedAfterSuccess {
        inner: Arc<MemoryAws>,
        claims: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl PaidOrderLedger for RetriedAfterSuccess {
        async fn paid_state(
            &self,
            table: &str,
            order_id: &str,
        ) -> Result<Option<PaidOrderState>, StoreError> {
            self.inner.paid_state(table, order_id).await
        }
        async fn claim_paid(
            &self,
            table: &str,
            claim: &PaidClaim,
            now: chrono::DateTime<Utc>,
            stale_before: chrono::DateTime<Utc>,
        ) -> Result<ClaimResult, StoreError> {
            self.claims.fetch_add(1, Ordering::SeqCst);
            let applied = self
                .inner
                .claim_paid(table, claim, now, stale_before)
                .await?;
            assert_eq!(applied, ClaimResult::Won, "the lost write went through");
            self.inner.claim_paid(table, claim, now, stale_before).await
        }
        async fn finish_paid(
            &self,
            table: &str,
            order_id: &str,
            token: &str,
            now: chrono::DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            self.inner.finish_paid(table, order_id, token, now).await
        }
        async fn mark_failed(
            &self,
            table: &str,
            claim: &PaidClaim,
            now: chrono::DateTime<Utc>,
        ) -> Result<bool, StoreError> {
            self.inner.mark_failed(table, claim, now).await
        }
        async fn note_pending(
            &self,
            table: &str,
            claim: &PaidClaim,
            now: chrono::DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.inner.note_pending(table, claim, now).await
        }
    }

    #[tokio::test]
    async fn a_run_whose_claim_write_was_retried_by_the_sdk_finishes_its_own_claim() {
        // Given a ledger write whose success answer is lost and retried by the SDK
        let w = World::new();
        let ledger = Arc::new(RetriedAfterSuccess {
            inner: w.aws.clone(),
            claims: AtomicUsize::new(0),
        });
        let mut card = w.aws.card_ports();
        card.ledger = ledger.clone();
        let p = ProcessPaid::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(ProcessPaidSettings::for_kind(ProcessPaidKind::Card, "dev")),
            w.aws.ports(w.clock.clone()),
            card,
            w.kbank.clone(),
        );
        // When process-paid runs (before: the retry's failed condition read as already_paid,
        // the order stayed unpaid, nothing logged)
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        // Then the run knew its own claim and did the effects, once
        assert_eq!(ledger.claims.load(Ordering::SeqCst), 1);
        assert_eq!(w.order()["paymentStatus"], Attr::S("PAID".into()));
        assert_eq!(w.aws.order_updates(), 1);
        assert!(w.ledger().unwrap().effects_done);
        assert_eq!(w.notices(), 1);
        assert!(w.aws.error_log(ERRORS).is_empty());
    }

    #[tokio::test]
    async fn an_order_paid_by_the_python_stack_is_never_paid_again() {
        // Given an order the Python stack marked PAID by wallet payment pay_py (no ledger entry)
        let w = World::new();
        let mut order = w.order();
        order.insert("paymentStatus".into(), Attr::S("PAID".into()));
        order.insert("paymentId".into(), Attr::S("pay_py".into()));
        order.insert("paymentType".into(), Attr::S("wallet".into()));
        order.insert("paidAt".into(), Attr::S("2026-11-20T10:00:00".into()));
        w.aws.put_item(ORDERS, ORDER, order.clone());
        // When a different payment, confirmed by KBank, arrives
        let p = w.process(ProcessPaidKind::Card);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
        // Then the order is as the Python stack left it, and a refund is asked for
        assert_eq!(w.order(), order);
        assert_eq!(w.aws.order_updates(), 0);
        assert_eq!(w.notices(), 0);
        let errors = w.aws.error_log(ERRORS);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].error_type, "SecondPayment");
        assert!(
            errors[0].error.contains("already paid by pay_py"),
            "{}",
            errors[0].error
        );
        // And the same payment the Python stack applied is already_paid, with no alert
        let wallet = w.process(ProcessPaidKind::Wallet);
        let again =
            json!({"orderId": ORDER, "paymentId": "pay_py", "success": true, "amount": 2339});
        assert_eq!(outcome(&wallet, again).await, "already_paid");
        assert_eq!(w.aws.error_log(ERRORS).len(), 1);
        assert_eq!(w.order(), order);
    }

    #[tokio::test]
    async fn an_order_paid_between_the_read_and_the_write_is_not_overwritten() {
        // Given an order read unpaid, then paid by the Python stack before our order update
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        let mut order = w.order();
        order.insert("paymentStatus".into(), Attr::S("PAID".into()));
        order.insert("paymentId".into(), Attr::S("pay_py".into()));
        let update = OrderPaidUpdate {
            order_id: ORDER.into(),
            payment_status: "PAID".into(),
            paid_at: "t".into(),
            payment_type: "card".into(),
            payment_id: "chrg_1".into(),
        };
        w.aws.put_item(ORDERS, ORDER, order.clone());
        // The order update is one conditional write: it reports who paid, and writes nothing.
        assert_eq!(
            w.aws.mark_order_paid(ORDERS, &update).await.unwrap(),
            OrderMark::AlreadyPaid {
                payment_id: Some("pay_py".into())
            }
        );
        assert_eq!(w.order(), order);
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "already_paid");
        assert_eq!(w.order(), order);
    }

    #[tokio::test]
    async fn a_charge_in_another_currency_or_for_another_order_is_not_applied() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        // Given a JPY 2339 charge, Authorized, for a THB 2339 order
        let mut jpy = w.kbank.charge_of("chrg_1").unwrap();
        jpy.currency = "JPY".into();
        w.kbank.put_charge(jpy);
        // Then it is rejected and alerted (before: outcome paid)
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "rejected");
        assert_eq!(w.aws.error_log(ERRORS)[0].error_type, "CurrencyMismatch");
        assert_eq!(w.aws.order_updates(), 0);
        assert!(w.ledger().is_none());
        // A charge whose reference_order names another order is rejected too
        let mut other = w.kbank.charge_of("chrg_1").unwrap();
        other.currency = "thb".into();
        other.reference_order = Some("482500009999".into());
        w.kbank.put_charge(other.clone());
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "rejected");
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.error_type == "ReferenceMismatch"));
        // An order in USD takes a USD charge naming it
        other.currency = "USD".into();
        other.reference_order = Some(ORDER.into());
        w.kbank.put_charge(other);
        w.order_with_data(Attr::M(
            [
                ("grandTotal".to_string(), Attr::N("2339.00".into())),
                ("currency".to_string(), Attr::S("USD".into())),
            ]
            .into(),
        ));
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
    }

    #[tokio::test]
    async fn a_rotated_key_is_read_again_on_a_401_and_a_rate_limit_is_retried() {
        let w = World::new();
        let p = w.process(ProcessPaidKind::Card);
        // Given a key cached by an earlier run, then rotated at KBank and in Secrets Manager
        assert_eq!(outcome(&p, card_event("chrg_1")).await, "paid");
        w.kbank.set_key("skey_test_rotated");
        w.aws
            .set_secret("kbank-dev", r#"{"secretKey": "skey_test_rotated"}"#);
        w.kbank
            .set_charge("chrg_2", "2339.00", "success", "Authorized");
        let other = "482500007440";
        w.aws.put_item(
            ORDERS,
            other,
            [
                ("orderId".to_string(), Attr::S(other.into())),
                (
                    "data".to_string(),
                    Attr::M([("grandTotal".to_string(), Attr::N("2339".into()))].into()),
                ),
            ]
            .into(),
        );
        let event = json!({"orderId": other, "chargeId": "chrg_2"});
        // When the next inquiry is refused with 401 (before: rejected until the refresh interval)
        w.clock.advance(chrono::Duration::seconds(10));
        assert_eq!(outcome(&p, event.clone()).await, "paid");
        assert_eq!(w.aws.secret_reads(), 2);
        // And a 429 (or 408, 425, an unparseable 2xx) fails for a retry instead of rejected
        for failure in [
            GatewayError::Throttled { status: 429 },
            GatewayError::Throttled { status: 408 },
            GatewayError::Unexpected("not a JSON object: <html>".into()),
        ] {
            w.kbank.fail_with(Some(failure));
            let err = p.handle(card_event("chrg_3"), "r").await.unwrap_err();
            assert!(err.retryable(), "{err}");
        }
        // A key KBank still refuses after the forced read is a refusal, alerted
        w.kbank.fail_with(None);
        w.kbank.set_key("skey_test_other");
        w.clock.advance(chrono::Duration::seconds(10));
        w.kbank
            .set_charge("chrg_3", "2339.00", "success", "Authorized");
        assert_eq!(outcome(&p, card_event("chrg_3")).await, "rejected");
        assert!(w
            .aws
            .error_log(ERRORS)
            .iter()
            .any(|e| e.error_type == "GatewayRefused"));
    }

    #[tokio::test]
    async fn bank_app_payments_stay_bankapp_and_a_failed_card_leaves_no_charge_id() {
        let w = World::new();
        // Given a card charge that failed for the order
        w.kbank.set_charge("chrg_1", "2339.00", "fail", "Declined");
        assert_eq!(
            outcome(&w.process(ProcessPaidKind::Card), card_event("chrg_1")).await,
            "failed"
        );
        assert_eq!(
            w.aws.item(LEDGER, ORDER).unwrap()["chargeId"],
            Attr::S("chrg_1".into())
        );
        // When the customer pays with the bank app (dispatched with paymentType bankapp)
        let wallet = w.process(ProcessPaidKind::Wallet);
        let bank = json!({"orderId": ORDER, "paymentType": "bankapp", "paymentId": "bank_1", "success": true, "amount": 2339});
        assert_eq!(outcome(&wallet, bank).await, "paid");
        // Then the order and the ledger say bankapp, and the failed card's chargeId is gone
        assert_eq!(w.order()["paymentType"], Attr::S("bankapp".into()));
        let entry = w.aws.item(LEDGER, ORDER).unwrap();
        assert_eq!(entry["paymentType"], Attr::S("bankapp".into()));
        assert!(!entry.contains_key("chargeId"), "{entry:?}");
        // And a body cannot make the wallet function pay as a card, nor the card one as wallet
        let forged = json!({"orderId": ORDER, "paymentType": "card", "chargeId": "chrg_9", "paymentId": "x", "success": true, "amount": 2339});
        assert_eq!(outcome(&wallet, forged).await, "rejected");
        let wallet_bad = json!({"orderId": ORDER, "paymentId": "p"});
        let r = wallet.handle(wallet_bad, "r").await.unwrap();
        assert!(r["error"].as_str().unwrap().contains("success is required"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_ledger_and_the_order_are_read_in_one_round() {
        // Given ledger and order calls of 10 ms each
        let w = World::new();
        let timed = crate::flows::timed::Timed::new(w.aws.clone(), w.aws.clone());
        let mut card = w.aws.card_ports();
        card.orders = timed.clone();
        card.ledger = timed.clone();
        let wallet = ProcessPaid::new(
            Arc::new(Settings::for_branch("dev")),
            Arc::new(ProcessPaidSettings::for_kind(
                ProcessPaidKind::Wallet,
                "dev",
            )),
            w.aws.ports(w.clock.clone()),
            card,
            w.kbank.clone(),
        );
        let paid =
            json!({"orderId": ORDER, "paymentId": "pay_1", "success": true, "amount": 2339.00});
        // When a wallet payment is applied
        let started = tokio::time::Instant::now();
        assert_eq!(outcome(&wallet, paid.clone()).await, "paid");
        // Then {ledger, order} are one round, and the fenced effects follow one by one: claim,
        // order update, finish (before: 5 rounds, the order read after the ledger's)
        assert_eq!(
            started.elapsed(),
            4 * crate::flows::timed::DELAY,
            "{:?}",
            timed.calls()
        );
        assert_eq!(timed.max_in_flight(), 2);
        assert_eq!(
            timed.calls(),
            [
                "ledger.claim",
                "ledger.finish",
                "ledger.get",
                "order.get",
                "order.update"
            ]
        );
        assert_eq!(w.notices(), 1);
        // And a repeat is one round (the order read beside the ledger's, unused)
        let started = tokio::time::Instant::now();
        assert_eq!(outcome(&wallet, paid).await, "already_paid");
        assert_eq!(started.elapsed(), crate::flows::timed::DELAY);
    }
}
