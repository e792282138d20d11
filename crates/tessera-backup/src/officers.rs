//! Recovery officers: a name and an age X25519 recipient each.

use std::str::FromStr;

use crate::format::OfficerEntry;
use crate::BackupError;

/// A recovery officer.
#[derive(Clone)]
pub struct Officer {
    /// A name for messages and the header (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Their age recipient.
    pub recipient: age::x25519::Recipient,
}

impl Officer {
    /// `name=age1…`.
    pub fn parse(spec: &str) -> Result<Self, BackupError> {
        let (name, recipient) = spec.split_once('=').ok_or_else(|| {
            BackupError::Officers(format!("{spec:?}: expected NAME=age1… (an age public key)"))
        })?;
        let name = name.trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(BackupError::Officers(format!(
                "officer name {name:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let recipient = age::x25519::Recipient::from_str(recipient.trim()).map_err(|e| {
            BackupError::Officers(format!("officer {name}: not an age public key ({e})"))
        })?;
        Ok(Officer {
            name: name.to_owned(),
            recipient,
        })
    }

    pub(crate) fn entry(&self) -> OfficerEntry {
        OfficerEntry {
            name: self.name.clone(),
            recipient: self.recipient.to_string(),
        }
    }
}

pub(crate) fn check(officers: &[Officer], threshold: u8) -> Result<(), BackupError> {
    if officers.len() < 2 || officers.len() > 255 {
        return Err(BackupError::Officers(format!(
            "{} officers: a backup needs 2 to 255",
            officers.len()
        )));
    }
    if threshold < 2 || usize::from(threshold) > officers.len() {
        return Err(BackupError::Officers(format!(
            "threshold {threshold} of {} officers: it must be at least 2 and at most the number of officers",
            officers.len()
        )));
    }
    for (i, a) in officers.iter().enumerate() {
        for b in &officers[..i] {
            if a.name == b.name || a.recipient.to_string() == b.recipient.to_string() {
                return Err(BackupError::Officers(format!(
                    "officers {} and {} repeat a name or a key",
                    b.name, a.name
                )));
            }
        }
    }
    Ok(())
}

/// The identities in an age identity file (`AGE-SECRET-KEY-1…` lines; `#` comments and
/// blank lines skipped).
pub fn parse_identities(text: &str) -> Result<Vec<age::x25519::Identity>, BackupError> {
    let identities = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            age::x25519::Identity::from_str(l)
                .map_err(|e| BackupError::Officers(format!("not an age identity ({e})")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if identities.is_empty() {
        return Err(BackupError::Officers(
            "no age identity (AGE-SECRET-KEY-1…) in the file".into(),
        ));
    }
    Ok(identities)
}
