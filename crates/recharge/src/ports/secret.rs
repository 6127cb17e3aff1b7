//! The Recharge secret `RECHARGE_SECRET_NAME` (JSON `{"clientSecret": ..., "apiToken": ...}`),
//! read through callback-core's [`callback_core::SecretCache`] (cached per container, refreshed
//! after `SECRET_REFRESH_SECONDS`) with one of these parsers: the webhook verifies with
//! `clientSecret`, the dunning function calls Recharge with `apiToken`. Each is held as a
//! [`SecretKey`], whose `Debug` is redacted; errors name the field, never the secret's text.

use callback_core::{SecretError, SecretKey};
use serde_json::Value;

fn field(name: &str, text: &str, field: &str) -> Result<SecretKey, SecretError> {
    let problem = |message: String| SecretError {
        name: name.to_string(),
        message,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|_| problem("the secret is not JSON text".into()))?;
    match value.get(field) {
        Some(Value::String(v)) if !v.trim().is_empty() => Ok(SecretKey::new(v.trim())),
        Some(Value::String(_)) => Err(problem(format!("{field} is empty"))),
        Some(_) => Err(problem(format!("{field} is not a string"))),
        None => Err(problem(format!("the secret has no {field}"))),
    }
}

/// `clientSecret`: what Recharge's webhook digest is computed with.
pub fn client_secret(name: &str, text: &str) -> Result<SecretKey, SecretError> {
    field(name, text, "clientSecret")
}

/// `apiToken`: the `X-Recharge-Access-Token` of the API calls.
pub fn api_token(name: &str, text: &str) -> Result<SecretKey, SecretError> {
    field(name, text, "apiToken")
}

#[cfg(test)]
mod tests {
    use super::*;
    use callback_core::ports::memory::MemoryAws;
    use callback_core::{SecretCache, SystemClock};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn each_function_gets_its_field_through_the_cache() {
        let aws = Arc::new(MemoryAws::default());
        aws.set_secret(
            "recharge-dev",
            r#"{"clientSecret": "cs_local", "apiToken": "tok_local"}"#,
        );
        for (parser, want) in [
            (
                client_secret as callback_core::ports::secret_cache::SecretParser<SecretKey>,
                "cs_local",
            ),
            (api_token, "tok_local"),
        ] {
            let cache = SecretCache::with_parser(
                aws.clone(),
                Arc::new(SystemClock),
                "recharge-dev",
                Duration::from_secs(300),
                parser,
            );
            assert_eq!(cache.get().await.unwrap().expose(), want);
        }
    }

    #[test]
    fn a_missing_or_empty_field_is_named_and_the_text_never_quoted() {
        let err = client_secret("r", r#"{"apiToken": "tok_leak"}"#).unwrap_err();
        assert_eq!(err.message, "the secret has no clientSecret");
        let err = client_secret("r", r#"{"clientSecret": " "}"#).unwrap_err();
        assert_eq!(err.message, "clientSecret is empty");
        let err = api_token("r", "{tok_leak").unwrap_err();
        assert!(!err.to_string().contains("tok_leak"));
        assert_eq!(
            format!("{:?}", api_token("r", r#"{"apiToken":"tok_x"}"#).unwrap()),
            "SecretKey([REDACTED])"
        );
    }
}
