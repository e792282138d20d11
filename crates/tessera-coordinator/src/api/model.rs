//! The API's JSON: request bodies and the response documents, shared by the server
//! ([`router`](super::router)) and the [`client`](crate::client), so both sides read and
//! write one definition.
//!
//! Responses carry the service's views ([`crate::service`]) field for field and serialize to
//! the same JSON; unlike the views they also deserialize. The `From` conversions destructure
//! every view, so a field added to a view fails to compile here until the API carries it.
//!
//! In JSON, ids, digests, hashes, bytes and signatures are lowercase hex strings (a `0x`
//! prefix is accepted on input), states and kinds are their lowercase names, parties are
//! numbers (`1` for `p1`; `"p1"` is accepted on input), and times are Unix seconds.

use std::fmt::{self, Display};
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tessera_policy::{KeyChange, PolicyChange, PrincipalSignature, SignRequest};
use tessera_wire::{KeyId, KeyKind, PartyId, RequestId};

use crate::service;
use crate::store::{
    CommitteeStatus, Decision, KeyChangeState, KeyStatus, ProposalId, ProposalState, RequestKind,
    RequestState,
};

/// Serde by `Display` / `FromStr` text (ids, states, kinds).
mod text {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// [`text`] for optional values (`null` when absent).
mod opt_text {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Hex bytes with an optional `0x` prefix, any case.
pub(crate) fn decode_hex(what: &str, text: &str) -> Result<Vec<u8>, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    hex::decode(digits).map_err(|e| format!("{what} is not hex ({e})"))
}

// ---------------------------------------------------------------------------------------------
// Request bodies.
// ---------------------------------------------------------------------------------------------

/// A party in a request body: a number (`1`) or its name (`"p1"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartyRef(pub PartyId);

impl Serialize for PartyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0 .0)
    }
}

impl<'de> Deserialize<'de> for PartyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PartyVisitor;
        impl Visitor<'_> for PartyVisitor {
            type Value = PartyRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a party: a number from 1 or a name such as \"p1\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PartyRef, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(PartyRef(PartyId(n))),
                    _ => Err(E::custom(format!(
                        "party {v}: parties are numbered 1 to 65535"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PartyRef, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("party {v}: parties are numbered from 1")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PartyRef, E> {
                v.parse().map(PartyRef).map_err(E::custom)
            }
        }
        d.deserialize_any(PartyVisitor)
    }
}

/// Parties from a list: `p1,p2,p3` or `1,2,3` (the `{parties}` of `/v1/committees/{parties}`).
pub fn parse_parties(text: &str) -> Result<Vec<PartyId>, String> {
    text.split(',')
        .map(|p| p.trim().parse::<PartyId>().map_err(|e| e.to_string()))
        .collect()
}

/// Parties as a path segment: `p1,p2,p3`.
pub fn parties_segment(parties: &[PartyId]) -> String {
    parties
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A non-hardened derivation path. In JSON a string of decimal indices separated by `/`, with
/// an optional leading `m` (`"0/7"`, `"m/0/7"`; `""` or `"m"` for the master key), or an array
/// of numbers (`[0, 7]`). Hardened indices (`7'`) are refused: threshold keys derive only
/// non-hardened children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivationPath(pub Vec<u32>);

impl FromStr for DerivationPath {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text.strip_prefix('m').unwrap_or(text);
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(DerivationPath(Vec::new()));
        }
        rest.split('/')
            .map(|index| {
                if index.ends_with('\'') || index.ends_with('h') || index.ends_with('H') {
                    return Err(format!(
                        "derivation path {text:?}: hardened index {index} is not possible with \
                         a threshold key; use non-hardened indices"
                    ));
                }
                index.parse::<u32>().map_err(|_| {
                    format!(
                        "derivation path {text:?}: {index:?} is not an index; expected decimal \
                         indices separated by '/', e.g. 0/7"
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(DerivationPath)
    }
}

impl Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for index in &self.0 {
            write!(f, "/{index}")?;
        }
        Ok(())
    }
}

impl Serialize for DerivationPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DerivationPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl<'de> Visitor<'de> for PathVisitor {
            type Value = DerivationPath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a derivation path such as \"0/7\" or [0, 7]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DerivationPath, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DerivationPath, A::Error> {
                let mut path = Vec::new();
                while let Some(index) = seq.next_element::<u32>()? {
                    path.push(index);
                }
                Ok(DerivationPath(path))
            }
        }
        d.deserialize_any(PathVisitor)
    }
}

