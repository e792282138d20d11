//! FROST threshold Schnorr signatures (the `givre` crate), run over secure sessions like the
//! ECDSA protocols: Ed25519 (Solana) and BIP-340 on secp256k1 with the Taproot key tweak
//! (Bitcoin key-path spends).
//!
//! Key generation is the same distributed key generation as for ECDSA keys (`cggmp24-keygen`,
//! reliable broadcast enforced, HD wallets on) on the scheme's curve; FROST keys need no
//! auxiliary info. Interactive signing takes the signers' nonce commitments in one round and
//! their signature shares in a second ([`frost_sign`]); online signing takes commitments made
//! ahead of time ([`frost_commit`]) and needs only the second ([`frost_online_sign`]). Every
//! signature is checked against the (child, tweaked) public key before it is returned.

use std::sync::Arc;

use cggmp24_keygen::ExecutionId;
use givre::ciphersuite::{Ciphersuite, NormalizedPoint};
use givre::generic_ec::{NonZero, Point};
use rand_core::OsRng;
use round_based::MpcParty;
use sha2::Sha256;
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol};

use crate::delivery::{connect, MpcConfig, SessionSpec};
use crate::protocols::{committee_indices, expect_protocol, finish, run_blocking};
use crate::MpcError;

pub use givre::ciphersuite::{Bitcoin, Ed25519};

/// A party's share of a FROST key on the scheme `C`'s curve.
pub type FrostKeyShare<C> = givre::KeyShare<<C as Ciphersuite>::Curve>;
/// A signer's secret nonces for one future signing: secret, and used at most once (a nonce
/// used for two messages gives the signer's share away).
pub type FrostNonces<C> = givre::signing::round1::SecretNonces<<C as Ciphersuite>::Curve>;
/// The public commitments to a signer's nonces, which the other signers use.
pub type FrostCommitments<C> = givre::signing::round1::PublicCommitments<<C as Ciphersuite>::Curve>;
type SigShare<C> = givre::signing::round2::SigShare<<C as Ciphersuite>::Curve>;

pub(crate) type KeygenMsg<C> = cggmp24_keygen::msg::threshold::Msg<
    <C as Ciphersuite>::Curve,
    cggmp24_keygen::security_level::SecurityLevel128,
    Sha256,
>;
pub(crate) type SignMsg<C> = givre::signing::full_signing::Msg<<C as Ciphersuite>::Curve>;
/// A public key as FROST verifies against it: non-zero and normalized for the scheme.
pub(crate) type VerifyingKey<C> = NormalizedPoint<C, NonZero<Point<<C as Ciphersuite>::Curve>>>;

/// A FROST scheme Tessera signs with: Ed25519 or BIP-340 (Taproot).
pub trait Scheme: Ciphersuite + Send + Sync + 'static {
    /// A short name, for errors and logs.
    const LABEL: &'static str;
}

impl Scheme for Ed25519 {
    const LABEL: &'static str = "ed25519";
}

impl Scheme for Bitcoin {
    const LABEL: &'static str = "bip340-taproot";
}

/// Distributed key generation of a `threshold`-of-`spec.parties.len()` FROST key for scheme
/// `C`: HD wallets enabled, reliable broadcast enforced. Nobody ever holds the whole key.
pub async fn frost_keygen<C: Scheme>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    threshold: u16,
    config: &MpcConfig,
) -> Result<FrostKeyShare<C>, MpcError> {
    expect_protocol(spec, Protocol::FROST_KEYGEN)?;
    let me = net.party();
    let i = spec.my_index(me)?;
    let n = spec.parties.len() as u16;
    if threshold < 2 || threshold > n {
        return Err(MpcError::InvalidSession(format!(
            "threshold {threshold} must be between 2 and {n}"
        )));
    }
    let (incoming, outgoing, failure) = connect::<KeygenMsg<C>>(net, spec, me, config);
    let eid = spec.execution_id();
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        cggmp24_keygen::keygen::<C::Curve>(ExecutionId::new(&eid), i, n)
            .set_threshold(threshold)
            .hd_wallet(true)
            .enforce_reliable_broadcast(true)
            .start(&mut OsRng, party)
            .await
    })
    .await?;
    finish(result, &failure, spec)
}

