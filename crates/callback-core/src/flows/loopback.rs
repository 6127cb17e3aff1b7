//! Lambda in memory for the card path's tests: a synchronous invoke of process-paid runs the
//! real flow over the in-memory AWS.

use async_trait::async_trait;

use crate::flows::paid::ProcessPaid;
use crate::ports::error::InvokeError;
use crate::ports::memory::MemoryAws;
use crate::ports::Invoker;

/// Lambda in memory for the card path: a synchronous invoke of `function` runs the real
/// process-paid handler over the same in-memory AWS; every invoke is recorded in `aws`.
pub struct LoopbackInvoker {
    pub aws: std::sync::Arc<MemoryAws>,
    pub function: String,
    pub process_paid: std::sync::Arc<ProcessPaid>,
}

#[async_trait]
impl Invoker for LoopbackInvoker {
    async fn invoke_event(&self, function: &str, payload: &[u8]) -> Result<(), InvokeError> {
        self.aws.invoke_event(function, payload).await
    }

    async fn invoke_sync(&self, function: &str, payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
        let canned = self.aws.invoke_sync(function, payload).await?;
        if function != self.function {
            return Ok(canned);
        }
        let event: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        match self.process_paid.handle(event, "loopback").await {
            Ok(answer) => Ok(answer.to_string().into_bytes()),
            // What Lambda reports for a function error.
            Err(e) => Err(InvokeError {
                function: function.into(),
                message: format!("function error Unhandled: {e}"),
            }),
        }
    }
}
