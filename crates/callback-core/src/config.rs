//! Configuration read from the environment, once per container.
//!
//! Every environment variable the functions read is read here, through [`var`], by one of the
//! `from_env` constructors: [`Settings`] (all functions), [`CardSettings`] (notify, delayed notify)
//! and [`ProcessPaidSettings`] (process-paid). The template test (`tests/test_template.py`) reads this
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

/// `CHECKSUM_POLICY`: what notify and delayed notify do with a bad or missing KBank checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Record, alert, answer 401 and process nothing (the default).
    Enforce,
    /// The original's behaviour: warn, mark `checksumVerified: false`, and continue.
    Mark,
}

/// The KBank secret: which one, and how long a cached copy is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSettings {
    /// `KBANK_SECRET_NAME` (default `kbank-prod` on `master`, `kbank-dev` elsewhere).
    pub name: String,
    /// `SECRET_REFRESH_SECONDS` (default 300): a rotated secret is picked up after this.
    pub refresh: Duration,
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

/// The shop every redirect page points to when the card payment record names none.
pub const DEFAULT_SHOP_URL: &str = "https://shop.villamarket.com";

/// Settings of notify and delayed notify (on top of [`Settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardSettings {
    /// `CHECKSUM_POLICY`: `enforce` (default) or `mark`.
    pub checksum_policy: ChecksumPolicy,
    pub secret: SecretSettings,
    /// `DELAYED_NOTIFY_SECONDS` (default 60): the wait between delayed notify's two runs.
    pub delayed_notify_wait: Duration,
    /// `SHOP_CALLBACK_URL` (default `https://shop.villamarket.com`).
    pub shop_url: String,
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
        })
    }

    /// Every default, for a branch: what unit tests use.
    pub fn for_branch(branch: &str) -> Self {
        CardSettings {
            checksum_policy: ChecksumPolicy::Enforce,
            secret: SecretSettings {
                name: if branch == "master" {
                    "kbank-prod"
                } else {
                    "kbank-dev"
                }
                .to_string(),
                refresh: Duration::from_secs(300),
            },
            delayed_notify_wait: Duration::from_secs(60),
            shop_url: DEFAULT_SHOP_URL.to_string(),
        }
    }
}

/// Which of the three deployed process-paid functions this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessPaidKind {
    /// `payment3-process-paid-order-internal`: card and QR, asks KBank.
    Card,
    /// `payment3-process-paid-wallet-order-internal`: wallet and bank app.
    Wallet,
    /// `payment3-process-paid-amex-order-internal`.
    Amex,
}

impl ProcessPaidKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "card" => Some(ProcessPaidKind::Card),
            "wallet" => Some(ProcessPaidKind::Wallet),
            "amex" => Some(ProcessPaidKind::Amex),
            _ => None,
        }
    }

    /// The kind a function name implies (`...-wallet-...`, `...-amex-...`, else card).
    pub fn from_function_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name.contains("wallet") {
            ProcessPaidKind::Wallet
        } else if name.contains("amex") {
            ProcessPaidKind::Amex
        } else {
            ProcessPaidKind::Card
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProcessPaidKind::Card => "card",
            ProcessPaidKind::Wallet => "wallet",
            ProcessPaidKind::Amex => "amex",
        }
    }
}

/// KBank's documented API hosts (the card and QR inquiry live under them).
pub const KBANK_PRODUCTION_API: &str = "https://kpaymentgateway-services.kasikornbank.com";
pub const KBANK_SANDBOX_API: &str = "https://dev-kpaymentgateway-services.kasikornbank.com";

/// Settings of process-paid (on top of [`Settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessPaidSettings {
    /// `PROCESS_PAID_KIND` (card|wallet|amex); else inferred from `AWS_LAMBDA_FUNCTION_NAME`.
    pub kind: ProcessPaidKind,
    /// `KBANK_API_BASE` (default the production API on `master`, the sandbox elsewhere).
    pub kbank_api_base: String,
    /// `KBANK_TIMEOUT_SECONDS` (default 10): the whole inquiry, connect included.
    pub kbank_timeout: Duration,
    pub secret: SecretSettings,
    /// `PAID_NOTICE_EMAIL_FROM` (default `ALERT_EMAIL_FROM`).
    pub notice_from: Option<String>,
    /// `PAID_NOTICE_EMAIL_TO`, comma separated; empty means no paid notice e-mail.
    pub notice_to: Vec<String>,
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
        let default_base = if settings.branch == "master" {
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
        Ok(ProcessPaidSettings {
            kind,
            kbank_api_base,
            kbank_timeout: seconds("KBANK_TIMEOUT_SECONDS", 10)?,
            secret: SecretSettings::from_env(&settings.branch)?,
            notice_from: var("PAID_NOTICE_EMAIL_FROM").or_else(|| settings.alerts.from.clone()),
            notice_to: addresses(var("PAID_NOTICE_EMAIL_TO")),
        })
    }

    /// Every default, for a kind and branch: what unit tests use.
    pub fn for_kind(kind: ProcessPaidKind, branch: &str) -> Self {
        ProcessPaidSettings {
            kind,
            kbank_api_base: KBANK_SANDBOX_API.to_string(),
            kbank_timeout: Duration::from_secs(10),
            secret: CardSettings::for_branch(branch).secret,
            notice_from: Some("payments@example.com".into()),
            notice_to: vec!["orders@example.com".into()],
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
        // Only this test sets CHECKSUM_POLICY.
        let settings = Settings::for_branch("dev");
        std::env::set_var("CHECKSUM_POLICY", "off");
        let err = CardSettings::from_env(&settings).unwrap_err();
        assert!(err.to_string().contains("CHECKSUM_POLICY"), "{err}");
        std::env::set_var("CHECKSUM_POLICY", "Mark");
        assert_eq!(
            CardSettings::from_env(&settings).unwrap().checksum_policy,
            ChecksumPolicy::Mark
        );
        std::env::remove_var("CHECKSUM_POLICY");
        assert_eq!(
            CardSettings::from_env(&settings).unwrap().checksum_policy,
            ChecksumPolicy::Enforce
        );
    }
}
