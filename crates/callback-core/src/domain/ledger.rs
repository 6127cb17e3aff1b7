//! The paid-order ledger (`payment3-paid-order-<branch>`) as values: its status, an entry,
//! a claim, and the order attributes the winner sets.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::clock::isoformat;
use crate::domain::item::{Attr, DecodeError, Item, ItemBuilder, ItemReader};

/// Which of the three deployed process-paid functions this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessPaidKind {
    /// `payment3-process-paid-order-internal`: card and QR, asks KBank.
    Card,
    /// `payment3-process-paid-wallet-order-internal`: wallet and bank app.
    Wallet,
    /// `payment3-process-paid-amex-order-internal`.
    Amex,
}

impl ProcessPaidKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "card" => Some(ProcessPaidKind::Card),
            "wallet" => Some(ProcessPaidKind::Wallet),
            "amex" => Some(ProcessPaidKind::Amex),
            _ => None,
        }
    }

    /// The kind a function name implies (`...-wallet-...`, `...-amex-...`, else card).
    pub fn from_function_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name.contains("wallet") {
            ProcessPaidKind::Wallet
        } else if name.contains("amex") {
            ProcessPaidKind::Amex
        } else {
            ProcessPaidKind::Card
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProcessPaidKind::Card => "card",
            ProcessPaidKind::Wallet => "wallet",
            ProcessPaidKind::Amex => "amex",
        }
    }
}

/// The `paymentType` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentType {
    Card,
    Qr,
    Wallet,
    BankApp,
    Amex,
}

impl PaymentType {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "card" => Some(PaymentType::Card),
            "qr" => Some(PaymentType::Qr),
            "wallet" => Some(PaymentType::Wallet),
            "bankapp" => Some(PaymentType::BankApp),
            "amex" => Some(PaymentType::Amex),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentType::Card => "card",
            PaymentType::Qr => "qr",
            PaymentType::Wallet => "wallet",
            PaymentType::BankApp => "bankapp",
            PaymentType::Amex => "amex",
        }
    }
    /// Card and QR are confirmed by asking KBank; the others carry `success`.
    pub fn asks_kbank(self) -> bool {
        matches!(self, PaymentType::Card | PaymentType::Qr)
    }
    /// Whether `other` is handled by the same process-paid function as `self`.
    pub fn same_family(self, other: PaymentType) -> bool {
        use PaymentType::*;
        matches!(
            (self, other),
            (Card | Qr, Card | Qr) | (Wallet | BankApp, Wallet | BankApp) | (Amex, Amex)
        )
    }
    /// The types of this one's family, for a message.
    pub fn family_names(self) -> &'static str {
        match self {
            PaymentType::Card | PaymentType::Qr => "card or qr",
            PaymentType::Wallet | PaymentType::BankApp => "wallet or bankapp",
            PaymentType::Amex => "amex",
        }
    }
    pub fn default_for(kind: ProcessPaidKind) -> Self {
        match kind {
            ProcessPaidKind::Card => PaymentType::Card,
            ProcessPaidKind::Wallet => PaymentType::Wallet,
            ProcessPaidKind::Amex => PaymentType::Amex,
        }
    }
}

/// The ledger status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaidOrderStatus {
    Pending,
    Paid,
    Failed,
}

impl PaidOrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaidOrderStatus::Pending => "PENDING",
            PaidOrderStatus::Paid => "PAID",
            PaidOrderStatus::Failed => "FAILED",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(PaidOrderStatus::Pending),
            "PAID" => Some(PaidOrderStatus::Paid),
            "FAILED" => Some(PaidOrderStatus::Failed),
            _ => None,
        }
    }
}

/// A ledger entry, as far as the decisions need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaidOrderState {
    pub status: PaidOrderStatus,
    pub payment_id: Option<String>,
    /// The winner finished its side effects (absent on items written by others: treated as done).
    pub effects_done: bool,
    /// The token of the run that holds the claim on the side effects.
    pub claim_token: Option<String>,
    /// When that claim was taken (millisecond precision; whole seconds on older items).
    pub effects_claimed_at: Option<DateTime<Utc>>,
}

impl PaidOrderState {
    pub fn from_item(item: &Item) -> Result<Self, DecodeError> {
        let r = ItemReader(item);
        let status_text = r.unicode("status")?;
        let status = PaidOrderStatus::parse(status_text).ok_or_else(|| DecodeError {
            attribute: "status".into(),
            problem: format!("unknown status {status_text:?}"),
        })?;
        Ok(PaidOrderState {
            status,
            payment_id: r.unicode_opt("paymentId")?.map(String::from),
            effects_done: !matches!(item.get("effectsDone"), Some(Attr::Bool(false))),
            claim_token: r.unicode_opt("claimToken")?.map(String::from),
            effects_claimed_at: match item.get("effectsClaimedAt") {
                Some(Attr::N(n)) => parse_epoch(n),
                _ => None,
            },
        })
    }

