//! Keeping every holder's copy of a key's spend chain up to date
//! (`docs/protocols/spend-chain.md`).
//!
//! Every signing of a key gets a place in the key's spend chain when it is admitted (in the
//! same transaction, [`crate::Store::begin_admission`]). Before a signing session starts, the
//! coordinator delivers to each signer the records it lacks
//! ([`Operation::RecordSpends`]), so that a signer counts in its windows what the other
//! holders signed: a signer refuses a window-limited request while its copy of the chain has
//! a gap. Where each holder stands is what the holder last answered (`spend_heads`); a holder
//! that refuses a signing is asked again.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_control::spend::{record_hash, MAX_RECORDS_PER_DELIVERY};
use tessera_control::{Operation, Output, SpendLink, SpendRecord};
use tessera_policy::SignRequest;
use tessera_wire::{KeyId, PartyId};

use super::{now_unix, Coordinator, ServiceError};
use crate::store::{KeyStatus, LinkRow, LinkedRequest};

/// How long a delivery waits for the holders' answers: no protocol runs, so a holder that has
/// not answered by then is down (and the signing goes on without waiting the session deadline).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

fn spend_link(row: &LinkRow) -> SpendLink {
    SpendLink::new(row.seq, row.prev, row.signed_at)
}

/// The link row that puts `request` at the place after `head` (the last link's place and
/// hash), admitted at `now`.
pub(super) fn next_link(request: &SignRequest, head: (u64, [u8; 32]), now: u64) -> LinkRow {
    let link = SpendLink::new(head.0 + 1, head.1, now);
    LinkRow {
        key_id: request.key,
        seq: link.seq,
        request_id: request.id,
        prev: link.prev,
        hash: record_hash(&link, request),
        signed_at: now,
        signature: None,
    }
}

fn record(linked: &LinkedRequest) -> Result<SpendRecord, ServiceError> {
    let request = SignRequest::decode(&linked.body).map_err(|e| {
        ServiceError::corrupt(format_args!(
            "request {} does not decode ({e})",
            linked.link.request_id
        ))
    })?;
    Ok(SpendRecord {
        link: spend_link(&linked.link),
        request,
        signature: linked.link.signature.clone(),
    })
}

impl Coordinator {
    /// The place of `request`'s signing in its key's spend chain. A request admitted before
    /// spend chains existed gets one now, under the key's admission lock.
    pub(super) async fn link_of(&self, request: &SignRequest) -> Result<SpendLink, ServiceError> {
        if let Some(row) = self.store.spend_link(request.id).await? {
            return Ok(spend_link(&row));
        }
        let mut admission = self
            .store
            .begin_admission(request.id, request.key, &Default::default())
            .await?;
        let head = admission.chain_head().await?;
        let row = next_link(request, head, now_unix());
        admission.link_only(&row).await?;
        let row = self.store.spend_link(request.id).await?.ok_or_else(|| {
            ServiceError::corrupt(format_args!("request {} has no spend link", request.id))
        })?;
        Ok(spend_link(&row))
    }

    /// Delivers to each of `parties` the records of `key`'s spend chain up to place `upto`
    /// that it lacks, as far as the coordinator knows, in batches. Returns the parties it
    /// could not bring up to `upto`, with why.
    pub(super) async fn catch_up(
        &self,
        key: KeyId,
        parties: &[PartyId],
        upto: u64,
    ) -> Result<Vec<(PartyId, String)>, ServiceError> {
        let known = self.store.spend_heads(key).await?;
        let mut heads: BTreeMap<PartyId, u64> = parties
            .iter()
            .map(|p| (*p, known.get(p).copied().unwrap_or(0)))
            .collect();
        let mut stuck = Vec::new();
        while let Some(from) = heads.values().copied().filter(|h| *h < upto).min() {
            let group: Vec<PartyId> = heads
                .iter()
                .filter(|(_, h)| **h == from)
                .map(|(p, _)| *p)
                .collect();
            let records = self
                .store
                .spend_links_after(key, from, upto, MAX_RECORDS_PER_DELIVERY)
                .await?
                .iter()
                .map(record)
                .collect::<Result<Vec<_>, _>>()?;
            if records.is_empty() {
                // The chain has no record after `from`: nothing to give them.
                for p in group {
                    heads.remove(&p);
                }
                continue;
            }
            let reports = self
                .collect_within(
                    &group,
                    Operation::RecordSpends { key, records },
                    DELIVERY_DEADLINE,
                )
                .await;
            for p in group {
                let answer = match reports.get(&p).map(|r| &r.result) {
                    Some(Ok(Output::SpendsRecorded { key: k, head, .. })) if *k == key => {
                        self.store.set_spend_head(key, p, *head).await?;
                        if *head > from {
                            heads.insert(p, *head);
                            continue;
                        }
                        format!("it stays at record {head}")
                    }
                    Some(Ok(other)) => format!("it answered {other:?}"),
                    Some(Err(failure)) => failure.message.clone(),
                    None => "no answer".to_owned(),
                };
                heads.remove(&p);
                stuck.push((p, answer));
            }
        }
        for (party, why) in &stuck {
            tracing::warn!(%key, %party, upto, why, "cannot bring a holder's spend chain up to date");
        }
        Ok(stuck)
    }

    /// Gives every holder of every ready key the records of the key's spend chain it lacks
    /// (as far as the coordinator knows), up to the last signing that has ended (so that a
    /// record goes out with its signature), so that holders that did not sign learn of each
    /// signing before they sign themselves. A holder that cannot be reached is logged and
    /// tried again at the next round.
    pub async fn deliver_spends(&self) -> Result<(), ServiceError> {
        for key in self.store.list_keys().await? {
            if key.status != KeyStatus::Ready {
                continue;
            }
            let head = self.store.spend_chain_settled(key.id).await?;
            if head == 0 {
                continue;
            }
            self.catch_up(key.id, &key.committee, head).await?;
        }
        Ok(())
    }

    /// Asks `parties` where their copy of `key`'s spend chain stands and records it (after a
    /// party refused a signing: its store may have been restored from an older copy).
    pub(super) async fn refresh_heads(
        &self,
        key: KeyId,
        parties: &[PartyId],
    ) -> Result<(), ServiceError> {
        let reports = self
            .collect_within(
                parties,
                Operation::RecordSpends {
                    key,
                    records: Vec::new(),
                },
                DELIVERY_DEADLINE,
            )
            .await;
        for (party, report) in &reports {
            if let Ok(Output::SpendsRecorded { key: k, head, .. }) = &report.result {
                if *k == key {
                    self.store.set_spend_head(key, *party, *head).await?;
                }
            }
        }
        Ok(())
    }

    /// The signers of `quorum` that now hold `key`'s spend chain up to place `seq` (those
    /// that held it up to the place before, as far as the coordinator knows), with `seq`: what
    /// the signing that took place `seq` records about them.
    pub(super) async fn places_after(
        &self,
        key: KeyId,
        quorum: &[PartyId],
        seq: u64,
    ) -> Result<Vec<(PartyId, u64)>, ServiceError> {
        let heads = self.store.spend_heads(key).await?;
        Ok(quorum
            .iter()
            .filter(|party| heads.get(party).copied().unwrap_or(0) + 1 >= seq)
            .map(|party| (*party, seq))
            .collect())
    }
}