/// `POST /v1/committees`: set up a committee (auxiliary info on its parties).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupCommitteeBody {
    /// The parties, e.g. `[1, 2, 3]`.
    pub parties: Vec<PartyRef>,
}

/// `POST /v1/keys`: generate a key on a ready committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// The key's unique name.
    pub name: String,
    /// The committee's parties.
    pub committee: Vec<PartyRef>,
    /// Signers needed (2 to the committee's size; a Taproot or Ed25519 key signs with exactly
    /// this many).
    pub threshold: u16,
    /// `ecdsa` (default), `taproot` or `ed25519`.
    #[serde(default, with = "text")]
    pub kind: KeyKind,
}

/// `POST /v1/keys/{key}/refresh`: propose to refresh the key's shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshKeyBody {
    /// The key change's id, chosen by the client (32 hex digits), so a retry is recognised.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// Seconds until it expires unapproved (default: the coordinator's, capped by the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
}

/// `POST /v1/keys/{key}/reshare`: propose to hand the key to a ready committee with a
/// threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareKeyBody {
    /// The key change's id, chosen by the client (32 hex digits).
    #[serde(with = "text")]
    pub id: ProposalId,
    /// The new committee's parties.
    pub committee: Vec<PartyRef>,
    /// Signers needed (2 to the committee's size).
    pub threshold: u16,
    /// Seconds until it expires unapproved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
}

/// `POST /v1/keys/{key}/refresh-schedule`: propose to refresh the key automatically every
/// `every_secs` seconds (`null` stops it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshScheduleBody {
    /// The key change's id, chosen by the client (32 hex digits).
    #[serde(with = "text")]
    pub id: ProposalId,
    /// The interval in seconds (at least 3600), or `null` to stop scheduled refreshes.
    pub every_secs: Option<u64>,
    /// Seconds until it expires unapproved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
}

/// A message to sign as EIP-191 `personal_sign`: UTF-8 text or hex bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MessageBody {
    /// The text's UTF-8 bytes are signed.
    Utf8(String),
    /// These bytes (hex) are signed.
    Hex(String),
}

/// What a sign request signs: `{"ethereum_tx": "<hex>"}`, `{"message": {"utf8": "<text>"}}`
/// or `{"message": {"hex": "<hex>"}}` (EIP-191), `{"bitcoin_psbt": {"network": "regtest",
/// "psbt": "<base64>", "signer": "<hex>"}}`, `{"solana_transfer": "<hex message>"}`, or
/// `{"ed25519_message": {"utf8": "<text>"}}` (raw Ed25519).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PayloadBody {
    /// An unsigned legacy (EIP-155) or EIP-1559 transaction, hex.
    EthereumTx(String),
    /// A message, signed as EIP-191 `personal_sign`.
    Message(MessageBody),
    /// A PSBT whose inputs of the key are signed.
    BitcoinPsbt(PsbtBody),
    /// A Solana legacy message holding one SOL transfer, hex.
    SolanaTransfer(String),
    /// Raw bytes signed by an Ed25519 key.
    Ed25519Message(MessageBody),
}

/// A PSBT to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsbtBody {
    /// `mainnet`, `testnet`, `signet` or `regtest`.
    pub network: String,
    /// The PSBT (BIP-174), base64.
    pub psbt: String,
    /// The key at the request's path as its outputs pay it (hex; `public_key` of
    /// `GET /v1/keys/{key}/address?chain=bitcoin`): the inputs spending its output are signed.
    pub signer: String,
}

