//! The canonical encoding for structured values: one version byte ([`CODEC_VERSION`]) followed
//! by the value in `postcard`. Signatures and hashes are always computed over these bytes, so the
//! same value always has exactly one encoding.

use serde::{de::DeserializeOwned, Serialize};

/// The version byte in front of every encoded value.
pub const CODEC_VERSION: u8 = 1;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input is empty.
    #[error("empty input: expected a version byte")]
    Empty,
    /// The version byte is not one this build understands.
    #[error("unsupported encoding version {0} (this build reads version {CODEC_VERSION})")]
    UnsupportedVersion(u8),
    /// The input is larger than the caller allows.
    #[error("input of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes a value canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing into a Vec cannot fail for our types (no unsupported serde features); an error
    // here is a programming error in a type definition, not bad input.
    postcard::to_extend(value, vec![CODEC_VERSION])
        .expect("postcard serialization into a Vec is infallible for wire types")
}

/// Decodes a value, refusing inputs over `limit` bytes before parsing anything.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != CODEC_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        a: u32,
        b: Vec<u8>,
        c: String,
    }

    #[test]
    fn round_trip_and_refusals() {
        let v = Sample {
            a: 7,
            b: vec![1, 2, 3],
            c: "x".into(),
        };
        let bytes = encode(&v);
        assert_eq!(bytes[0], CODEC_VERSION);
        assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), v);
        assert!(matches!(
            decode::<Sample>(&bytes, 2),
            Err(CodecError::TooLarge { .. })
        ));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            decode::<Sample>(&wrong, 1024),
            Err(CodecError::UnsupportedVersion(9))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<Sample>(&long, 1024),
            Err(CodecError::Trailing(1))
        ));
        assert!(matches!(
            decode::<Sample>(&[], 1024),
            Err(CodecError::Empty)
        ));
    }
}
