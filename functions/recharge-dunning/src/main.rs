//! `payment3-recharge-dunning-<branch>`: a failed Recharge charge rescheduled once (SPEC 9),
//! invoked asynchronously by the webhook. All logic is in the recharge crate.

fn main() -> Result<(), lambda_runtime::Error> {
    recharge::runtime::start::run_dunning()
}