/// The public key a chain sees for the child at `path` of the key `share` belongs to (the key
/// itself for an empty path): for Ed25519 the 32-byte point, for Taproot the 32-byte x-only
/// output key (the internal key tweaked with an empty script tree, BIP-341 key-path).
pub fn frost_public_key<C: Scheme>(
    share: &FrostKeyShare<C>,
    path: &[u32],
) -> Result<Vec<u8>, MpcError> {
    Ok(verifying_key::<C>(share, path)?
        .to_bytes()
        .as_ref()
        .to_vec())
}

/// As [`frost_public_key`], from the key's public information alone: its public key as key
/// generation reports it (SEC1 compressed on secp256k1, 32 bytes for Ed25519) and its HD chain
/// code. What a coordinator or client derives addresses with, holding no share.
pub fn frost_child_public_key<C: Scheme>(
    public_key: &[u8],
    chain_code: &[u8],
    path: &[u32],
) -> Result<Vec<u8>, MpcError> {
    use givre::hd_wallet::{ExtendedPublicKey, HdWallet, NonHardenedIndex};
    let public_key = Point::<C::Curve>::from_bytes(public_key)
        .map_err(|_| MpcError::InvalidPath(format!("not a public key of a {} key", C::LABEL)))?;
    if path.is_empty() {
        return Ok(chain_form::<C>(public_key)?.to_bytes().as_ref().to_vec());
    }
    let chain_code: [u8; 32] = chain_code
        .try_into()
        .map_err(|_| MpcError::InvalidPath("a chain code is 32 bytes".into()))?;
    let parent = ExtendedPublicKey {
        public_key,
        chain_code,
    };
    let child = <C::HdAlgo as HdWallet<C::Curve>>::try_derive_child_public_key_with_path(
        &parent,
        path.iter().map(|&i| {
            NonHardenedIndex::try_from(i)
                .map_err(|_| MpcError::InvalidPath(format!("index {i} is hardened")))
        }),
    )?;
    Ok(chain_form::<C>(child.public_key)?
        .to_bytes()
        .as_ref()
        .to_vec())
}

/// `point` normalized for the scheme, and tweaked for Taproot (BIP-341 key path).
fn chain_form<C: Scheme>(point: Point<C::Curve>) -> Result<VerifyingKey<C>, MpcError> {
    let point = NonZero::from_point(point)
        .ok_or_else(|| MpcError::InvalidPath("the child public key is zero".into()))?;
    let point = C::normalize_point(point);
    if !C::IS_TAPROOT {
        return Ok(point);
    }
    let tweaked = givre::signing::taproot::tweak_public_key::<C>(point, None)
        .ok_or_else(|| MpcError::InvalidPath("the Taproot tweak is undefined".into()))?;
    Ok(C::normalize_point(tweaked))
}

/// The normalized (child, tweaked) public key signatures are checked against.
pub(crate) fn verifying_key<C: Scheme>(
    share: &FrostKeyShare<C>,
    path: &[u32],
) -> Result<VerifyingKey<C>, MpcError> {
    let child = share
        .derive_child_public_key::<C::HdAlgo, _>(path.iter().copied())
        .map_err(|e| MpcError::InvalidPath(format!("{e:?}")))?
        .public_key;
    chain_form::<C>(child)
}

/// The key-generation indices of the signers (where each session participant sits in the
/// key's committee) and this party's position among them; checks that `share` is this
/// party's and that exactly the key's threshold signs (FROST signs with exactly `t`).
fn signers<C: Scheme>(
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &FrostKeyShare<C>,
    me: PartyId,
) -> Result<(u16, Vec<u16>), MpcError> {
    let (i, indices) = committee_indices(spec, committee, share.i, me)?;
    if indices.len() != usize::from(share.min_signers()) {
        return Err(MpcError::InvalidSession(format!(
            "{} signers, but a FROST signing takes exactly the key's threshold of {}",
            indices.len(),
            share.min_signers()
        )));
    }
    Ok((i, indices))
}

