//! `payment3 trace <orderId>`: everything the branch knows about an order, as one timeline
//! (oldest first) and a one-line verdict. Reads only: key lookups and paged queries.
//!
//! How the order's card charges are found without a scan (the card payment record is keyed by
//! `token`, KBank's notify names only the charge): the charge ids the system itself wrote next to
//! the order: the ledger's `chargeId`, the order's `paymentId` when its `paymentType` is card or
//! QR, the `chargeId` of the order's error-log entries, and any `--charge` the operator adds (from
//! the shop or KBank's portal). Each charge is then looked up by key: its card payment record
//! (`chargeId-index`), its notify records (hash `chargeId`) and its notify deliveries (the inbox
//! files them under the charge id).

use std::collections::BTreeSet;

use callback_core::domain::card::NotifyRecord;
use callback_core::domain::clock::parse_isoformat;
use callback_core::domain::error_log::ErrorLogEntry;
use callback_core::domain::ledger::{PaidOrderState, PaidOrderStatus};
use callback_core::domain::record::CallbackRecord;
use callback_core::flows::paid::Order;
use callback_core::{Attr, InboxOutcome, Item};
use serde::Serialize;

use crate::context::Context;
use crate::error::CliError;
use crate::functions::NOTIFY;
use crate::read::{ErrorLogLookup, StoredDelivery};

/// The whole answer, as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub order_id: String,
    pub branch: String,
    pub order: Option<OrderFacts>,
    pub ledger: Option<LedgerFacts>,
    pub charges: Vec<ChargeFacts>,
    /// False when the error log has no `orderId-index` and was not searched (never a scan).
    pub error_log_searched: bool,
    pub timeline: Vec<Event>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OrderFacts {
    pub grand_total: Option<String>,
    pub payment_status: Option<String>,
    pub paid_at: Option<String>,
    pub payment_type: Option<String>,
    pub payment_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LedgerFacts {
    pub status: String,
    pub payment_type: Option<String>,
    pub payment_id: Option<String>,
    pub charge_id: Option<String>,
    pub amount: Option<String>,
    pub paid_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// The winner's side effects (order update, paid notice) are done.
    pub effects_done: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChargeFacts {
    pub charge_id: String,
    /// Where the charge id was found: `ledger`, `order`, `error log`, `--charge`.
    pub found_in: Vec<String>,
    pub card_payment: Option<CardFacts>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CardFacts {
    pub token: String,
    pub order_id: Option<String>,
    pub checksum_verified: Option<bool>,
}

/// One line of the timeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// ISO-8601 UTC, as the tables store it.
    pub at: String,
    /// `inbox`, `callback record`, `notify record`, `ledger`, `order`, `error log`.
    pub source: String,
    pub summary: String,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Paid,
    Pending,
    Failed,
    NeverReached,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub text: String,
}

/// How a delivery's signature stands (SPEC 4.5; the KBank checksum for notify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    Verified,
    Unverified,
    /// The entry carries no `signatureVerified` (written before signatures, or under no policy).
    NotRecorded,
}

impl Signature {
    pub fn of(d: &StoredDelivery) -> Self {
        match d.entry.signature_verified {
            Some(true) => Signature::Verified,
            Some(false) => Signature::Unverified,
            None => Signature::NotRecorded,
        }
    }

    fn text(self, function: &str) -> &'static str {
        match (self, function == NOTIFY) {
            (Signature::Verified, false) => "signature verified",
            (Signature::Unverified, false) => "signature NOT verified",
            (Signature::NotRecorded, false) => "signature not recorded",
            (Signature::Verified, true) => "checksum verified",
            (Signature::Unverified, true) => "checksum NOT verified",
            (Signature::NotRecorded, true) => "checksum: see the notify record",
        }
    }
}

