//! The Recharge functions' environment, read once per container in `from_env` constructors
//! (the template test reads this file to check the template sets each variable).

use std::time::Duration;

use callback_core::runtime::config::{seconds, var};
use callback_core::{ConfigError, Settings};

use crate::flows::settings::{
    DunningSettings, RechargeSecretSettings, RechargeTables, WebhookSettings, RECHARGE_API,
};

fn millis(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match var(name) {
        None => Ok(Duration::from_millis(default)),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("expected a whole number of milliseconds, got {text:?}"),
            }),
    }
}

impl RechargeSecretSettings {
    pub fn from_env(branch: &str) -> Result<Self, ConfigError> {
        Ok(RechargeSecretSettings {
            name: var("RECHARGE_SECRET_NAME").unwrap_or_else(|| format!("recharge-{branch}")),
            refresh: seconds("SECRET_REFRESH_SECONDS", 300)?,
        })
    }
}

impl WebhookSettings {
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        let branch = &settings.branch;
        let named = |env: &'static str, name: &str| {
            var(env).unwrap_or_else(|| format!("payment3-{name}-{branch}"))
        };
        Ok(WebhookSettings {
            dunning_function: named("RECHARGE_DUNNING_FUNCTION", "recharge-dunning"),
            secret: RechargeSecretSettings::from_env(branch)?,
        })
    }
}

impl DunningSettings {
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        let branch = &settings.branch;
        let named = |env: &'static str, name: &str| {
            var(env).unwrap_or_else(|| format!("payment3-{name}-{branch}"))
        };
        let claim_lease = seconds("DUNNING_CLAIM_LEASE_SECONDS", 60)?;
        if claim_lease.is_zero() {
            return Err(ConfigError::Invalid {
                name: "DUNNING_CLAIM_LEASE_SECONDS",
                reason: "must be above the function's timeout, not 0".into(),
            });
        }
        Ok(DunningSettings {
            tables: RechargeTables {
                recharge_dunning: named("RECHARGE_DUNNING_TABLE", "recharge-dunning"),
            },
            secret: RechargeSecretSettings::from_env(branch)?,
            recharge_api_base: var("RECHARGE_API_BASE").unwrap_or_else(|| RECHARGE_API.to_string()),
            recharge_timeout: seconds("RECHARGE_TIMEOUT_SECONDS", 10)?,
            dunning_api_base: var("DUNNING_API_BASE"),
            dunning_timeout: millis("DUNNING_TIMEOUT_MS", 2000)?,
            claim_lease,
        })
    }
}
