//! Exactly once, the domain half: which file an import is ([`ImportId`]) and how its valid rows
//! are cut into batches ([`BatchPlanner`]), each applied as one DynamoDB transaction together
//! with its marker (see `flows::import` for why that is exactly once).
//!
//! The cut must come out the same on every run over the same file, or a retry would mark other
//! rows than the first run did. It depends only on the rows (in file order) and on the batch
//! size, which the file's ledger entry keeps from the first run: a batch ends when it holds
//! `max_rows` rows, or just before a row whose employee is already in it (one transaction may
//! not touch an item twice). A batch is named by the line of its first row.

use std::collections::HashSet;
use std::fmt;

use crate::domain::row::{EmployeeKey, SalaryRow};

/// The most rows per transaction: DynamoDB takes 100 actions per TransactWriteItems, moto
/// (the local stack) 25; with the batch's marker, 24 rows fit both.
pub const MAX_BATCH_ROWS: usize = 24;

/// Which version of which object an import reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectVersion {
    /// The bucket is versioned: the version the event names.
    VersionId(String),
    /// Not versioned: the content's eTag (an identical re-upload is the same file).
    ETag(String),
}

/// The identity of one import: `<bucket>/<key>@<versionId>` or `<bucket>/<key>#<eTag>`. A
/// duplicate event and a retry carry the same one; a new upload with other content does not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImportId(String);

impl ImportId {
    pub fn new(bucket: &str, key: &str, version: &ObjectVersion) -> Self {
        ImportId(match version {
            ObjectVersion::VersionId(v) => format!("{bucket}/{key}@{v}"),
            ObjectVersion::ETag(e) => format!("{bucket}/{key}#{}", e.trim_matches('"')),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rows applied together, with one marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub rows: Vec<SalaryRow>,
}

impl Batch {
    /// The line of the batch's first row: its name in the ledger.
    pub fn first_line(&self) -> u64 {
        self.rows.first().map_or(0, |r| r.line)
    }

    /// The ledger entry that says this batch is applied.
    pub fn marker(&self) -> String {
        format!("batch#{:010}", self.first_line())
    }
}

/// Cuts valid rows into batches as they stream by.
#[derive(Debug)]
pub struct BatchPlanner {
    max_rows: usize,
    rows: Vec<SalaryRow>,
    keys: HashSet<EmployeeKey>,
}

impl BatchPlanner {
    pub fn new(max_rows: usize) -> Self {
        BatchPlanner {
            max_rows: max_rows.clamp(1, MAX_BATCH_ROWS),
            rows: Vec::new(),
            keys: HashSet::new(),
        }
    }

    /// Adds a row; returns the batch it closed, if any (the row starts the next one).
    pub fn push(&mut self, row: SalaryRow) -> Option<Batch> {
        let closed = if self.keys.contains(&row.key) || self.rows.len() >= self.max_rows {
            self.take()
        } else {
            None
        };
        self.keys.insert(row.key.clone());
        self.rows.push(row);
        closed
    }

    /// The last batch, at the end of the file.
    pub fn finish(&mut self) -> Option<Batch> {
        self.take()
    }

    fn take(&mut self) -> Option<Batch> {
        self.keys.clear();
        if self.rows.is_empty() {
            return None;
        }
        Some(Batch {
            rows: std::mem::take(&mut self.rows),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::row::{EmpId, EmpName, Salary};

    fn row(line: u64, id: u64) -> SalaryRow {
        SalaryRow {
            line,
            key: EmployeeKey {
                emp_id: EmpId::parse(&id.to_string()).unwrap(),
                emp_name: EmpName::parse("Ann").unwrap(),
            },
            salary: Salary::parse("1").unwrap(),
        }
    }

    fn plan(max: usize, ids: &[u64]) -> Vec<Vec<u64>> {
        let mut planner = BatchPlanner::new(max);
        let mut batches = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            batches.extend(planner.push(row(i as u64 + 1, *id)));
        }
        batches.extend(planner.finish());
        batches
            .iter()
            .map(|b| b.rows.iter().map(|r| r.line).collect())
            .collect()
    }

    #[test]
    fn batches_are_cut_by_size() {
        assert_eq!(
            plan(2, &[1, 2, 3, 4, 5]),
            vec![vec![1, 2], vec![3, 4], vec![5]]
        );
        assert_eq!(plan(2, &[]), Vec::<Vec<u64>>::new());
    }

    #[test]
    fn an_employee_appears_at_most_once_per_batch() {
        // Given employee 1 twice in a row, then employee 2, then 1 again
        // Then the second row of employee 1 starts a new batch, and so does the third
        assert_eq!(plan(24, &[1, 1, 2, 1]), vec![vec![1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn the_cut_is_the_same_on_every_run_and_the_size_is_bounded() {
        let ids: Vec<u64> = (0..100).map(|i| i % 37).collect();
        assert_eq!(plan(24, &ids), plan(24, &ids));
        assert!(plan(1000, &ids).iter().all(|b| b.len() <= MAX_BATCH_ROWS));
    }

    #[test]
    fn markers_and_import_ids_name_the_file_and_the_first_line() {
        let mut planner = BatchPlanner::new(24);
        planner.push(row(7, 1));
        assert_eq!(planner.finish().unwrap().marker(), "batch#0000000007");
        let etag = ImportId::new(
            "b",
            "salary/2026-01.csv",
            &ObjectVersion::ETag("\"abc\"".into()),
        );
        assert_eq!(etag.as_str(), "b/salary/2026-01.csv#abc");
        let version = ImportId::new("b", "salary/x.csv", &ObjectVersion::VersionId("v1".into()));
        assert_eq!(version.as_str(), "b/salary/x.csv@v1");
    }
}
