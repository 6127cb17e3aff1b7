//! Secrets Manager adapter.

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::Client;

use crate::ports::error::SecretError;
use crate::ports::SecretSource;

#[derive(Clone, Debug)]
pub struct SecretsManagerSource {
    client: Client,
}

impl SecretsManagerSource {
    pub fn new(client: Client) -> Self {
        SecretsManagerSource { client }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret_string(&self, name: &str) -> Result<String, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| SecretError {
                name: name.to_string(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        out.secret_string()
            .map(String::from)
            .ok_or_else(|| SecretError {
                name: name.to_string(),
                message: "the secret has no SecretString".to_string(),
            })
    }
}
