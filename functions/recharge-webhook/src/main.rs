//! `payment3-recharge-webhook-<branch>`: Recharge's webhook, `POST /recharge/webhook` (SPEC 9).
//! Verifies, keeps and hands off; all logic is in the recharge crate.

fn main() -> Result<(), lambda_runtime::Error> {
    recharge::runtime::start::run_webhook()
}
