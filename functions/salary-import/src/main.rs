//! `payment3-salary-import-<branch>`: salary files from S3 to the PSV copy and the salary table
//! (SPEC 11). All logic is in crates/salary.

fn main() -> Result<(), lambda_runtime::Error> {
    salary::runtime::entry::run_salary_import()
}
