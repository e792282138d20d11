//! Online signing from a presignature: one round.
//!
//! Each signer turns its presignature into a partial signature for the message, broadcasts it
//! (signed, sealed) to the other signers of the presignature, collects theirs, combines them and
//! verifies the result against the public key. A partial signature reveals nothing secret; the
//! presignature it came from must never be used again, which is why the caller hands it over by
//! value after taking it durably out of the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use cggmp24::generic_ec::Point;
use cggmp24::{DataToSign, PartialSignature};
use tessera_channel::FrameContext;
use tessera_transport::SecureTransport;
use tessera_wire::{PartyId, Protocol, DEFAULT_MAX_PAYLOAD};

use crate::{
    verify_signature, Curve, MpcConfig, MpcError, PresignaturePublicData, SessionSpec, Signature,
    SigningInput, StoredPresignature,
};

/// Signs `input` with a presignature (made for the master key), together with the other signers
/// of that presignature. `spec.parties` must be exactly the presignature's signers, in order.
/// The signature is verified against `public_key` before it is returned.
pub async fn online_sign(
    net: Arc<SecureTransport>,
    spec: &SessionSpec,
    presignature: StoredPresignature,
    public_key: &Point<Curve>,
    input: &SigningInput,
    config: &MpcConfig,
) -> Result<Signature, MpcError> {
    if spec.protocol != Protocol::ONLINE_SIGN {
        return Err(MpcError::InvalidSession(format!(
            "session {} is a {} session, not {}",
            spec.session,
            spec.protocol,
            Protocol::ONLINE_SIGN
        )));
    }
    let me = net.party();
    spec.my_index(me)?;
    if spec.parties != presignature.signers {
        return Err(MpcError::InvalidSession(format!(
            "the presignature was made by {:?}, not by the session's parties {:?}",
            presignature.signers, spec.parties
        )));
    }
    let data = input.data();
    let public = presignature.public;
    let mine = presignature.presignature.issue_partial_signature(data);
    let partials = exchange_one_round(&net, spec, &mine, "partial signature", config).await?;
    blame_bad_partials(spec, &public, data, &partials)?;
    // Combine in the presignature's signer order.
    let ordered: Vec<PartialSignature<Curve>> = spec.parties.iter().map(|p| partials[p]).collect();
    let signature =
        PartialSignature::combine(&ordered, &public, data).ok_or_else(|| MpcError::Aborted {
            protocol: spec.protocol,
            session: spec.session,
            detail: "the partial signatures do not combine into a valid signature".into(),
        })?;
    if !verify_signature(public_key, input, &signature) {
        return Err(MpcError::SignatureInvalid);
    }
    Ok(signature)
}

/// Sends `mine` to the other parties of `spec` as a signed round-0 broadcast and collects
/// theirs (`what` names it in errors): one value per party, `mine` included, or the error
/// that names who did not deliver or sent something invalid.
pub(crate) async fn exchange_one_round<T>(
    net: &Arc<SecureTransport>,
    spec: &SessionSpec,
    mine: &T,
    what: &str,
    config: &MpcConfig,
) -> Result<BTreeMap<PartyId, T>, MpcError>
where
    T: Serialize + DeserializeOwned + Clone,
{
    let me = net.party();
    let mut inbox = net.open_session(spec.session);
    let context = FrameContext {
        session: spec.session,
        round: 0,
        protocol: spec.protocol,
    };
    let others: Vec<PartyId> = spec.parties.iter().copied().filter(|p| *p != me).collect();
    net.broadcast(&others, context, &tessera_wire::encode(mine))
        .await
        .map_err(|e| MpcError::Send(e.to_string()))?;
    let mut received: BTreeMap<PartyId, T> = BTreeMap::new();
    received.insert(me, mine.clone());
    while received.len() < spec.parties.len() {
        let delivery = match tokio::time::timeout(config.round_timeout, inbox.recv()).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(MpcError::Send("the transport stopped".into())),
            Err(_) => {
                let missing = others
                    .iter()
                    .copied()
                    .filter(|p| !received.contains_key(p))
                    .collect();
                return Err(MpcError::Timeout {
                    protocol: spec.protocol,
                    session: spec.session,
                    round: 0,
                    missing,
                });
            }
        };
        let from = delivery.from;
        if !others.contains(&from) || delivery.context.protocol != spec.protocol {
            tracing::warn!(session = %spec.session, %from, protocol = %spec.protocol, "frame from a non-signer ignored");
            continue;
        }
        let invalid = |reason: String| MpcError::InvalidMessage {
            protocol: spec.protocol,
            session: spec.session,
            from,
            reason,
        };
        if delivery.broadcast.is_none() || delivery.context.round != 0 {
            return Err(invalid(format!(
                "{what} not sent as a signed round-0 broadcast"
            )));
        }
        let value: T = tessera_wire::decode(&delivery.payload, DEFAULT_MAX_PAYLOAD)
            .map_err(|e| invalid(e.to_string()))?;
        if received.insert(from, value).is_some() {
            return Err(invalid(format!("sent a second {what}")));
        }
    }
    Ok(received)
}

/// Checks each partial signature against its signer's presignature commitment (the same check
/// the library's `combine` makes), so that a wrong one is blamed on its sender.
fn blame_bad_partials(
    spec: &SessionSpec,
    public: &PresignaturePublicData,
    data: DataToSign<Curve>,
    partials: &BTreeMap<PartyId, PartialSignature<Curve>>,
) -> Result<(), MpcError> {
    use cggmp24::generic_ec::coords::AlwaysHasAffineX;
    if public.commitments.len() != spec.parties.len() {
        return Err(MpcError::InvalidSession(format!(
            "the presignature has {} commitments for {} signers",
            public.commitments.len(),
            spec.parties.len()
        )));
    }
    let r = public.Gamma.x().to_scalar();
    let m = data.to_scalar();
    for (party, commitment) in spec.parties.iter().zip(&public.commitments) {
        let sigma = partials[party].sigma;
        if sigma * public.Gamma != m * commitment.tilde_Delta + r * commitment.tilde_S {
            return Err(MpcError::InvalidMessage {
                protocol: spec.protocol,
                session: spec.session,
                from: *party,
                reason: "its partial signature does not match its presignature commitment".into(),
            });
        }
    }
    Ok(())
}
