//! A KBank charge: its id (safe in a URL path) and the state the inquiry reports.

use rust_decimal::Decimal;

use crate::domain::error::ValidationError;

/// A KBank charge id (`chrg_...`): letters, digits, `_` and `-` only, since it goes into a URL path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChargeId(String);

impl ChargeId {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, ValidationError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(ValidationError::new(
                field,
                format!("{field} must not be blank"),
            ));
        }
        if v.len() > 128 {
            return Err(ValidationError::new(
                field,
                format!("{field} is longer than 128 characters"),
            ));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ValidationError::new(
                field,
                format!("{field} may hold only letters, digits, _ and -"),
            ));
        }
        Ok(ChargeId(v.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChargeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What KBank says about a charge.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge {
    pub id: String,
    pub amount: Decimal,
    pub currency: String,
    pub status: String,
    pub transaction_state: String,
    /// The merchant's order reference KBank keeps with the charge, when it sends one.
    pub reference_order: Option<String>,
}

/// Where a charge stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeState {
    /// `status == "success"` and `transaction_state == "Authorized"`.
    Paid,
    /// KBank says the charge failed: it will not become paid.
    Failed,
    /// Anything else: not paid yet (delayed notify asks again).
    Pending,
}

/// The currency a charge must be in when the order names none.
pub const DEFAULT_CURRENCY: &str = "THB";

impl Charge {
    /// Whether the charge is in `expected` (ISO code, any letter case).
    pub fn in_currency(&self, expected: &str) -> bool {
        self.currency.trim().eq_ignore_ascii_case(expected.trim())
    }

    pub fn state(&self) -> ChargeState {
        if self.status == "success" && self.transaction_state == "Authorized" {
            ChargeState::Paid
        } else if matches!(self.status.to_ascii_lowercase().as_str(), "fail" | "failed")
            || matches!(
                self.transaction_state.to_ascii_lowercase().as_str(),
                "declined" | "voided" | "failed"
            )
        {
            ChargeState::Failed
        } else {
            ChargeState::Pending
        }
    }
}
