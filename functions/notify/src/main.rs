//! `payment3-notify-<branch>`: KBank card notify, `POST /notify` (SPEC 4.2). All logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_notify()
}
