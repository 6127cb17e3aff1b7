//! The per-file import report, written beside the file as `<key>.report.json` (a name that no
//! `.csv` suffix filter matches, so it never triggers an import). It says what happened to every
//! row that was not simply written: rejected rows (line and reason) and rows left as they were
//! (line and why), each list capped at [`MAX_LISTED`] with the full counts beside it.
//! A report with `status: "complete"` for the same eTag also marks the file as imported, so a
//! second delivery of the same event is recognised and skipped.

use serde::{Deserialize, Serialize};

use crate::objects::{ObjectError, ObjectStore};

/// At most this many rows are listed per list; the counts are always complete.
pub const MAX_LISTED: usize = 1000;

/// One row and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineNote {
    pub line: u64,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Every row was handled (written, kept or rejected).
    Complete,
    /// The import stopped (the stream broke, the table failed): the event is retried.
    Failed,
}

/// The report of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub status: ReportStatus,
    pub started_at: String,
    pub finished_at: String,
    /// Data rows read (the header and blank lines not counted).
    pub rows: u64,
    pub written: u64,
    pub kept: u64,
    pub rejected: u64,
    /// AWS calls made for the rows (reads and writes, retries included).
    pub calls: u64,
    pub rejected_rows: Vec<LineNote>,
    pub kept_rows: Vec<LineNote>,
    /// Why the import failed (status `failed`), without AWS error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImportReport {
    pub fn new(bucket: &str, key: &str, etag: Option<String>, started_at: String) -> Self {
        ImportReport {
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            status: ReportStatus::Complete,
            finished_at: started_at.clone(),
            started_at,
            rows: 0,
            written: 0,
            kept: 0,
            rejected: 0,
            calls: 0,
            rejected_rows: Vec::new(),
            kept_rows: Vec::new(),
            error: None,
        }
    }

    pub fn reject(&mut self, line: u64, reason: impl Into<String>) {
        self.rejected += 1;
        if self.rejected_rows.len() < MAX_LISTED {
            self.rejected_rows.push(LineNote {
                line,
                reason: reason.into(),
            });
        }
    }

    pub fn keep(&mut self, line: u64, reason: impl Into<String>) {
        self.kept += 1;
        if self.kept_rows.len() < MAX_LISTED {
            self.kept_rows.push(LineNote {
                line,
                reason: reason.into(),
            });
        }
    }

    /// True when this report says the file with this eTag was imported completely.
    pub fn completes(&self, etag: Option<&str>) -> bool {
        self.status == ReportStatus::Complete && etag.is_some() && self.etag.as_deref() == etag
    }
}

/// The report's key for a file.
pub fn report_key(key: &str) -> String {
    format!("{key}.report.json")
}

/// Writes the report beside the file.
pub async fn write_report(
    store: &dyn ObjectStore,
    report: &ImportReport,
) -> Result<(), ObjectError> {
    let body = serde_json::to_vec_pretty(report).expect("a report serialises");
    store
        .put(
            &report.bucket,
            &report_key(&report.key),
            body,
            "application/json",
        )
        .await
}

/// The report of a file, if one was written (an unreadable one counts as none).
pub async fn read_report(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Option<ImportReport>, ObjectError> {
    Ok(store
        .read_small(bucket, &report_key(key))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::MemoryObjects;

    #[tokio::test]
    async fn round_trip_and_caps() {
        let store = MemoryObjects::new();
        let mut r = ImportReport::new("b", "in/a.csv", Some("e1".into()), "t0".into());
        for i in 0..(MAX_LISTED as u64 + 5) {
            r.reject(i + 2, "bad");
        }
        r.keep(3, "paid");
        write_report(&store, &r).await.unwrap();
        assert!(store.get("b", "in/a.csv.report.json").is_some());
        let back = read_report(&store, "b", "in/a.csv").await.unwrap().unwrap();
        assert_eq!(back.rejected, MAX_LISTED as u64 + 5);
        assert_eq!(back.rejected_rows.len(), MAX_LISTED);
        assert_eq!(
            back.kept_rows[0],
            LineNote {
                line: 3,
                reason: "paid".into()
            }
        );
        assert!(back.completes(Some("e1")));
        assert!(!back.completes(Some("e2")));
        assert!(!back.completes(None));
        assert!(read_report(&store, "b", "other.csv")
            .await
            .unwrap()
            .is_none());
    }
}
