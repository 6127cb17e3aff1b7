//! Callback signatures (SPEC 4.5): Standard Webhooks, as the wallet, bank-app and Amex gateways
//! sign. Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (space-separated `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`); keys are
//! `whsec_<base64>`, several per gateway at once so a gateway can rotate. Any one matching
//! signature is enough. Compared in constant time, length checked: an empty or short signature
//! never matches. Timestamps more than [`TOLERANCE_SECONDS`] old or ahead are refused.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::domain::redact::REDACTED;

/// How far a `webhook-timestamp` may be from now, either way.
pub const TOLERANCE_SECONDS: i64 = 300;
/// The longest `webhook-id` taken (it is kept on the record to recognise replays).
pub const MAX_WEBHOOK_ID_BYTES: usize = 256;
/// The most `v1,` entries looked at in one `webhook-signature` header.
const MAX_SIGNATURES: usize = 16;
/// The shortest key taken (Standard Webhooks keys are 24 to 64 bytes).
const MIN_KEY_BYTES: usize = 16;
/// An HMAC-SHA256 is this long; anything else is not one.
const MAC_BYTES: usize = 32;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// One signing key (`whsec_<base64>`, decoded). Never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookKey(Vec<u8>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookKey({REDACTED})")
    }
}

impl WebhookKey {
    /// Reads `whsec_<base64>`. The error never quotes the key.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("a key does not start with whsec_")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "a key is not whsec_ followed by base64")?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err("a key is shorter than 16 bytes");
        }
        Ok(WebhookKey(bytes))
    }

    fn mac(&self, content: &[u8]) -> [u8; MAC_BYTES] {
        // HMAC takes a key of any length: new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(content);
        mac.finalize().into_bytes().into()
    }

    /// `v1,<base64>` of a delivery: what a gateway sends (the local stack and tests sign with it).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(&signed_content(id, timestamp, body));
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac)
        )
    }
}

/// The signing keys of every gateway: the secret `CALLBACK_SECRET_NAME`,
/// `{"wallet": ["whsec_..."], "bankapp": [...], "amex": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackKeys {
    by_gateway: BTreeMap<String, Vec<WebhookKey>>,
}

impl CallbackKeys {
    /// Reads the secret's JSON. A gateway may have one key (a string) or several (a list, during
    /// a rotation). Any malformed key refuses the whole secret: a half-read secret would refuse
    /// genuine callbacks without saying why. Errors never quote the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| "the secret is not JSON text".to_string())?;
        let Value::Object(map) = value else {
            return Err("the secret is not a JSON object of gateways".to_string());
        };
        let mut by_gateway = BTreeMap::new();
        for (gateway, keys) in map {
            let texts: Vec<&Value> = match &keys {
                Value::Array(list) => list.iter().collect(),
                single => vec![single],
            };
            let mut parsed = Vec::with_capacity(texts.len());
            for text in texts {
                let text = text
                    .as_str()
                    .ok_or_else(|| format!("{gateway}: a key is not a string"))?;
                parsed.push(WebhookKey::parse(text).map_err(|e| format!("{gateway}: {e}"))?);
            }
            by_gateway.insert(gateway, parsed);
        }
        Ok(CallbackKeys { by_gateway })
    }

    /// The keys a gateway signs with (none when the secret names none for it).
    pub fn of(&self, gateway: &str) -> &[WebhookKey] {
        self.by_gateway.get(gateway).map_or(&[], Vec::as_slice)
    }
}

/// What the replay check stores of a verified delivery's `webhook-id` (`webhookIds`): the id
/// itself, or, when redaction would change it (a digit run that passes the card check),
/// `sha256:<hex of the id>`, so no card-like number is stored and two ids never share a key.
pub fn replay_key(id: &str) -> String {
    if crate::domain::redact::redact_text(id) == id {
        id.to_string()
    } else {
        format!(
            "sha256:{}",
            crate::domain::limits::sha256_hex(id.as_bytes())
        )
    }
}

/// Why a delivery's signature was not accepted: the text is the 401's `error`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("webhook-id is over {MAX_WEBHOOK_ID_BYTES} bytes")]
    IdTooLong,
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s old, over the {TOLERANCE_SECONDS} s tolerance")]
    TooOld(i64),
    #[error("webhook-timestamp is {0} s ahead, over the {TOLERANCE_SECONDS} s tolerance")]
    TooNew(i64),
    #[error("the body was delivered as a parsed object, whose bytes cannot be verified")]
    NoRawBody,
    #[error("no signing key is configured for {0}")]
    NoKeys(String),
    #[error("no valid v1 signature")]
    NoMatch,
}

/// The signature headers of a delivery (names lower-case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub signatures: &'a str,
}