impl PayloadBody {
    /// The payload the service takes.
    pub fn to_payload(&self) -> Result<tessera_policy::Payload, String> {
        Ok(match self {
            PayloadBody::EthereumTx(hex) => tessera_policy::Payload::EthereumTx {
                raw: decode_hex("payload.ethereum_tx", hex)?,
            },
            PayloadBody::Message(MessageBody::Utf8(text)) => tessera_policy::Payload::Message {
                bytes: text.as_bytes().to_vec(),
            },
            PayloadBody::Message(MessageBody::Hex(hex)) => tessera_policy::Payload::Message {
                bytes: decode_hex("payload.message.hex", hex)?,
            },
            PayloadBody::BitcoinPsbt(body) => tessera_policy::Payload::BitcoinPsbt {
                network: body
                    .network
                    .parse()
                    .map_err(|e| format!("payload.bitcoin_psbt.network: {e}"))?,
                psbt: body.psbt.trim().to_owned(),
                signer: decode_hex("payload.bitcoin_psbt.signer", &body.signer)?,
            },
            PayloadBody::SolanaTransfer(hex) => tessera_policy::Payload::SolanaTransfer {
                message: decode_hex("payload.solana_transfer", hex)?,
            },
            PayloadBody::Ed25519Message(MessageBody::Utf8(text)) => {
                tessera_policy::Payload::Ed25519Message {
                    bytes: text.as_bytes().to_vec(),
                }
            }
            PayloadBody::Ed25519Message(MessageBody::Hex(hex)) => {
                tessera_policy::Payload::Ed25519Message {
                    bytes: decode_hex("payload.ed25519_message.hex", hex)?,
                }
            }
        })
    }
}

/// `POST /v1/requests`: submit a sign request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Chosen by the client (32 hex digits), so a retry is recognised: the same id with the
    /// same content returns the stored request; with other content it is a conflict (409).
    #[serde(with = "text")]
    pub id: RequestId,
    /// The key's name or id.
    pub key: String,
    /// The derivation path (default: the master key).
    #[serde(default)]
    pub path: DerivationPath,
    /// What to sign.
    pub payload: PayloadBody,
    /// Seconds until it expires unsigned (default: the coordinator's, capped by the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
}

/// `POST /v1/requests/{id}/approve`, `/reject` and `/v1/policy/proposals/{id}/approve`: the
/// caller's own signature (hex), made with the key the policy names for them. Approving a
/// request signs its request digest, rejecting it signs
/// [`rejection_digest`](crate::service::rejection_digest) of that digest, approving a policy
/// change signs its change digest; see [`tessera_policy::Approval::sign`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The signature, hex.
    pub signature: String,
}

impl DecisionBody {
    /// The body for `signature`.
    pub fn new(signature: &PrincipalSignature) -> Self {
        DecisionBody {
            signature: signature.to_string(),
        }
    }

    /// The signature it carries.
    pub fn signature(&self) -> Result<PrincipalSignature, String> {
        let bytes = decode_hex("signature", &self.signature)?;
        if bytes.len() != 64 && bytes.len() != 65 {
            return Err(format!(
                "signature has {} bytes; expected 64 (Ed25519) or 65 (Ethereum r || s || v)",
                bytes.len()
            ));
        }
        Ok(PrincipalSignature(bytes))
    }
}

/// `POST /v1/policy/proposals`: propose a new policy document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    /// Chosen by the client (32 hex digits), so a retry is recognised.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// The new policy document, TOML text, exactly as it will be pinned.
    pub document: String,
    /// Seconds until it expires unapproved (default: the coordinator's, capped by the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_secs: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Responses.
// ---------------------------------------------------------------------------------------------

/// The error document of every failed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthenticated`, `bad_signature`, `replayed`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `denied`, `unavailable`.
    pub error: String,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// For `denied`: every reason the policy gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` (alive) or `ready` (the database answers).
    pub status: String,
    /// The database schema version (`/readyz` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
}

/// One principal's decision on a request or a policy proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    /// The principal.
    pub principal: String,
    /// `approve` or `reject`.
    #[serde(with = "text")]
    pub decision: Decision,
    /// When it was received (Unix seconds).
    pub at: i64,
}

impl From<service::DecisionView> for DecisionView {
    fn from(view: service::DecisionView) -> Self {
        let service::DecisionView {
            principal,
            decision,
            at,
        } = view;
        DecisionView {
            principal,
            decision,
            at,
        }
    }
}

