//! Small value types shared by the tables: states, kinds, subjects and their stored text.

use std::fmt;
use std::str::FromStr;

use tessera_wire::{KeyId, PartyId, RequestId};

use super::StoreError;

/// Declares a fieldless enum stored as fixed lowercase text.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text stored in the database (and shown to users).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StoreError;
            fn from_str(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(StoreError::Invalid {
                        what: $what,
                        reason: format!(
                            "{s:?} is not one of: {}",
                            $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    }),
                }
            }
        }
    };
}

text_enum!(
    /// Where a key is in its life.
    KeyStatus, "key status" {
        /// Key generation was started and has not finished.
        Creating = "creating",
        /// The key exists; its public key is known.
        Ready = "ready",
        /// Key generation failed; the key cannot be used.
        Failed = "failed",
    }
);

text_enum!(
    /// Where a committee's set-up (auxiliary info) is.
    CommitteeStatus, "committee status" {
        /// Auxiliary info generation was started and has not finished.
        Creating = "creating",
        /// Every party holds auxiliary info for the committee: keys can be generated.
        Ready = "ready",
        /// The set-up failed; the committee cannot be used.
        Failed = "failed",
    }
);

text_enum!(
    /// What a signing request asks to sign.
    RequestKind, "request kind" {
        /// A native-asset or token transfer.
        Transfer = "transfer",
        /// A call to a contract.
        ContractCall = "contract_call",
        /// A transaction creating a contract.
        ContractCreation = "contract_creation",
        /// An off-chain message.
        Message = "message",
    }
);

text_enum!(
    /// Where a signing request is in its life.
    RequestState, "request state" {
        /// Waiting for the approvals its policy requires.
        PendingApproval = "pending_approval",
        /// Policy is met; waiting for a signing session.
        Approved = "approved",
        /// A signing session is running.
        Signing = "signing",
        /// Signed; the result is stored.
        Signed = "signed",
        /// An approver rejected it.
        Rejected = "rejected",
        /// Signing failed for good.
        Failed = "failed",
        /// Its submitter withdrew it.
        Cancelled = "cancelled",
        /// It was not signed before its expiry.
        Expired = "expired",
    }
);

impl RequestState {
    /// Whether the request's life is over: signed, rejected, failed, cancelled or expired.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RequestState::PendingApproval | RequestState::Approved | RequestState::Signing
        )
    }
}

text_enum!(
    /// An approver's decision.
    Decision, "decision" {
        /// In favour.
        Approve = "approve",
        /// Against.
        Reject = "reject",
    }
);

text_enum!(
    /// Where a policy change proposal is in its life.
    ProposalState, "proposal state" {
        /// Waiting for approvals.
        Pending = "pending",
        /// Approved and activated.
        Applied = "applied",
        /// Rejected by an approver.
        Rejected = "rejected",
        /// Not approved before its expiry.
        Expired = "expired",
    }
);

text_enum!(
    /// Where a key change (refresh, reshare, refresh schedule) is in its life.
    KeyChangeState, "key change state" {
        /// Waiting for approvals.
        Pending = "pending",
        /// Approved; being carried out.
        Running = "running",
        /// Carried out.
        Applied = "applied",
        /// Approved, but carrying it out failed; the key is unchanged.
        Failed = "failed",
        /// Not approved before its expiry.
        Expired = "expired",
    }
);

/// A policy change proposal's id: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub [u8; 16]);

impl ProposalId {
    /// A fresh random id from the operating system's RNG.
    pub fn random() -> Self {
        ProposalId(RequestId::random().0)
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProposalId({self})")
    }
}

impl FromStr for ProposalId {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| StoreError::Invalid {
            what: "proposal id",
            reason: format!("{s:?} is not 32 hex digits"),
        })?;
        Ok(ProposalId(bytes))
    }
}

/// What an approval decides on. Stored as `request:<id>` or `policy:<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApprovalSubject {
    /// A signing request.
    Request(RequestId),
    /// A policy change proposal.
    Policy(ProposalId),
    /// A key change.
    KeyChange(ProposalId),
}

impl fmt::Display for ApprovalSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovalSubject::Request(id) => write!(f, "request:{id}"),
            ApprovalSubject::Policy(id) => write!(f, "policy:{id}"),
            ApprovalSubject::KeyChange(id) => write!(f, "key-change:{id}"),
        }
    }
}

