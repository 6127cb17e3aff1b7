//! Money as exact decimals: amounts are read from the JSON text as it was written (`2339.00`
//! stays 2339.00), never through a float.

use rust_decimal::Decimal;
use serde_json::value::RawValue;
use serde_json::Value;

/// A decimal from its text: `2339`, `2339.50`, `" 1e3 "`. No thousands separators.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if t.is_empty() || t.contains(',') {
        return None;
    }
    t.parse::<Decimal>()
        .ok()
        .or_else(|| Decimal::from_scientific(t).ok())
}

/// A decimal from a raw JSON value: a number's own text, or a string holding a number.
pub fn decimal_from_raw(raw: &RawValue) -> Option<Decimal> {
    decimal_text_from_raw(raw).and_then(|t| parse_decimal(&t))
}

/// The decimal text of a raw JSON value: a number's text as written, or a string's content.
/// `None` for anything else (null, boolean, object, array).
pub fn decimal_text_from_raw(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    match text.chars().next() {
        Some('"') => match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        },
        Some(c) if c == '-' || c.is_ascii_digit() => Some(text.to_string()),
        _ => None,
    }
}

/// A decimal from an already-parsed JSON value. A number here has been through serde_json's
/// f64, whose shortest round-trip text is exact for amounts of up to 15 significant digits;
/// callers that have the raw text use [`decimal_from_raw`] instead.
pub fn decimal_from_value(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => parse_decimal(&n.to_string()),
        Value::String(s) => parse_decimal(s),
        _ => None,
    }
}

/// Whether two amounts differ by more than 0.01 (SPEC 4.4 step 2).
pub fn differs(paid: Decimal, total: Decimal) -> bool {
    (paid - total).abs() > Decimal::new(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn keeps_the_written_digits() {
        assert_eq!(
            decimal_from_raw(&raw("2339.00")).unwrap().to_string(),
            "2339.00"
        );
        assert_eq!(
            decimal_from_raw(&raw("\"2339.5\"")).unwrap().to_string(),
            "2339.5"
        );
        assert_eq!(
            decimal_from_raw(&raw("12345678901234567.89"))
                .unwrap()
                .to_string(),
            "12345678901234567.89"
        );
        assert_eq!(decimal_from_raw(&raw("1e3")).unwrap(), Decimal::from(1000));
        for bad in ["null", "true", "\"\"", "\"2,339.00\"", "{}", "\"abc\""] {
            assert_eq!(decimal_from_raw(&raw(bad)), None, "{bad}");
        }
    }

    #[test]
    fn a_cent_is_the_tolerance() {
        let d = |s: &str| parse_decimal(s).unwrap();
        assert!(!differs(d("2339.00"), d("2339")));
        assert!(!differs(d("2339.01"), d("2339.00")));
        assert!(differs(d("2339.02"), d("2339.00")));
        assert!(differs(d("100"), d("2339")));
    }
}
