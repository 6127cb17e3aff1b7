//! The KBank notify checksum (SPEC 4.2 step 1): lowercase hex SHA-256 of
//! `id + amount + currency + status + transaction_state + secretKey`, no separators, the amount
//! written with exactly four decimals from its decimal text. Compared in constant time.
//!
//! Uppercase hex is accepted: it is the same 256-bit digest written differently, so accepting it
//! costs no security (a forger still needs the digest), while rejecting it would turn away a
//! genuine payment notification over letter case. Any other length or non-hex text is refused.

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::money::parse_decimal;

/// The notify fields the checksum covers, as text.
#[derive(Clone, Copy, Debug)]
pub struct ChecksumFields<'a> {
    /// `id` (alias `objectId`): the charge id.
    pub charge_id: &'a str,
    /// `amount` as written in the body (a JSON number's text or a string).
    pub amount: Option<&'a str>,
    pub currency: &'a str,
    pub status: &'a str,
    pub transaction_state: &'a str,
}

/// Why a checksum does not verify. Never carries the expected digest or the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("checksum is missing")]
    Missing,
    #[error("checksum is empty")]
    Empty,
    #[error("checksum has {0} characters, expected 64 hex digits")]
    WrongLength(usize),
    #[error("checksum is not hexadecimal")]
    NotHex,
    #[error("checksum does not match")]
    Mismatch,
    #[error("id is missing, the checksum cannot be computed")]
    MissingChargeId,
    #[error("amount is missing, the checksum cannot be computed")]
    MissingAmount,
    #[error("amount {0:?} is not a decimal number with at most four decimals")]
    BadAmount(String),
}

/// The amount as the checksum writes it: `2339` -> `2339.0000`, `2339.5` -> `2339.5000`.
pub fn four_decimals(amount: &str) -> Result<String, ChecksumError> {
    let bad = || ChecksumError::BadAmount(amount.chars().take(40).collect());
    // A decimal keeps 28 fraction digits and rounds the rest away: digits beyond that in the
    // text would be lost, so the text is refused rather than rounded into another amount.
    let mantissa = amount.trim().split(['e', 'E']).next().unwrap_or("");
    if let Some((_, fraction)) = mantissa.split_once('.') {
        if fraction.trim_end_matches('0').len() > 28 {
            return Err(bad());
        }
    }
    let mut value: Decimal = parse_decimal(amount).ok_or_else(bad)?.normalize();
    if value.scale() > 4 {
        return Err(bad());
    }
    value.rescale(4);
    Ok(value.to_string())
}

/// The SHA-256 digest KBank computes for these fields.
pub fn digest(fields: &ChecksumFields<'_>, secret_key: &str) -> Result<[u8; 32], ChecksumError> {
    if fields.charge_id.is_empty() {
        return Err(ChecksumError::MissingChargeId);
    }
    let amount = four_decimals(fields.amount.ok_or(ChecksumError::MissingAmount)?)?;
    let mut hasher = Sha256::new();
    for part in [
        fields.charge_id,
        &amount,
        fields.currency,
        fields.status,
        fields.transaction_state,
        secret_key,
    ] {
        hasher.update(part.as_bytes());
    }
    Ok(hasher.finalize().into())
}

