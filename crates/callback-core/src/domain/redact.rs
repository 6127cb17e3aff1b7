//! Redaction of what must never be logged or stored (SPEC 4.6, 6): secrets (KBank `skey_`/`pkey_`
//! keys, Standard Webhooks `whsec_` keys, bearer tokens, authorization headers, API keys,
//! passwords) and card data (a PAN, also written with spaces or dashes, is masked to its first 6
//! and last 4 digits; a CVV is removed, whether it is a JSON field or free text like `cvv 987`).
//! Applied to every event, header map, body, message and error text before it reaches a log
//! line, a table or an e-mail; `runtime::logging` applies it to every log line as well.
//! Redacted JSON text stays JSON: a secret value becomes the string `"[REDACTED]"`.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const REDACTED: &str = "[REDACTED]";

/// Keys whose values are secrets, compared without case, `-` and `_`.
const SECRET_KEYS: &[&str] = &[
    "secretkey",
    "secret",
    "password",
    "passwd",
    "apikey",
    "xapikey",
    "authorization",
    "proxyauthorization",
    "cookie",
    "setcookie",
    "xamzsecuritytoken",
    "token",
    "accesstoken",
    "clientsecret",
    "signingsecret",
    "webhooksecret",
    "pin",
    "cid",
    "csc",
];

/// Key endings that make any key a secret: `card_cvv`, `cvv2`, `cardSecurityCode`, `x-api-key`.
const SECRET_KEY_ENDINGS: &[&str] = &[
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "cvn",
    "securitycode",
    "verificationcode",
    "verificationvalue",
    "secretkey",
    "apikey",
    "password",
    "cardpin",
];

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_' && *c != ' ')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a field or header name holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = normalise(key);
    SECRET_KEYS.contains(&k.as_str()) || SECRET_KEY_ENDINGS.iter().any(|e| k.ends_with(e))
}

/// Redacts a JSON value: secret keys lose their value, strings lose PANs and secrets, a number
/// that is a PAN becomes its masked text.
pub fn redact_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(redact_map(map)),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::String(s) => Value::String(redact_text(s)),
        Value::Number(n) => {
            let text = n.to_string();
            let masked = mask_pans(&text);
            if masked == text {
                value.clone()
            } else {
                Value::String(masked)
            }
        }
        other => other.clone(),
    }
}

fn redact_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) && !v.is_null() {
                Value::String(REDACTED.into())
            } else {
                redact_value(v)
            };
            (redact_text(k), v)
        })
        .collect()
}

/// Headers with secret values replaced, names lower-cased.
pub fn redact_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) {
                REDACTED.to_string()
            } else {
                redact_text(v)
            };
            (redact_text(&k.to_ascii_lowercase()), v)
        })
        .collect()
}

/// Secret key prefixes: the prefix stays (it says what kind of key it was), the token goes.
const KEY_PREFIXES: &[&str] = &["skey_", "pkey_", "whsec_"];
/// Authorization schemes whose credentials follow them (a pasted Authorization header).
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "digest"];
/// Words a CVV is written after: `cvv 987`, `CVC: 123`, `cvv2=1234`, `security code is 123`.
const CVV_WORDS: &[&str] = &[
    "cvv",
    "cvc",
    "cvn",
    "csc",
    "security code",
    "security_code",
    "security-code",
    "securitycode",
    "verification code",
    "verification value",
];

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=' | b'.' | b'~')
}

