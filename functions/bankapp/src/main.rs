//! `payment3-bankapp-callback-<branch>`: records bankapp callbacks (SPEC 4.1). All logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_callback::<callback_core::BankAppRecords>()
}
