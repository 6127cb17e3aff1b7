//! salary: the salary files of SPEC 11 (seed 004, second system). A monthly CSV file
//! (`EmpID,EmpName,Salary`) dropped under `salary/` in the bills bucket is copied to
//! `processed/<name>.psv` (pipe-separated) and each of its salaries is added into
//! `payment3-employee-salary-<branch>` with `ADD EmpSalary`, exactly once per file.
//!
//! Layers, imports pointing down: `flows` (the import) -> `ports` (the ledger and salary
//! table) -> [`domain`] (rows, header, PSV, batches; no AWS). The S3 side (events, streaming
//! reads, the object port, reports) is the shared `s3-import` crate.

pub mod domain;
pub mod flows;
pub mod ports;
pub mod runtime;