impl<'a> SignedHeaders<'a> {
    /// The three headers, present and well formed (the timestamp is not yet checked against now).
    pub fn read(headers: &'a BTreeMap<String, String>) -> Result<Self, SignatureError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .ok_or(SignatureError::Missing(name))
        };
        let id = get(ID_HEADER)?;
        if id.len() > MAX_WEBHOOK_ID_BYTES {
            return Err(SignatureError::IdTooLong);
        }
        let timestamp = get(TIMESTAMP_HEADER)?;
        // Digits only: no sign, no exponent, no fraction; at most 12 (year 33658).
        if timestamp.len() > 12 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::BadTimestamp);
        }
        let timestamp = timestamp
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        let signatures = get(SIGNATURE_HEADER)?;
        Ok(SignedHeaders {
            id,
            timestamp,
            signatures,
        })
    }

    /// Checks the timestamp against `now`, then the signatures against `keys`.
    pub fn verify(
        &self,
        body: &[u8],
        keys: &[WebhookKey],
        now: DateTime<Utc>,
    ) -> Result<(), SignatureError> {
        let age = now.timestamp() - self.timestamp;
        if age > TOLERANCE_SECONDS {
            return Err(SignatureError::TooOld(age));
        }
        if -age > TOLERANCE_SECONDS {
            return Err(SignatureError::TooNew(-age));
        }
        let content = signed_content(self.id, self.timestamp, body);
        let expected: Vec<[u8; MAC_BYTES]> = keys.iter().map(|k| k.mac(&content)).collect();
        let mut matched = subtle::Choice::from(0u8);
        for candidate in self
            .signatures
            .split_ascii_whitespace()
            .take(MAX_SIGNATURES)
        {
            let Some(("v1", encoded)) = candidate.split_once(',') else {
                continue; // another scheme (v1a) or garbage
            };
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            // Length checked: an empty (`v1,`) or truncated signature never matches.
            if given.len() != MAC_BYTES {
                continue;
            }
            for mac in &expected {
                matched |= mac.as_slice().ct_eq(&given);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }
}

/// `<id>.<timestamp>.<raw body>`: what is signed.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + 24 + body.len());
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    // Vectors computed outside this code, with Python's standard library:
    // python3 -c "import hmac,hashlib,base64; k=base64.b64decode('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    //   print(base64.b64encode(hmac.new(k, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}',
    //   hashlib.sha256).digest()).decode())"
    // (the key, id, timestamp and body of the Standard Webhooks specification's example)
    const SPEC_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    // python3 -c "import hmac,hashlib,base64; k=base64.b64decode('c2Vjb25kLWtleS1mb3ItdGhlLXdhbGxldA==');
    //   print(base64.b64encode(hmac.new(k, b'msg_2.1764460800.{\"orderId\":\"1\"}', hashlib.sha256).digest()).decode())"
    const SECOND_KEY: &str = "whsec_c2Vjb25kLWtleS1mb3ItdGhlLXdhbGxldA==";
    const SECOND_SIG: &str = "v1,cTSHT/ImiqyxS1TBuAsTv3pGH3rD5wWTo1Sc1f63DRw=";

    fn at(ts: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(ts, 0).unwrap()
    }

    fn headers(id: &str, ts: &str, sig: &str) -> BTreeMap<String, String> {
        [
            (ID_HEADER.to_string(), id.to_string()),
            (TIMESTAMP_HEADER.to_string(), ts.to_string()),
            (SIGNATURE_HEADER.to_string(), sig.to_string()),
        ]
        .into()
    }

    fn key(text: &str) -> WebhookKey {
        WebhookKey::parse(text).unwrap()
    }

    #[test]
    fn the_specification_example_verifies() {
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIG);
        let signed = SignedHeaders::read(&h).unwrap();
        assert_eq!(
            signed.verify(SPEC_BODY.as_bytes(), &[key(SPEC_KEY)], at(SPEC_TS)),
            Ok(())
        );
        assert_eq!(
            key(SPEC_KEY).sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()),
            SPEC_SIG
        );
    }

    #[test]
    fn a_second_independent_vector_verifies() {
        let body = br#"{"orderId":"1"}"#;
        assert_eq!(key(SECOND_KEY).sign("msg_2", 1764460800, body), SECOND_SIG);
    }

    #[test]
    fn any_one_matching_signature_and_any_one_key_is_enough() {
        // Given a gateway rotating: two keys configured, two signatures sent, one of them stale
        let h = headers(
            SPEC_ID,
            &SPEC_TS.to_string(),
            &format!("v1,AAAA v1a,xyz {SPEC_SIG} garbage"),
        );
        let keys = [key(SECOND_KEY), key(SPEC_KEY)];
        let signed = SignedHeaders::read(&h).unwrap();
        assert_eq!(
            signed.verify(SPEC_BODY.as_bytes(), &keys, at(SPEC_TS)),
            Ok(())
        );
        // and with only the other key, it fails
        assert_eq!(
            signed.verify(SPEC_BODY.as_bytes(), &[key(SECOND_KEY)], at(SPEC_TS)),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_changed_body_id_or_timestamp_fails() {
        let keys = [key(SPEC_KEY)];
        let ts = SPEC_TS.to_string();
        let ok = headers(SPEC_ID, &ts, SPEC_SIG);
        let signed = SignedHeaders::read(&ok).unwrap();
        assert_eq!(
            signed.verify(br#"{"test": 2432232315}"#, &keys, at(SPEC_TS)),
            Err(SignatureError::NoMatch)
        );
        let other_id = headers("msg_other", &ts, SPEC_SIG);
        assert_eq!(
            SignedHeaders::read(&other_id).unwrap().verify(
                SPEC_BODY.as_bytes(),
                &keys,
                at(SPEC_TS)
            ),
            Err(SignatureError::NoMatch)
        );
        let other_ts = headers(SPEC_ID, &(SPEC_TS + 1).to_string(), SPEC_SIG);
        assert_eq!(
            SignedHeaders::read(&other_ts).unwrap().verify(
                SPEC_BODY.as_bytes(),
                &keys,
                at(SPEC_TS)
            ),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn empty_short_and_malformed_signatures_never_pass() {
        let keys = [key(SPEC_KEY)];
        let ts = SPEC_TS.to_string();
        // The first 16 bytes of the right MAC, base64: a prefix must not pass.
        let full = base64::engine::general_purpose::STANDARD
            .decode(SPEC_SIG.trim_start_matches("v1,"))
            .unwrap();
        let prefix = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(&full[..16])
        );
        for sig in [
            "v1,",
            "v1, ",
            "v1",
            ",",
            "v1,=",
            "v1,AAAA",
            prefix.as_str(),
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
            "v1;g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            let h = headers(SPEC_ID, &ts, sig);
            let result = SignedHeaders::read(&h)
                .and_then(|s| s.verify(SPEC_BODY.as_bytes(), &keys, at(SPEC_TS)));
            assert!(result.is_err(), "{sig:?} passed");
        }
    }

    #[test]
    fn no_key_means_no_match() {
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIG);
        assert_eq!(
            SignedHeaders::read(&h)
                .unwrap()
                .verify(SPEC_BODY.as_bytes(), &[], at(SPEC_TS)),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_within_300_seconds_either_way_pass_and_beyond_fail() {
        let keys = [key(SPEC_KEY)];
        let h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIG);
        let s = SignedHeaders::read(&h).unwrap();
        let body = SPEC_BODY.as_bytes();
        assert_eq!(s.verify(body, &keys, at(SPEC_TS + 300)), Ok(()));
        assert_eq!(s.verify(body, &keys, at(SPEC_TS - 300)), Ok(()));
        assert_eq!(
            s.verify(body, &keys, at(SPEC_TS + 301)),
            Err(SignatureError::TooOld(301))
        );
        assert_eq!(
            s.verify(body, &keys, at(SPEC_TS - 301)),
            Err(SignatureError::TooNew(301))
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let mut h = headers(SPEC_ID, &SPEC_TS.to_string(), SPEC_SIG);
        h.remove(SIGNATURE_HEADER);
        assert_eq!(
            SignedHeaders::read(&h),
            Err(SignatureError::Missing("webhook-signature"))
        );
        for ts in ["-5", "1e9", "1614265330.5", "", "abc", "9999999999999"] {
            let h = headers(SPEC_ID, ts, SPEC_SIG);
            assert!(SignedHeaders::read(&h).is_err(), "{ts:?}");
        }
        let long = "m".repeat(MAX_WEBHOOK_ID_BYTES + 1);
        assert_eq!(
            SignedHeaders::read(&headers(&long, "1", SPEC_SIG)),
            Err(SignatureError::IdTooLong)
        );
        assert_eq!(
            SignedHeaders::read(&BTreeMap::new()),
            Err(SignatureError::Missing("webhook-id"))
        );
    }

    #[test]
    fn the_secret_lists_keys_per_gateway() {
        let keys = CallbackKeys::parse(&format!(
            r#"{{"wallet": ["{SPEC_KEY}", "{SECOND_KEY}"], "amex": "{SPEC_KEY}", "bankapp": []}}"#
        ))
        .unwrap();
        assert_eq!(keys.of("wallet").len(), 2);
        assert_eq!(keys.of("amex"), [key(SPEC_KEY)]);
        assert!(keys.of("bankapp").is_empty());
        assert!(keys.of("other").is_empty());
    }

    #[test]
    fn a_malformed_secret_is_refused_without_quoting_it() {
        for text in [
            "whsec_leak",
            r#"["whsec_leak"]"#,
            r#"{"wallet": ["whsec_!!!leak"]}"#,
            r#"{"wallet": ["leakleakleakleakleakleak"]}"#,
            r#"{"wallet": [5]}"#,
            r#"{"wallet": ["whsec_bGVhaw=="]}"#,
        ] {
            let err = CallbackKeys::parse(text).unwrap_err();
            assert!(!err.contains("leak") && !err.contains("bGVhaw"), "{err}");
        }
        assert_eq!(format!("{:?}", key(SPEC_KEY)), "WebhookKey([REDACTED])");
    }
}
