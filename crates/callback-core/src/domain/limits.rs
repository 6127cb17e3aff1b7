//! What DynamoDB accepts (SPEC 4.6), as domain rules checked before anything is written, so bad
//! input is a 400 naming the field and never a 500 from AWS. moto does not enforce all of these,
//! so the local stack's `scripts/moto_serial.py` does (with DynamoDB's own messages), and
//! [`check_item`] lets the in-memory twin refuse what DynamoDB would refuse.
//!
//! - key attributes: a hash key at most 2048 UTF-8 bytes, a range key at most 1024; the ids the
//!   gateways send are held to [`MAX_ID_BYTES`] whatever attribute they end up in;
//! - numbers: at most 38 significant digits, magnitude 1E-130 to 9.99..E+125, or zero; checked
//!   on the decimal text ([`check_number_text`]), never through a float;
//! - items: at most 400 KB; [`fit_item`] shrinks an item's bulky attributes (the event, a body)
//!   to a prefix plus the full length and SHA-256 of what was cut.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::domain::error::ValidationError;
use crate::domain::item::{Attr, Item};

/// DynamoDB's item size limit (400 KB, counted as 400 * 1024 bytes).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on a partition (hash) key value.
pub const MAX_HASH_KEY_BYTES: usize = 2048;
/// DynamoDB's limit on a sort (range) key value.
pub const MAX_RANGE_KEY_BYTES: usize = 1024;
/// Ids a gateway sends (orderId, paymentId, userId, chargeId): the tighter of the two key
/// limits, so an id fits whichever key it becomes.
pub const MAX_ID_BYTES: usize = 1024;
/// Significant digits of a DynamoDB number.
pub const MAX_NUMBER_DIGITS: usize = 38;
/// The largest decimal exponent of a number's leading digit (9.9...E+125).
pub const MAX_NUMBER_EXPONENT: i64 = 125;
/// The smallest (1E-130).
pub const MIN_NUMBER_EXPONENT: i64 = -130;
/// What the inbox keeps of an oversized or rejected body, and the most a bulky attribute keeps
/// when an item is shrunk.
pub const KEPT_PREFIX_BYTES: usize = 64 * 1024;

/// An id a gateway sends must fit a key: not empty, at most [`MAX_ID_BYTES`] UTF-8 bytes.
pub fn check_id_bytes(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ValidationError::new(
            field,
            format!(
                "{field} is {} bytes in UTF-8, over the limit of {MAX_ID_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Whether a value can be a key attribute: non-empty and within `limit` bytes.
pub fn fits_key(value: &str, limit: usize) -> bool {
    !value.is_empty() && value.len() <= limit
}

/// Why DynamoDB would refuse a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberProblem {
    NotANumber,
    TooManyDigits,
    TooLarge,
    TooSmall,
}

impl NumberProblem {
    pub fn describe(self) -> &'static str {
        match self {
            NumberProblem::NotANumber => "is not a decimal number",
            NumberProblem::TooManyDigits => "has more than 38 significant digits",
            NumberProblem::TooLarge => "is larger than DynamoDB can store (9.9E+125)",
            NumberProblem::TooSmall => {
                "is closer to zero than DynamoDB can store (1E-130); use 0 for zero"
            }
        }
    }
}

/// Checks a number's decimal text (`-12.50`, `1e3`, `0.0`) against DynamoDB's number type.
pub fn number_problem(text: &str) -> Option<NumberProblem> {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(NumberProblem::NotANumber);
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Some(NumberProblem::NotANumber);
            }
            let negative = e.starts_with('-');
            // Far beyond any limit: no need to read it exactly (and no overflow).
            let magnitude = digits
                .trim_start_matches('0')
                .parse::<i64>()
                .unwrap_or(if digits.trim_start_matches('0').is_empty() {
                    0
                } else {
                    i64::MAX / 4
                })
                .min(i64::MAX / 4);
            if negative {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    let all: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let Some(first) = all.iter().position(|b| *b != b'0') else {
        return None; // zero, however written
    };
    let last = all.iter().rposition(|b| *b != b'0').unwrap_or(first);
    if last - first + 1 > MAX_NUMBER_DIGITS {
        return Some(NumberProblem::TooManyDigits);
    }
    // The decimal exponent of the leading significant digit.
    let leading = int_part.len() as i64 - 1 - first as i64 + exponent;
    if leading > MAX_NUMBER_EXPONENT {
        Some(NumberProblem::TooLarge)
    } else if leading < MIN_NUMBER_EXPONENT {
        Some(NumberProblem::TooSmall)
    } else {
        None
    }
}

/// A number a field carries must be storable as a DynamoDB number.
pub fn check_number_text(field: &'static str, text: &str) -> Result<(), ValidationError> {
    match number_problem(text) {
        None => Ok(()),
        Some(problem) => Err(ValidationError::new(
            field,
            format!("{field} {} (got {})", problem.describe(), shorten(text, 48)),
        )),
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        text.to_string()
    } else {
        format!("{}... ({} bytes)", prefix(text, max), text.len())
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The size DynamoDB counts for an attribute value (names and values in UTF-8 bytes; a number
/// about one byte per two digits plus one; maps and lists three bytes plus their elements).
pub fn attr_size(attr: &Attr) -> usize {
    match attr {
        Attr::S(s) => s.len(),
        Attr::N(n) => n.len().div_ceil(2) + 1,
        Attr::Bool(_) | Attr::Null(_) => 1,
        Attr::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + attr_size(v) + 1)
                .sum::<usize>()
        }
        Attr::L(l) => 3 + l.iter().map(|v| attr_size(v) + 1).sum::<usize>(),
    }
}

/// The size DynamoDB counts for an item.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + attr_size(v)).sum()
}

/// Why DynamoDB would refuse an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemProblem {
    #[error("item is {0} bytes, over DynamoDB's {MAX_ITEM_BYTES}")]
    TooLarge(usize),
    #[error("key attribute {0} is empty or over its size limit")]
    Key(String),
    #[error("number attribute {0} is out of DynamoDB's range")]
    Number(String),
}

