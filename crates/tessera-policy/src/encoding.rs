//! Textual and serde forms shared by the crate's types.
//!
//! Byte strings and ids are hex in human-readable formats (JSON, TOML) and raw bytes in binary
//! formats (postcard), so the canonical encoding stays compact and JSON stays readable. The
//! binary form of an id is exactly its own serde form, so canonical bytes match what
//! `tessera_wire` would produce for the id alone.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tessera_chain::{checksummed, Address};

use crate::PolicyError;

/// Decodes hex with an optional `0x`/`0X` prefix, any case.
pub(crate) fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits = strip_0x(text);
    hex::decode(digits).map_err(|e| format!("not hex: {e}"))
}

fn strip_0x(text: &str) -> &str {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
}

/// Decodes exactly `N` bytes of hex (optional `0x` prefix).
pub(crate) fn decode_hex_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    let digits = strip_0x(text);
    if digits.len() != 2 * N {
        return Err(format!(
            "expected {} hex digits, got {}",
            2 * N,
            digits.len()
        ));
    }
    hex::decode_to_slice(digits, &mut out).map_err(|e| format!("not hex: {e}"))?;
    Ok(out)
}

/// Parses an Ethereum address `0x` + 40 hex digits. All-lowercase and all-uppercase are
/// accepted as they are; mixed case must be the EIP-55 checksum (it catches typos).
pub fn parse_address(text: &str) -> Result<Address, PolicyError> {
    let invalid = |reason: &str| PolicyError::Parse {
        what: "Ethereum address",
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| invalid("expected 0x followed by 40 hex digits"))?;
    let address: Address = decode_hex_array(digits).map_err(|e| invalid(&e))?;
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && checksummed(&address) != text {
        return Err(invalid(
            "mixed case that is not the EIP-55 checksum: a digit is probably wrong \
             (write it in lowercase to skip the check)",
        ));
    }
    Ok(address)
}

/// `Vec<u8>`: hex in human-readable formats, a byte string in binary ones.
pub(crate) mod bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(value))
        } else {
            s.serialize_bytes(value)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            decode_hex(&text).map_err(de::Error::custom)
        } else {
            d.deserialize_byte_buf(BytesVisitor)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// `[u8; 32]`: hex in human-readable formats, the plain array in binary ones.
pub(crate) mod array32 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(value))
        } else {
            value.serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            decode_hex_array(&text).map_err(de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

/// Ids: their `Display`/`FromStr` text in human-readable formats, their own serde form in
/// binary ones.
pub(crate) mod text {
    use super::*;

    pub(crate) fn serialize<T, S>(value: &T, s: S) -> Result<S::Ok, S::Error>
    where
        T: Display + Serialize,
        S: Serializer,
    {
        if s.is_human_readable() {
            s.collect_str(value)
        } else {
            value.serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + Deserialize<'de>,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(de::Error::custom)
        } else {
            T::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_one_case_and_check_mixed_case() {
        let lower = "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf";
        let upper = "0x7E5F4552091A69125D5DFCB7B8C2659029395BDF";
        let good = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf";
        let a = parse_address(lower).unwrap();
        assert_eq!(parse_address(upper).unwrap(), a);
        assert_eq!(parse_address(good).unwrap(), a);
        // One letter's case flipped: a bad checksum.
        let bad = "0x7e5F4552091A69125d5DfCb7b8C2659029395Bdf";
        assert!(parse_address(bad)
            .unwrap_err()
            .to_string()
            .contains("EIP-55"));
        assert!(parse_address("7e5f4552091a69125d5dfcb7b8c2659029395bdf").is_err());
        assert!(parse_address("0x7e5f4552091a69125d5dfcb7b8c2659029395b").is_err());
        assert!(parse_address("0x7e5f4552091a69125d5dfcb7b8c2659029395bzz").is_err());
    }

    #[test]
    fn hex_arrays_need_the_exact_length() {
        assert_eq!(decode_hex_array::<2>("0xabCD").unwrap(), [0xab, 0xcd]);
        assert!(decode_hex_array::<2>("abc").is_err());
        assert!(decode_hex_array::<2>("abcdef").is_err());
        assert_eq!(decode_hex("0x").unwrap(), Vec::<u8>::new());
    }
}