/// Byte ranges of secrets in free text (keys, credentials, CVVs), found with plain scans, so the
/// cost stays linear whatever the text (a 2 MB body included).
fn secret_ranges(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut ranges = Vec::new();
    let occurrences = |needle: &'static str| lower.match_indices(needle).map(|(i, _)| i);
    for p in KEY_PREFIXES {
        for at in occurrences(p) {
            let start = at + p.len();
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| is_token_byte(**b))
                    .count();
            if end > start {
                ranges.push((start, end));
            }
        }
    }
    for scheme in AUTH_SCHEMES {
        for at in occurrences(scheme) {
            if at > 0 && is_word_byte(bytes[at - 1]) {
                continue;
            }
            let mut start = at + scheme.len();
            let spaces = bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            if spaces == 0 {
                continue;
            }
            start += spaces;
            let len = bytes[start..]
                .iter()
                .take_while(|b| is_token_byte(**b))
                .count();
            if len >= 4 {
                ranges.push((start, start + len));
            }
        }
    }
    for word in CVV_WORDS {
        for at in occurrences(word) {
            // `card_cvv: 123` counts: only a letter or digit before the word makes it another.
            if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
                continue;
            }
            if let Some(range) = cvv_after(bytes, at + word.len()) {
                ranges.push(range);
            }
        }
    }
    ranges
}

