//! Lambda adapter: asynchronous (`Event`) and synchronous invokes.

use async_trait::async_trait;
use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use aws_sdk_lambda::Client;

use crate::ports::error::InvokeError;
use crate::ports::Invoker;

#[derive(Clone, Debug)]
pub struct LambdaInvoker {
    client: Client,
}

impl LambdaInvoker {
    pub fn new(client: Client) -> Self {
        LambdaInvoker { client }
    }
}

fn invoke_error(function: &str, message: impl ToString) -> InvokeError {
    InvokeError {
        function: function.to_string(),
        message: message.to_string(),
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError> {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| invoke_error(function, DisplayErrorContext(&e)))?;
        // Lambda answers 202 once the event is queued; a local emulator that runs the
        // function at once answers 200. Anything else, or a function error, is a failure.
        if let Some(err) = out.function_error() {
            return Err(invoke_error(function, format!("function error: {err}")));
        }
        match out.status_code() {
            200 | 202 => Ok(()),
            other => Err(invoke_error(function, format!("unexpected status {other}"))),
        }
    }

    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
        let out = self
            .client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| invoke_error(function, DisplayErrorContext(&e)))?;
        let body = out
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(err) = out.function_error() {
            return Err(invoke_error(
                function,
                format!("function error {err}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        Ok(body)
    }
}
