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
        })
    }
}

/// What a ledger write says about the payment.
#[derive(Clone, Debug, PartialEq)]
pub struct PaidClaim {
    pub order_id: String,
    pub payment_type: PaymentType,
    pub payment_id: String,
    pub charge_id: Option<String>,
    pub amount: Option<Decimal>,
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
            item.insert(
                "effectsClaimedAt".into(),
                Attr::N(now.timestamp().to_string()),
            );
        }
        item
    }
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