    /// A `PAID` entry of this payment whose side effects are claimed by a run other than
    /// `token` and not finished.
    pub fn held_by_another_run(&self, payment_id: &str, token: &str) -> bool {
        self.status == PaidOrderStatus::Paid
            && !self.effects_done
            && self.payment_id.as_deref() == Some(payment_id)
            && self.claim_token.as_deref() != Some(token)
    }
}

/// Epoch seconds with milliseconds (`1795251600.123`): DynamoDB compares it as a number, to the
/// millisecond, and whole-second values written before still compare correctly.
pub fn epoch_text(at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Reads [`epoch_text`] (or whole seconds) back.
pub fn parse_epoch(text: &str) -> Option<DateTime<Utc>> {
    let d: Decimal = text.trim().parse().ok()?;
    let ms = (d * Decimal::from(1000)).trunc();
    let ms: i64 = ms.to_string().parse().ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// What a ledger write says about the payment.
#[derive(Clone, Debug, PartialEq)]
pub struct PaidClaim {
    pub order_id: String,
    pub payment_type: PaymentType,
    pub payment_id: String,
    pub charge_id: Option<String>,
    pub amount: Option<Decimal>,
    /// Unique to the run: a run knows its own claim by it (after an SDK retry of a write that
    /// had succeeded), and its side effects are fenced by it.
    pub token: String,
}

impl PaidClaim {
    /// The ledger attributes of this claim with `status`, except the key and `created_at`.
    pub fn attributes(&self, status: PaidOrderStatus, now: DateTime<Utc>) -> Item {
        let mut item = ItemBuilder::new()
            .unicode("orderId", &self.order_id)
            .unicode("status", status.as_str())
            .unicode("paymentType", self.payment_type.as_str())
            .unicode("paymentId", &self.payment_id)
            .unicode_opt("chargeId", self.charge_id.clone())
            .unicode("updated_at", isoformat(now))
            .build();
        if let Some(a) = self.amount {
            item.insert("amount".into(), Attr::N(a.to_string()));
        }
        if status == PaidOrderStatus::Paid {
            item.insert("paidAt".into(), Attr::S(isoformat(now)));
            item.insert("effectsDone".into(), Attr::Bool(false));
            item.insert("effectsClaimedAt".into(), Attr::N(epoch_text(now)));
            item.insert("claimToken".into(), Attr::S(self.token.clone()));
        }
        item
    }

    /// Attributes of an earlier write that this claim does not carry and must not inherit (a
    /// wallet payment moving an entry out of `FAILED` must not keep the failed card's `chargeId`).
    pub fn absent_attributes(&self) -> Vec<&'static str> {
        let mut absent = Vec::new();
        if self.charge_id.is_none() {
            absent.push("chargeId");
        }
        if self.amount.is_none() {
            absent.push("amount");
        }
        absent
    }
}

/// What the claim write found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimResult {
    /// This write moved the entry to `PAID` for this claim.
    Won,
    /// The condition failed; the entry as it stood (`None` if it could not be read back).
    /// When its `claimToken` is this claim's, the write had succeeded before (an SDK retry).
    Held(Option<PaidOrderState>),
}

/// What the order update found (one conditional write on the order table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderMark {
    /// The order now says `PAID` by this payment.
    Marked,
    /// The order already said `PAID`: by this payment (`Some` equal to it: done before) or by
    /// another one (the Python stack, which kept no ledger), or with no payment id.
    AlreadyPaid { payment_id: Option<String> },
    /// There is no such order.
    Missing,
}

/// The order attributes the winner sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderPaidUpdate {
    pub order_id: String,
    /// `PAID`.
    pub payment_status: String,
    pub paid_at: String,
    pub payment_type: String,
    pub payment_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn claim_times_keep_their_milliseconds() {
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap()
            + chrono::Duration::milliseconds(100);
        assert_eq!(epoch_text(at), "1795251600.100");
        assert_eq!(parse_epoch("1795251600.100"), Some(at));
        assert_eq!(
            parse_epoch("1795251600"),
            Some(at - chrono::Duration::milliseconds(100))
        );
        assert_eq!(parse_epoch("x"), None);
    }
}
