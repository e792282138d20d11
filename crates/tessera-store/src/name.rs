//! Record names.

use std::fmt;
use std::str::FromStr;

use crate::StoreError;

/// A record's name: 1 to 128 characters of `a-z`, `0-9`, `.`, `_` and `-`, not starting with a
/// dot. Names are safe as file names and are bound into each record's encryption.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordName(String);

impl RecordName {
    /// Validates a name.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        let valid_chars = name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if name.is_empty() || name.len() > 128 || name.starts_with('.') || !valid_chars {
            return Err(StoreError::InvalidName(name));
        }
        Ok(RecordName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RecordName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        RecordName::new(s)
    }
}
