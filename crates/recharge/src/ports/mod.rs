//! What the Recharge flows need from outside, one trait per capability: the dunning ledger
//! (DynamoDB in [`aws`], memory in [`memory`]), the dunning service and Recharge's API (HTTP in
//! [`http`]). [`secret`] reads one field of the Recharge secret for callback-core's SecretCache.
//! Everything else (inbox, error path, invoker, secrets, clock) is callback-core's [`callback_core::Ports`].

pub mod aws;
pub mod http;
pub mod memory;
pub mod secret;

use async_trait::async_trait;
use callback_core::{Item, StoreError};

use crate::domain::charge::ChargeFailure;
use crate::domain::dunning::{DunningRecord, Held};
use crate::domain::schedule::RetryDate;

/// The ledger `payment3-recharge-dunning-<branch>`; every write is one conditional write.
#[async_trait]
pub trait DunningLedger: Send + Sync {
    /// Writes a new item if there is none for its charge and attempt; false when one exists.
    async fn insert_dunning(&self, table: &str, record: &DunningRecord)
        -> Result<bool, StoreError>;
    /// The item of a charge and attempt (strongly consistent read).
    async fn load_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
    ) -> Result<Option<DunningRecord>, StoreError>;
    /// Sets `changes` if the item still has the `held` token (and state); false otherwise.
    async fn update_dunning(
        &self,
        table: &str,
        charge_id: &str,
        attempt: u32,
        held: &Held,
        changes: &Item,
    ) -> Result<bool, StoreError>;
}

/// Why the dunning service gave no usable date. Every one of them means: use the fallback.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvisorError {
    #[error("dunning service unreachable: {0}")]
    Unreachable(String),
    #[error("dunning service did not answer within {0} ms")]
    Timeout(u128),
    #[error("dunning service answered {0}")]
    Status(u16),
    #[error("dunning service answered nonsense: {0}")]
    Nonsense(String),
}

/// The third-party dunning service: `POST {DUNNING_API_BASE}/v1/retry-date`.
#[async_trait]
pub trait RetryDateAdvisor: Send + Sync {
    /// The `retry_date` text it proposes (not yet checked against the date rules).
    async fn retry_date(&self, charge: &ChargeFailure) -> Result<String, AdvisorError>;
}

/// A failed call to Recharge's API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RechargeApiError {
    /// Timeout or connection failure: retry (Recharge may or may not have applied it; sending the
    /// same date again is harmless).
    #[error("Recharge API unreachable: {0}")]
    Unreachable(String),
    /// 5xx or 429: retry.
    #[error("Recharge API answered {status}")]
    Unavailable { status: u16 },
    /// Any other 4xx: the request is wrong (unknown charge, bad token, date refused); no retry.
    #[error("Recharge API refused the request with {status}: {body}")]
    Refused { status: u16, body: String },
}

impl RechargeApiError {
    pub fn retryable(&self) -> bool {
        !matches!(self, RechargeApiError::Refused { .. })
    }
    pub fn status(&self) -> Option<u16> {
        match self {
            RechargeApiError::Unreachable(_) => None,
            RechargeApiError::Unavailable { status } | RechargeApiError::Refused { status, .. } => {
                Some(*status)
            }
        }
    }
}

/// Recharge's API: `POST {RECHARGE_API_BASE}/charges/{id}/change_next_charge_date`.
#[async_trait]
pub trait RechargeApi: Send + Sync {
    /// Moves the charge's next attempt to `date`; returns Recharge's status.
    async fn change_next_charge_date(
        &self,
        charge_id: &str,
        date: &RetryDate,
        api_token: &str,
    ) -> Result<u16, RechargeApiError>;
}
