//! Key changes: an admin proposes to refresh a key, reshare it to another committee or
//! threshold, or set its refresh schedule; other admins of the current policy approve, as for
//! a policy change ([`crate::change`]). Party nodes re-check the approvals of a reshare
//! against the policy they pin before they deal or receive (ADR 0010).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use tessera_wire::{KeyId, PartyId, RequestId};

use crate::approval::Approval;
use crate::change::{check_proposal, count_admin_approvals, labelled_digest};
use crate::document::PolicyDocument;
use crate::request::PolicyHash;
use crate::PolicyError;

/// Domain separation for [`KeyChange::change_digest`] (v2 binds the source epoch).
pub const KEY_CHANGE_DIGEST_LABEL: &[u8] = b"tessera/key-change/v2";
/// Largest canonical encoding of a [`KeyChange`] that [`KeyChange::decode`] reads.
pub const MAX_ENCODED_KEY_CHANGE: usize = 4096;
/// The largest committee a reshare may name.
pub const MAX_COMMITTEE: usize = 64;
/// The shortest refresh interval a schedule may set (one hour).
pub const MIN_REFRESH_INTERVAL_SECS: u64 = 3600;

/// What a key change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyOperation {
    /// Every holder gets a new share of the same key; committee and threshold stay.
    Refresh,
    /// The key moves to `committee` with `threshold`; the public key stays.
    Reshare {
        /// The new holders, in order.
        committee: Vec<PartyId>,
        /// How many of them sign together.
        threshold: u16,
    },
    /// Refresh the key automatically every `every_secs` seconds (`None` stops it).
    RefreshSchedule {
        /// The interval, at least [`MIN_REFRESH_INTERVAL_SECS`].
        every_secs: Option<u64>,
    },
}

impl KeyOperation {
    /// Its name: `refresh`, `reshare` or `refresh_schedule`.
    pub fn name(&self) -> &'static str {
        match self {
            KeyOperation::Refresh => "refresh",
            KeyOperation::Reshare { .. } => "reshare",
            KeyOperation::RefreshSchedule { .. } => "refresh_schedule",
        }
    }

    /// Refuses a committee that is empty, too large or repeats a party, a threshold outside
    /// 2..=n, and a schedule shorter than [`MIN_REFRESH_INTERVAL_SECS`].
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |problem: String| PolicyError::Invalid {
            at: format!("key change '{}'", self.name()),
            problem,
        };
        match self {
            KeyOperation::Refresh => Ok(()),
            KeyOperation::Reshare {
                committee,
                threshold,
            } => {
                let unique: BTreeSet<_> = committee.iter().collect();
                if unique.len() != committee.len() || committee.iter().any(|p| p.0 == 0) {
                    return Err(invalid(
                        "the committee repeats a party or names party 0; name each party once"
                            .into(),
                    ));
                }
                if committee.len() > MAX_COMMITTEE {
                    return Err(invalid(format!(
                        "the committee has {} parties; at most {MAX_COMMITTEE} are supported",
                        committee.len()
                    )));
                }
                if *threshold < 2 || usize::from(*threshold) > committee.len() {
                    return Err(invalid(format!(
                        "threshold {threshold} for a committee of {}: it must be 2 to {}",
                        committee.len(),
                        committee.len()
                    )));
                }
                Ok(())
            }
            KeyOperation::RefreshSchedule { every_secs } => match every_secs {
                Some(every) if *every < MIN_REFRESH_INTERVAL_SECS => Err(invalid(format!(
                    "a refresh every {every} s is too often; the shortest interval is \
                     {MIN_REFRESH_INTERVAL_SECS} s"
                ))),
                _ => Ok(()),
            },
        }
    }
}

impl fmt::Display for KeyOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOperation::Refresh => f.write_str("refresh"),
            KeyOperation::Reshare {
                committee,
                threshold,
            } => write!(
                f,
                "reshare to {threshold}-of-{} on {}",
                committee.len(),
                PartyId::list(committee)
            ),
            KeyOperation::RefreshSchedule { every_secs: None } => {
                f.write_str("stop scheduled refresh")
            }
            KeyOperation::RefreshSchedule {
                every_secs: Some(every),
            } => write!(f, "refresh every {every} s"),
        }
    }
}

/// How a key is held when a change is proposed: the change applies to this epoch only, so an
/// approval cannot be replayed after the key was rotated, nor against another committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEpoch {
    /// The key's epoch (0 after key generation, one more after each refresh or reshare).
    pub epoch: u64,
    /// Its committee, in key order.
    pub committee: Vec<PartyId>,
    /// Its threshold.
    pub threshold: u16,
}

