//! `payment3-process-paid{,-wallet,-amex}-order-internal-<branch>`: applies a payment once
//! (SPEC 4.4). One binary, three functions; all logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_process_paid()
}
