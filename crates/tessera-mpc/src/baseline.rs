//! The raw libraries (`cggmp24` for ECDSA, `givre` for FROST), in one process, with no
//! transport: the baseline `tessera bench` measures
//! Tessera's overhead against. Parties exchange messages over `round_based`'s simulated
//! network; each party runs on its own blocking thread, as in [`crate::protocols`], so both
//! sides get the same parallelism. Not for production: nothing here is authenticated.

use std::future::Future;

use cggmp24::key_share::AnyKeyShare;
use cggmp24::{ExecutionId, PartialSignature};
use rand_core::{OsRng, RngCore};
use round_based::sim::async_env::Network;

use crate::frost::{self, FrostCommitments, FrostKeyShare, FrostNonces, Scheme};
use crate::protocols::{AuxMsg, KeygenMsg, SignMsg};
use crate::{
    verify_signature, AuxInfo, Curve, IncompleteKeyShare, KeyShare, MpcError, Presignature,
    PresignaturePublicData, PrimeSet, Signature, SigningInput,
};

fn fresh_execution_id() -> [u8; 32] {
    let mut eid = [0u8; 32];
    OsRng.fill_bytes(&mut eid);
    eid
}

fn aborted(detail: String) -> MpcError {
    MpcError::InvalidSession(format!("baseline run failed: {detail}"))
}

/// Runs one future per party, each on its own blocking thread, and collects the outputs.
async fn run_parties<T, E, F>(parties: Vec<F>) -> Result<Vec<T>, MpcError>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: std::fmt::Debug + Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    let tasks = parties.into_iter().map(|party| {
        let handle = handle.clone();
        tokio::task::spawn_blocking(move || handle.block_on(party))
    });
    let mut outputs = Vec::new();
    for joined in futures::future::join_all(tasks).await {
        let result = joined.map_err(|e| aborted(e.to_string()))?;
        outputs.push(result.map_err(|e| aborted(format!("{e:?}")))?);
    }
    Ok(outputs)
}

/// Key generation, `t`-of-`n`, HD on, reliable broadcast on (as Tessera runs it).
pub async fn keygen(n: u16, t: u16) -> Result<Vec<IncompleteKeyShare>, MpcError> {
    let eid = fresh_execution_id();
    let mut net = Network::<KeygenMsg>::new();
    let parties = (0..n)
        .map(|i| {
            let party = net.add_party();
            async move {
                cggmp24::keygen::<Curve>(ExecutionId::new(&eid), i, n)
                    .set_threshold(t)
                    .hd_wallet(true)
                    .enforce_reliable_broadcast(true)
                    .start(&mut OsRng, party)
                    .await
            }
        })
        .collect();
    run_parties(parties).await
}

/// Auxiliary info for `primes.len()` parties, one prime set each.
pub async fn aux_info(primes: Vec<PrimeSet>) -> Result<Vec<AuxInfo>, MpcError> {
    let eid = fresh_execution_id();
    let n = primes.len() as u16;
    let mut net = Network::<AuxMsg>::new();
    let parties = primes
        .into_iter()
        .enumerate()
        .map(|(i, primes)| {
            let party = net.add_party();
            async move {
                cggmp24::aux_info_gen(ExecutionId::new(&eid), i as u16, n, primes)
                    .start(&mut OsRng, party)
                    .await
            }
        })
        .collect();
    run_parties(parties).await
}

/// `signers` (key-generation indices) presign with their `shares` (indexed by key-generation
/// index).
pub async fn presign(
    shares: &[KeyShare],
    signers: &[u16],
) -> Result<Vec<(Presignature, PresignaturePublicData)>, MpcError> {
    let eid = fresh_execution_id();
    let mut net = Network::<SignMsg>::new();
    let parties = signers
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let party = net.add_party();
            let share = shares[usize::from(s)].clone();
            let signers = signers.to_vec();
            async move {
                cggmp24::signing(ExecutionId::new(&eid), i as u16, &signers, &share)
                    .generate_presignature(&mut OsRng, party)
                    .await
            }
        })
        .collect();
    run_parties(parties).await
}

/// Full interactive signing of `input`; the signature is checked like Tessera's.
pub async fn sign(
    shares: &[KeyShare],
    signers: &[u16],
    input: &SigningInput,
) -> Result<Signature, MpcError> {
    let eid = fresh_execution_id();
    let data = input.data();
    let mut net = Network::<SignMsg>::new();
    let parties = signers
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let party = net.add_party();
            let share = shares[usize::from(s)].clone();
            let signers = signers.to_vec();
            async move {
                cggmp24::signing(ExecutionId::new(&eid), i as u16, &signers, &share)
                    .sign(&mut OsRng, party, &data)
                    .await
            }
        })
        .collect();
    let signature = run_parties(parties).await?[0];
    check(&shares[0], input, &signature)?;
    Ok(signature)
}

