//! `payment3-amex-callback-<branch>`: records amex callbacks (SPEC 4.1). All logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_callback::<callback_core::AmexRecords>()
}