/// The 3 or 4 digits of a CVV written after its word, ending at `i`: an optional `2`
/// (`cvv2`), then quotes, spaces and one of `: = # -`, `is`, `was`.
fn cvv_after(bytes: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let at = |i: usize| bytes.get(i).copied();
    if at(i) == Some(b'2') {
        i += 1;
    }
    if at(i).is_some_and(is_word_byte) {
        return None; // `cvvx`, `cscore`: another word
    }
    let skip = |mut i: usize, set: &[u8]| {
        while at(i).is_some_and(|b| set.contains(&b)) {
            i += 1;
        }
        i
    };
    i = skip(i, b"\"' \t");
    if at(i).is_some_and(|b| b":=#-".contains(&b)) {
        i += 1;
    } else if bytes[i.min(bytes.len())..].starts_with(b"is ") {
        i += 2;
    } else if bytes[i.min(bytes.len())..].starts_with(b"was ") {
        i += 3;
    }
    i = skip(i, b"\"' \t");
    let digits = bytes[i.min(bytes.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    ((3..=4).contains(&digits)).then_some((i, i + digits))
}

/// `text` with each byte range replaced by [`REDACTED`] (overlapping ranges merged).
fn replace_ranges(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return text.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for (start, end) in ranges {
        if end <= cursor {
            continue;
        }
        let start = start.max(cursor);
        out.push_str(&text[cursor..start]);
        out.push_str(REDACTED);
        cursor = end;
    }
    out.push_str(&text[cursor..]);
    out
}

/// Redacts free text: card numbers masked, CVVs and secret keys replaced, and the value of a
/// secret field inside JSON text (`"secretKey": "..."`, `"cvv": 123`) replaced. JSON text stays
/// JSON; text that is JSON is also checked after parsing, so escapes (`\u0034111...`) hide nothing.
pub fn redact_text(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let masked = mask_pans(text);
    let keyed = replace_ranges(&masked, secret_ranges(&masked));
    // JSON pairs after the scans: `"cvv": 123` became `"cvv": [REDACTED]`, made JSON again here.
    let paired = redact_json_secret_pairs(&keyed);
    reparse_if_needed(paired)
}

/// JSON text whose parsed form still holds something to redact (escaped digits or key names, a
/// secret field holding an array) is replaced by its parsed, redacted form.
fn reparse_if_needed(text: String) -> String {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return text;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(parsed) => {
            let redacted = redact_value(&parsed);
            if redacted == parsed {
                text
            } else {
                redacted.to_string()
            }
        }
        Err(_) => text,
    }
}

/// `"secretKey": value` (any secret key name, escapes read) inside JSON text: a string, number,
/// boolean or nested value is replaced by `"[REDACTED]"`; a string cut short (a truncated body)
/// is redacted to the end.
fn redact_json_secret_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Walk the JSON strings one by one (escapes respected); a secret key's value is replaced.
    while let Some(open) = rest.find('"') {
        let after_open = &rest[open + 1..];
        let Some(close) = find_string_end(after_open) else {
            break;
        };
        let key = &after_open[..close];
        let tail = &after_open[close + 1..];
        let trimmed = tail.trim_start();
        if trimmed.starts_with(':') && is_secret_key(&unescape(key)) {
            let value_part = trimmed[1..].trim_start();
            let value_start = rest.len() - value_part.len();
            if let Some(value_body) = value_part.strip_prefix('"') {
                out.push_str(&rest[..value_start]);
                out.push('"');
                out.push_str(REDACTED);
                out.push('"');
                match find_string_end(value_body) {
                    Some(end) => {
                        rest = &value_body[end + 1..];
                        continue;
                    }
                    // Cut short: nothing after it can be trusted.
                    None => return out,
                }
            }
            let len = if value_part.starts_with(REDACTED) {
                REDACTED.len() // a number the scans already replaced: quote it
            } else {
                scalar_len(value_part)
            };
            if len > 0 {
                out.push_str(&rest[..value_start]);
                out.push('"');
                out.push_str(REDACTED);
                out.push('"');
                rest = &value_part[len..];
                continue;
            }
        }
        out.push_str(&rest[..open + 1 + close + 1]);
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Length of a JSON number, `true`, `false` or bare word at the start of `s` (0 for `null`,
/// objects, arrays and strings).
fn scalar_len(s: &str) -> usize {
    if s.starts_with("null") || s.starts_with('[') || s.starts_with('{') {
        return 0;
    }
    s.find(|c: char| matches!(c, ',' | '}' | ']' | '"') || c.is_whitespace())
        .unwrap_or(s.len())
}

/// A JSON string body's text with its escapes read (`c\u0076v` is `cvv`).
fn unescape(key: &str) -> String {
    if !key.contains('\\') {
        return key.to_string();
    }
    serde_json::from_str::<String>(&format!("\"{key}\"")).unwrap_or_else(|_| key.to_string())
}

/// Index of the closing quote of a JSON string body (after the opening quote).
fn find_string_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Separators allowed between the digit groups of a written card number.
fn is_separator(c: char) -> bool {
    c == ' ' || c == '-'
}

/// Masks card numbers: a run of 13-19 digits that passes the Luhn check, also written in groups
/// with spaces or dashes (`4111 1111 1111 1111`, `4111-1111-1111-1111`), and a grouped card
/// number followed by more groups (`4111 1111 1111 1111 987`): `411111******1111`.
pub fn mask_pans(text: &str) -> String {
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !(chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit())) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digit groups with at most three separators between them.
        let mut groups: Vec<(usize, usize)> = Vec::new(); // [start, end) in chars
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            let mut k = j;
            while k < chars.len() && k - j < 3 && is_separator(chars[k]) {
                k += 1;
            }
            if k > j && k < chars.len() && chars[k].is_ascii_digit() {
                j = k;
            } else {
                break;
            }
        }
        let run_end = groups.last().map(|g| g.1).unwrap_or(i);
        let digits = |from: usize, to: usize| -> Vec<char> {
            groups[from..=to]
                .iter()
                .flat_map(|(s, e)| chars[*s..*e].iter().copied())
                .collect()
        };
        // Group-aligned windows, shortest first at each starting group (a card number followed
        // by its CVV as one more group masks the card number, not both).
        let mut g = 0;
        let mut cursor = i;
        while g < groups.len() {
            let found = (g..groups.len()).find(|&h| {
                let d = digits(g, h);
                (13..=19).contains(&d.len()) && luhn_valid(&d)
            });
            match found {
                Some(h) => {
                    out.extend(&chars[cursor..groups[g].0]);
                    out.push_str(&masked(&digits(g, h)));
                    cursor = groups[h].1;
                    g = h + 1;
                }
                None => g += 1,
            }
        }
        out.extend(&chars[cursor..run_end]);
        i = run_end;
    }
    out
}

