//! One salary row and its three validated values: [`EmpId`], [`EmpName`], [`Salary`]. A value
//! that passes here is one DynamoDB accepts as a key or a number, so invalid data never reaches
//! a write (moto is lenient about number ranges and key sizes; DynamoDB is not).

use std::fmt;

/// DynamoDB numbers: at most 38 significant digits.
const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// DynamoDB numbers: positive values below 1E+126 ...
const MAX_INTEGER_DIGITS: usize = 126;
/// ... and not below 1E-130.
const MAX_LEADING_FRACTION_ZEROS: usize = 129;
/// DynamoDB: a sort key value is at most 1024 bytes.
const MAX_NAME_BYTES: usize = 1024;

/// `EmpID`: a whole number (the table's hash key, type N).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmpId(u64);

impl EmpId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("EmpID is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("EmpID {:?} is not a whole number", clip(text)));
        }
        text.parse()
            .map(EmpId)
            .map_err(|_| format!("EmpID {:?} is too large", clip(text)))
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for EmpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `EmpName`: the range key, kept exactly as written (RFC 4180: spaces are part of a field).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmpName(String);

impl EmpName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("EmpName is empty".into());
        }
        if text.len() > MAX_NAME_BYTES {
            return Err(format!(
                "EmpName is {} bytes, more than DynamoDB's {MAX_NAME_BYTES} for a key",
                text.len()
            ));
        }
        Ok(EmpName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Salary`: a non-negative decimal that DynamoDB can store, kept as its canonical decimal
/// text (never a float): DynamoDB does the adding, exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salary(String);

impl Salary {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("Salary {:?} is not a decimal number", clip(text));
        if text.is_empty() {
            return Err("Salary is empty".into());
        }
        if text.starts_with('-') {
            return Err(format!("Salary {:?} is negative", clip(text)));
        }
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        let (int_part, frac_part) = match unsigned.split_once('.') {
            Some((i, f)) => (i, f),
            None => (unsigned, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int_part.is_empty() || !digits(int_part) || !digits(frac_part) {
            return Err(bad());
        }
        if unsigned.ends_with('.') {
            return Err(bad());
        }
        let int_part = int_part.trim_start_matches('0');
        let frac_part = frac_part.trim_end_matches('0');
        if int_part.len() > MAX_INTEGER_DIGITS {
            return Err(format!(
                "Salary {:?} is outside DynamoDB's number range (below 1E+126)",
                clip(text)
            ));
        }
        let significant = if int_part.is_empty() {
            let leading_zeros = frac_part.len() - frac_part.trim_start_matches('0').len();
            if !frac_part.is_empty() && leading_zeros > MAX_LEADING_FRACTION_ZEROS {
                return Err(format!(
                    "Salary {:?} is outside DynamoDB's number range (at least 1E-130)",
                    clip(text)
                ));
            }
            frac_part.len() - leading_zeros
        } else {
            (int_part.to_owned() + frac_part)
                .trim_end_matches('0')
                .len()
        };
        if significant > MAX_SIGNIFICANT_DIGITS {
            return Err(format!(
                "Salary {:?} has more than DynamoDB's {MAX_SIGNIFICANT_DIGITS} significant digits",
                clip(text)
            ));
        }
        let int_part = if int_part.is_empty() { "0" } else { int_part };
        Ok(Salary(if frac_part.is_empty() {
            int_part.to_owned()
        } else {
            format!("{int_part}.{frac_part}")
        }))
    }

    /// The canonical decimal text, as DynamoDB's `N` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The item a row adds to: `(EmpID, EmpName)` in `payment3-employee-salary-<branch>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmployeeKey {
    pub emp_id: EmpId,
    pub emp_name: EmpName,
}

/// A valid row: whose item gets `ADD EmpSalary :salary`, and from which line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SalaryRow {
    /// The line the record starts on (1-based), as a report names it.
    pub line: u64,
    pub key: EmployeeKey,
    pub salary: Salary,
}

/// A row that is not added, and every reason why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

/// Long values are cut in reasons so that a report stays readable.
fn clip(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emp_id_is_a_whole_number() {
        assert_eq!(EmpId::parse("1100").unwrap().value(), 1100);
        assert_eq!(EmpId::parse(" 7 ").unwrap().value(), 7);
        assert!(EmpId::parse("").unwrap_err().contains("empty"));
        assert!(EmpId::parse("12a")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(EmpId::parse("-3")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(EmpId::parse("1.5")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(EmpId::parse("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn emp_name_is_kept_as_written_and_fits_a_key() {
        assert_eq!(
            EmpName::parse(" Doe, Jane|x ").unwrap().as_str(),
            " Doe, Jane|x "
        );
        assert!(EmpName::parse("  ").unwrap_err().contains("empty"));
        assert!(EmpName::parse(&"a".repeat(1024)).is_ok());
        // 342 three-byte characters: 1026 bytes although only 342 characters.
        assert!(EmpName::parse(&"ก".repeat(342))
            .unwrap_err()
            .contains("1026 bytes"));
    }

    #[test]
    fn salary_is_a_decimal_in_dynamodb_range() {
        assert_eq!(Salary::parse("5555").unwrap().as_str(), "5555");
        assert_eq!(Salary::parse("0012.50").unwrap().as_str(), "12.5");
        assert_eq!(Salary::parse("+7.000").unwrap().as_str(), "7");
        assert_eq!(Salary::parse("0").unwrap().as_str(), "0");
        assert_eq!(Salary::parse("0.05").unwrap().as_str(), "0.05");
        for bad in [
            "abc", "1e5", "1.2.3", ".5", "5.", "NaN", "inf", "1,000", "0x10", "5 000",
        ] {
            assert!(
                Salary::parse(bad).unwrap_err().contains("not a decimal"),
                "{bad}"
            );
        }
        assert!(Salary::parse("-1").unwrap_err().contains("negative"));
        assert!(Salary::parse("").unwrap_err().contains("empty"));
        // 38 significant digits fit, 39 do not; trailing zeros of an integer do not count
        // as significant for the limit, its magnitude does.
        assert!(Salary::parse(&"9".repeat(38)).is_ok());
        assert!(Salary::parse(&"9".repeat(39))
            .unwrap_err()
            .contains("38 significant"));
        assert!(Salary::parse(&format!("1{}", "0".repeat(125))).is_ok());
        assert!(Salary::parse(&format!("1{}", "0".repeat(126)))
            .unwrap_err()
            .contains("1E+126"));
        assert!(Salary::parse(&format!("0.{}1", "0".repeat(129))).is_ok());
        assert!(Salary::parse(&format!("0.{}1", "0".repeat(130)))
            .unwrap_err()
            .contains("1E-130"));
    }
}
