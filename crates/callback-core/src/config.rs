//! Configuration read from the environment, once per container.
//!
//! Every environment variable the functions read is read here, through [`var`], by one of the
//! `from_env` constructors: [`Settings`] (all functions), `CardSettings` (notify, delayed notify)
//! and `ProcessPaidSettings` (process-paid). The template test (`tests/test_template.py`) reads this
//! file to check that template.yaml sets each of them on the functions that load them.
//! Names default to the original's conventions (`payment3-<name>-<branch>`), so a deployment only
//! has to set `BRANCH`; the template still sets every one explicitly.

use std::time::Duration;

use crate::error::ConfigError;

/// Reads one environment variable; empty counts as unset.
pub fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a whole number of seconds, or the default when unset.
pub fn seconds(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match var(name) {
        None => Ok(Duration::from_secs(default)),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("expected a whole number of seconds, got {text:?}"),
            }),
    }
}

/// The DynamoDB tables, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    /// Wallet and bank-app callback records (`payment3-wallet-callback-record-<branch>`).
    pub wallet_callback_record: String,
    /// Amex callback records (`payment3-amex-callback-record-<branch>`).
    pub amex_callback_record: String,
    /// Every delivery, duplicates included (`payment3-callback-inbox-<branch>`).
    pub callback_inbox: String,
    /// Error log of every function (`payment3-callback-error-log-<branch>`).
    pub callback_error_log: String,
    /// One item per (function, error kind): when its last alert went out.
    pub alert_cooldown: String,
    /// KBank notify deliveries (`payment3-credit-card-notify-<branch>`).
    pub credit_card_notify: String,
    /// Card payments by token, with the `chargeId-index` (`payment3-card-payment-record-<branch>`).
    pub card_payment_record: String,
    /// The exactly-once ledger of paid orders (`payment3-paid-order-<branch>`).
    pub paid_order: String,
    /// The order table of the shop system (`order-table-<branch>`).
    pub order: String,
}

/// The Lambda functions this system invokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionNames {
    pub process_paid_card: String,
    pub process_paid_wallet: String,
    pub process_paid_amex: String,
    pub delayed_notify: String,
}

/// Where error alerts go and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// `ALERT_EMAIL_FROM`; no sender means no e-mail (logged once per alert).
    pub from: Option<String>,
    /// `ALERT_EMAIL_TO`, comma separated.
    pub to: Vec<String>,
    /// `ALERT_COOLDOWN_SECONDS` (default 300): at most one alert per function and error kind.
    pub cooldown: Duration,
}

/// Settings every function loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `BRANCH` (default `dev`): the deployment this function belongs to.
    pub branch: String,
    pub tables: Tables,
    pub functions: FunctionNames,
    pub alerts: AlertSettings,
    /// `SENTRY_DSN`; none turns Sentry off.
    pub sentry_dsn: Option<String>,
    /// `INBOX_TTL_DAYS` (default 180): how long inbox entries are kept.
    pub inbox_ttl: Duration,
    /// `ERROR_LOG_TTL_DAYS` (default 90): how long error-log items are kept.
    pub error_log_ttl: Duration,
}

const DAY: u64 = 24 * 60 * 60;

