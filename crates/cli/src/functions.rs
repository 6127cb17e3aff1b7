//! The functions of a branch, under the three names they go by: the `function` an inbox entry
//! names, the deployed Lambda name (`payment3-<name>-<branch><suffix>`), and the route a gateway
//! posts to.

use callback_core::{AmexRecords, BankAppRecords, RecordTable, WalletRecords};

/// A function whose deliveries are kept in the inbox (and so can be replayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    Wallet,
    BankApp,
    Amex,
    Notify,
}

/// The `function` notify's inbox entries carry.
pub const NOTIFY: &str = "notify";

impl Receiver {
    /// From an inbox entry's `function`.
    pub fn from_inbox(function: &str) -> Option<Self> {
        match function {
            f if f == WalletRecords::FUNCTION => Some(Receiver::Wallet),
            f if f == BankAppRecords::FUNCTION => Some(Receiver::BankApp),
            f if f == AmexRecords::FUNCTION => Some(Receiver::Amex),
            NOTIFY => Some(Receiver::Notify),
            _ => None,
        }
    }

    /// The deployed function name of a branch.
    pub fn function_name(self, branch: &str, suffix: &str) -> String {
        let name = match self {
            Receiver::Wallet => "wallet-callback",
            Receiver::BankApp => "bankapp-callback",
            Receiver::Amex => "amex-callback",
            Receiver::Notify => "notify",
        };
        format!("payment3-{name}-{branch}{suffix}")
    }

    /// The public route (what the rebuilt REST event names as its path).
    pub fn route(self) -> &'static str {
        match self {
            Receiver::Wallet => "/wallet/callback",
            Receiver::BankApp => "/bankapp/callback",
            Receiver::Amex => "/amex/callback",
            Receiver::Notify => "/notify",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Receiver::Wallet => "wallet",
            Receiver::BankApp => "bank app",
            Receiver::Amex => "Amex",
            Receiver::Notify => "KBank notify",
        }
    }
}

/// The function name in a Lambda function ARN (`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`),
/// or the text itself when it is a plain name.
pub fn name_from_arn(arn: &str) -> &str {
    match arn.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None => arn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_names_map_to_deployed_names() {
        let r = Receiver::from_inbox("walletcallback").unwrap();
        assert_eq!(r.function_name("dev", ""), "payment3-wallet-callback-dev");
        assert_eq!(
            Receiver::from_inbox("amexcallback")
                .unwrap()
                .function_name("master", "-rs"),
            "payment3-amex-callback-master-rs"
        );
        assert_eq!(Receiver::from_inbox("notify"), Some(Receiver::Notify));
        assert_eq!(Receiver::from_inbox("delayed-notify"), None);
    }

    #[test]
    fn arns_give_their_function_name() {
        assert_eq!(
            name_from_arn("arn:aws:lambda:ap-southeast-1:1:function:payment3-notify-dev:$LATEST"),
            "payment3-notify-dev"
        );
        assert_eq!(name_from_arn("process-paid"), "process-paid");
    }
}
