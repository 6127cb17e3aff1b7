//! A CSV file read row by row from any async reader (an S3 object's body, a file, bytes in a
//! test): never the whole file in memory. Each row carries the line it starts on (1-based, as
//! an editor shows it), so a report can point at it. Rows with a different number of fields
//! than the first one, and fields that are not UTF-8, are returned as [`RowError`]s: the caller
//! reports them and goes on with the next row.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use csv_async::{AsyncReader, AsyncReaderBuilder, ByteRecord};
use tokio::io::{AsyncRead, ReadBuf};

/// The longest row accepted (bytes). A longer one is a [`RowError`], so one bad line cannot
/// make a report or an item too large.
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// One row of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The line the row starts on (1-based; a header is line 1).
    pub line: u64,
    pub fields: Vec<String>,
}

/// A row that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

/// The file could not be read any further (the stream broke): the import must be retried.
#[derive(Debug, thiserror::Error)]
#[error("reading the CSV stream failed after line {line}: {message}")]
pub struct StreamError {
    pub line: u64,
    pub message: String,
}

/// Rows of a CSV stream.
pub struct CsvRows<R: AsyncRead + Unpin + Send> {
    reader: AsyncReader<NewlineCounter<R>>,
    record: ByteRecord,
    first: bool,
    last_line: u64,
    /// Offsets of the newlines read ahead by the CSV reader and not yet passed.
    newlines: Arc<Mutex<VecDeque<u64>>>,
    newlines_passed: u64,
}

/// Counts lines itself: csv-async's own line numbers are off after a CRLF line end (a record's
/// position is taken at the `\n` of the previous line's `\r\n`). A record at byte `b` starts on
/// line 1 + (newlines at offsets <= b): a newline at `b` itself is that `\n`.
struct NewlineCounter<R> {
    inner: R,
    offset: u64,
    newlines: Arc<Mutex<VecDeque<u64>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for NewlineCounter<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let start = self.offset;
            let fresh = &buf.filled()[before..];
            let mut newlines = self.newlines.lock().expect("newline list");
            for (i, _) in fresh.iter().enumerate().filter(|(_, b)| **b == b'\n') {
                newlines.push_back(start + i as u64);
            }
            drop(newlines);
            self.offset += fresh.len() as u64;
        }
        polled
    }
}

impl<R: AsyncRead + Unpin + Send> CsvRows<R> {
    /// Comma-separated, RFC 4180 quoting, no header handling (the first row comes back as a
    /// row: the caller decides whether it is a header), surrounding whitespace kept.
    pub fn new(reader: R) -> Self {
        let newlines = Arc::new(Mutex::new(VecDeque::new()));
        let reader = AsyncReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .create_reader(NewlineCounter {
                inner: reader,
                offset: 0,
                newlines: newlines.clone(),
            });
        CsvRows {
            reader,
            record: ByteRecord::new(),
            first: true,
            last_line: 0,
            newlines,
            newlines_passed: 0,
        }
    }

    /// The line a record ending at `end` ends on: the newlines before it, not counting its own
    /// terminator when the reader has consumed it (a `\n` at `end - 1`; after `\r\n` the
    /// reader stops between the two).
    fn line_before(&mut self, end: u64) -> u64 {
        let mut newlines = self.newlines.lock().expect("newline list");
        let mut last = None;
        while newlines.front().is_some_and(|&at| at < end) {
            last = newlines.pop_front();
            self.newlines_passed += 1;
        }
        let own_terminator = u64::from(end > 0 && last == Some(end - 1));
        1 + self.newlines_passed - own_terminator
    }

