//! `payment3-bills-balance-<branch>`: `GET /paymentbalance/id?InvoiceID=<n>` (SPEC 10). Logic in crates/bills.

fn main() -> Result<(), lambda_runtime::Error> {
    bills::start::run_balance()
}
