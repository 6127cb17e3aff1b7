//! `process-paid-wallet`: the local emulator's name for `payment3-process-paid-wallet-order-internal-<branch>`.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_process_paid()
}
