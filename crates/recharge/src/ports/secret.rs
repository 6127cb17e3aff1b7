//! The Recharge secret `RECHARGE_SECRET_NAME` (JSON `{"clientSecret": ..., "apiToken": ...}`),
//! read through callback-core's [`callback_core::SecretCache`] (cached per container, refreshed
//! after `SECRET_REFRESH_SECONDS`). The cache holds one key; this adapter hands it the one field a
//! function needs: the webhook verifies with `clientSecret`, the dunning function calls Recharge
//! with `apiToken`. Errors name the field, never the secret's text.

use std::sync::Arc;

use async_trait::async_trait;
use callback_core::ports::SecretSource;
use callback_core::SecretError;
use serde_json::{json, Value};

/// Which field of the Recharge secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RechargeSecretField {
    ClientSecret,
    ApiToken,
}

impl RechargeSecretField {
    pub fn name(self) -> &'static str {
        match self {
            RechargeSecretField::ClientSecret => "clientSecret",
            RechargeSecretField::ApiToken => "apiToken",
        }
    }
}

/// Secrets Manager, seen through one field of the Recharge secret.
pub struct RechargeSecretSource {
    inner: Arc<dyn SecretSource>,
    field: RechargeSecretField,
}

impl RechargeSecretSource {
    pub fn new(inner: Arc<dyn SecretSource>, field: RechargeSecretField) -> Self {
        RechargeSecretSource { inner, field }
    }
}

/// The field's value from the secret's JSON text.
pub fn secret_field(
    name: &str,
    text: &str,
    field: RechargeSecretField,
) -> Result<String, SecretError> {
    let problem = |message: String| SecretError {
        name: name.to_string(),
        message,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|_| problem("the secret is not JSON text".into()))?;
    match value.get(field.name()) {
        Some(Value::String(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Some(Value::String(_)) => Err(problem(format!("{} is empty", field.name()))),
        Some(_) => Err(problem(format!("{} is not a string", field.name()))),
        None => Err(problem(format!("the secret has no {}", field.name()))),
    }
}

#[async_trait]
impl SecretSource for RechargeSecretSource {
    async fn secret_string(&self, name: &str) -> Result<String, SecretError> {
        let text = self.inner.secret_string(name).await?;
        let value = secret_field(name, &text, self.field)?;
        // The shape callback-core's SecretCache reads.
        Ok(json!({ "secretKey": value }).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callback_core::ports::memory::MemoryAws;
    use callback_core::{SecretCache, SystemClock};
    use std::time::Duration;

    #[tokio::test]
    async fn each_function_gets_its_field_through_the_cache() {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret(
            "recharge-dev",
            r#"{"clientSecret": "cs_local", "apiToken": "tok_local"}"#,
        );
        for (field, want) in [
            (RechargeSecretField::ClientSecret, "cs_local"),
            (RechargeSecretField::ApiToken, "tok_local"),
        ] {
            let cache = SecretCache::new(
                Arc::new(RechargeSecretSource::new(aws.clone(), field)),
                Arc::new(SystemClock),
                "recharge-dev",
                Duration::from_secs(300),
            );
            assert_eq!(cache.get().await.unwrap().expose(), want);
        }
    }

    #[test]
    fn a_missing_or_empty_field_is_named_and_the_text_never_quoted() {
        let err = secret_field(
            "r",
            r#"{"apiToken": "tok_leak"}"#,
            RechargeSecretField::ClientSecret,
        )
        .unwrap_err();
        assert_eq!(err.message, "the secret has no clientSecret");
        let err = secret_field(
            "r",
            r#"{"clientSecret": " "}"#,
            RechargeSecretField::ClientSecret,
        )
        .unwrap_err();
        assert_eq!(err.message, "clientSecret is empty");
        let err = secret_field("r", "{tok_leak", RechargeSecretField::ApiToken).unwrap_err();
        assert!(!err.to_string().contains("tok_leak"));
    }
}
