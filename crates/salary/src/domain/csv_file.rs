//! What the records of a salary file mean: the optional header row, and each record turned into
//! a [`SalaryRow`] or a [`BadRow`] with its reasons. The records themselves (RFC 4180: quoted
//! fields with commas, quotes and line breaks; line numbers; a byte order mark dropped) come
//! from s3-import's streaming reader, which is the `csv` crate's parser (csv-core) made async.
//!
//! Header detection: the first record is a header when its fields are exactly the three column
//! names `EmpID`, `EmpName`, `Salary` (any order, any case, `EmpSalary` also accepted for
//! `Salary`); the columns are then taken in that order. Anything else is data in the order
//! `EmpID,EmpName,Salary`: the seed's generator writes no header, and its files start with a
//! salary row, which must be added like the others.

use crate::domain::row::{BadRow, EmpId, EmpName, EmployeeKey, Salary, SalaryRow};

/// Where each value is in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    emp_id: usize,
    emp_name: usize,
    salary: usize,
}

impl Columns {
    /// The seed's order, for a file without a header.
    pub const SEED: Columns = Columns {
        emp_id: 0,
        emp_name: 1,
        salary: 2,
    };

    /// The columns named by a header record, or None when the record is not a header.
    pub fn from_header(record: &[String]) -> Option<Columns> {
        if record.len() != 3 {
            return None;
        }
        let mut found = [None; 3];
        for (index, field) in record.iter().enumerate() {
            let name = field.trim().to_ascii_lowercase();
            let slot = match name.as_str() {
                "empid" => 0,
                "empname" => 1,
                "salary" | "empsalary" => 2,
                _ => return None,
            };
            if found[slot].replace(index).is_some() {
                return None;
            }
        }
        Some(Columns {
            emp_id: found[0]?,
            emp_name: found[1]?,
            salary: found[2]?,
        })
    }
}

/// One record of the file, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Header,
    Row(SalaryRow),
    Bad(BadRow),
}

/// Classifies the records of one file in order; remembers whether the first was a header.
#[derive(Debug, Default)]
pub struct SalaryFile {
    columns: Option<Columns>,
    has_header: bool,
}

impl SalaryFile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the file began with a header record (known after the first record).
    pub fn has_header(&self) -> bool {
        self.has_header
    }

    /// Classifies the record that starts on `line` (1-based).
    pub fn classify(&mut self, line: u64, record: &[String]) -> Record {
        let columns = match self.columns {
            Some(columns) => columns,
            None => {
                let header = Columns::from_header(record);
                self.has_header = header.is_some();
                self.columns = Some(header.unwrap_or(Columns::SEED));
                if header.is_some() {
                    return Record::Header;
                }
                Columns::SEED
            }
        };
        if record.len() != 3 {
            return Record::Bad(BadRow {
                line,
                reason: format!(
                    "expected 3 fields (EmpID,EmpName,Salary), found {}",
                    record.len()
                ),
            });
        }
        let field = |i: usize| record[i].as_str();
        let emp_id = EmpId::parse(field(columns.emp_id));
        let emp_name = EmpName::parse(field(columns.emp_name));
        let salary = Salary::parse(field(columns.salary));
        match (emp_id, emp_name, salary) {
            (Ok(emp_id), Ok(emp_name), Ok(salary)) => Record::Row(SalaryRow {
                line,
                key: EmployeeKey { emp_id, emp_name },
                salary,
            }),
            (emp_id, emp_name, salary) => {
                let reasons: Vec<String> = [emp_id.err(), emp_name.err(), salary.err()]
                    .into_iter()
                    .flatten()
                    .collect();
                Record::Bad(BadRow {
                    line,
                    reason: reasons.join("; "),
                })
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The records of a CSV text as s3-import's reader gives them (the same csv-core parser).
    pub(crate) fn records(text: &str) -> Vec<(u64, Vec<String>)> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.position().unwrap().line(),
                    r.iter().map(str::to_owned).collect(),
                )
            })
            .collect()
    }

    fn classify_all(text: &str) -> (bool, Vec<Record>) {
        let mut file = SalaryFile::new();
        let out = records(text)
            .iter()
            .map(|(line, fields)| file.classify(*line, fields))
            .collect();
        (file.has_header(), out)
    }

    fn row(line: u64, id: u64, name: &str, salary: &str) -> Record {
        Record::Row(SalaryRow {
            line,
            key: EmployeeKey {
                emp_id: EmpId::parse(&id.to_string()).unwrap(),
                emp_name: EmpName::parse(name).unwrap(),
            },
            salary: Salary::parse(salary).unwrap(),
        })
    }

    #[test]
    fn a_file_without_header_is_all_data() {
        // Given the seed generator's output: no header, the first line is a salary
        let (header, records) = classify_all("11,Mary Smith,6000\n12,John Roe,7000.50\n");
        // Then both rows are added, the first one included
        assert!(!header);
        assert_eq!(
            records,
            vec![
                row(1, 11, "Mary Smith", "6000"),
                row(2, 12, "John Roe", "7000.5")
            ]
        );
    }

    #[test]
    fn a_header_row_is_recognised_in_any_order_and_case() {
        let (header, records) = classify_all("salary,EMPID,EmpName\n100,1,Ann\n");
        assert!(header);
        assert_eq!(records, vec![Record::Header, row(2, 1, "Ann", "100")]);
        let (header, _) = classify_all(
            "EmpID,EmpName,EmpSalary
1,Ann,5
",
        );
        assert!(header);
    }

    #[test]
    fn quoted_names_keep_commas_quotes_pipes_and_line_breaks() {
        let text =
            "1,\"Doe, Jane\",100\n2,\"O\"\"Neil | Pat\",200\n3,\"Two\nLines\",300\n4,Last,1\n";
        let (_, records) = classify_all(text);
        assert_eq!(
            records,
            vec![
                row(1, 1, "Doe, Jane", "100"),
                row(2, 2, "O\"Neil | Pat", "200"),
                row(3, 3, "Two\nLines", "300"),
                // the record after a two-line one starts on line 5
                row(5, 4, "Last", "1"),
            ]
        );
    }

    #[test]
    fn bad_rows_carry_their_line_and_every_reason() {
        let text = "1,Ann,100\nx,,abc\n2,Bob\n3,Cy,5,extra\n4,Di,-5\n5,Ed,1e3\n";
        let (_, records) = classify_all(text);
        let bad: Vec<(u64, String)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Bad(b) => Some((b.line, b.reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert_eq!(bad[0].0, 2);
        assert!(bad[0].1.contains("EmpID \"x\" is not a whole number"));
        assert!(bad[0].1.contains("EmpName is empty"));
        assert!(bad[0].1.contains("Salary \"abc\" is not a decimal number"));
        assert_eq!(
            bad[1],
            (
                3,
                "expected 3 fields (EmpID,EmpName,Salary), found 2".into()
            )
        );
        assert_eq!(bad[2].0, 4);
        assert!(bad[3].1.contains("negative"));
        assert_eq!(bad[4].0, 6);
        assert_eq!(records[0], row(1, 1, "Ann", "100"));
    }

    #[test]
    fn a_header_like_row_later_in_the_file_is_a_bad_row() {
        let (_, records) = classify_all("1,Ann,100\nEmpID,EmpName,Salary\n");
        assert!(matches!(&records[1], Record::Bad(b) if b.line == 2));
    }
}