impl FromStr for ApprovalSubject {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::Invalid {
            what: "approval subject",
            reason: format!(
                "{s:?} is not request:, policy: or key-change: followed by 32 hex digits"
            ),
        };
        if let Some(id) = s.strip_prefix("request:") {
            Ok(ApprovalSubject::Request(id.parse().map_err(|_| invalid())?))
        } else if let Some(id) = s.strip_prefix("policy:") {
            Ok(ApprovalSubject::Policy(id.parse().map_err(|_| invalid())?))
        } else if let Some(id) = s.strip_prefix("key-change:") {
            Ok(ApprovalSubject::KeyChange(
                id.parse().map_err(|_| invalid())?,
            ))
        } else {
            Err(invalid())
        }
    }
}

/// What a protocol session works for. Stored as `request:<id>` or `key:<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionSubject {
    /// A signing request (signing sessions).
    Request(RequestId),
    /// A key (key generation, refresh, resharing).
    Key(KeyId),
}

impl fmt::Display for SessionSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionSubject::Request(id) => write!(f, "request:{id}"),
            SessionSubject::Key(id) => write!(f, "key:{id}"),
        }
    }
}

impl FromStr for SessionSubject {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let invalid = || StoreError::Invalid {
            what: "session subject",
            reason: format!("{s:?} is not request:<32 hex digits> or key:<32 hex digits>"),
        };
        if let Some(id) = s.strip_prefix("request:") {
            Ok(SessionSubject::Request(id.parse().map_err(|_| invalid())?))
        } else if let Some(id) = s.strip_prefix("key:") {
            Ok(SessionSubject::Key(id.parse().map_err(|_| invalid())?))
        } else {
            Err(invalid())
        }
    }
}

/// The result of an idempotent insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome<T> {
    /// The record was new and is now stored.
    Inserted,
    /// The same record was already stored (a retry); here it is as stored.
    Existing(T),
}

/// Party ids as stored: `1,2,3`.
pub(crate) fn parties_to_text(parties: &[PartyId]) -> String {
    parties
        .iter()
        .map(|p| p.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses stored party ids (`1,2,3`; empty text is no party).
pub(crate) fn parties_from_text(text: &str) -> Result<Vec<PartyId>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(PartyId(n)),
            _ => Err(format!("{p:?} is not a party number")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_text() {
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>().unwrap(), *s);
        }
        for k in RequestKind::ALL {
            assert_eq!(k.as_str().parse::<RequestKind>().unwrap(), *k);
        }
        let err = "done".parse::<RequestState>().unwrap_err().to_string();
        assert!(err.contains("pending_approval, approved"), "{err}");
    }

    #[test]
    fn subjects_round_trip_and_refuse_garbage() {
        let r = ApprovalSubject::Request(RequestId([7; 16]));
        assert_eq!(r.to_string(), format!("request:{}", "07".repeat(16)));
        assert_eq!(r.to_string().parse::<ApprovalSubject>().unwrap(), r);
        let p = ApprovalSubject::Policy(ProposalId([1; 16]));
        assert_eq!(p.to_string().parse::<ApprovalSubject>().unwrap(), p);
        let k = ApprovalSubject::KeyChange(ProposalId([2; 16]));
        assert_eq!(k.to_string().parse::<ApprovalSubject>().unwrap(), k);
        assert!("request:xyz".parse::<ApprovalSubject>().is_err());
        assert!("key:00".parse::<ApprovalSubject>().is_err());
        let k = SessionSubject::Key(KeyId([2; 16]));
        assert_eq!(k.to_string().parse::<SessionSubject>().unwrap(), k);
    }

    #[test]
    fn party_lists_round_trip() {
        let parties = vec![PartyId(1), PartyId(3), PartyId(12)];
        assert_eq!(parties_to_text(&parties), "1,3,12");
        assert_eq!(parties_from_text("1,3,12").unwrap(), parties);
        assert_eq!(parties_from_text("").unwrap(), vec![]);
        assert!(parties_from_text("1,,2").is_err());
        assert!(parties_from_text("0").is_err());
        assert!(parties_from_text("p1").is_err());
    }
}
