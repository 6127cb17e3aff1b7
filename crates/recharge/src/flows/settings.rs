//! What the Recharge flows are told, on top of callback-core's [`callback_core::Settings`].
//! Plain values; [`crate::runtime::config`] reads them from the environment, unit tests build
//! them with `for_branch`.

use std::time::Duration;

/// Recharge's API.
pub const RECHARGE_API: &str = "https://api.rechargeapps.com";

/// The Recharge secret: which one, and how long a cached copy is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RechargeSecretSettings {
    /// `RECHARGE_SECRET_NAME` (default `recharge-<branch>`).
    pub name: String,
    /// `SECRET_REFRESH_SECONDS` (default 300).
    pub refresh: Duration,
}

impl RechargeSecretSettings {
    pub fn for_branch(branch: &str) -> Self {
        RechargeSecretSettings {
            name: format!("recharge-{branch}"),
            refresh: Duration::from_secs(300),
        }
    }
}

/// The webhook's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// `RECHARGE_DUNNING_FUNCTION` (default `payment3-recharge-dunning-<branch>`): the work goes there.
    pub dunning_function: String,
    pub secret: RechargeSecretSettings,
}

impl WebhookSettings {
    pub fn for_branch(branch: &str) -> Self {
        WebhookSettings {
            dunning_function: format!("payment3-recharge-dunning-{branch}"),
            secret: RechargeSecretSettings::for_branch(branch),
        }
    }
}

/// The Recharge system's tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RechargeTables {
    /// `RECHARGE_DUNNING_TABLE` (default `payment3-recharge-dunning-<branch>`).
    pub recharge_dunning: String,
}

/// The dunning function's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DunningSettings {
    pub tables: RechargeTables,
    pub secret: RechargeSecretSettings,
    /// `RECHARGE_API_BASE` (default Recharge's API).
    pub recharge_api_base: String,
    /// `RECHARGE_TIMEOUT_SECONDS` (default 10): the whole change_next_charge_date call.
    pub recharge_timeout: Duration,
    /// `DUNNING_API_BASE`; none means every date comes from the built-in schedule.
    pub dunning_api_base: Option<String>,
    /// `DUNNING_TIMEOUT_MS` (default 2000): a slower answer is no answer.
    pub dunning_timeout: Duration,
    /// `DUNNING_CLAIM_LEASE_SECONDS` (default 60, above the function's 30 s timeout): how long a
    /// claim is its holder's before another run may take the attempt over.
    pub claim_lease: Duration,
}

impl DunningSettings {
    pub fn for_branch(branch: &str) -> Self {
        DunningSettings {
            tables: RechargeTables {
                recharge_dunning: format!("payment3-recharge-dunning-{branch}"),
            },
            secret: RechargeSecretSettings::for_branch(branch),
            recharge_api_base: RECHARGE_API.to_string(),
            recharge_timeout: Duration::from_secs(10),
            dunning_api_base: None,
            dunning_timeout: Duration::from_millis(2000),
            claim_lease: Duration::from_secs(60),
        }
    }
}