    /// The next row, `Ok(None)` at the end. An unreadable row is `Ok(Some(Err(..)))`; a broken
    /// stream (network, S3) is `Err`.
    pub async fn next(&mut self) -> Result<Option<Result<Row, RowError>>, StreamError> {
        let more = match self.reader.read_byte_record(&mut self.record).await {
            Ok(more) => more,
            Err(e) => {
                let line = self.last_line + 1;
                return match e.kind() {
                    csv_async::ErrorKind::Io(io) => Err(StreamError {
                        line: self.last_line,
                        message: io.to_string(),
                    }),
                    _ => {
                        self.last_line = line;
                        Ok(Some(Err(RowError {
                            line,
                            reason: e.to_string(),
                        })))
                    }
                };
            }
        };
        if !more {
            return Ok(None);
        }
        let end = self.reader.position().byte();
        let inside = self
            .record
            .as_slice()
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        let line = self.line_before(end) - inside;
        self.last_line = line;
        let first = std::mem::replace(&mut self.first, false);
        if self.record.as_slice().len() > MAX_ROW_BYTES {
            return Ok(Some(Err(RowError {
                line,
                reason: format!("row is longer than {MAX_ROW_BYTES} bytes"),
            })));
        }
        let mut fields = Vec::with_capacity(self.record.len());
        for (i, raw) in self.record.iter().enumerate() {
            let raw = if first && i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) // a UTF-8 BOM (Excel)
            } else {
                raw
            };
            match std::str::from_utf8(raw) {
                Ok(s) => fields.push(s.to_string()),
                Err(_) => {
                    return Ok(Some(Err(RowError {
                        line,
                        reason: format!("field {} is not UTF-8 text", i + 1),
                    })))
                }
            }
        }
        Ok(Some(Ok(Row { line, fields })))
    }

    /// The line of the last row returned (0 before the first).
    pub fn line(&self) -> u64 {
        self.last_line
    }
}

/// True when the row is empty (a blank line, or only commas and spaces): callers skip those.
pub fn is_blank(row: &Row) -> bool {
    row.fields.iter().all(|f| f.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(text: &[u8]) -> Vec<Result<Row, RowError>> {
        let mut rows = CsvRows::new(text);
        let mut out = vec![];
        while let Some(r) = rows.next().await.unwrap() {
            out.push(r);
        }
        out
    }

    #[tokio::test]
    async fn rows_with_lines_quotes_crlf_and_bom() {
        let text =
            b"\xEF\xBB\xBFInvoiceID,CustomerName\r\n1,\"Doe, Jane\"\r\n2,\"multi\nline\"\n3,Bob";
        let rows = all(text).await;
        let rows: Vec<Row> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows[0].fields, vec!["InvoiceID", "CustomerName"]);
        assert_eq!(rows[0].line, 1);
        assert_eq!(
            rows[1],
            Row {
                line: 2,
                fields: vec!["1".into(), "Doe, Jane".into()]
            }
        );
        assert_eq!(rows[2].line, 3);
        assert_eq!(rows[2].fields[1], "multi\nline");
        assert_eq!(
            rows[3].line, 5,
            "the row after a two-line field starts on line 5"
        );
    }

    #[tokio::test]
    async fn bad_utf8_and_ragged_rows_are_row_errors_not_the_end() {
        let text = b"a,b\n1,\xFF\n2\n3,c\n";
        let rows = all(text).await;
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].as_ref().unwrap_err().line, 2);
        assert!(rows[1].as_ref().unwrap_err().reason.contains("UTF-8"));
        // flexible: a short row is a row; the caller checks the field count.
        assert_eq!(rows[2].as_ref().unwrap().fields, vec!["2"]);
        assert_eq!(rows[3].as_ref().unwrap().fields, vec!["3", "c"]);
    }

    #[tokio::test]
    async fn an_overlong_row_is_refused() {
        let mut text = b"a\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_ROW_BYTES + 1));
        text.extend(b"\nb\n");
        let rows = all(&text).await;
        assert!(rows[1].is_err());
        assert_eq!(rows[2].as_ref().unwrap().fields, vec!["b"]);
    }

    #[tokio::test]
    async fn lines_with_crlf_lf_blank_lines_and_multiline_fields() {
        let text = b"h\r\n1,a\r\n\r\n2,\"x\ny\"\n3,b\n\n\n4,c";
        let lines: Vec<u64> = all(text)
            .await
            .into_iter()
            .map(|r| r.unwrap().line)
            .collect();
        assert_eq!(lines, vec![1, 2, 4, 6, 9]);
        let text = b"h\n1,a\n\n2,\"x\r\ny\"\r\n3,b\n";
        let lines: Vec<u64> = all(text)
            .await
            .into_iter()
            .map(|r| r.unwrap().line)
            .collect();
        assert_eq!(lines, vec![1, 2, 4, 6]);
    }

    #[tokio::test]
    async fn blank_rows() {
        assert!(is_blank(&Row {
            line: 1,
            fields: vec!["".into(), " ".into()]
        }));
        assert!(!is_blank(&Row {
            line: 1,
            fields: vec!["x".into()]
        }));
    }
}