fn masked(digits: &[char]) -> String {
    let n = digits.len();
    digits[..6]
        .iter()
        .copied()
        .chain(std::iter::repeat_n('*', n - 10))
        .chain(digits[n - 4..].iter().copied())
        .collect()
}

fn luhn_valid(digits: &[char]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(idx, c)| {
            let d = c.to_digit(10).unwrap_or(0);
            if idx % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_card_numbers_to_first_six_and_last_four() {
        assert_eq!(
            mask_pans("card 4111111111111111 ok"),
            "card 411111******1111 ok"
        );
        assert_eq!(mask_pans("4111-1111-1111-1111"), "411111******1111");
        assert_eq!(mask_pans("4111 1111 1111 1111"), "411111******1111");
        // Amex, 15 digits.
        assert_eq!(mask_pans("378282246310005"), "378282*****0005");
    }

    #[test]
    fn leaves_order_ids_and_non_luhn_numbers_alone() {
        // 12-digit order id: too short to be a PAN.
        assert_eq!(mask_pans("482500007436"), "482500007436");
        // 16 digits failing Luhn.
        assert_eq!(mask_pans("4111111111111112"), "4111111111111112");
        assert_eq!(mask_pans("amount 2339.0000"), "amount 2339.0000");
    }

    #[test]
    fn secret_fields_are_replaced_at_any_depth() {
        let v = json!({
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Content-Type": "application/json"},
            "body": "{\"secretKey\": \"skey_test_123\", \"cvv\": \"123\", \"orderId\": \"1\"}",
            "card": {"number": "4111111111111111", "cvv": "999"},
        });
        let r = redact_value(&v);
        assert_eq!(r["headers"]["Authorization"], REDACTED);
        assert_eq!(r["headers"]["X-Api-Key"], REDACTED);
        assert_eq!(r["headers"]["Content-Type"], "application/json");
        assert_eq!(r["card"]["cvv"], REDACTED);
        assert_eq!(r["card"]["number"], "411111******1111");
        let body = r["body"].as_str().unwrap();
        assert!(!body.contains("skey_test_123"), "{body}");
        assert!(!body.contains("\"123\""), "{body}");
        assert!(body.contains("\"orderId\": \"1\""), "{body}");
        // The body text is still JSON.
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["secretKey"], REDACTED);
    }

    #[test]
    fn escaped_quotes_do_not_hide_a_secret() {
        let text = r#"{"note": "say \"hi\"", "password": "hunter2", "x": "y"}"#;
        let r = redact_text(text);
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains(r#""note": "say \"hi\"""#), "{r}");
        assert!(serde_json::from_str::<Value>(&r).is_ok(), "{r}");
    }

    #[test]
    fn skey_tokens_in_free_text_are_replaced() {
        assert_eq!(
            redact_text("secret is skey_live_AbC123 here"),
            "secret is skey_[REDACTED] here"
        );
    }

    #[test]
    fn headers_are_lowercased_and_redacted() {
        let h = redact_headers([("Cookie", "a=b"), ("User-Agent", "kbank")]);
        assert_eq!(h["cookie"], REDACTED);
        assert_eq!(h["user-agent"], "kbank");
    }

    #[test]
    fn grouped_card_numbers_are_recognised() {
        assert_eq!(
            redact_text("pan 4111 1111 1111 1111 cvv 987 ok"),
            "pan 411111******1111 cvv [REDACTED] ok"
        );
        assert_eq!(mask_pans("4111-1111-1111-1111-987"), "411111******1111-987");
        assert_eq!(mask_pans("6011 0009 9013 9424"), "601100******9424");
        assert_eq!(mask_pans("3782 822463 10005"), "378282*****0005");
        assert_eq!(mask_pans("5555  5555 5555 4444."), "555555******4444.");
        // A 20-digit reference is not a card number.
        assert_eq!(mask_pans("41111111111111111111"), "41111111111111111111");
    }

    #[test]
    fn cvvs_in_free_text_are_removed() {
        for (text, expected) in [
            ("cvv 987", "cvv [REDACTED]"),
            ("CVV: 123", "CVV: [REDACTED]"),
            ("cvc=123&x=1", "cvc=[REDACTED]&x=1"),
            ("my cvv2 is 1234.", "my cvv2 is [REDACTED]."),
            ("Security code: 321", "Security code: [REDACTED]"),
            ("card_cvv: 456", "card_cvv: [REDACTED]"),
            ("CVC2 = 789", "CVC2 = [REDACTED]"),
            (
                "{\"cvv\": 123, \"a\": 1}",
                "{\"cvv\": \"[REDACTED]\", \"a\": 1}",
            ),
        ] {
            assert_eq!(redact_text(text), expected, "{text}");
        }
        // Not a CVV: longer numbers and unrelated words.
        assert_eq!(redact_text("cvv 12345678"), "cvv 12345678");
        assert_eq!(redact_text("order 123"), "order 123");
    }

    #[test]
    fn cvv_fields_of_every_spelling_and_type_are_removed() {
        let v = json!({"cvv": 123, "CVC": "123", "cvv2": "1234", "securityCode": 999,
                       "card_cvv": "555", "security_code": "777", "cardNumber": 4111111111111111u64,
                       "orderId": "482500007436"});
        let r = redact_value(&v);
        for key in [
            "cvv",
            "CVC",
            "cvv2",
            "securityCode",
            "card_cvv",
            "security_code",
        ] {
            assert_eq!(r[key], REDACTED, "{key}");
        }
        assert_eq!(r["cardNumber"], "411111******1111");
        assert_eq!(r["orderId"], "482500007436");
    }

    #[test]
    fn json_text_keeps_its_shape_and_loses_every_secret() {
        let text = r#"{"cvv": 987, "pin": "1234", "secretKey": true, "nested": {"cvc": [1]}, "orderId": "1"}"#;
        let r = redact_text(text);
        let parsed: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(parsed["cvv"], REDACTED);
        assert_eq!(parsed["pin"], REDACTED);
        assert_eq!(parsed["secretKey"], REDACTED);
        assert_eq!(parsed["orderId"], "1");
        assert_eq!(parsed["nested"]["cvc"], REDACTED);
        assert!(!r.contains("987"), "{r}");
    }

    #[test]
    fn escapes_hide_nothing() {
        // An escaped key and escaped digits read the same once parsed.
        let text = r#"{"c\u0076v": "123", "card": "\u0034111111111111111"}"#;
        let r = redact_text(text);
        let parsed: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(parsed["cvv"], REDACTED);
        assert_eq!(parsed["card"], "411111******1111");
    }

    #[test]
    fn a_secret_value_cut_short_is_redacted_to_the_end() {
        assert_eq!(
            redact_text(r#"{"a": "b", "password": "hunter2-and-more"#),
            r#"{"a": "b", "password": "[REDACTED]""#
        );
    }

    #[test]
    fn key_tokens_and_bearer_tokens_are_removed() {
        for (text, expected) in [
            (
                "key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
                "key whsec_[REDACTED]",
            ),
            (
                "SKEY_live_abc and pkey_test_xyz",
                "SKEY_[REDACTED] and pkey_[REDACTED]",
            ),
            (
                "Authorization: Bearer eyJhbGciOi.x.y",
                "Authorization: Bearer [REDACTED]",
            ),
            ("basic dXNlcjpwYXNz", "basic [REDACTED]"),
        ] {
            assert_eq!(redact_text(text), expected, "{text}");
        }
    }

    #[test]
    fn redaction_is_idempotent() {
        let text = "4111 1111 1111 1111 cvv 987 skey_abc {\"cvv\": 1}";
        let once = redact_text(text);
        assert_eq!(redact_text(&once), once);
    }
}
