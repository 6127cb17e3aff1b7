//! Errors of the library, one enum per boundary. [`CallbackError`] is what a handler can fail
//! with: each variant knows its HTTP status, its stable kind (the error log's `errorType` and the
//! alert cooldown key) and whether a retry by the caller can help.

use thiserror::Error;

use crate::domain::delivery::BodyTooLarge;
use crate::domain::error::ValidationError;
use crate::ports::error::{GatewayError, InvokeError, SecretError, StoreError};

/// Everything a callback handler can fail with.
#[derive(Debug, Error)]
pub enum CallbackError {
    /// The body is not a valid callback: 400, not retried (the same body fails the same way).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The body exceeds the size limit: 413.
    #[error("body is {size} bytes, over the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    /// The callback's signature (SPEC 4.5) is missing or wrong, under `enforce`: 401, with why.
    #[error("signature verification failed: {0}")]
    Unauthenticated(String),
    /// The KBank checksum is missing or wrong: 401.
    #[error("checksum verification failed: {0}")]
    Checksum(String),
    /// DynamoDB failed: 500 so the gateway retries.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The process-paid (or delayed-notify) invoke failed: 500 so the gateway retries.
    #[error(transparent)]
    Dispatch(#[from] InvokeError),
    /// The secret could not be read: 500, retry.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Anything else that should not happen: 500, retry.
    #[error("{0}")]
    Internal(String),
    /// The KBank API is unreachable (retry) or answered something unusable (no retry).
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Another run holds the claim on this payment's side effects and has not finished them
    /// (it may be working, or it may have died): 503, retry later, never `already_paid`.
    #[error("{0}")]
    InProgress(String),
    /// A payment that must not be applied (no such order, amount differs from the total):
    /// recorded and alerted, never retried. `kind` is the error log's `errorType`.
    #[error("{message}")]
    Rejected { kind: &'static str, message: String },
}

impl From<BodyTooLarge> for CallbackError {
    fn from(e: BodyTooLarge) -> Self {
        CallbackError::BodyTooLarge {
            size: e.size,
            limit: e.limit,
        }
    }
}

impl CallbackError {
    /// The HTTP status a gateway sees.
    pub fn status(&self) -> u16 {
        match self {
            CallbackError::Invalid(_) => 400,
            CallbackError::BodyTooLarge { .. } => 413,
            CallbackError::Checksum(_) | CallbackError::Unauthenticated(_) => 401,
            CallbackError::Store(_)
            | CallbackError::Dispatch(_)
            | CallbackError::Secret(_)
            | CallbackError::Internal(_) => 500,
            CallbackError::InProgress(_) => 503,
            CallbackError::Gateway(_) => 502,
            CallbackError::Rejected { .. } => 422,
        }
    }

    /// Stable name of the kind of failure: the error log's `errorType`, the alert cooldown key.
    pub fn kind(&self) -> &'static str {
        match self {
            CallbackError::Invalid(_) => "ValidationError",
            CallbackError::BodyTooLarge { .. } => "BodyTooLarge",
            CallbackError::Checksum(_) => "ChecksumError",
            CallbackError::Unauthenticated(_) => "SignatureError",
            CallbackError::Store(_) => "StoreError",
            CallbackError::Dispatch(_) => "DispatchError",
            CallbackError::Secret(_) => "SecretError",
            CallbackError::Internal(_) => "InternalError",
            CallbackError::InProgress(_) => "ClaimInProgress",
            CallbackError::Gateway(e) => e.kind(),
            CallbackError::Rejected { kind, .. } => kind,
        }
    }

    /// Whether the caller retrying the same request can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            CallbackError::Gateway(e) => e.retryable(),
            _ => self.status() >= 500,
        }
    }

    /// A money problem (a payment not applied, a second payment to refund, a charge with no
    /// order): its alert is keyed per order, so one order's alert never hides another's.
    pub fn is_money(&self) -> bool {
        matches!(self, CallbackError::Rejected { .. })
    }

    /// What the response may say: the validation message, or `internal error` and the request id.
    /// Never an AWS error text, a stack trace or a secret.
    pub fn public_message(&self, request_id: &str) -> String {
        match self {
            CallbackError::Invalid(e) => e.message.clone(),
            CallbackError::BodyTooLarge { .. } => self.to_string(),
            CallbackError::Checksum(_) => "checksum verification failed".to_string(),
            // Why a signature failed tells a forger nothing the headers did not.
            CallbackError::Unauthenticated(why) => format!("signature verification failed: {why}"),
            CallbackError::Rejected { message, .. } => message.clone(),
            _ => format!("internal error (request id {request_id})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_do_not_leak_their_text() {
        let err = CallbackError::Store(StoreError::new(
            "PutItem",
            "payment3-x-dev",
            "ResourceNotFoundException: arn:aws:dynamodb:...",
        ));
        assert_eq!(err.status(), 500);
        assert!(err.retryable());
        let public = err.public_message("req-1");
        assert_eq!(public, "internal error (request id req-1)");
    }

    #[test]
    fn validation_failures_say_what_is_wrong() {
        let err = CallbackError::from(ValidationError::new("orderId", "orderId is required"));
        assert_eq!(err.status(), 400);
        assert!(!err.retryable());
        assert_eq!(err.kind(), "ValidationError");
        assert_eq!(err.public_message("r"), "orderId is required");
    }
}