/// The replay marks of an inbox entry (`replayOf`, `replayOperator`).
pub fn replay_of(d: &StoredDelivery) -> Option<(String, Option<String>)> {
    let of = d.entry.replay_of.clone()?;
    Some((of, d.entry.replay_operator.clone()))
}

/// Everything read for one order, before it is put in order.
#[derive(Clone, Debug, Default)]
pub struct Gathered {
    pub order: Option<OrderFacts>,
    pub ledger: Option<LedgerFacts>,
    pub records: Vec<(&'static str, CallbackRecord)>,
    pub deliveries: Vec<StoredDelivery>,
    pub notifies: Vec<NotifyRecord>,
    pub charges: Vec<ChargeFacts>,
    pub errors: Option<Vec<ErrorLogEntry>>,
}

impl Gathered {
    pub fn is_empty(&self) -> bool {
        self.order.is_none()
            && self.ledger.is_none()
            && self.records.is_empty()
            && self.deliveries.is_empty()
            && self.notifies.is_empty()
            && self.errors.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Reads everything about an order.
pub async fn gather(
    ctx: &Context,
    order_id: &str,
    extra_charges: &[String],
) -> Result<Gathered, CliError> {
    let order_item = ctx.order_item(order_id).await?;
    let ledger_item = ctx.ledger_item(order_id).await?;
    let order = order_item.as_ref().map(order_facts);
    let ledger = ledger_item.as_ref().and_then(ledger_facts);
    let records = ctx.callback_records(order_id).await?;
    let mut deliveries = ctx.deliveries(order_id).await?;
    let errors = match ctx.errors_of_order(order_id).await? {
        ErrorLogLookup::Found(e) => Some(e),
        ErrorLogLookup::NoIndex => None,
    };

    // The order's charges, from what the system wrote beside the order (module doc).
    let mut found: Vec<(String, String)> = Vec::new();
    if let Some(c) = ledger.as_ref().and_then(|l| l.charge_id.clone()) {
        found.push((c, "ledger".into()));
    }
    if let Some(o) = &order {
        if matches!(o.payment_type.as_deref(), Some("card" | "qr")) {
            if let Some(p) = &o.payment_id {
                found.push((p.clone(), "order".into()));
            }
        }
    }
    for e in errors.iter().flatten() {
        if let Some(c) = &e.charge_id {
            found.push((c.clone(), "error log".into()));
        }
    }
    for c in extra_charges {
        found.push((c.clone(), "--charge".into()));
    }
    let ids: BTreeSet<&String> = found.iter().map(|(c, _)| c).collect();
    let mut charges = Vec::new();
    let mut notifies = Vec::new();
    for id in ids {
        let card = ctx.card_payment(id).await?.map(|c| CardFacts {
            token: c.token,
            order_id: c.order_id,
            checksum_verified: c.checksum_verified,
        });
        notifies.extend(ctx.notify_records(id).await?);
        deliveries.extend(ctx.deliveries(id).await?);
        let mut found_in: Vec<String> = found
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, w)| w.clone())
            .collect();
        found_in.dedup();
        charges.push(ChargeFacts {
            charge_id: id.clone(),
            found_in,
            card_payment: card,
        });
    }
    Ok(Gathered {
        order,
        ledger,
        records,
        deliveries,
        notifies,
        charges,
        errors,
    })
}

fn text_attr(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(Attr::S(s)) if !s.is_empty() => Some(s.clone()),
        Some(Attr::N(n)) => Some(n.clone()),
        _ => None,
    }
}

pub fn order_facts(item: &Item) -> OrderFacts {
    OrderFacts {
        grand_total: Order::from_item(item)
            .ok()
            .and_then(|o| o.grand_total)
            .map(|d| d.to_string()),
        payment_status: text_attr(item, "paymentStatus"),
        paid_at: text_attr(item, "paidAt"),
        payment_type: text_attr(item, "paymentType"),
        payment_id: text_attr(item, "paymentId"),
    }
}

