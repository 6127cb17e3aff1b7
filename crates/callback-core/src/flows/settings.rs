//! What the flows are told: table and function names, alert settings, the card and process-paid
//! settings. Plain values; [`crate::runtime::config`] reads them from the environment, unit tests
//! build them with `for_branch`.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::domain::ledger::ProcessPaidKind;

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

pub(crate) const DAY: u64 = 24 * 60 * 60;

impl Settings {
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
    /// `KBANK_API_BASE`, `KBANK_TIMEOUT_SECONDS`: delayed notify asks KBank about a charge that
    /// no card payment record names (as process-paid's).
    pub kbank_api_base: String,
    pub kbank_timeout: Duration,
}

impl CardSettings {
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
            kbank_api_base: KBANK_SANDBOX_API.to_string(),
            kbank_timeout: Duration::from_secs(10),
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

impl ProcessPaidSettings {
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

/// `CALLBACK_AUTH_POLICY`: what the wallet, bank-app and Amex callbacks do with a missing or bad
/// signature (SPEC 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthPolicy {
    /// 401, kept in the inbox, error path; nothing saved, nothing dispatched (the default).
    Enforce,
    /// Processed as before signatures, `signatureVerified: false` written, a warning logged:
    /// for switching from the Python stack while gateways start signing.
    Mark,
}

impl AuthPolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "enforce" => Some(AuthPolicy::Enforce),
            "mark" => Some(AuthPolicy::Mark),
            _ => None,
        }
    }
}

/// The gateways that sign their callbacks, as named in the keys secret and the policy.
pub const SIGNING_GATEWAYS: [&str; 3] = ["wallet", "bankapp", "amex"];

/// How the callbacks authenticate their gateways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackAuthSettings {
    /// The policy of a gateway without an override.
    pub policy: AuthPolicy,
    /// Per-gateway policies, so a stack moves from `mark` to `enforce` one gateway at a time.
    pub overrides: BTreeMap<String, AuthPolicy>,
    /// `CALLBACK_SECRET_NAME` (default `payment3-callback-keys-<branch>`).
    pub secret_name: String,
    /// `SECRET_REFRESH_SECONDS` (default 300): a rotated key list is picked up after this.
    pub refresh: Duration,
}

impl CallbackAuthSettings {
    /// Every default, for a branch: what unit tests use.
    pub fn for_branch(branch: &str) -> Self {
        CallbackAuthSettings {
            policy: AuthPolicy::Enforce,
            overrides: BTreeMap::new(),
            secret_name: format!("payment3-callback-keys-{branch}"),
            refresh: Duration::from_secs(300),
        }
    }

    /// The policy of one gateway.
    pub fn policy_for(&self, gateway: &str) -> AuthPolicy {
        self.overrides.get(gateway).copied().unwrap_or(self.policy)
    }

    /// Reads `enforce`, `mark`, or a default followed by per-gateway overrides:
    /// `mark,wallet=enforce,bankapp=enforce`.
    pub fn parse_policy(text: &str) -> Result<(AuthPolicy, BTreeMap<String, AuthPolicy>), String> {
        let mut default = None;
        let mut overrides = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => {
                    let p = AuthPolicy::parse(part)
                        .ok_or_else(|| format!("expected enforce or mark, got {part:?}"))?;
                    if default.replace(p).is_some() {
                        return Err("more than one default policy".to_string());
                    }
                }
                Some((gateway, policy)) => {
                    let gateway = gateway.trim().to_ascii_lowercase();
                    if !SIGNING_GATEWAYS.contains(&gateway.as_str()) {
                        return Err(format!(
                            "unknown gateway {gateway:?} (wallet, bankapp or amex)"
                        ));
                    }
                    let p = AuthPolicy::parse(policy)
                        .ok_or_else(|| format!("expected enforce or mark, got {policy:?}"))?;
                    overrides.insert(gateway, p);
                }
            }
        }
        Ok((default.unwrap_or(AuthPolicy::Enforce), overrides))
    }
}
