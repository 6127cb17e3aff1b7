//! `payment3-bills-import-<branch>`: loads a bills file dropped in S3 (SPEC 10). Logic in crates/bills.

fn main() -> Result<(), lambda_runtime::Error> {
    bills::start::run_import()
}
