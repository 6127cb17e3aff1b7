//! Configuration read from the environment, once per container.
//!
//! Every environment variable the functions read is read here, through [`var`], by one of the
//! `from_env` constructors: [`Settings`] (all functions), [`CardSettings`] (notify, delayed notify)
//! and [`ProcessPaidSettings`] (process-paid). The template test (`tests/test_template.py`) reads this
//! file to check that template.yaml sets each of them on the functions that load them.
//! Names default to the original's conventions (`payment3-<name>-<branch>`), so a deployment only
//! has to set `BRANCH`; the template still sets every one explicitly.

use std::time::Duration;

use thiserror::Error;

use crate::flows::settings::DAY;

use crate::flows::settings::{
    AlertSettings, CardSettings, ChecksumPolicy, FunctionNames, ProcessPaidKind,
    ProcessPaidSettings, SecretSettings, Settings, Tables, DEFAULT_SHOP_URL, KBANK_PRODUCTION_API,
    KBANK_SANDBOX_API,
};
use crate::flows::settings::{AuthPolicy, CallbackAuthSettings};

/// A setting that is present but unusable.
#[derive(Debug, Clone, Error)]
pub enum ConfigError {
    #[error("environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads one environment variable; empty counts as unset.
pub fn var(name: &'static str) -> Option<String> {
    #[cfg(test)]
    if let Some(set) = test_env::get(name) {
        return set.filter(|v| !v.trim().is_empty());
    }
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The environment as the tests of this module set it: per thread, never the process's
/// (`std::env::set_var` in a multi-threaded test binary races every other test's reads).
#[cfg(test)]
mod test_env {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static SET: RefCell<HashMap<&'static str, Option<String>>> = RefCell::new(HashMap::new());
    }

    /// `Some(value)` for a variable set (or unset, `Some(None)`) on this thread.
    pub fn get(name: &str) -> Option<Option<String>> {
        SET.with(|s| s.borrow().get(name).cloned())
    }

    /// Sets (`Some`) or unsets (`None`) a variable for this thread's reads.
    pub fn set(name: &'static str, value: Option<&str>) {
        SET.with(|s| s.borrow_mut().insert(name, value.map(String::from)));
    }
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
}

impl SecretSettings {
    fn from_env(branch: &str) -> Result<Self, ConfigError> {
        let default = if branch == "master" {
            "kbank-prod"
        } else {
            "kbank-dev"
        };
        Ok(SecretSettings {
            name: var("KBANK_SECRET_NAME").unwrap_or_else(|| default.to_string()),
            refresh: seconds("SECRET_REFRESH_SECONDS", 300)?,
        })
    }
}

impl CallbackAuthSettings {
    /// `CALLBACK_AUTH_POLICY` (default `enforce`), `CALLBACK_SECRET_NAME` (default
    /// `payment3-callback-keys-<branch>`), `SECRET_REFRESH_SECONDS` (default 300).
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        let (policy, overrides) = match var("CALLBACK_AUTH_POLICY") {
            None => (AuthPolicy::Enforce, Default::default()),
            Some(text) => CallbackAuthSettings::parse_policy(&text).map_err(|reason| {
                ConfigError::Invalid {
                    name: "CALLBACK_AUTH_POLICY",
                    reason,
                }
            })?,
        };
        let branch = &settings.branch;
        Ok(CallbackAuthSettings {
            policy,
            overrides,
            secret_name: var("CALLBACK_SECRET_NAME")
                .unwrap_or_else(|| format!("payment3-callback-keys-{branch}")),
            refresh: seconds("SECRET_REFRESH_SECONDS", 300)?,
        })
    }
}

impl CardSettings {
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        let checksum_policy = match var("CHECKSUM_POLICY").map(|p| p.trim().to_ascii_lowercase()) {
            None => ChecksumPolicy::Enforce,
            Some(p) if p == "enforce" => ChecksumPolicy::Enforce,
            Some(p) if p == "mark" => ChecksumPolicy::Mark,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CHECKSUM_POLICY",
                    reason: format!("expected enforce or mark, got {other:?}"),
                })
            }
        };
        Ok(CardSettings {
            checksum_policy,
            secret: SecretSettings::from_env(&settings.branch)?,
            delayed_notify_wait: seconds("DELAYED_NOTIFY_SECONDS", 60)?,
            shop_url: var("SHOP_CALLBACK_URL").unwrap_or_else(|| DEFAULT_SHOP_URL.to_string()),
            kbank_api_base: kbank_api_base(&settings.branch)?,
            kbank_timeout: seconds("KBANK_TIMEOUT_SECONDS", 10)?,
        })
    }
}

