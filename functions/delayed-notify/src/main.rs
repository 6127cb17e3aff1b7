//! `payment3-delayed-notify-<branch>`: the second look at a card notify (SPEC 4.3). All logic is in callback-core.

fn main() -> Result<(), lambda_runtime::Error> {
    callback_core::runtime::start::run_delayed_notify()
}