/// Online signing: partial signatures from the presignatures, combined, checked.
pub fn online_sign(
    presignatures: Vec<(Presignature, PresignaturePublicData)>,
    share: &KeyShare,
    input: &SigningInput,
) -> Result<Signature, MpcError> {
    let data = input.data();
    let public = presignatures
        .first()
        .map(|(_, p)| p.clone())
        .ok_or_else(|| aborted("no presignatures".into()))?;
    let partials: Vec<PartialSignature<Curve>> = presignatures
        .into_iter()
        .map(|(p, _)| p.issue_partial_signature(data))
        .collect();
    let signature = PartialSignature::combine(&partials, &public, data)
        .ok_or_else(|| aborted("partial signatures do not combine".into()))?;
    check(share, input, &signature)?;
    Ok(signature)
}

fn check(share: &KeyShare, input: &SigningInput, signature: &Signature) -> Result<(), MpcError> {
    if verify_signature(&share.shared_public_key(), input, signature) {
        Ok(())
    } else {
        Err(MpcError::SignatureInvalid)
    }
}

/// FROST key generation of scheme `C`, `t`-of-`n`, HD on, reliable broadcast on (as Tessera
/// runs it for Taproot and Ed25519 keys).
pub async fn frost_keygen<C: Scheme>(n: u16, t: u16) -> Result<Vec<FrostKeyShare<C>>, MpcError> {
    let eid = fresh_execution_id();
    let mut net = Network::<frost::KeygenMsg<C>>::new();
    let parties = (0..n)
        .map(|i| {
            let party = net.add_party();
            async move {
                cggmp24_keygen::keygen::<C::Curve>(cggmp24_keygen::ExecutionId::new(&eid), i, n)
                    .set_threshold(t)
                    .hd_wallet(true)
                    .enforce_reliable_broadcast(true)
                    .start(&mut OsRng, party)
                    .await
            }
        })
        .collect();
    run_parties(parties).await
}

/// FROST full signing of `message` (the sighash for Taproot) with the master key by
/// `signers` (key-generation indices; exactly the threshold), checked like Tessera's.
pub async fn frost_sign<C: Scheme>(
    shares: &[FrostKeyShare<C>],
    signers: &[u16],
    message: &[u8],
) -> Result<Vec<u8>, MpcError> {
    let mut net = Network::<frost::SignMsg<C>>::new();
    let parties = signers
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let party = net.add_party();
            let share = shares[usize::from(s)].clone();
            let (signers, message) = (signers.to_vec(), message.to_vec());
            async move {
                let mut builder = givre::signing::<C>(i as u16, &share, &signers, &message);
                if C::IS_TAPROOT {
                    builder = builder
                        .set_taproot_tweak(None)
                        .map_err(|e| format!("{e:?}"))?;
                }
                builder
                    .sign(&mut OsRng, party)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }
        })
        .collect();
    let signature = run_parties(parties).await?.remove(0);
    let key = frost::verifying_key::<C>(&shares[0], &[])?;
    signature
        .verify(&key, message)
        .map_err(|_| MpcError::SignatureInvalid)?;
    let mut bytes = vec![0u8; givre::signing::aggregate::Signature::<C>::serialized_len()];
    signature.write_to_slice(&mut bytes);
    Ok(bytes)
}

/// Each of `signers` (key-generation indices) commits to nonces for one future signing.
pub fn frost_commit_all<C: Scheme>(
    shares: &[FrostKeyShare<C>],
    signers: &[u16],
) -> Vec<(FrostNonces<C>, FrostCommitments<C>)> {
    signers
        .iter()
        .map(|&s| frost::frost_commit::<C>(&shares[usize::from(s)]))
        .collect()
}

/// One-round FROST signing of `message` with the master key from nonces `committed` ahead of
/// time by `signers` ([`frost_commit_all`]): every signer's share, aggregated, checked.
pub fn frost_online_sign<C: Scheme>(
    shares: &[FrostKeyShare<C>],
    signers: &[u16],
    committed: Vec<(FrostNonces<C>, FrostCommitments<C>)>,
    message: &[u8],
) -> Result<Vec<u8>, MpcError> {
    let listed: Vec<(u16, FrostCommitments<C>)> = signers
        .iter()
        .zip(&committed)
        .map(|(&s, (_, c))| (s, *c))
        .collect();
    let fail = |detail: String| aborted(detail);
    let mut with_shares = Vec::with_capacity(signers.len());
    for (&s, (nonces, commitments)) in signers.iter().zip(committed) {
        let share = &shares[usize::from(s)];
        let sig_share = frost::signature_share::<C>(share, nonces, message, &listed, &[], &fail)?;
        with_shares.push((s, commitments, sig_share));
    }
    let key = frost::verifying_key::<C>(&shares[0], &[])?;
    frost::aggregate::<C>(&shares[0], &with_shares, message, &[], &key, &fail)
}
