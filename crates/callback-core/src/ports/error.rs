//! The errors of the ports: what a failed call to AWS or KBank says, and whether a retry helps.

use thiserror::Error;

/// A failed call to DynamoDB (or its in-memory stand-in).
#[derive(Debug, Clone, Error)]
#[error("{operation} on table {table} failed: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub table: String,
    pub message: String,
}

impl StoreError {
    pub fn new(operation: &'static str, table: &str, message: impl ToString) -> Self {
        StoreError {
            operation,
            table: table.to_string(),
            message: message.to_string(),
        }
    }
}

/// A failed Lambda invoke.
#[derive(Debug, Clone, Error)]
#[error("invoking {function} failed: {message}")]
pub struct InvokeError {
    pub function: String,
    pub message: String,
}

/// A failed e-mail.
#[derive(Debug, Clone, Error)]
#[error("sending e-mail failed: {0}")]
pub struct MailError(pub String);

/// A secret that could not be read or has no usable key.
#[derive(Debug, Clone, Error)]
#[error("secret {name}: {message}")]
pub struct SecretError {
    pub name: String,
    pub message: String,
}

/// A failed inquiry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Timeout or connection failure: retry.
    #[error("KBank API unreachable: {0}")]
    Unreachable(String),
    /// KBank answered 5xx: retry.
    #[error("KBank API answered {status}")]
    ServerError { status: u16 },
    /// KBank answered 408, 425 or 429 (a timeout, too early, a rate limit): retry.
    #[error("KBank API answered {status}: busy, retry later")]
    Throttled { status: u16 },
    /// KBank answered 4xx: the request is wrong (unknown charge, bad key); no retry.
    #[error("KBank API answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// KBank answered 2xx with a body that is not the expected charge (a proxy's page, a cut
    /// answer): retry.
    #[error("KBank API answered an unexpected body: {0}")]
    Unexpected(String),
}

impl GatewayError {
    /// KBank did not accept the key (it may have been rotated).
    pub fn key_refused(&self) -> bool {
        matches!(
            self,
            GatewayError::Refused {
                status: 401 | 403,
                ..
            }
        )
    }
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::Unreachable(_)
                | GatewayError::ServerError { .. }
                | GatewayError::Throttled { .. }
                | GatewayError::Unexpected(_)
        )
    }
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Unreachable(_) => "GatewayUnreachable",
            GatewayError::ServerError { .. } => "GatewayServerError",
            GatewayError::Throttled { .. } => "GatewayThrottled",
            GatewayError::Refused { .. } => "GatewayRefused",
            GatewayError::Unexpected(_) => "GatewayUnexpectedResponse",
        }
    }
}