/// A sign request: see [`service::RequestView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// The client-chosen id.
    #[serde(with = "text")]
    pub id: RequestId,
    /// The key's id.
    #[serde(with = "text")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// The derivation path (empty = the master key).
    pub path: Vec<u32>,
    /// What it signs.
    #[serde(with = "text")]
    pub kind: RequestKind,
    /// What it does, in words.
    pub action: String,
    /// Where it is in its life.
    #[serde(with = "text")]
    pub state: RequestState,
    /// The digest to be signed (hex).
    pub digest: String,
    /// The request digest approvers sign (hex); recompute it from `request`.
    pub request_digest: String,
    /// The policy it was made under (hex).
    pub policy_hash: String,
    /// The operator who submitted it.
    pub submitted_by: String,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry time (Unix seconds).
    pub expires_at: u64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// Approvals and rejections, oldest first.
    pub decisions: Vec<DecisionView>,
    /// Why it is not (yet) allowed, or who rejected or cancelled it.
    pub reasons: Vec<String>,
    /// Once signed: the signed raw transaction, or the 65-byte message signature (hex).
    pub result: Option<String>,
    /// The signing address (EIP-55).
    pub address: Option<String>,
    /// Signing sessions started for it.
    pub attempts: u32,
    /// The last signing error.
    pub error: Option<String>,
    /// The request itself, as approvers sign it and nodes re-check it.
    pub request: SignRequest,
}

impl From<service::RequestView> for RequestView {
    fn from(view: service::RequestView) -> Self {
        let service::RequestView {
            id,
            key_id,
            key_name,
            path,
            kind,
            action,
            state,
            digest,
            request_digest,
            policy_hash,
            submitted_by,
            created_at,
            expires_at,
            updated_at,
            decisions,
            reasons,
            result,
            address,
            attempts,
            error,
            request,
        } = view;
        RequestView {
            id,
            key_id,
            key_name,
            path,
            kind,
            action,
            state,
            digest,
            request_digest,
            policy_hash,
            submitted_by,
            created_at,
            expires_at,
            updated_at,
            decisions: decisions.into_iter().map(Into::into).collect(),
            reasons,
            result,
            address,
            attempts,
            error,
            request,
        }
    }
}

/// A request as a list shows it: see [`service::RequestSummary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// The client-chosen id.
    #[serde(with = "text")]
    pub id: RequestId,
    /// The key's id.
    #[serde(with = "text")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it signs.
    #[serde(with = "text")]
    pub kind: RequestKind,
    /// What it does, in words.
    pub action: String,
    /// Where it is in its life.
    #[serde(with = "text")]
    pub state: RequestState,
    /// The operator who submitted it.
    pub submitted_by: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// Signing sessions started for it.
    pub attempts: u32,
    /// The last signing error.
    pub error: Option<String>,
}

impl From<service::RequestSummary> for RequestSummary {
    fn from(view: service::RequestSummary) -> Self {
        let service::RequestSummary {
            id,
            key_id,
            key_name,
            kind,
            action,
            state,
            submitted_by,
            created_at,
            updated_at,
            attempts,
            error,
        } = view;
        RequestSummary {
            id,
            key_id,
            key_name,
            kind,
            action,
            state,
            submitted_by,
            created_at,
            updated_at,
            attempts,
            error,
        }
    }
}

/// A page of requests (`GET /v1/requests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPage {
    /// The requests, newest first; `GET /v1/requests/{id}` shows one whole.
    pub requests: Vec<RequestSummary>,
    /// When the page is full: pass it as `after` for the next page.
    #[serde(with = "opt_text")]
    pub next_after: Option<RequestId>,
}

/// The coordinator's audit events (`GET /v1/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvents {
    /// The coordinator's emitter name (`coordinator:<name>`).
    pub emitter: String,
    /// Whether the whole chain verified against the coordinator's key.
    pub verified: bool,
    /// Where and why the chain is broken, if it is (events after the break are left out).
    pub broken: Option<String>,
    /// How many events this answer carries.
    pub matched: usize,
    /// The matching events, oldest first, as stored (hash and signature included).
    pub events: Vec<tessera_audit::AuditRecord>,
    /// When older records remain: pass it as `before` for the next page.
    #[serde(default)]
    pub next_before: Option<u64>,
}

/// A committee: see [`service::CommitteeView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeView {
    /// The parties, in protocol order.
    pub parties: Vec<PartyId>,
    /// `creating`, `ready` or `failed`.
    #[serde(with = "text")]
    pub status: CommitteeStatus,
    /// Why the set-up failed.
    pub error: Option<String>,
    /// When the set-up was requested (Unix seconds).
    pub created_at: i64,
    /// When the record last changed (Unix seconds).
    pub updated_at: i64,
}