impl fmt::Display for KeyEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {} ({}-of-{} on {})",
            self.epoch,
            self.threshold,
            self.committee.len(),
            PartyId::list(&self.committee)
        )
    }
}

/// A proposal to change how a key is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyChange {
    /// Chosen by the proposer; retries reuse it.
    #[serde(with = "crate::encoding::text")]
    pub id: RequestId,
    /// The policy whose admins approve it.
    pub policy: PolicyHash,
    /// The key it changes.
    #[serde(with = "crate::encoding::text")]
    pub key: KeyId,
    /// How the key is held now: the change applies to this epoch, committee and threshold.
    pub from: KeyEpoch,
    /// What it does.
    pub operation: KeyOperation,
    /// The admin who proposes it.
    pub proposed_by: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry time, Unix seconds.
    pub expires_at: u64,
}

impl KeyChange {
    /// Whether it moves the key to another committee or threshold (a reshare to anything but
    /// the key's own committee and threshold): a party joins or leaves, or the quorum changes.
    pub fn changes_committee(&self) -> bool {
        match &self.operation {
            KeyOperation::Reshare {
                committee,
                threshold,
            } => *committee != self.from.committee || *threshold != self.from.threshold,
            KeyOperation::Refresh | KeyOperation::RefreshSchedule { .. } => false,
        }
    }

    /// How many admins other than the proposer must approve it under `policy`:
    /// [`PolicyDocument::committee_change_approvals`] when it
    /// [changes the committee](Self::changes_committee), else
    /// [`PolicyDocument::admin_approvals`].
    pub fn admin_approvals_needed(&self, policy: &PolicyDocument) -> usize {
        if self.changes_committee() {
            policy.committee_change_approvals()
        } else {
            policy.admin_approvals()
        }
    }

    /// The canonical encoding (`tessera_wire::encode`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        tessera_wire::encode(self)
    }

    /// Reads a canonical encoding, refusing inputs over [`MAX_ENCODED_KEY_CHANGE`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PolicyError> {
        Ok(tessera_wire::decode(bytes, MAX_ENCODED_KEY_CHANGE)?)
    }

    /// What admins sign: SHA-256(`"tessera/key-change/v2"` || canonical bytes).
    pub fn change_digest(&self) -> [u8; 32] {
        labelled_digest(KEY_CHANGE_DIGEST_LABEL, &self.canonical_bytes())
    }
}

/// A key change with the approvals that authorise it, as the coordinator hands it to the
/// nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovedKeyChange {
    /// The change.
    pub change: KeyChange,
    /// The admins' approvals of [`KeyChange::change_digest`].
    pub approvals: Vec<Approval>,
}

/// Where a valid key change stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChangeDecision {
    /// Enough admins approved: the change may be carried out.
    Allow {
        /// The admins whose approvals counted.
        approved_by: Vec<String>,
    },
    /// Valid so far; the proposer's signature or more admin approvals are needed.
    Pending {
        /// How many more approvals of admins other than the proposer.
        needed: usize,
        /// The admins whose approvals counted so far.
        approved_by: Vec<String>,
        /// Whether the proposer signed the change.
        proposer_signed: bool,
    },
}

/// Evaluates a key change against the current policy at time `now`.
///
/// Errors (the change must be refused, with the reason): it names another policy than
/// `current`, it is expired, from the future or lives too long, the proposer is not an admin,
/// the operation is invalid ([`KeyOperation::validate`]), or an approval is duplicated, by an
/// unknown principal, or does not verify. It is allowed once the proposer signed it (an
/// approval by the proposer: nobody can make a change up in an admin's name) and
/// [`KeyChange::admin_approvals_needed`] other admins approved (more for a change of
/// committee when the policy says so); approvals by non-admins are valid but do not count.
pub fn evaluate_key_change(
    current: &PolicyDocument,
    change: &KeyChange,
    approvals: &[Approval],
    now: u64,
) -> Result<KeyChangeDecision, PolicyError> {
    check_proposal(
        current,
        &change.policy,
        &change.proposed_by,
        (change.created_at, change.expires_at),
        now,
    )?;
    change.operation.validate()?;
    let count = count_admin_approvals(
        current,
        &change.proposed_by,
        &change.change_digest(),
        approvals,
        change.admin_approvals_needed(current),
    )?;
    Ok(if count.complete() {
        KeyChangeDecision::Allow {
            approved_by: count.approved_by,
        }
    } else {
        KeyChangeDecision::Pending {
            needed: count.needed,
            approved_by: count.approved_by,
            proposer_signed: count.proposer_signed,
        }
    })
}