/// The checksum as KBank sends it: 64 lowercase hex digits.
pub fn expected_hex(
    fields: &ChecksumFields<'_>,
    secret_key: &str,
) -> Result<String, ChecksumError> {
    Ok(digest(fields, secret_key)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Verifies the checksum a notify carries.
pub fn verify(
    fields: &ChecksumFields<'_>,
    provided: Option<&str>,
    secret_key: &str,
) -> Result<(), ChecksumError> {
    let provided = provided.ok_or(ChecksumError::Missing)?.trim();
    if provided.is_empty() {
        return Err(ChecksumError::Empty);
    }
    // The length is public (always 64): checking it first leaks nothing about the digest.
    if provided.len() != 64 {
        return Err(ChecksumError::WrongLength(provided.chars().count()));
    }
    let provided = decode_hex(provided).ok_or(ChecksumError::NotHex)?;
    let expected = digest(fields, secret_key)?;
    if bool::from(expected.ct_eq(&provided)) {
        Ok(())
    } else {
        Err(ChecksumError::Mismatch)
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *out.get_mut(i)? = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "skey_test_payment3_local";

    fn fields<'a>(charge_id: &'a str, amount: Option<&'a str>) -> ChecksumFields<'a> {
        ChecksumFields {
            charge_id,
            amount,
            currency: "THB",
            status: "success",
            transaction_state: "Authorized",
        }
    }

    // Vectors computed independently, with:
    // python3 -c "import hashlib;print(hashlib.sha256(b'chrg_test_payment3_0001'+b'2339.0000'+b'THB'+b'success'+b'Authorized'+b'skey_test_payment3_local').hexdigest())"
    const INTEGER: &str = "3537c666f6914b83fd47b397b0da751513d5634ab2b5e02578d1385ae6fdf6ca";
    // ... the same with b'2339.5000'
    const TWO_DECIMALS: &str = "2e8d93a62cf32d80ee2f9f14ee39108642a4b8c97ce3fbb92e10f04511de1816";
    // ... with b'chrg_test_payment3_0002' and b'12345678.9900'
    const LARGE: &str = "0afd3dd0bfbf1b5fecd1cb845a73310126e8fe876eddda8b6d51d1bf365ec1c0";

    #[test]
    fn an_amount_with_more_digits_than_a_decimal_holds_is_refused_not_rounded() {
        // 29 and 31 decimals: rust_decimal keeps 28 and rounds the rest away, which made
        // these 2339.0000 and let their checksum verify.
        for text in [
            "2339.00000000000000000000000000001",
            "2339.0000000000000000000000000000001",
            "2339.00000000000000000000000000001e0",
        ] {
            assert!(
                matches!(four_decimals(text), Err(ChecksumError::BadAmount(_))),
                "{text}"
            );
        }
        // Trailing zeros are only zeros, however many.
        assert_eq!(
            four_decimals("2339.000000000000000000000000000000").unwrap(),
            "2339.0000"
        );
    }

    #[test]
    fn amounts_are_written_with_four_decimals() {
        assert_eq!(four_decimals("2339").unwrap(), "2339.0000");
        assert_eq!(four_decimals("2339.0").unwrap(), "2339.0000");
        assert_eq!(four_decimals("2339.50").unwrap(), "2339.5000");
        assert_eq!(four_decimals("12345678.99").unwrap(), "12345678.9900");
        assert_eq!(four_decimals("0.1").unwrap(), "0.1000");
        assert_eq!(four_decimals("1.23400").unwrap(), "1.2340");
        // Far beyond an f64's 15-16 significant digits, still exact.
        assert_eq!(
            four_decimals("123456789012345678.01").unwrap(),
            "123456789012345678.0100"
        );
        for bad in ["", "abc", "2,339.00", "1.23456", "NaN"] {
            assert!(four_decimals(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integer_amount() {
        let f = fields("chrg_test_payment3_0001", Some("2339"));
        assert_eq!(expected_hex(&f, SECRET).unwrap(), INTEGER);
        assert_eq!(verify(&f, Some(INTEGER), SECRET), Ok(()));
        // The same amount written as 2339.00 or 2339.0 is the same checksum.
        for amount in ["2339.00", "2339.0", "2339.0000"] {
            assert_eq!(
                verify(
                    &fields("chrg_test_payment3_0001", Some(amount)),
                    Some(INTEGER),
                    SECRET
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn amount_with_two_decimals() {
        let f = fields("chrg_test_payment3_0001", Some("2339.50"));
        assert_eq!(verify(&f, Some(TWO_DECIMALS), SECRET), Ok(()));
        assert_eq!(
            verify(&f, Some(INTEGER), SECRET),
            Err(ChecksumError::Mismatch)
        );
    }

    #[test]
    fn large_amount() {
        let f = fields("chrg_test_payment3_0002", Some("12345678.99"));
        assert_eq!(verify(&f, Some(LARGE), SECRET), Ok(()));
    }

    #[test]
    fn missing_and_empty_checksums() {
        let f = fields("chrg_test_payment3_0001", Some("2339"));
        assert_eq!(verify(&f, None, SECRET), Err(ChecksumError::Missing));
        assert_eq!(verify(&f, Some(""), SECRET), Err(ChecksumError::Empty));
        assert_eq!(verify(&f, Some("   "), SECRET), Err(ChecksumError::Empty));
    }

    #[test]
    fn uppercase_hex_is_the_same_digest() {
        let f = fields("chrg_test_payment3_0001", Some("2339"));
        assert_eq!(verify(&f, Some(&INTEGER.to_uppercase()), SECRET), Ok(()));
    }

    #[test]
    fn one_character_short_or_not_hex() {
        let f = fields("chrg_test_payment3_0001", Some("2339"));
        assert_eq!(
            verify(&f, Some(&INTEGER[..63]), SECRET),
            Err(ChecksumError::WrongLength(63))
        );
        let not_hex = format!("{}zz", &INTEGER[..62]);
        assert_eq!(
            verify(&f, Some(&not_hex), SECRET),
            Err(ChecksumError::NotHex)
        );
        // Multi-byte text of 64 bytes must not panic.
        let wide = "é".repeat(32);
        assert!(verify(&f, Some(&wide), SECRET).is_err());
    }

    #[test]
    fn any_changed_field_or_secret_fails() {
        let good = fields("chrg_test_payment3_0001", Some("2339"));
        assert_eq!(
            verify(&good, Some(INTEGER), "skey_other"),
            Err(ChecksumError::Mismatch)
        );
        let mut forged = good;
        forged.transaction_state = "Pre-Authorized";
        assert_eq!(
            verify(&forged, Some(INTEGER), SECRET),
            Err(ChecksumError::Mismatch)
        );
        let more = fields("chrg_test_payment3_0001", Some("2340"));
        assert_eq!(
            verify(&more, Some(INTEGER), SECRET),
            Err(ChecksumError::Mismatch)
        );
    }

    #[test]
    fn missing_inputs_are_named() {
        assert_eq!(
            verify(&fields("", Some("1")), Some(INTEGER), SECRET),
            Err(ChecksumError::MissingChargeId)
        );
        assert_eq!(
            verify(&fields("chrg_1", None), Some(INTEGER), SECRET),
            Err(ChecksumError::MissingAmount)
        );
    }
}