/// Interactive FROST signing of `message` by the session's parties (exactly the key's
/// threshold, in any order the coordinator chose) with the child key at `path` (the Taproot
/// output key for BIP-340). Returns the 64-byte signature (`R || z`), verified against the
/// public key before it is returned.
///
/// For BIP-340 `message` is the 32-byte sighash; for Ed25519 it is the message itself.
pub async fn frost_sign<C: Scheme>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &FrostKeyShare<C>,
    path: &[u32],
    message: &[u8],
    config: &MpcConfig,
) -> Result<Vec<u8>, MpcError> {
    expect_protocol(spec, Protocol::FROST_SIGN)?;
    let me = net.party();
    let (i, indices) = signers::<C>(spec, committee, share, me)?;
    let key = verifying_key::<C>(share, path)?;
    let (incoming, outgoing, failure) = connect::<SignMsg<C>>(net, spec, me, config);
    let (share_for_task, path, message_for_task) = (share.clone(), path.to_vec(), message.to_vec());
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        let mut builder = givre::signing::<C>(i, &share_for_task, &indices, &message_for_task)
            .set_derivation_path(path.iter().copied())
            .map_err(|e| format!("derivation path {path:?}: {e:?}"))?;
        if C::IS_TAPROOT {
            builder = builder
                .set_taproot_tweak(None)
                .map_err(|e| format!("{e:?}"))?;
        }
        builder
            .sign(&mut OsRng, party)
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await?;
    let signature = finish(result, &failure, spec)?;
    signature.verify(&key, message).map_err(|_| {
        MpcError::InvalidSession(format!(
            "the {} signature does not verify against the key; a signer misbehaved",
            C::LABEL
        ))
    })?;
    let mut bytes = vec![0u8; givre::signing::aggregate::Signature::<C>::serialized_len()];
    signature.write_to_slice(&mut bytes);
    Ok(bytes)
}

/// One signer's part of a future one-round signing, as a commit session made it: its secret
/// nonces and every signer's public commitments, in the signers' order. Stored until used,
/// and used at most once ([`crate::FrostNonceStore`]).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct StoredFrostNonces<C: Scheme> {
    /// This signer's nonces (secret).
    pub nonces: FrostNonces<C>,
    /// Every signer's commitments, in the order of `signers`.
    pub commitments: Vec<FrostCommitments<C>>,
    /// The signers, in the commit session's order: the online signing session must have
    /// exactly these parties, in this order.
    pub signers: Vec<PartyId>,
}

/// A commit session of the session's parties (exactly the key's threshold): each makes fresh
/// nonces for one future signing, keeps them, and sends the commitments to the others as a
/// signed broadcast. Returns this party's nonces with everyone's commitments, to be stored
/// until one online signing ([`frost_online_sign`]) uses them.
pub async fn frost_commit_session<C: Scheme>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &FrostKeyShare<C>,
    config: &MpcConfig,
) -> Result<StoredFrostNonces<C>, MpcError> {
    expect_protocol(spec, Protocol::FROST_COMMIT)?;
    let me = net.party();
    signers::<C>(spec, committee, share, me)?;
    let (nonces, mine) = frost_commit::<C>(share);
    let all =
        crate::online::exchange_one_round(&net, spec, &mine, "nonce commitment", config).await?;
    Ok(StoredFrostNonces {
        nonces,
        commitments: spec.parties.iter().map(|p| all[p]).collect(),
        signers: spec.parties.clone(),
    })
}

/// Fresh nonces for one future signing with `share`, and their public commitments. Keep the
/// nonces secret and take them out of storage durably before they are used, once.
pub fn frost_commit<C: Scheme>(share: &FrostKeyShare<C>) -> (FrostNonces<C>, FrostCommitments<C>) {
    givre::signing::round1::commit::<C>(&mut OsRng, share)
}

