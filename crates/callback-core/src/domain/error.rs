//! The domain's one error: a value that breaks a rule, named by its field.

use thiserror::Error;

/// A field of the callback body that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The field at fault (`body` when the body as a whole is wrong).
    pub field: &'static str,
    /// What is wrong, in words a gateway engineer can act on.
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            field,
            message: message.into(),
        }
    }
}