impl From<service::CommitteeView> for CommitteeView {
    fn from(view: service::CommitteeView) -> Self {
        let service::CommitteeView {
            parties,
            status,
            error,
            created_at,
            updated_at,
        } = view;
        CommitteeView {
            parties,
            status,
            error,
            created_at,
            updated_at,
        }
    }
}

/// The committees (`GET /v1/committees`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitteeList {
    /// Oldest first.
    pub committees: Vec<CommitteeView>,
}

/// A threshold key: see [`service::KeyView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Its id.
    #[serde(with = "text")]
    pub id: KeyId,
    /// Its unique name.
    pub name: String,
    /// Signers needed.
    pub threshold: u16,
    /// The parties holding shares.
    pub committee: Vec<PartyId>,
    /// `creating`, `ready` or `failed`.
    #[serde(with = "text")]
    pub status: KeyStatus,
    /// `ecdsa`, `taproot` or `ed25519`.
    #[serde(with = "text")]
    pub kind: KeyKind,
    /// The public key (hex): SEC1 compressed on secp256k1 (a Taproot key's internal key), 32
    /// bytes for Ed25519.
    pub public_key: Option<String>,
    /// The HD chain code (hex).
    pub chain_code: Option<String>,
    /// The master key's address on its default chain (Ethereum for ECDSA, Bitcoin mainnet
    /// P2TR for Taproot, Solana for Ed25519).
    pub address: Option<String>,
    /// Why key generation failed.
    pub error: Option<String>,
    /// When key generation was requested (Unix seconds).
    pub created_at: i64,
    /// When the record last changed (Unix seconds).
    pub updated_at: i64,
    /// The automatic refresh interval (seconds), if scheduled.
    pub refresh_every_secs: Option<i64>,
    /// When the next scheduled refresh is due (Unix seconds).
    pub next_refresh_at: Option<i64>,
    /// When the shares last changed by a refresh or reshare (Unix seconds).
    pub rotated_at: Option<i64>,
    /// The key's epoch: 0 after key generation, one more after each refresh or reshare.
    pub epoch: u64,
    /// The reshare session whose activation has not reached every participant yet.
    pub activation_due: Option<String>,
    /// Holders of the previous epoch that have not confirmed erasing it yet.
    pub erasure_unconfirmed: Vec<PartyId>,
}

impl From<service::KeyView> for KeyView {
    fn from(view: service::KeyView) -> Self {
        let service::KeyView {
            id,
            name,
            threshold,
            committee,
            status,
            kind,
            public_key,
            chain_code,
            address,
            error,
            created_at,
            updated_at,
            refresh_every_secs,
            next_refresh_at,
            rotated_at,
            epoch,
            activation_due,
            erasure_unconfirmed,
        } = view;
        KeyView {
            id,
            name,
            threshold,
            committee,
            status,
            kind,
            public_key,
            chain_code,
            address,
            error,
            created_at,
            updated_at,
            refresh_every_secs,
            next_refresh_at,
            rotated_at,
            epoch,
            activation_due,
            erasure_unconfirmed,
        }
    }
}

/// The keys (`GET /v1/keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// By name.
    pub keys: Vec<KeyView>,
}

/// A key's public key and address at a path: see [`service::KeyAddress`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAddress {
    /// The key.
    #[serde(with = "text")]
    pub key_id: KeyId,
    /// The key's kind.
    #[serde(with = "text")]
    pub kind: KeyKind,
    /// The path (empty = the master key).
    pub path: Vec<u32>,
    /// `ethereum`, `bitcoin` or `solana`.
    pub chain: String,
    /// The Bitcoin network (Bitcoin only).
    pub network: Option<String>,
    /// The public key at the path as the chain sees it (hex): SEC1 compressed for ECDSA, the
    /// x-only Taproot output key, the Ed25519 key; a PSBT request's `signer`.
    pub public_key: String,
    /// The address.
    pub address: String,
}

impl From<service::KeyAddress> for KeyAddress {
    fn from(view: service::KeyAddress) -> Self {
        let service::KeyAddress {
            key_id,
            kind,
            path,
            chain,
            network,
            public_key,
            address,
        } = view;
        KeyAddress {
            key_id,
            kind,
            path,
            chain,
            network,
            public_key,
            address,
        }
    }
}

/// The active policy: see [`service::PolicyView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// SHA-256 of the document's exact bytes (hex).
    pub hash: String,
    /// Its revision.
    pub revision: u64,
    /// The document (TOML).
    pub document: String,
    /// When it became active (Unix seconds).
    pub activated_at: i64,
}

