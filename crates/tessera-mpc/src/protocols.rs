//! CGGMP24 threshold ECDSA on secp256k1, run over secure sessions.

use std::future::Future;
use std::sync::Arc;

use cggmp24::generic_ec::Point;
use cggmp24::key_share::AnyKeyShare;
use cggmp24::{DataToSign, ExecutionId};
use rand_core::OsRng;
use round_based::MpcParty;
use sha2::Sha256;
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol};

use crate::delivery::{connect, FailureSlot, MpcConfig, SessionSpec};
use crate::MpcError;

/// The curve.
pub type Curve = cggmp24::supported_curves::Secp256k1;
/// The security level (Paillier and ring-Pedersen parameter sizes).
pub type Level = cggmp24::security_level::SecurityLevel128;
/// A party's output of key generation, before auxiliary info is attached.
pub type IncompleteKeyShare = cggmp24::IncompleteKeyShare<Curve>;
/// A party's auxiliary info (Paillier key, ring-Pedersen parameters), per committee.
pub type AuxInfo = cggmp24::key_share::AuxInfo<Level>;
/// A complete, validated key share.
pub type KeyShare = cggmp24::KeyShare<Curve, Level>;
/// The four safe primes one party's auxiliary info is built from (slow to generate).
pub type PrimeSet = cggmp24::PregeneratedPrimes<Level>;
/// A presignature: used at most once.
pub type Presignature = cggmp24::Presignature<Curve>;
/// What every signer of a presignature session learned publicly.
pub type PresignaturePublicData = cggmp24::signing::PresignaturePublicData<Curve>;
/// An ECDSA signature.
pub type Signature = cggmp24::Signature<Curve>;

pub(crate) type KeygenMsg = cggmp24::keygen::ThresholdMsg<Curve, Level, Sha256>;
pub(crate) type AuxMsg = cggmp24::key_refresh::msg::Msg<Sha256, Level>;
pub(crate) type SignMsg = cggmp24::signing::msg::Msg<Curve, Sha256>;

/// Runs a protocol future on a blocking thread: the library's proofs are long synchronous
/// computations that must not starve the transport's tasks.
pub(crate) async fn run_blocking<T, E, F>(future: F) -> Result<Result<T, E>, MpcError>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(future))
        .await
        .map_err(|e| MpcError::InvalidSession(format!("protocol task failed: {e}")))
}

pub(crate) fn finish<T, E: std::fmt::Debug>(
    result: Result<T, E>,
    failure: &FailureSlot,
    spec: &SessionSpec,
) -> Result<T, MpcError> {
    result.map_err(|e| {
        failure.take().unwrap_or_else(|| MpcError::Aborted {
            protocol: spec.protocol,
            session: spec.session,
            detail: format!("{e:?}"),
        })
    })
}

pub(crate) fn expect_protocol(spec: &SessionSpec, protocol: Protocol) -> Result<(), MpcError> {
    if spec.protocol != protocol {
        return Err(MpcError::InvalidSession(format!(
            "session {} is a {} session, not {protocol}",
            spec.session, spec.protocol
        )));
    }
    Ok(())
}

/// Distributed key generation: `threshold`-of-`spec.parties.len()`, HD wallets enabled,
/// reliable broadcast enforced. Nobody ever holds the whole key.
pub async fn keygen(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    threshold: u16,
    config: &MpcConfig,
) -> Result<IncompleteKeyShare, MpcError> {
    expect_protocol(spec, Protocol::KEYGEN)?;
    let me = net.party();
    let i = spec.my_index(me)?;
    let n = spec.parties.len() as u16;
    if threshold < 2 || threshold > n {
        return Err(MpcError::InvalidSession(format!(
            "threshold {threshold} must be between 2 and {n}"
        )));
    }
    let (incoming, outgoing, failure) = connect::<KeygenMsg>(net, spec, me, config);
    let eid = spec.execution_id();
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        cggmp24::keygen::<Curve>(ExecutionId::new(&eid), i, n)
            .set_threshold(threshold)
            .hd_wallet(true)
            .enforce_reliable_broadcast(true)
            .start(&mut OsRng, party)
            .await
    })
    .await?;
    finish(result, &failure, spec)
}