fn addresses(text: Option<String>) -> Vec<String> {
    text.map(|to| {
        to.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// `KBANK_API_BASE` (default the production API on `master`, the sandbox elsewhere).
fn kbank_api_base(branch: &str) -> Result<String, ConfigError> {
    let default_base = if branch == "master" {
        KBANK_PRODUCTION_API
    } else {
        KBANK_SANDBOX_API
    };
    let kbank_api_base = var("KBANK_API_BASE")
        .unwrap_or_else(|| default_base.to_string())
        .trim()
        .trim_end_matches('/')
        .to_string();
    if !(kbank_api_base.starts_with("https://") || kbank_api_base.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            name: "KBANK_API_BASE",
            reason: format!("expected an http(s) URL, got {kbank_api_base:?}"),
        });
    }
    Ok(kbank_api_base)
}

impl ProcessPaidSettings {
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        let kind = match var("PROCESS_PAID_KIND") {
            Some(text) => ProcessPaidKind::parse(&text).ok_or_else(|| ConfigError::Invalid {
                name: "PROCESS_PAID_KIND",
                reason: format!("expected card, wallet or amex, got {text:?}"),
            })?,
            None => var("AWS_LAMBDA_FUNCTION_NAME")
                .map(|f| ProcessPaidKind::from_function_name(&f))
                .unwrap_or(ProcessPaidKind::Card),
        };
        let kbank_api_base = kbank_api_base(&settings.branch)?;
        Ok(ProcessPaidSettings {
            kind,
            kbank_api_base,
            kbank_timeout: seconds("KBANK_TIMEOUT_SECONDS", 10)?,
            secret: SecretSettings::from_env(&settings.branch)?,
            notice_from: var("PAID_NOTICE_EMAIL_FROM").or_else(|| settings.alerts.from.clone()),
            notice_to: addresses(var("PAID_NOTICE_EMAIL_TO")),
        })
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
        // Set for this test's thread only, so the default path and the error path are both real.
        test_env::set("PAYMENT3_TEST_SECONDS", Some("five"));
        let err = seconds("PAYMENT3_TEST_SECONDS", 1).unwrap_err();
        assert!(err.to_string().contains("PAYMENT3_TEST_SECONDS"), "{err}");
        test_env::set("PAYMENT3_TEST_SECONDS", Some("7"));
        assert_eq!(
            seconds("PAYMENT3_TEST_SECONDS", 1).unwrap(),
            Duration::from_secs(7)
        );
        test_env::set("PAYMENT3_TEST_SECONDS", None);
        assert_eq!(
            seconds("PAYMENT3_TEST_SECONDS", 1).unwrap(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn process_paid_kind_comes_from_the_function_name() {
        for (name, kind) in [
            (
                "payment3-process-paid-order-internal-dev",
                ProcessPaidKind::Card,
            ),
            (
                "payment3-process-paid-wallet-order-internal-dev",
                ProcessPaidKind::Wallet,
            ),
            (
                "payment3-process-paid-amex-order-internal-master",
                ProcessPaidKind::Amex,
            ),
            ("process-paid-wallet", ProcessPaidKind::Wallet),
            ("process-paid", ProcessPaidKind::Card),
        ] {
            assert_eq!(ProcessPaidKind::from_function_name(name), kind, "{name}");
        }
        assert_eq!(
            ProcessPaidKind::parse(" Amex "),
            Some(ProcessPaidKind::Amex)
        );
        assert_eq!(ProcessPaidKind::parse("qr"), None);
    }

    #[test]
    fn the_callback_auth_policy_is_enforce_by_default_and_can_differ_per_gateway() {
        let parse = CallbackAuthSettings::parse_policy;
        assert_eq!(
            parse("").unwrap(),
            (AuthPolicy::Enforce, Default::default())
        );
        assert_eq!(parse(" Mark ").unwrap().0, AuthPolicy::Mark);
        let (default, overrides) = parse("mark, wallet=enforce,AMEX=enforce").unwrap();
        let s = CallbackAuthSettings {
            policy: default,
            overrides,
            ..CallbackAuthSettings::for_branch("dev")
        };
        assert_eq!(s.policy_for("wallet"), AuthPolicy::Enforce);
        assert_eq!(s.policy_for("amex"), AuthPolicy::Enforce);
        assert_eq!(s.policy_for("bankapp"), AuthPolicy::Mark);
        for bad in ["off", "mark,enforce", "card=enforce", "wallet=off"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CallbackAuthSettings::for_branch("master").secret_name,
            "payment3-callback-keys-master"
        );
    }

    #[test]
    fn an_unknown_callback_auth_policy_is_a_start_up_error_naming_the_variable() {
        // Only this test sets CALLBACK_AUTH_POLICY.
        let settings = Settings::for_branch("dev");
        std::env::set_var("CALLBACK_AUTH_POLICY", "off");
        let err = CallbackAuthSettings::from_env(&settings).unwrap_err();
        assert!(err.to_string().contains("CALLBACK_AUTH_POLICY"), "{err}");
        std::env::remove_var("CALLBACK_AUTH_POLICY");
        assert_eq!(
            CallbackAuthSettings::from_env(&settings).unwrap().policy,
            AuthPolicy::Enforce
        );
    }

    #[test]
    fn card_defaults_follow_the_branch() {
        assert_eq!(CardSettings::for_branch("master").secret.name, "kbank-prod");
        assert_eq!(CardSettings::for_branch("dev").secret.name, "kbank-dev");
        assert_eq!(
            CardSettings::for_branch("dev").checksum_policy,
            ChecksumPolicy::Enforce
        );
    }

    #[test]
    fn an_unknown_checksum_policy_is_a_start_up_error_naming_the_variable() {
        // Set for this test's thread only.
        let settings = Settings::for_branch("dev");
        test_env::set("CHECKSUM_POLICY", Some("off"));
        let err = CardSettings::from_env(&settings).unwrap_err();
        assert!(err.to_string().contains("CHECKSUM_POLICY"), "{err}");
        test_env::set("CHECKSUM_POLICY", Some("Mark"));
        assert_eq!(
            CardSettings::from_env(&settings).unwrap().checksum_policy,
            ChecksumPolicy::Mark
        );
        test_env::set("CHECKSUM_POLICY", None);
        assert_eq!(
            CardSettings::from_env(&settings).unwrap().checksum_policy,
            ChecksumPolicy::Enforce
        );
    }
}
