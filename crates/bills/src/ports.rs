//! What the bill functions need from AWS: reading a bill (DynamoDB) and starting the payment
//! workflow (Step Functions), each with its AWS adapter and an in-memory twin for unit tests.
//! The import's writes go through `s3_import::dynamo::BatchApi`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use callback_core::StoreError;
use rust_decimal::Decimal;

use crate::domain::{Bill, InvoiceId};

/// The bills table.
#[async_trait]
pub trait BillStore: Send + Sync {
    /// The bill (strongly consistent read); `None` when there is none.
    async fn bill(&self, table: &str, invoice: InvoiceId) -> Result<Option<Bill>, StoreError>;
}

/// The payment workflow.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Starts an execution named `name`. `Ok(false)` when one of that name exists already
    /// (a double submit): nothing new was started.
    async fn start(&self, state_machine: &str, name: &str, input: &str) -> Result<bool, String>;
}

/// Reads a stored bill item; `Err` names the attribute that is missing or malformed.
pub fn bill_from_item(item: &HashMap<String, AttributeValue>) -> Result<Bill, String> {
    let n = |name: &str| match item.get(name) {
        Some(AttributeValue::N(v)) => Ok(v.clone()),
        _ => Err(format!("{name} is not a number")),
    };
    let invoice = n("InvoiceID")?
        .parse::<u64>()
        .map(InvoiceId)
        .map_err(|_| "InvoiceID is not a whole number".to_string())?;
    let balance =
        Decimal::from_str(&n("Balance")?).map_err(|_| "Balance is not a decimal".to_string())?;
    let processed = n("IsProcessed")? == "1";
    let s = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    };
    Ok(Bill {
        invoice,
        customer_name: s("CustomerName").unwrap_or_default(),
        balance: balance.normalize(),
        processed,
        paid_at: s("PaidAt"),
        payment_ref: s("PaymentRef"),
    })
}

#[async_trait]
impl BillStore for aws_sdk_dynamodb::Client {
    async fn bill(&self, table: &str, invoice: InvoiceId) -> Result<Option<Bill>, StoreError> {
        let out = self
            .get_item()
            .table_name(table)
            .key("InvoiceID", AttributeValue::N(invoice.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                StoreError::new(
                    "GetItem",
                    table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        match out.item {
            None => Ok(None),
            Some(item) => bill_from_item(&item)
                .map(Some)
                .map_err(|e| StoreError::new("GetItem", table, format!("bill {invoice}: {e}"))),
        }
    }
}

/// The workflow on Step Functions.
pub struct SfnExecutions {
    client: aws_sdk_sfn::Client,
}

impl SfnExecutions {
    pub fn new(client: aws_sdk_sfn::Client) -> Self {
        SfnExecutions { client }
    }
}

#[async_trait]
impl Executions for SfnExecutions {
    async fn start(&self, state_machine: &str, name: &str, input: &str) -> Result<bool, String> {
        match self
            .client
            .start_execution()
            .state_machine_arn(state_machine)
            .name(name)
            .input(input)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_execution_already_exists()) =>
            {
                Ok(false)
            }
            Err(e) => Err(aws_sdk_sfn::error::DisplayErrorContext(&e).to_string()),
        }
    }
}

/// In-memory twin of both ports.
#[derive(Clone, Default)]
pub struct MemoryBills {
    pub bills: Arc<Mutex<HashMap<u64, Bill>>>,
    /// Executions started: (name, input).
    pub executions: Arc<Mutex<Vec<(String, String)>>>,
    pub fail: Arc<Mutex<bool>>,
}

impl MemoryBills {
    pub fn insert(&self, bill: Bill) {
        self.bills.lock().unwrap().insert(bill.invoice.0, bill);
    }
}

#[async_trait]
impl BillStore for MemoryBills {
    async fn bill(&self, table: &str, invoice: InvoiceId) -> Result<Option<Bill>, StoreError> {
        if *self.fail.lock().unwrap() {
            return Err(StoreError::new("GetItem", table, "injected failure"));
        }
        Ok(self.bills.lock().unwrap().get(&invoice.0).cloned())
    }
}

#[async_trait]
impl Executions for MemoryBills {
    async fn start(&self, _sm: &str, name: &str, input: &str) -> Result<bool, String> {
        let mut ex = self.executions.lock().unwrap();
        if ex.iter().any(|(n, _)| n == name) {
            return Ok(false);
        }
        ex.push((name.to_string(), input.to_string()));
        Ok(true)
    }
}
