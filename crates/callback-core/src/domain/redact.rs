//! Redaction of what must never be logged or stored: secrets (KBank `skey_...` keys, API keys,
//! authorization headers, passwords) and card data (a PAN is masked to its first 6 and last 4
//! digits, a CVV is removed). Applied to every event, header map, body and error text before
//! it reaches a log line, a table or an e-mail.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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
    "cvv",
    "cvc",
    "cvv2",
    "securitycode",
];

fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a field or header name holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = normalise(key);
    SECRET_KEYS.contains(&k.as_str()) || k.ends_with("secretkey") || k.ends_with("apikey")
}

/// Redacts a JSON value: secret keys lose their value, strings lose PANs and secret keys.
/// A string holding JSON (an API Gateway `body`) is redacted as text, so it stays the same text.
pub fn redact_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(redact_map(map)),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::String(s) => Value::String(redact_text(s)),
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
            (k.clone(), v)
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
            (k.to_ascii_lowercase(), v)
        })
        .collect()
}

/// Redacts free text: card numbers masked, `skey_...` / `pkey_...` secrets replaced, and the
/// value of a `"secretKey": "..."` pair inside JSON text replaced.
pub fn redact_text(text: &str) -> String {
    let masked = mask_pans(text);
    let keyed = redact_key_prefixes(&masked);
    redact_json_secret_pairs(&keyed)
}

/// KBank merchant secrets start with `skey_`; replace the token after the prefix.
fn redact_key_prefixes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("skey_") {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let token_len = after["skey_".len()..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len() - "skey_".len());
        out.push_str("skey_");
        out.push_str(REDACTED);
        rest = &after["skey_".len() + token_len..];
    }
    out.push_str(rest);
    out
}

/// `"secretKey": "value"` (any secret key name) inside JSON text: the value is replaced.
fn redact_json_secret_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Walk the JSON strings one by one (escapes respected); a secret key's string value is replaced.
    while let Some(open) = rest.find('"') {
        let after_open = &rest[open + 1..];
        let Some(close) = find_string_end(after_open) else {
            break;
        };
        let key = &after_open[..close];
        let tail = &after_open[close + 1..];
        let trimmed = tail.trim_start();
        if is_secret_key(key) && trimmed.starts_with(':') {
            let value_part = trimmed[1..].trim_start();
            if let Some(value_body) = value_part.strip_prefix('"') {
                if let Some(end) = find_string_end(value_body) {
                    let consumed_before_value = rest.len() - value_body.len();
                    out.push_str(&rest[..consumed_before_value]);
                    out.push_str(REDACTED);
                    out.push('"');
                    rest = &value_body[end + 1..];
                    continue;
                }
            }
        }
        out.push_str(&rest[..open + 1 + close + 1]);
        rest = tail;
    }
    out.push_str(rest);
    out
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

/// Masks every run of 13-19 digits (spaces or dashes allowed between them) that passes the
/// Luhn check: `4111111111111111` -> `411111******1111`.
pub fn mask_pans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_digit()) {
            // Collect a candidate: digits with single separators between them.
            let mut j = i;
            let mut digits = Vec::new();
            let mut end = i;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits.push(c);
                    end = j + 1;
                    j += 1;
                } else if (c == ' ' || c == '-')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()
                    && !digits.is_empty()
                {
                    j += 1;
                } else {
                    break;
                }
                if digits.len() > 19 {
                    break;
                }
            }
            if (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
                let n = digits.len();
                let masked: String = digits[..6]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n('*', n - 10))
                    .chain(digits[n - 4..].iter().copied())
                    .collect();
                out.push_str(&masked);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
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
}
