//! Everything that can be refused, with what is wrong and what to do about it.

use tessera_chain::ChainError;
use tessera_wire::CodecError;

use crate::request::PolicyHash;

/// Why a policy document, request, approval, key or policy change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The transaction in a payload is not one Tessera signs.
    #[error("transaction refused: {0}")]
    Chain(#[from] ChainError),

    /// The PSBT in a payload is not one Tessera signs (the error names the input or field).
    #[error("PSBT refused: {0}")]
    Bitcoin(#[from] tessera_chain::bitcoin::BitcoinError),

    /// The Solana message in a payload is not a transfer Tessera signs.
    #[error("Solana transaction refused: {0}")]
    Solana(#[from] tessera_chain::solana::SolanaError),

    /// A payload's signer does not fit it (no input of the PSBT is the signer's, or a key of
    /// the wrong length).
    #[error("{0}")]
    Signer(String),

    /// Bytes that should hold an encoded value do not.
    #[error("malformed encoded value: {0}")]
    Codec(#[from] CodecError),

    /// The policy document is not valid TOML, or its fields have the wrong types.
    #[error("the policy document cannot be read: {0}")]
    Toml(String),

    /// The policy document is larger than any policy needs to be.
    #[error("the policy document is {len} bytes; the limit is {max} bytes")]
    DocumentTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The document's `version` is not one this build reads.
    #[error("policy format version {0} is not supported: this build reads `version = 1`")]
    UnsupportedVersion(i64),

    /// The document parses but breaks a rule of the format.
    #[error("invalid policy: {at}: {problem}")]
    Invalid {
        /// Where: the field, principal or rule at fault (e.g. `rule 'treasury'`).
        at: String,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// A textual value (key, asset, hash, address, role...) is not well-formed.
    #[error("invalid {what} {text:?}: {reason}")]
    Parse {
        /// What kind of value was being read.
        what: &'static str,
        /// The refused text (never secret).
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A signature of the wrong length for its key type.
    #[error("{kind} signatures are {expected} bytes, this one is {got}: it cannot be valid")]
    SignatureLength {
        /// The key type.
        kind: &'static str,
        /// The required length.
        expected: usize,
        /// The given length.
        got: usize,
    },

    /// A signature does not verify under the key it claims.
    #[error("the signature does not verify: {0}")]
    BadSignature(String),

    /// A transaction calls an ERC-20 `transfer` or `transferFrom` in a form that is not the
    /// canonical ABI encoding (trailing bytes, dirty padding, missing words) or with native
    /// value attached: what it moves cannot be told for sure, so it is never signed.
    #[error(
        "the transaction calls ERC-20 {function} but {problem}: Tessera signs token transfers \
         only in their canonical ABI encoding, with no ETH attached"
    )]
    AmbiguousTokenTransfer {
        /// `transfer` or `transferFrom`.
        function: &'static str,
        /// What is wrong with the call.
        problem: String,
    },

    /// An operator secret key file cannot be read. The message never contains secret material.
    #[error("invalid operator secret key: {0}")]
    SecretKey(String),

    /// A derivation path with too many levels.
    #[error("the derivation path has {len} levels; at most {max} are allowed")]
    PathTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A hardened index in a derivation path.
    #[error(
        "derivation path index {index} at position {position} is hardened (>= 2^31); \
         threshold keys derive only non-hardened children: use an index below 2147483648"
    )]
    HardenedIndex {
        /// Position in the path, from 0.
        position: usize,
        /// The index.
        index: u32,
    },

    /// `expires_at` is not after `created_at`.
    #[error("expires_at ({expires_at}) must be later than created_at ({created_at})")]
    BadLifetime {
        /// Creation time (Unix seconds).
        created_at: u64,
        /// Expiry time (Unix seconds).
        expires_at: u64,
    },

    /// A payload, document or field larger than allowed.
    #[error("the {what} is {len} bytes; the limit is {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A principal name that is empty, too long or has characters outside `A-Z a-z 0-9 . _ - @`.
    #[error(
        "invalid principal name {0:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-', '@'"
    )]
    BadName(String),

    /// The digest in a request is not the one its payload gives: the request was altered.
    #[error(
        "the request carries digest {} but its payload gives {}: the request was altered \
         or built wrongly; refuse it and rebuild it from the payload",
        hex::encode(.claimed),
        hex::encode(.derived)
    )]
    DigestMismatch {
        /// The digest the request carries.
        claimed: [u8; 32],
        /// The digest derived from the payload.
        derived: [u8; 32],
    },

    /// An approval names someone who is not a principal of the policy.
    #[error("approval by {0:?}, who is not a principal of this policy")]
    UnknownApprover(String),

    /// An approval's signature does not verify under the approver's key.
    #[error("the approval by {approver:?} does not verify against their key: {reason}")]
    BadApproval {
        /// The approver.
        approver: String,
        /// Why it does not verify.
        reason: String,
    },

    /// The same principal approved twice.
    #[error("{0:?} approved more than once")]
    DuplicateApproval(String),

    /// A policy change proposed against another policy than the current one.
    #[error(
        "the change was proposed against policy {proposed_against}, but the current policy is \
         {current}: propose it again against the current policy"
    )]
    StalePolicy {
        /// The current policy's hash.
        current: PolicyHash,
        /// The hash the change names as previous.
        proposed_against: PolicyHash,
    },

    /// A policy change whose revision does not increase.
    #[error(
        "the proposed revision {proposed} is not greater than the current revision {current}: \
         increase `revision` in the new document"
    )]
    RevisionNotIncreased {
        /// The current revision.
        current: u64,
        /// The proposed revision.
        proposed: u64,
    },

    /// A policy change proposed by someone who is not an admin of the current policy.
    #[error("{0:?} proposed the change but is not an admin of the current policy")]
    ProposerNotAdmin(String),

    /// The request or change has expired.
    #[error("expired at {expires_at} (now {now}): submit it again")]
    Expired {
        /// Expiry time.
        expires_at: u64,
        /// The time of evaluation.
        now: u64,
    },

    /// Created further in the future than clock skew explains.
    #[error("created at {created_at}, more than {max_skew} s after now ({now}): check the clocks")]
    FromTheFuture {
        /// Creation time.
        created_at: u64,
        /// The time of evaluation.
        now: u64,
        /// The tolerated skew in seconds.
        max_skew: u64,
    },

    /// Lives longer than the policy allows.
    #[error(
        "lifetime of {lifetime} s exceeds the policy's max_request_lifetime_secs of {max} s: \
         choose an earlier expires_at"
    )]
    LifetimeTooLong {
        /// expires_at - created_at.
        lifetime: u64,
        /// The policy's limit.
        max: u64,
    },
}
