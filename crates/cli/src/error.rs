//! What can go wrong for an operator, each with a message that says what to do, and the exit
//! code scripts can test.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(
        "no AWS credentials found ({0}).\n  For AWS: set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.\n  For the local stack: AWS_ENDPOINT_URL=http://127.0.0.1:5050 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"
    )]
    NoCredentials(String),

    #[error("AWS refused the credentials ({0}): they are expired or wrong; log in again (`aws sso login`) or check AWS_PROFILE")]
    BadCredentials(String),

    #[error("AWS denied {operation} on {resource}: {message}\n  The operator policy is in docs/deploy.md (\"The operator tool\").")]
    AccessDenied {
        operation: &'static str,
        resource: String,
        message: String,
    },

    #[error("branch {branch:?} has no tables in region {region} (looked for {table}).\n  Check --branch (dev, master, or a feature-branch slug) and AWS_REGION / AWS_PROFILE; `payment3 tables` lists what is there.")]
    WrongBranch {
        branch: String,
        region: String,
        table: String,
    },

    #[error("order {0:?} is unknown: no order, delivery, record, ledger entry or error for it on this branch.\n  Check the order number (the shop's orderId) and --branch.")]
    UnknownOrder(String),

    #[error("{0}")]
    Refused(String),

    #[error("{operation} on {resource} failed: {message}")]
    Aws {
        operation: &'static str,
        resource: String,
        message: String,
    },
}

impl CliError {
    /// 1: AWS or environment; 3: unknown order; 4: refused (nothing done, e.g. no --force).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::UnknownOrder(_) => 3,
            CliError::Refused(_) => 4,
            _ => 1,
        }
    }

    /// Turns an SDK error into the operator's error: credentials, a missing table or queue,
    /// access denied, or the service's own message.
    pub fn from_sdk<E, R>(operation: &'static str, resource: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().unwrap_or_default();
        let message = err
            .message()
            .map(String::from)
            .unwrap_or_else(|| DisplayErrorContext(err).to_string());
        match code {
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch" => CliError::BadCredentials(message),
            "AccessDeniedException" | "AccessDenied" => CliError::AccessDenied {
                operation,
                resource: resource.to_string(),
                message,
            },
            _ if is_credentials_failure(&message) => CliError::NoCredentials(message),
            _ => CliError::Aws {
                operation,
                resource: resource.to_string(),
                message,
            },
        }
    }
}

/// The SDK reports a missing credential chain as a dispatch failure, not a service code.
fn is_credentials_failure(message: &str) -> bool {
    message.contains("no providers in chain provided credentials")
        || message.contains("failed to load credentials")
}

/// True when the error is DynamoDB's (or SQS's, Lambda's) "no such resource".
pub fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        err.code(),
        Some(
            "ResourceNotFoundException"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "QueueDoesNotExist"
        )
    )
}