fn days(name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    let d = seconds(name, default)?;
    Ok(Duration::from_secs(d.as_secs() * DAY))
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let branch = var("BRANCH").unwrap_or_else(|| "dev".to_string());
        let named = |env: &'static str, name: &str| {
            var(env).unwrap_or_else(|| format!("payment3-{name}-{branch}"))
        };
        let tables = Tables {
            wallet_callback_record: named("WALLET_CALLBACK_RECORD_TABLE", "wallet-callback-record"),
            amex_callback_record: named("AMEX_CALLBACK_RECORD_TABLE", "amex-callback-record"),
            callback_inbox: named("CALLBACK_INBOX_TABLE", "callback-inbox"),
            callback_error_log: named("CALLBACK_ERROR_LOG_TABLE", "callback-error-log"),
            alert_cooldown: named("ALERT_COOLDOWN_TABLE", "alert-cooldown"),
            credit_card_notify: named("CREDIT_CARD_NOTIFY_TABLE", "credit-card-notify"),
            card_payment_record: named("CARD_PAYMENT_RECORD_TABLE", "card-payment-record"),
            paid_order: named("PAID_ORDER_TABLE", "paid-order"),
            order: var("ORDER_TABLE").unwrap_or_else(|| format!("order-table-{branch}")),
        };
        let functions = FunctionNames {
            process_paid_card: named("PROCESS_PAID_CARD_FUNCTION", "process-paid-order-internal"),
            process_paid_wallet: named(
                "PROCESS_PAID_WALLET_FUNCTION",
                "process-paid-wallet-order-internal",
            ),
            process_paid_amex: named(
                "PROCESS_PAID_AMEX_FUNCTION",
                "process-paid-amex-order-internal",
            ),
            delayed_notify: named("DELAYED_NOTIFY_FUNCTION", "delayed-notify"),
        };
        let alerts = AlertSettings {
            from: var("ALERT_EMAIL_FROM"),
            to: var("ALERT_EMAIL_TO")
                .map(|to| {
                    to.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            cooldown: seconds("ALERT_COOLDOWN_SECONDS", 300)?,
        };
        Ok(Settings {
            branch,
            tables,
            functions,
            alerts,
            sentry_dsn: var("SENTRY_DSN"),
            inbox_ttl: days("INBOX_TTL_DAYS", 180)?,
            error_log_ttl: days("ERROR_LOG_TTL_DAYS", 90)?,
        })
    }

    /// Settings for a branch with every default: what unit tests use.
    pub fn for_branch(branch: &str) -> Self {
        let named = |name: &str| format!("payment3-{name}-{branch}");
        Settings {
            branch: branch.to_string(),
            tables: Tables {
                wallet_callback_record: named("wallet-callback-record"),
                amex_callback_record: named("amex-callback-record"),
                callback_inbox: named("callback-inbox"),
                callback_error_log: named("callback-error-log"),
                alert_cooldown: named("alert-cooldown"),
                credit_card_notify: named("credit-card-notify"),
                card_payment_record: named("card-payment-record"),
                paid_order: named("paid-order"),
                order: format!("order-table-{branch}"),
            },
            functions: FunctionNames {
                process_paid_card: named("process-paid-order-internal"),
                process_paid_wallet: named("process-paid-wallet-order-internal"),
                process_paid_amex: named("process-paid-amex-order-internal"),
                delayed_notify: named("delayed-notify"),
            },
            alerts: AlertSettings {
                from: Some("alerts@example.com".into()),
                to: vec!["payments-team@example.com".into()],
                cooldown: Duration::from_secs(300),
            },
            sentry_dsn: None,
            inbox_ttl: Duration::from_secs(180 * DAY),
            error_log_ttl: Duration::from_secs(90 * DAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_original_names() {
        let s = Settings::for_branch("master");
        assert_eq!(
            s.tables.wallet_callback_record,
            "payment3-wallet-callback-record-master"
        );
        assert_eq!(s.tables.order, "order-table-master");
        assert_eq!(
            s.functions.process_paid_wallet,
            "payment3-process-paid-wallet-order-internal-master"
        );
    }

    #[test]
    fn seconds_rejects_text_naming_the_variable() {
        // A variable name no test sets, so the default path and the error path are both real.
        std::env::set_var("PAYMENT3_TEST_SECONDS", "five");
        let err = seconds("PAYMENT3_TEST_SECONDS", 1).unwrap_err();
        assert!(err.to_string().contains("PAYMENT3_TEST_SECONDS"), "{err}");
        std::env::set_var("PAYMENT3_TEST_SECONDS", "7");
        assert_eq!(
            seconds("PAYMENT3_TEST_SECONDS", 1).unwrap(),
            Duration::from_secs(7)
        );
        std::env::remove_var("PAYMENT3_TEST_SECONDS");
        assert_eq!(
            seconds("PAYMENT3_TEST_SECONDS", 1).unwrap(),
            Duration::from_secs(1)
        );
    }
}