/// Auxiliary info generation for a committee, from this party's pre-generated primes (which it
/// consumes). Slow: tens of seconds.
pub async fn aux_info(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    primes: PrimeSet,
    config: &MpcConfig,
) -> Result<AuxInfo, MpcError> {
    aux_info_bound(net, spec, &spec.execution_id(), primes, config).await
}

/// [`aux_info`] with the library's execution id given: a protocol that runs auxiliary info as
/// one of its steps binds its own session hash into it.
pub(crate) async fn aux_info_bound(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    eid: &[u8],
    primes: PrimeSet,
    config: &MpcConfig,
) -> Result<AuxInfo, MpcError> {
    expect_protocol(spec, Protocol::AUX_INFO)?;
    let me = net.party();
    let i = spec.my_index(me)?;
    let n = spec.parties.len() as u16;
    let (incoming, outgoing, failure) = connect::<AuxMsg>(net, spec, me, config);
    let eid = eid.to_vec();
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        cggmp24::aux_info_gen(ExecutionId::new(&eid), i, n, primes)
            .start(&mut OsRng, party)
            .await
    })
    .await?;
    finish(result, &failure, spec)
}

/// Where each session participant sits in the committee that generated a key (its
/// key-generation index) and this party's position in the session; checks that this party's
/// share, whose index is `share_index`, is the one its committee position says.
pub(crate) fn committee_indices(
    spec: &SessionSpec,
    committee: &[PartyId],
    share_index: u16,
    me: PartyId,
) -> Result<(u16, Vec<u16>), MpcError> {
    let i = spec.my_index(me)?;
    let indices = spec
        .parties
        .iter()
        .map(|p| {
            committee
                .iter()
                .position(|c| c == p)
                .map(|x| x as u16)
                .ok_or_else(|| {
                    MpcError::InvalidSession(format!("{p} is not in the key's committee"))
                })
        })
        .collect::<Result<Vec<u16>, _>>()?;
    if indices[usize::from(i)] != share_index {
        return Err(MpcError::InvalidSession(format!(
            "the key share belongs to committee index {share_index}, but {me} is index {}",
            indices[usize::from(i)]
        )));
    }
    Ok((i, indices))
}

/// The key-generation indices of the signers: where each session participant sits in the
/// committee that generated the key. Also checks that `share` is this party's.
fn signer_indices(
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &KeyShare,
    me: PartyId,
) -> Result<(u16, Vec<u16>), MpcError> {
    let (i, indices) = committee_indices(spec, committee, share.core.i, me)?;
    if indices.len() < usize::from(share.min_signers()) {
        return Err(MpcError::InvalidSession(format!(
            "{} signers, but the key needs {}",
            indices.len(),
            share.min_signers()
        )));
    }
    Ok((i, indices))
}

/// What a signature covers: the preimage and the hash the library applies to it.
///
/// The library hashes the preimage itself (its `DataToSign`), so a node always signs bytes it
/// derived and understood, never a bare hash: signing attacker-chosen hashes with presignatures
/// allows forgeries (CGGMP24 paper, section 1.1.2), and the library's type guards against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningInput {
    /// Keccak-256 of the preimage: an Ethereum transaction's signing payload, or an EIP-191
    /// prefixed message.
    Keccak256(Vec<u8>),
    /// SHA-256 of the preimage: arbitrary bytes in tests and benchmarks.
    Sha256(Vec<u8>),
}

impl SigningInput {
    /// The library's input.
    pub(crate) fn data(&self) -> DataToSign<Curve> {
        match self {
            SigningInput::Keccak256(preimage) => DataToSign::digest::<sha3::Keccak256>(preimage),
            SigningInput::Sha256(preimage) => DataToSign::digest::<Sha256>(preimage),
        }
    }

    /// The 32-byte digest (what an ECDSA verifier checks the signature against).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        match self {
            SigningInput::Keccak256(preimage) => sha3::Keccak256::digest(preimage).into(),
            SigningInput::Sha256(preimage) => Sha256::digest(preimage).into(),
        }
    }
}

/// An HD derivation path: non-hardened indices only (threshold keys cannot derive hardened
/// children), empty for the master key.
pub type DerivationPath = [u32];

/// The public key of the child at `path` (the master key for an empty path), derived with
/// SLIP-10 from the key's extended public key.
pub fn child_public_key(share: &KeyShare, path: &DerivationPath) -> Result<Point<Curve>, MpcError> {
    if path.is_empty() {
        return Ok(*share.shared_public_key());
    }
    share
        .derive_child_public_key::<cggmp24::hd_wallet::Slip10, _>(path.iter().copied())
        .map(|child| child.public_key)
        .map_err(|e| MpcError::InvalidPath(format!("{e:?}")))
}

