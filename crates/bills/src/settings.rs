//! What the bill functions are told (environment, read once per container).

use callback_core::ConfigError;

/// Settings of the bill functions, beside callback-core's `Settings` (error path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillSettings {
    /// `BILLS_TABLE` (default `payment3-payment-balance-<branch>`).
    pub bills_table: String,
    /// `BILL_PAYMENT_STATE_MACHINE_ARN`: the payment workflow (pay only; none = payments fail
    /// with a 500 and an alert).
    pub state_machine_arn: Option<String>,
    /// `BILLS_ALLOWED_ORIGIN` (default `*`): the bill-pay page's origin, for CORS.
    pub allowed_origin: String,
    /// `ERROR_LOG_TTL_DAYS` (default 90), for the workflow's own error-log items.
    pub error_log_ttl_seconds: i64,
    /// `BILLS_IMPORT_IN_FLIGHT` (default 4): chunks of 100 rows (a BatchGetItem and their writes) in flight at once.
    pub import_in_flight: usize,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl BillSettings {
    pub fn for_branch(branch: &str, state_machine_arn: Option<String>) -> Self {
        BillSettings {
            bills_table: format!("payment3-payment-balance-{branch}"),
            state_machine_arn,
            allowed_origin: "*".into(),
            error_log_ttl_seconds: 90 * 24 * 3600,
            import_in_flight: 4,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let branch = var("BRANCH").unwrap_or_else(|| "dev".to_string());
        let number = |name: &'static str, default: i64, max: i64| -> Result<i64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or(ConfigError::Invalid {
                        name,
                        reason: format!("expected a whole number from 1 to {max}, got {v:?}"),
                    }),
            }
        };
        Ok(BillSettings {
            bills_table: var("BILLS_TABLE")
                .unwrap_or_else(|| format!("payment3-payment-balance-{branch}")),
            state_machine_arn: None, // PaymentWorkflow::from_env, read by the pay function only
            allowed_origin: var("BILLS_ALLOWED_ORIGIN").unwrap_or_else(|| "*".into()),
            error_log_ttl_seconds: number("ERROR_LOG_TTL_DAYS", 90, 3650)? * 24 * 3600,
            import_in_flight: number("BILLS_IMPORT_IN_FLIGHT", 4, 32)? as usize,
        })
    }
}

/// `BILL_PAYMENT_STATE_MACHINE_ARN`: the payment workflow, read by the pay function alone.
pub struct PaymentWorkflow;

impl PaymentWorkflow {
    pub fn from_env() -> Option<String> {
        var("BILL_PAYMENT_STATE_MACHINE_ARN")
    }
}