/// Checks an item as DynamoDB would: its size, its keys (`hash`, optional `range`), and every
/// number in it.
pub fn check_item(item: &Item, hash: &str, range: Option<&str>) -> Result<(), ItemProblem> {
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(ItemProblem::TooLarge(size));
    }
    for (name, limit) in [
        (Some(hash), MAX_HASH_KEY_BYTES),
        (range, MAX_RANGE_KEY_BYTES),
    ] {
        let Some(name) = name else { continue };
        let ok = match item.get(name) {
            Some(Attr::S(s)) => fits_key(s, limit),
            Some(Attr::N(n)) => number_problem(n).is_none(),
            _ => false,
        };
        if !ok {
            return Err(ItemProblem::Key(name.to_string()));
        }
    }
    fn numbers_ok(attr: &Attr) -> bool {
        match attr {
            Attr::N(n) => number_problem(n).is_none(),
            Attr::M(m) => m.values().all(numbers_ok),
            Attr::L(l) => l.iter().all(numbers_ok),
            _ => true,
        }
    }
    if let Some((name, _)) = item.iter().find(|(_, v)| !numbers_ok(v)) {
        return Err(ItemProblem::Number(name.clone()));
    }
    Ok(())
}

/// How a bulky attribute is shrunk when its item is too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shrink {
    /// Plain text (S): cut to a prefix; `<name>Bytes` and `<name>Sha256` say what was cut.
    Text,
    /// JSON text (a PynamoDB `JSONAttribute`): replaced by a JSON object that still loads,
    /// `{"truncated": true, "bytes": n, "sha256": "...", "prefix": "<first bytes of the text>"}`.
    Json,
}

/// The JSON that stands for a JSON text cut to `keep` bytes.
pub fn truncated_json(text: &str, keep: usize) -> Value {
    json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": sha256_hex(text.as_bytes()),
        "prefix": prefix(text, keep),
    })
}

