//! The pipe-separated copy (`processed/<name>.psv`): every record of the CSV file, header kept
//! when there is one, fields separated by `|`, and a field that contains `|`, a double quote, CR
//! or LF quoted as RFC 4180 quotes (inner quotes doubled), lines ending in CRLF. Reading it back
//! with any RFC 4180 reader set to `|` gives the CSV's fields exactly.

use std::io::Write;

/// Writes PSV records to `W` as they come (nothing is kept but the writer's buffer).
pub struct PsvWriter<W: Write> {
    inner: csv::Writer<W>,
}

impl<W: Write> PsvWriter<W> {
    pub fn new(out: W) -> Self {
        let inner = csv::WriterBuilder::new()
            .delimiter(b'|')
            .quote(b'"')
            .quote_style(csv::QuoteStyle::Necessary)
            .terminator(csv::Terminator::CRLF)
            // Records are copied as they are, whatever their field count.
            .flexible(true)
            .from_writer(out);
        PsvWriter { inner }
    }

    /// Copies one record's fields.
    pub fn write<I, F>(&mut self, fields: I) -> std::io::Result<()>
    where
        I: IntoIterator<Item = F>,
        F: AsRef<[u8]>,
    {
        self.inner.write_record(fields).map_err(into_io)
    }

    /// Flushes and hands back the output.
    pub fn finish(self) -> std::io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

fn into_io(error: csv::Error) -> std::io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::csv_file::tests::records;

    fn csv_to_psv(text: &str) -> Vec<u8> {
        let mut writer = PsvWriter::new(Vec::new());
        for (_, fields) in records(text) {
            writer.write(&fields).unwrap();
        }
        writer.finish().unwrap()
    }

    fn psv(text: &str) -> String {
        String::from_utf8(csv_to_psv(text)).unwrap()
    }

    #[test]
    fn plain_rows_become_pipe_separated_and_the_header_is_kept() {
        assert_eq!(
            psv("EmpID,EmpName,Salary\n11,Mary Smith,6000\n"),
            "EmpID|EmpName|Salary\r\n11|Mary Smith|6000\r\n"
        );
        assert_eq!(psv("11,Mary Smith,6000\n"), "11|Mary Smith|6000\r\n");
    }

    #[test]
    fn a_comma_needs_no_quotes_any_more_but_pipes_quotes_and_newlines_do() {
        assert_eq!(psv("1,\"Doe, Jane\",100\n"), "1|Doe, Jane|100\r\n");
        assert_eq!(psv("2,\"Pat | Lee\",200\n"), "2|\"Pat | Lee\"|200\r\n");
        assert_eq!(psv("3,\"O\"\"Neil\",300\n"), "3|\"O\"\"Neil\"|300\r\n");
        assert_eq!(psv("4,\"Two\nLines\",400\n"), "4|\"Two\nLines\"|400\r\n");
    }

    #[test]
    fn the_psv_reads_back_to_the_same_fields() {
        let text = "EmpID,EmpName,Salary\n1,\"Doe, Jane | \"\"JD\"\"\",100.5\n2,\"a\r\nb\",7\n3,x,9,extra\n";
        let out = csv_to_psv(text);
        let back: Vec<Vec<String>> = csv::ReaderBuilder::new()
            .delimiter(b'|')
            .has_headers(false)
            .flexible(true)
            .from_reader(out.as_slice())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let original: Vec<Vec<String>> = records(text).into_iter().map(|(_, f)| f).collect();
        assert_eq!(back, original);
        assert_eq!(back[1][1], "Doe, Jane | \"JD\"");
    }
}