impl From<service::PolicyView> for PolicyView {
    fn from(view: service::PolicyView) -> Self {
        let service::PolicyView {
            hash,
            revision,
            document,
            activated_at,
        } = view;
        PolicyView {
            hash,
            revision,
            document,
            activated_at,
        }
    }
}

/// A policy change proposal: see [`service::ProposalView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalView {
    /// The proposal's id.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// `pending`, `applied`, `rejected` or `expired`.
    #[serde(with = "text")]
    pub state: ProposalState,
    /// The proposing admin.
    pub proposed_by: String,
    /// The proposed document's hash (hex).
    pub document_hash: String,
    /// The digest admins sign to approve (hex); recompute it from `change`.
    pub change_digest: String,
    /// Approvals, oldest first.
    pub decisions: Vec<DecisionView>,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// The change itself, as admins sign it.
    pub change: PolicyChange,
}

impl From<service::ProposalView> for ProposalView {
    fn from(view: service::ProposalView) -> Self {
        let service::ProposalView {
            id,
            state,
            proposed_by,
            document_hash,
            change_digest,
            decisions,
            created_at,
            expires_at,
            change,
        } = view;
        ProposalView {
            id,
            state,
            proposed_by,
            document_hash,
            change_digest,
            decisions: decisions.into_iter().map(Into::into).collect(),
            created_at,
            expires_at,
            change,
        }
    }
}

/// A policy proposal as a list shows it: see [`service::ProposalSummary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalSummary {
    /// The proposal's id.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// `pending`, `applied`, `rejected` or `expired`.
    #[serde(with = "text")]
    pub state: ProposalState,
    /// The proposing admin.
    pub proposed_by: String,
    /// The proposed document's hash (hex).
    pub document_hash: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
}

impl From<service::ProposalSummary> for ProposalSummary {
    fn from(view: service::ProposalSummary) -> Self {
        let service::ProposalSummary {
            id,
            state,
            proposed_by,
            document_hash,
            created_at,
            expires_at,
        } = view;
        ProposalSummary {
            id,
            state,
            proposed_by,
            document_hash,
            created_at,
            expires_at,
        }
    }
}

/// A page of policy proposals (`GET /v1/policy/proposals`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalList {
    /// Newest first; `GET /v1/policy/proposals/{id}` shows one whole.
    pub proposals: Vec<ProposalSummary>,
    /// When the page is full: pass it as `after` for the next page.
    #[serde(with = "opt_text", default)]
    pub next_after: Option<ProposalId>,
}

/// A key change: see [`service::KeyChangeView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChangeView {
    /// Its id.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// The key's id.
    #[serde(with = "text")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it does, in words.
    pub operation: String,
    /// `pending`, `running`, `applied`, `failed` or `expired`.
    #[serde(with = "text")]
    pub state: KeyChangeState,
    /// Why carrying it out failed.
    pub error: Option<String>,
    /// The proposing admin.
    pub proposed_by: String,
    /// The digest admins sign to approve (hex); recompute it from `change`.
    pub change_digest: String,
    /// Approvals, oldest first.
    pub decisions: Vec<DecisionView>,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
    /// The change itself, as admins sign it and nodes re-check it.
    pub change: KeyChange,
    /// What the proposer should know now (only in the answer to a proposal).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl From<service::KeyChangeView> for KeyChangeView {
    fn from(view: service::KeyChangeView) -> Self {
        let service::KeyChangeView {
            id,
            key_id,
            key_name,
            operation,
            state,
            error,
            proposed_by,
            change_digest,
            decisions,
            created_at,
            expires_at,
            updated_at,
            change,
            notes,
        } = view;
        KeyChangeView {
            id,
            key_id,
            key_name,
            operation,
            state,
            error,
            proposed_by,
            change_digest,
            decisions: decisions.into_iter().map(Into::into).collect(),
            created_at,
            expires_at,
            updated_at,
            change,
            notes,
        }
    }
}

