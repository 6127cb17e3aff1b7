//! What a salary file means, with no AWS in sight: the values of a row ([`row`]), the records
//! of a file and its optional header ([`csv_file`]), the pipe-separated copy ([`psv`]), and how
//! the valid rows are cut into the batches that are each applied exactly once ([`batch`]).

pub mod batch;
pub mod csv_file;
pub mod psv;
pub mod row;