/// One-round FROST signing of `message` by the session's parties (exactly the key's
/// threshold) with the child key at `path`, from nonces committed ahead of time: `nonces` are
/// this party's (handed over by value: they are never used again), `commitments` every
/// signer's, in the session's party order. This party refuses if its own entry is not the
/// commitment to its nonces. Each signer sends its signature share as a signed broadcast; the
/// shares are aggregated and the signature verified against the public key before it is
/// returned (a share that spoils it aborts the session).
#[allow(clippy::too_many_arguments)]
pub async fn frost_online_sign<C: Scheme>(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &FrostKeyShare<C>,
    nonces: FrostNonces<C>,
    commitments: &[FrostCommitments<C>],
    path: &[u32],
    message: &[u8],
    config: &MpcConfig,
) -> Result<Vec<u8>, MpcError> {
    expect_protocol(spec, Protocol::FROST_ONLINE_SIGN)?;
    let me = net.party();
    let (i, indices) = signers::<C>(spec, committee, share, me)?;
    if commitments.len() != indices.len() {
        return Err(MpcError::InvalidSession(format!(
            "{} nonce commitments for {} signers",
            commitments.len(),
            indices.len()
        )));
    }
    if commitments[usize::from(i)] != nonces.public_commitments() {
        return Err(MpcError::InvalidSession(
            "the session names another nonce commitment for this party than the one its \
             nonces make; nothing was signed"
                .into(),
        ));
    }
    let key = verifying_key::<C>(share, path)?;
    let listed: Vec<(u16, FrostCommitments<C>)> = indices
        .iter()
        .copied()
        .zip(commitments.iter().copied())
        .collect();
    let aborted = |detail: String| MpcError::Aborted {
        protocol: spec.protocol,
        session: spec.session,
        detail,
    };
    let mine = signature_share::<C>(share, nonces, message, &listed, path, &aborted)?;
    let shares =
        crate::online::exchange_one_round(&net, spec, &mine, "signature share", config).await?;
    let with_shares: Vec<(u16, FrostCommitments<C>, SigShare<C>)> = spec
        .parties
        .iter()
        .zip(&listed)
        .map(|(p, (index, commitment))| (*index, *commitment, shares[p]))
        .collect();
    aggregate::<C>(share, &with_shares, message, path, &key, &aborted)
}

/// This signer's share of the signature of `message` with the child key at `path`, from its
/// nonces and every signer's commitments (`listed`: key-generation index and commitments).
pub(crate) fn signature_share<C: Scheme>(
    share: &FrostKeyShare<C>,
    nonces: FrostNonces<C>,
    message: &[u8],
    listed: &[(u16, FrostCommitments<C>)],
    path: &[u32],
    aborted: &dyn Fn(String) -> MpcError,
) -> Result<SigShare<C>, MpcError> {
    let mut options =
        givre::signing::round2::SigningOptions::<C>::new(share, nonces, message, listed)
            .set_derivation_path(path.iter().copied())
            .map_err(|e| MpcError::InvalidPath(format!("{path:?}: {e:?}")))?;
    if C::IS_TAPROOT {
        options = options
            .set_taproot_tweak(None)
            .map_err(|e| aborted(format!("{e:?}")))?;
    }
    options.sign().map_err(|e| aborted(format!("{e:?}")))
}

/// The signature the signers' shares make, checked against `key` (the child, tweaked public
/// key), as 64 bytes.
pub(crate) fn aggregate<C: Scheme>(
    share: &FrostKeyShare<C>,
    with_shares: &[(u16, FrostCommitments<C>, SigShare<C>)],
    message: &[u8],
    path: &[u32],
    key: &VerifyingKey<C>,
    aborted: &dyn Fn(String) -> MpcError,
) -> Result<Vec<u8>, MpcError> {
    let mut aggregate =
        givre::signing::aggregate::AggregateOptions::<C>::new(share.as_ref(), with_shares, message)
            .set_derivation_path(path.iter().copied())
            .map_err(|e| MpcError::InvalidPath(format!("{path:?}: {e:?}")))?;
    if C::IS_TAPROOT {
        aggregate = aggregate
            .set_taproot_tweak(None)
            .map_err(|e| aborted(format!("{e:?}")))?;
    }
    let signature = aggregate
        .aggregate()
        .map_err(|e| aborted(format!("the signature shares do not aggregate: {e:?}")))?;
    signature
        .verify(key, message)
        .map_err(|_| MpcError::SignatureInvalid)?;
    let mut bytes = vec![0u8; givre::signing::aggregate::Signature::<C>::serialized_len()];
    signature.write_to_slice(&mut bytes);
    Ok(bytes)
}