/// The compressed public key of the child at `path` of the key with compressed public key
/// `public_key` and HD `chain_code` (as key generation reported them): for a coordinator or
/// wallet that holds no share.
pub fn derive_child_public_key(
    public_key: &[u8],
    chain_code: &[u8],
    path: &DerivationPath,
) -> Result<Vec<u8>, MpcError> {
    use cggmp24::hd_wallet::{HdWallet, NonHardenedIndex, Slip10};
    let public_key = Point::<Curve>::from_bytes(public_key)
        .map_err(|_| MpcError::InvalidPath("not a secp256k1 public key".into()))?;
    let chain_code: [u8; 32] = chain_code
        .try_into()
        .map_err(|_| MpcError::InvalidPath("a chain code is 32 bytes".into()))?;
    let parent = cggmp24::hd_wallet::ExtendedPublicKey {
        public_key,
        chain_code,
    };
    let child = <Slip10 as HdWallet<Curve>>::try_derive_child_public_key_with_path(
        &parent,
        path.iter().map(|&i| {
            NonHardenedIndex::try_from(i)
                .map_err(|_| MpcError::InvalidPath(format!("index {i} is hardened")))
        }),
    )?;
    Ok(child.public_key.to_bytes(true).to_vec())
}

/// Full interactive signing of `input` by the session's parties, with the child key at
/// `path`. `committee` lists the parties that generated the key, in key-generation order. The
/// signature is verified against the child public key before it is returned.
#[allow(clippy::too_many_arguments)]
pub async fn sign(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &KeyShare,
    path: &DerivationPath,
    input: &SigningInput,
    config: &MpcConfig,
) -> Result<Signature, MpcError> {
    expect_protocol(spec, Protocol::SIGN)?;
    let public_key = child_public_key(share, path)?;
    let me = net.party();
    let (i, signers) = signer_indices(spec, committee, share, me)?;
    let (incoming, outgoing, failure) = connect::<SignMsg>(net, spec, me, config);
    let eid = spec.execution_id();
    let share_for_task = share.clone();
    let path = path.to_vec();
    let data = input.data();
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        let builder = cggmp24::signing(ExecutionId::new(&eid), i, &signers, &share_for_task);
        let builder = if path.is_empty() {
            builder
        } else {
            match builder.set_derivation_path(path) {
                Ok(builder) => builder,
                Err(e) => return Err(format!("invalid derivation path: {e:?}")),
            }
        };
        builder
            .sign(&mut OsRng, party, &data)
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await?;
    let signature = finish(result, &failure, spec)?;
    if !verify_signature(&public_key, input, &signature) {
        return Err(MpcError::SignatureInvalid);
    }
    Ok(signature)
}

/// Generates a presignature with the session's parties, for the key's master public key.
pub async fn presign(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    committee: &[PartyId],
    share: &KeyShare,
    config: &MpcConfig,
) -> Result<(Presignature, PresignaturePublicData), MpcError> {
    expect_protocol(spec, Protocol::PRESIGN)?;
    let me = net.party();
    let (i, signers) = signer_indices(spec, committee, share, me)?;
    let (incoming, outgoing, failure) = connect::<SignMsg>(net, spec, me, config);
    let eid = spec.execution_id();
    let share_for_task = share.clone();
    let result = run_blocking(async move {
        let party = MpcParty::connected((incoming, outgoing));
        cggmp24::signing(ExecutionId::new(&eid), i, &signers, &share_for_task)
            .generate_presignature(&mut OsRng, party)
            .await
    })
    .await?;
    finish(result, &failure, spec)
}

/// Checks an ECDSA signature over `input`'s digest against `public_key` with `k256`, independently of
/// the library that produced it.
pub fn verify_signature(
    public_key: &Point<Curve>,
    input: &SigningInput,
    signature: &Signature,
) -> bool {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let mut bytes = [0u8; 64];
    signature.write_to_slice(&mut bytes);
    let Ok(key) = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key.to_bytes(true)) else {
        return false;
    };
    let Ok(sig) = k256::ecdsa::Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_prehash(&input.digest(), &sig).is_ok()
}
