//! The salary import ([`import`]): a file from S3 to the PSV copy, the salary table and a report.

pub mod import;
