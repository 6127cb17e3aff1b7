//! `payment3-bills-pay-<branch>`: `POST /paymentbalance`, starts the payment workflow (SPEC 10). Logic in crates/bills.

fn main() -> Result<(), lambda_runtime::Error> {
    bills::start::run_pay()
}