pub fn ledger_facts(item: &Item) -> Option<LedgerFacts> {
    let state = PaidOrderState::from_item(item).ok()?;
    Some(LedgerFacts {
        status: state.status.as_str().to_string(),
        payment_type: text_attr(item, "paymentType"),
        payment_id: state.payment_id,
        charge_id: text_attr(item, "chargeId"),
        amount: text_attr(item, "amount"),
        paid_at: text_attr(item, "paidAt"),
        created_at: text_attr(item, "created_at"),
        updated_at: text_attr(item, "updated_at"),
        effects_done: state.effects_done,
    })
}

/// Puts what was read in time order and decides the verdict.
pub fn assemble(order_id: &str, branch: &str, g: Gathered) -> Trace {
    let mut timeline = Vec::new();
    let checksum_of = |request_id: &str| {
        g.notifies
            .iter()
            .find(|n| n.request_id == request_id)
            .map(|n| n.checksum_verified)
    };
    for d in &g.deliveries {
        let e = &d.entry;
        let mut summary = format!(
            "{} delivery {}: {}",
            e.function,
            e.request_id,
            e.outcome.name()
        );
        if let Some(status) = e.outcome.status() {
            summary += &format!(" ({status})");
        }
        if let Some(err) = e.outcome.error() {
            summary += &format!(": {err}");
        }
        let signature = match (Signature::of(d), e.function == NOTIFY) {
            (Signature::NotRecorded, true) => match checksum_of(&e.request_id) {
                Some(true) => "checksum verified",
                Some(false) => "checksum NOT verified",
                None => "checksum unknown (no notify record)",
            },
            (s, _) => s.text(&e.function),
        };
        summary += &format!("; {signature}");
        if e.order_id != order_id {
            summary += &format!("; filed under charge {}", e.order_id);
        }
        if let Some((of, by)) = replay_of(d) {
            summary += &format!(
                "; REPLAY of {of}{}",
                by.map(|b| format!(" by {b}")).unwrap_or_default()
            );
        }
        timeline.push(event(&e.received_at, "inbox", summary));
    }
    for (which, r) in &g.records {
        let mut summary = format!(
            "{which} callback record: success={} paymentId={} amount={}",
            r.success,
            r.payment_id,
            r.amount
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or("-".into())
        );
        if let Some(m) = r.message.as_deref().filter(|m| !m.is_empty()) {
            summary += &format!(" message={m:?}");
        }
        if r.updated_at != r.created_at {
            summary += &format!(" (first written {})", r.created_at);
        }
        timeline.push(event(&r.updated_at, "callback record", summary));
    }
    for n in &g.notifies {
        timeline.push(event(
            &n.created_at,
            "notify record",
            format!(
                "{} for charge {}: status={} transaction_state={} amount={} checksum {}{}",
                n.note.as_str(),
                n.charge_id,
                n.status,
                n.transaction_state,
                n.amount.as_deref().unwrap_or("-"),
                if n.checksum_verified { "ok" } else { "BAD" },
                n.checksum_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ));
    }
    if let Some(l) = &g.ledger {
        let what = format!(
            "{} {}{}",
            l.payment_type.as_deref().unwrap_or("?"),
            l.payment_id.as_deref().unwrap_or("?"),
            l.amount
                .as_deref()
                .map(|a| format!(" amount {a}"))
                .unwrap_or_default()
        );
        if let Some(at) = l.created_at.as_deref().filter(|_| l.status == "PENDING") {
            timeline.push(event(at, "ledger", format!("PENDING: {what}")));
        }
        match l.status.as_str() {
            "PAID" => {
                let at = l
                    .paid_at
                    .as_deref()
                    .or(l.updated_at.as_deref())
                    .unwrap_or("");
                let effects = if l.effects_done {
                    ""
                } else {
                    "; side effects NOT finished (order update, paid notice)"
                };
                timeline.push(event(at, "ledger", format!("PAID by {what}{effects}")));
            }
            "FAILED" => timeline.push(event(
                l.updated_at.as_deref().unwrap_or(""),
                "ledger",
                format!("FAILED: {what}"),
            )),
            _ => {}
        }
    }
    if let Some(o) = &g.order {
        if let Some(at) = &o.paid_at {
            timeline.push(event(
                at,
                "order",
                format!(
                    "paymentStatus={} paymentType={} paymentId={}",
                    o.payment_status.as_deref().unwrap_or("-"),
                    o.payment_type.as_deref().unwrap_or("-"),
                    o.payment_id.as_deref().unwrap_or("-")
                ),
            ));
        }
    }
    for e in g.errors.iter().flatten() {
        let charge = e
            .charge_id
            .as_deref()
            .map(|c| format!(" charge {c}"))
            .unwrap_or_default();
        timeline.push(event(
            &e.created_at,
            "error log",
            format!(
                "{} {} ({}){charge}: {}",
                e.function_name, e.error_type, e.status, e.error
            ),
        ));
    }
    timeline.sort_by_key(|a| sort_key(&a.at));
    let verdict = verdict(&g);
    Trace {
        order_id: order_id.to_string(),
        branch: branch.to_string(),
        error_log_searched: g.errors.is_some(),
        order: g.order,
        ledger: g.ledger,
        charges: g.charges,
        timeline,
        verdict,
    }
}

fn event(at: &str, source: &str, summary: String) -> Event {
    Event {
        at: at.to_string(),
        source: source.to_string(),
        summary,
    }
}

/// Timestamps compared as times (the text forms differ in their fraction), unknown ones first.
fn sort_key(at: &str) -> (i64, u32) {
    parse_isoformat(at)
        .map(|t| (t.timestamp(), t.timestamp_subsec_micros()))
        .unwrap_or((i64::MIN, 0))
}

fn latest_error(g: &Gathered) -> Option<&ErrorLogEntry> {
    g.errors
        .iter()
        .flatten()
        .max_by_key(|e| sort_key(&e.created_at))
}

/// The one-line answer, from the strongest evidence down: the ledger, the order, the card
/// charge, the callback records, the deliveries, nothing.
pub fn verdict(g: &Gathered) -> Verdict {
    let v = |kind, text: String| Verdict { kind, text };
    if let Some(l) = &g.ledger {
        let by = format!(
            "{} {}",
            l.payment_type.as_deref().unwrap_or("payment"),
            l.payment_id.as_deref().unwrap_or("?")
        );
        match PaidOrderStatus::parse(&l.status) {
            Some(PaidOrderStatus::Paid) => {
                let at = l.paid_at.as_deref().unwrap_or("?");
                let order_paid = g
                    .order
                    .as_ref()
                    .is_some_and(|o| o.payment_status.as_deref() == Some("PAID"));
                let tail = if order_paid {
                    String::new()
                } else if l.effects_done {
                    "; but the order itself is not PAID (check the order table)".into()
                } else {
                    "; the order update is not finished yet (process-paid will finish it on its retry; `payment3 redrive` if it is in the failed-events queue)".into()
                };
                return v(VerdictKind::Paid, format!("paid by {by} at {at}{tail}"));
            }
            Some(PaidOrderStatus::Failed) => {
                let why = latest_error(g)
                    .map(|e| format!("{}: {}", e.function_name, e.error))
                    .unwrap_or_else(|| "process-paid marked the payment FAILED".into());
                return v(VerdictKind::Failed, format!("failed because {why} ({by})"));
            }
            _ => {}
        }
    }
    if let Some(o) = &g.order {
        if o.payment_status.as_deref() == Some("PAID") {
            return v(
                VerdictKind::Paid,
                format!(
                    "paid by {} {} at {} (order table only, no ledger entry: paid by the Python stack)",
                    o.payment_type.as_deref().unwrap_or("?"),
                    o.payment_id.as_deref().unwrap_or("?"),
                    o.paid_at.as_deref().unwrap_or("?")
                ),
            );
        }
    }
    let last_notify = g.notifies.iter().max_by_key(|n| sort_key(&n.created_at));
    if g.ledger.as_ref().is_some_and(|l| l.status == "PENDING") || last_notify.is_some() {
        let charge = g
            .ledger
            .as_ref()
            .and_then(|l| l.charge_id.clone())
            .or_else(|| last_notify.map(|n| n.charge_id.clone()))
            .unwrap_or_else(|| "?".into());
        let told = last_notify
            .map(|n| {
                format!(
                    "; last notify {} said {}/{}",
                    n.created_at, n.status, n.transaction_state
                )
            })
            .unwrap_or_default();
        return match latest_error(g) {
            Some(e) if g.ledger.is_none() => v(
                VerdictKind::Failed,
                format!(
                    "failed because {}: {} (charge {charge}{told})",
                    e.function_name, e.error
                ),
            ),
            _ => v(
                VerdictKind::Pending,
                format!(
                    "pending on KBank: charge {charge} is not Authorized yet{told}; delayed notify asks KBank again"
                ),
            ),
        };
    }
    let success = g.records.iter().find(|(_, r)| r.success);
    if let Some((which, r)) = success {
        return match latest_error(g) {
            Some(e) => v(
                VerdictKind::Failed,
                format!(
                    "failed because {}: {} (the {which} callback {} said success at {})",
                    e.function_name, e.error, r.payment_id, r.updated_at
                ),
            ),
            None => v(
                VerdictKind::Pending,
                format!(
                    "pending in process-paid: the {which} callback {} said success at {} but the order is not paid yet (see `payment3 redrive`)",
                    r.payment_id, r.updated_at
                ),
            ),
        };
    }
    if let Some((which, r)) = g.records.first() {
        return v(
            VerdictKind::Failed,
            format!(
                "failed because the gateway reported the {which} payment {} as failed at {}{}",
                r.payment_id,
                r.updated_at,
                r.message
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(": {m:?}"))
                    .unwrap_or_default()
            ),
        );
    }
    let refused = g.deliveries.iter().rev().find(|d| {
        matches!(
            d.entry.outcome,
            InboxOutcome::Rejected { .. } | InboxOutcome::Failed { .. }
        )
    });
    if let Some(d) = refused {
        let e = &d.entry;
        return v(
            VerdictKind::Failed,
            format!(
                "failed because the {} delivery of {} was {} ({}): {}",
                e.function,
                e.received_at,
                e.outcome.name(),
                e.outcome.status().unwrap_or(0),
                e.outcome.error().unwrap_or("")
            ),
        );
    }
    if let Some(d) = g.deliveries.last() {
        return v(
            VerdictKind::Pending,
            format!(
                "pending: a {} delivery arrived at {} ({}) but left no record yet",
                d.entry.function,
                d.entry.received_at,
                d.entry.outcome.name()
            ),
        );
    }
    let status = g
        .order
        .as_ref()
        .and_then(|o| o.payment_status.clone())
        .unwrap_or_else(|| "no paymentStatus".into());
    v(
        VerdictKind::NeverReached,
        format!(
            "never reached us: no gateway delivered anything for this order (order {status}); ask the gateway whether the payment was made"
        ),
    )
}

