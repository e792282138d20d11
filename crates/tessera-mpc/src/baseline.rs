//! The raw library, in one process, with no transport: the baseline `tessera bench` measures
//! Tessera's overhead against. Parties exchange messages over `round_based`'s simulated
//! network; each party runs on its own blocking thread, as in [`crate::protocols`], so both
//! sides get the same parallelism. Not for production: nothing here is authenticated.

use std::future::Future;

use cggmp24::key_share::AnyKeyShare;
use cggmp24::{ExecutionId, PartialSignature};
use rand_core::{OsRng, RngCore};
use round_based::sim::async_env::Network;

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
