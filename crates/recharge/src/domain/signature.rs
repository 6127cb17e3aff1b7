//! Recharge's webhook digest (SPEC 9): `X-Recharge-Hmac-Sha256` is the lowercase hex SHA-256 of
//! the client secret followed by the raw body bytes (not an HMAC, despite the header's name).
//! Compared in constant time after the length and alphabet are checked.
//!
//! Uppercase hex is accepted: it is the same digest written differently, so it costs no
//! security, while refusing it would turn away a genuine delivery over letter case.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header Recharge signs its deliveries with (names are compared without case).
pub const SIGNATURE_HEADER: &str = "x-recharge-hmac-sha256";

/// Why a delivery's digest does not verify. Never carries the expected digest or the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Recharge-Hmac-Sha256 is missing")]
    Missing,
    #[error("X-Recharge-Hmac-Sha256 is empty")]
    Empty,
    #[error("X-Recharge-Hmac-Sha256 has {0} characters, expected 64 hex digits")]
    WrongLength(usize),
    #[error("X-Recharge-Hmac-Sha256 is not hexadecimal")]
    NotHex,
    #[error("X-Recharge-Hmac-Sha256 does not match the body")]
    Mismatch,
}

/// SHA-256 of `client_secret` then `body`.
pub fn digest(client_secret: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(client_secret.as_bytes());
    hasher.update(body);
    hasher.finalize().into()
}

/// The header value Recharge sends for this body: 64 lowercase hex digits.
pub fn expected_hex(client_secret: &str, body: &[u8]) -> String {
    digest(client_secret, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(text: &str) -> Result<[u8; 32], SignatureError> {
    if text.len() != 64 {
        return Err(SignatureError::WrongLength(text.chars().count()));
    }
    let mut out = [0u8; 32];
    let bytes = text.as_bytes();
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char)
            .to_digit(16)
            .ok_or(SignatureError::NotHex)?;
        let lo = (pair[1] as char)
            .to_digit(16)
            .ok_or(SignatureError::NotHex)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

/// Checks a delivery's header value against its raw body.
pub fn verify(
    header: Option<&str>,
    client_secret: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let text = header.ok_or(SignatureError::Missing)?.trim();
    if text.is_empty() {
        return Err(SignatureError::Empty);
    }
    let given = parse_hex(text)?;
    let expected = digest(client_secret, body);
    if bool::from(given.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently:
    // python3 -c "import hashlib;print(hashlib.sha256(b'whsec_demo'+b'{\"charge\":{\"id\":1}}').hexdigest())"
    const DEMO: &str = "ff1edb1626e188cf7262bce9a28289af243f901cceed5debe04e9fa6df6ad9f2";
    // python3 -c "import hashlib;print(hashlib.sha256(b'').hexdigest())"
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    // python3 -c "import hashlib;print(hashlib.sha256('cs_test_\u0e01'.encode()+'{\"charge\":{\"id\":7,\"note\":\"\u0e44\u0e17\u0e22\"}}'.encode()).hexdigest())"
    const UTF8: &str = "0f46182e25f855a9e45404a92d04dcfd9eb65b0d9e7822eab4c6b3459d147383";
    // python3 -c "import hashlib;print(hashlib.sha256(b'secret').hexdigest())"
    const SECRET_ONLY: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

    #[test]
    fn digest_matches_independent_vectors() {
        assert_eq!(expected_hex("whsec_demo", br#"{"charge":{"id":1}}"#), DEMO);
        assert_eq!(expected_hex("", b""), EMPTY);
        assert_eq!(
            expected_hex(
                "cs_test_ก",
                r#"{"charge":{"id":7,"note":"ไทย"}}"#.as_bytes()
            ),
            UTF8
        );
        assert_eq!(expected_hex("secret", b""), SECRET_ONLY);
    }

    #[test]
    fn verifies_the_raw_bytes_not_a_reserialisation() {
        let body = br#"{"charge":{"id":1}}"#;
        assert_eq!(verify(Some(DEMO), "whsec_demo", body), Ok(()));
        // The same JSON with a space is other bytes: refused.
        assert_eq!(
            verify(Some(DEMO), "whsec_demo", br#"{"charge": {"id":1}}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(DEMO), "another_secret", body),
            Err(SignatureError::Mismatch)
        );
        // Letter case and surrounding space do not matter; the digest does.
        assert_eq!(
            verify(
                Some(&format!(" {} ", DEMO.to_uppercase())),
                "whsec_demo",
                body
            ),
            Ok(())
        );
    }

    #[test]
    fn refuses_missing_short_long_and_non_hex_digests() {
        let body = b"{}";
        assert_eq!(verify(None, "s", body), Err(SignatureError::Missing));
        assert_eq!(verify(Some("  "), "s", body), Err(SignatureError::Empty));
        assert_eq!(
            verify(Some(&DEMO[..63]), "whsec_demo", body),
            Err(SignatureError::WrongLength(63))
        );
        assert_eq!(
            verify(Some(&format!("{DEMO}00")), "whsec_demo", body),
            Err(SignatureError::WrongLength(66))
        );
        let not_hex = format!("{}zz", &DEMO[..62]);
        assert_eq!(
            verify(Some(&not_hex), "whsec_demo", body),
            Err(SignatureError::NotHex)
        );
        // 64 characters, but multi-byte: a length in bytes would differ, and it is refused.
        let wide = "é".repeat(32);
        assert!(verify(Some(&wide), "whsec_demo", body).is_err());
    }

    #[test]
    fn errors_never_quote_the_expected_digest() {
        let err = verify(Some(&"0".repeat(64)), "whsec_demo", b"x").unwrap_err();
        assert!(!err.to_string().contains(&expected_hex("whsec_demo", b"x")));
    }
}