/// Shrinks the item's `bulky` attributes, largest first, until the item fits DynamoDB's limit
/// (with `headroom` bytes to spare for attributes set later, e.g. an inbox outcome). Attributes
/// that are not bulky are never touched; they are bounded by validation.
pub fn fit_item(item: &mut Item, bulky: &[(&str, Shrink)], headroom: usize) {
    let budget = MAX_ITEM_BYTES.saturating_sub(headroom);
    let mut order: Vec<(&str, Shrink)> = bulky.to_vec();
    order.sort_by_key(|(name, _)| std::cmp::Reverse(item.get(*name).map(attr_size).unwrap_or(0)));
    for (name, shrink) in order {
        let size = item_size(item);
        if size <= budget {
            return;
        }
        let Some(Attr::S(text)) = item.get(name).cloned() else {
            continue;
        };
        // What this attribute may keep, with room for the summary around the prefix (JSON
        // escaping can grow a prefix up to six times; the loop below checks the result).
        let over = size - budget;
        let mut keep = text.len().saturating_sub(over + 512).min(KEPT_PREFIX_BYTES);
        loop {
            let replacement = match shrink {
                Shrink::Text => prefix(&text, keep).to_string(),
                Shrink::Json => truncated_json(&text, keep).to_string(),
            };
            item.insert(name.to_string(), Attr::S(replacement));
            if shrink == Shrink::Text {
                item.insert(format!("{name}Bytes"), Attr::N(text.len().to_string()));
                item.insert(
                    format!("{name}Sha256"),
                    Attr::S(sha256_hex(text.as_bytes())),
                );
                item.insert(format!("{name}Truncated"), Attr::Bool(true));
            }
            if item_size(item) <= budget || keep == 0 {
                break;
            }
            keep /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_dynamodb_takes() {
        for ok in [
            "0",
            "0.0",
            "-0",
            "0e999",
            "2339.0",
            "2339.00",
            "-1",
            "1E-130",
            "1e-130",
            "9.9999999999999999999999999999999999999E+125",
            "12345678901234567890123456789012345678",
            "1000000000000000000000000000000000000000000",
            "0.000001",
            "1e125",
            "123.4e-2",
        ] {
            assert_eq!(number_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn numbers_dynamodb_refuses() {
        use NumberProblem::*;
        for (bad, why) in [
            ("1e308", TooLarge),
            ("1e126", TooLarge),
            ("99.9e125", TooLarge),
            ("1e-320", TooSmall),
            ("1e-131", TooSmall),
            ("0.1e-130", TooSmall),
            ("123456789012345678901234567890123456789", TooManyDigits),
            ("1.23456789012345678901234567890123456789", TooManyDigits),
            ("1e99999999999999999999999", TooLarge),
            ("1e-99999999999999999999999", TooSmall),
            ("", NotANumber),
            ("abc", NotANumber),
            ("1e", NotANumber),
            (".", NotANumber),
            ("NaN", NotANumber),
            ("Infinity", NotANumber),
        ] {
            assert_eq!(number_problem(bad), Some(why), "{bad}");
        }
    }

    #[test]
    fn a_number_field_is_named_in_the_error() {
        let err = check_number_text("amount", "1e308").unwrap_err();
        assert_eq!(err.field, "amount");
        assert_eq!(
            err.message,
            "amount is larger than DynamoDB can store (9.9E+125) (got 1e308)"
        );
    }

    #[test]
    fn ids_are_limited_in_bytes_not_characters() {
        assert!(check_id_bytes("orderId", &"9".repeat(1024)).is_ok());
        // 256 emoji are 1024 bytes; 257 are over.
        assert!(check_id_bytes("orderId", &"😀".repeat(256)).is_ok());
        let err = check_id_bytes("orderId", &"😀".repeat(1000)).unwrap_err();
        assert_eq!(err.field, "orderId");
        assert_eq!(
            err.message,
            "orderId is 4000 bytes in UTF-8, over the limit of 1024 bytes"
        );
    }

    #[test]
    fn prefixes_cut_on_character_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
    }

    #[test]
    fn an_oversized_item_is_shrunk_and_still_loads() {
        let event = serde_json::to_string(&json!({"body": "\u{1}".repeat(100_000)})).unwrap();
        assert!(event.len() > 500_000);
        let mut item: Item = [
            ("id".to_string(), Attr::S("x".into())),
            ("event".to_string(), Attr::S(event.clone())),
            ("note".to_string(), Attr::S("y".repeat(300_000))),
        ]
        .into_iter()
        .collect();
        fit_item(
            &mut item,
            &[("event", Shrink::Json), ("note", Shrink::Text)],
            1024,
        );
        assert!(
            item_size(&item) <= MAX_ITEM_BYTES - 1024,
            "{}",
            item_size(&item)
        );
        assert!(check_item(&item, "id", None).is_ok());
        let Attr::S(kept) = &item["event"] else {
            panic!()
        };
        let kept: Value = serde_json::from_str(kept).unwrap();
        assert_eq!(kept["truncated"], true);
        assert_eq!(kept["bytes"], event.len());
        assert_eq!(kept["sha256"], sha256_hex(event.as_bytes()));
        assert!(event.starts_with(kept["prefix"].as_str().unwrap()));
    }

    #[test]
    fn an_item_that_fits_is_left_alone() {
        let mut item: Item = [("id".to_string(), Attr::S("x".repeat(1000)))]
            .into_iter()
            .collect();
        let before = item.clone();
        fit_item(&mut item, &[("id", Shrink::Text)], 0);
        assert_eq!(item, before);
    }

    #[test]
    fn items_are_checked_as_dynamodb_would() {
        let item = |k: &str, n: &str| -> Item {
            [
                ("orderId".to_string(), Attr::S(k.into())),
                ("amount".to_string(), Attr::N(n.into())),
            ]
            .into_iter()
            .collect()
        };
        assert!(check_item(&item("1", "2339.0"), "orderId", None).is_ok());
        assert_eq!(
            check_item(&item("", "1"), "orderId", None),
            Err(ItemProblem::Key("orderId".into()))
        );
        assert!(check_item(&item(&"x".repeat(2049), "1"), "orderId", None).is_err());
        assert_eq!(
            check_item(&item("1", "1e308"), "orderId", None),
            Err(ItemProblem::Number("amount".into()))
        );
        let big: Item = [("orderId".to_string(), Attr::S("x".repeat(MAX_ITEM_BYTES)))]
            .into_iter()
            .collect();
        assert!(matches!(
            check_item(&big, "orderId", None),
            Err(ItemProblem::TooLarge(_))
        ));
    }
}