pub async fn run(
    ctx: &Context,
    order_id: &str,
    charges: &[String],
    json: bool,
) -> Result<(), CliError> {
    ctx.check_branch().await?;
    let gathered = gather(ctx, order_id, charges).await?;
    if gathered.is_empty() {
        return Err(CliError::UnknownOrder(order_id.to_string()));
    }
    let trace = assemble(order_id, &ctx.branch, gathered);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trace).expect("a trace serialises")
        );
    } else {
        print!("{}", render(&trace));
    }
    Ok(())
}

/// The text form.
pub fn render(t: &Trace) -> String {
    let mut out = format!("order {} on branch {}\n", t.order_id, t.branch);
    match &t.order {
        Some(o) => {
            out += &format!(
                "  order:   grandTotal {}, paymentStatus {}",
                o.grand_total.as_deref().unwrap_or("-"),
                o.payment_status.as_deref().unwrap_or("-")
            );
            if let Some(p) = &o.payment_type {
                out += &format!(", paymentType {p}");
            }
            if let Some(p) = &o.payment_id {
                out += &format!(", paymentId {p}");
            }
            if let Some(p) = &o.paid_at {
                out += &format!(", paidAt {p}");
            }
            out += "\n";
        }
        None => out += "  order:   not in the order table\n",
    }
    match &t.ledger {
        Some(l) => {
            out += &format!(
                "  ledger:  {} {} {}",
                l.status,
                l.payment_type.as_deref().unwrap_or("-"),
                l.payment_id.as_deref().unwrap_or("-")
            );
            if let Some(a) = &l.amount {
                out += &format!(", amount {a}");
            }
            if let Some(a) = &l.paid_at {
                out += &format!(", paidAt {a}");
            }
            if !l.effects_done {
                out += ", side effects not finished";
            }
            out += "\n";
        }
        None => out += "  ledger:  no entry\n",
    }
    if t.charges.is_empty() {
        out += "  charges: none found (not a card payment, or no charge written yet; add --charge chrg_... to look one up)\n";
    }
    for c in &t.charges {
        out += &format!(
            "  charge:  {} (from {})",
            c.charge_id,
            c.found_in.join(", ")
        );
        match &c.card_payment {
            Some(card) => {
                out += &format!(
                    ", card payment record {} for order {}, checksumVerified {}",
                    card.token,
                    card.order_id.as_deref().unwrap_or("-"),
                    card.checksum_verified
                        .map(|b| b.to_string())
                        .unwrap_or("-".into())
                )
            }
            None => out += ", no card payment record",
        }
        out += "\n";
    }
    if !t.error_log_searched {
        out += "  errors:  NOT searched: the error-log table has no orderId-index (docs/deploy.md, \"The operator tool\")\n";
    }
    out += "\n";
    if t.timeline.is_empty() {
        out += "  (nothing happened to this order yet)\n";
    }
    for e in &t.timeline {
        out += &format!("  {:<26}  {:<15}  {}\n", e.at, e.source, e.summary);
    }
    out += &format!("\nverdict: {}\n", t.verdict.text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use callback_core::domain::card::NotifyNote;
    use serde_json::json;

    fn ledger(status: &str) -> LedgerFacts {
        LedgerFacts {
            status: status.into(),
            payment_type: Some("wallet".into()),
            payment_id: Some("pay_1".into()),
            charge_id: None,
            amount: Some("2339.0".into()),
            paid_at: (status == "PAID").then(|| "2026-11-30T07:00:01".into()),
            created_at: Some("2026-11-30T07:00:00".into()),
            updated_at: Some("2026-11-30T07:00:01".into()),
            effects_done: true,
        }
    }

    fn order(status: Option<&str>) -> OrderFacts {
        OrderFacts {
            grand_total: Some("2339.0".into()),
            payment_status: status.map(String::from),
            paid_at: status.map(|_| "2026-11-30T07:00:01".into()),
            payment_type: status.map(|_| "wallet".into()),
            payment_id: status.map(|_| "pay_1".into()),
        }
    }

    fn record(success: bool) -> CallbackRecord {
        CallbackRecord {
            order_id: "1".into(),
            payment_id: "pay_1".into(),
            success,
            user_id: "u".into(),
            message: Some("declined".into()),
            amount: None,
            event: None,
            body: None,
            created_at: "2026-11-30T07:00:00".into(),
            updated_at: "2026-11-30T07:00:00".into(),
            signature_verified: None,
        }
    }

    #[test]
    fn a_paid_ledger_says_by_what_and_when() {
        let g = Gathered {
            ledger: Some(ledger("PAID")),
            order: Some(order(Some("PAID"))),
            ..Default::default()
        };
        let v = verdict(&g);
        assert_eq!(v.kind, VerdictKind::Paid);
        assert_eq!(v.text, "paid by wallet pay_1 at 2026-11-30T07:00:01");
    }

    #[test]
    fn a_paid_ledger_with_an_unpaid_order_says_what_is_missing() {
        let mut l = ledger("PAID");
        l.effects_done = false;
        let g = Gathered {
            ledger: Some(l),
            order: Some(order(None)),
            ..Default::default()
        };
        assert!(verdict(&g).text.contains("order update is not finished"));
    }

    #[test]
    fn a_pending_ledger_is_pending_on_kbank() {
        let mut l = ledger("PENDING");
        l.charge_id = Some("chrg_1".into());
        let g = Gathered {
            ledger: Some(l),
            ..Default::default()
        };
        let v = verdict(&g);
        assert_eq!(v.kind, VerdictKind::Pending);
        assert!(
            v.text.starts_with("pending on KBank: charge chrg_1"),
            "{}",
            v.text
        );
    }

    #[test]
    fn a_failed_callback_says_the_gateway_said_so() {
        let g = Gathered {
            records: vec![("wallet/bank app", record(false))],
            ..Default::default()
        };
        let v = verdict(&g);
        assert_eq!(v.kind, VerdictKind::Failed);
        assert!(v.text.contains("\"declined\""), "{}", v.text);
    }

    #[test]
    fn a_success_without_a_payment_blames_the_last_error() {
        let err = ErrorLogEntry {
            id: "e".into(),
            function_name: "process-paid-wallet".into(),
            error: "amount 1 does not match the order total 2339.0".into(),
            error_type: "AmountMismatch".into(),
            order_id: Some("1".into()),
            charge_id: None,
            event: None,
            request_id: "r".into(),
            status: 400,
            created_at: "2026-11-30T07:00:02".into(),
            ttl: 0,
        };
        let g = Gathered {
            records: vec![("wallet/bank app", record(true))],
            errors: Some(vec![err]),
            ..Default::default()
        };
        let v = verdict(&g);
        assert_eq!(v.kind, VerdictKind::Failed);
        assert!(v.text.contains("does not match"), "{}", v.text);
    }

    #[test]
    fn nothing_at_all_never_reached_us() {
        let g = Gathered {
            order: Some(order(None)),
            errors: Some(vec![]),
            ..Default::default()
        };
        assert!(!g.is_empty());
        assert_eq!(verdict(&g).kind, VerdictKind::NeverReached);
        assert!(Gathered::default().is_empty());
    }

    #[test]
    fn the_timeline_is_oldest_first_whatever_the_source() {
        let notify = NotifyRecord {
            charge_id: "chrg_1".into(),
            created_at: "2026-11-30T07:00:00.5".into(),
            note: NotifyNote::Notify,
            body: json!({}),
            event: json!({}),
            checksum_verified: true,
            checksum_error: None,
            order_id: Some("1".into()),
            amount: Some("10".into()),
            status: "success".into(),
            transaction_state: "Pending".into(),
            request_id: "r".into(),
        };
        let g = Gathered {
            ledger: Some(ledger("PENDING")),
            records: vec![("Amex", record(false))],
            notifies: vec![notify],
            ..Default::default()
        };
        let t = assemble("1", "dev", g);
        let at: Vec<&str> = t.timeline.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "2026-11-30T07:00:00",
                "2026-11-30T07:00:00",
                "2026-11-30T07:00:00.5"
            ]
        );
        assert!(render(&t).contains("verdict: pending on KBank"));
    }
}
