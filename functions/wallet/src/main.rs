//! `payment3-wallet-callback-<branch>`: records wallet callbacks (SPEC 4.1). All logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_callback::<callback_core::WalletRecords>()
}