/// A key change as a list shows it: see [`service::KeyChangeSummary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChangeSummary {
    /// Its id.
    #[serde(with = "text")]
    pub id: ProposalId,
    /// The key's id.
    #[serde(with = "text")]
    pub key_id: KeyId,
    /// The key's name.
    pub key_name: String,
    /// What it does, in words.
    pub operation: String,
    /// `pending`, `running`, `applied`, `failed` or `expired`.
    #[serde(with = "text")]
    pub state: KeyChangeState,
    /// Why carrying it out failed.
    pub error: Option<String>,
    /// The proposing admin.
    pub proposed_by: String,
    /// When it was proposed (Unix seconds).
    pub created_at: i64,
    /// When it expires unapproved (Unix seconds).
    pub expires_at: i64,
    /// When its record last changed (Unix seconds).
    pub updated_at: i64,
}

impl From<service::KeyChangeSummary> for KeyChangeSummary {
    fn from(view: service::KeyChangeSummary) -> Self {
        let service::KeyChangeSummary {
            id,
            key_id,
            key_name,
            operation,
            state,
            error,
            proposed_by,
            created_at,
            expires_at,
            updated_at,
        } = view;
        KeyChangeSummary {
            id,
            key_id,
            key_name,
            operation,
            state,
            error,
            proposed_by,
            created_at,
            expires_at,
            updated_at,
        }
    }
}

/// A page of key changes (`GET /v1/key-changes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChangeList {
    /// Newest first; `GET /v1/key-changes/{id}` shows one whole.
    pub changes: Vec<KeyChangeSummary>,
    /// When the page is full: pass it as `after` for the next page.
    #[serde(with = "opt_text", default)]
    pub next_after: Option<ProposalId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_paths_parse_from_text_and_arrays() {
        for (text, path) in [
            ("", vec![]),
            ("m", vec![]),
            ("m/", vec![]),
            ("0/7", vec![0, 7]),
            ("m/0/7", vec![0, 7]),
            ("/3", vec![3]),
        ] {
            assert_eq!(text.parse::<DerivationPath>().unwrap().0, path, "{text}");
        }
        for bad in ["0/7'", "0//7", "a", "0/4294967296", "0/7h"] {
            assert!(bad.parse::<DerivationPath>().is_err(), "{bad}");
        }
        let from_array: DerivationPath = serde_json::from_str("[0, 7]").unwrap();
        assert_eq!(from_array.0, vec![0, 7]);
        let from_text: DerivationPath = serde_json::from_str("\"0/7\"").unwrap();
        assert_eq!(from_text, from_array);
        assert_eq!(serde_json::to_string(&from_text).unwrap(), "\"m/0/7\"");
        assert!(serde_json::from_str::<DerivationPath>("[-1]").is_err());
    }

    #[test]
    fn parties_are_numbers_or_names() {
        let body: SetupCommitteeBody =
            serde_json::from_str(r#"{"parties": [1, "p2", "3"]}"#).unwrap();
        let parties: Vec<PartyId> = body.parties.iter().map(|p| p.0).collect();
        assert_eq!(parties, [PartyId(1), PartyId(2), PartyId(3)]);
        for bad in [
            r#"{"parties": [0]}"#,
            r#"{"parties": [70000]}"#,
            r#"{"parties": ["x"]}"#,
        ] {
            assert!(
                serde_json::from_str::<SetupCommitteeBody>(bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_parties("p1,2, p3").unwrap().len(), 3);
        assert!(parse_parties("p1,,p2").is_err());
        assert_eq!(parties_segment(&[PartyId(1), PartyId(3)]), "p1,p3");
    }

    #[test]
    fn payloads_are_tagged_and_strict() {
        let body: PayloadBody = serde_json::from_str(r#"{"message": {"utf8": "hi"}}"#).unwrap();
        assert_eq!(
            body.to_payload().unwrap(),
            tessera_policy::Payload::Message {
                bytes: b"hi".to_vec()
            }
        );
        let body: PayloadBody = serde_json::from_str(r#"{"message": {"hex": "0x6869"}}"#).unwrap();
        assert_eq!(
            body.to_payload().unwrap(),
            tessera_policy::Payload::Message {
                bytes: b"hi".to_vec()
            }
        );
        let body: PayloadBody = serde_json::from_str(r#"{"ethereum_tx": "zz"}"#).unwrap();
        assert!(body.to_payload().unwrap_err().contains("not hex"));
        assert!(serde_json::from_str::<PayloadBody>(r#"{"message": "hi"}"#).is_err());
        assert!(serde_json::from_str::<PayloadBody>(r#"{"bytes": "00"}"#).is_err());
    }
}
