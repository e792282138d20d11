//! The presignature pool, kept by the starter (the coordinator, or a local cluster).
//!
//! Presignatures live on the nodes, each in its own encrypted record, used at most once
//! ([`tessera_mpc::PresignatureStore`]). Nodes start nothing by themselves, so the party that
//! starts sessions keeps the pools full: for each (key, signer set) it tracks the fresh
//! presignatures it has made and refills to a target level in the background. Signing takes
//! one from the pool (one-round online signing) and falls back to full interactive signing
//! when the pool is empty or the online session fails.
//!
//! Presignatures are made for the key's master public key; other derivation paths use full
//! signing (the library binds the path before presigning).
//!
//! Nodes erase presignatures that waited longer than their lifetime, so the pool forgets its
//! own after `max_age` (keep it below the nodes' `presignature_lifetime_secs`) and refills.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_policy::{Approval, SignRequest};
use tessera_wire::{KeyId, PartyId, SessionId};

use crate::messages::{Operation, Output};
use crate::spend::SpendLink;
use crate::starter::{ControlChannel, Starter, StarterError};

/// Pools per (key, ordered signer set): presigning sessions, oldest first, with when they were
/// made.
type Pools = HashMap<(KeyId, Vec<PartyId>), VecDeque<(SessionId, Instant)>>;

/// How long a pooled presignature is offered, by default: five hours, below the nodes' default
/// presignature lifetime of six.
pub const DEFAULT_MAX_AGE_SECS: u64 = 5 * 3600;

/// How a signature was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignPath {
    /// One round, from a pooled presignature.
    Online,
    /// Full interactive signing (pool empty, or the online session failed).
    Full,
}

/// Keeps presignature pools at a target level and signs from them.
pub struct PresignaturePool {
    starter: Arc<Starter>,
    control: Arc<dyn ControlChannel>,
    target: usize,
    deadline: Duration,
    max_age: Duration,
    pools: Mutex<Pools>,
}

impl PresignaturePool {
    /// Pools of `target` presignatures each, made through `starter` over `control`, each used
    /// within `max_age` of its making or forgotten.
    pub fn new(
        starter: Arc<Starter>,
        control: Arc<dyn ControlChannel>,
        target: usize,
        deadline: Duration,
        max_age: Duration,
    ) -> Self {
        PresignaturePool {
            starter,
            control,
            target,
            deadline,
            max_age,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pools, without presignatures older than `max_age` (the nodes erase them).
    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let max_age = self.max_age;
        for fresh in pools.values_mut() {
            fresh.retain(|(_, made)| made.elapsed() < max_age);
        }
        pools
    }

    /// Starts keeping a pool for `key` signed by `signers` (in this order).
    pub fn track(&self, key: KeyId, signers: &[PartyId]) {
        self.pools().entry((key, signers.to_vec())).or_default();
    }

    /// Stops keeping pools for `key` and forgets their presignatures (after a reshare or
    /// refresh, which erases them on the nodes).
    pub fn forget(&self, key: KeyId) {
        self.pools().retain(|(k, _), _| *k != key);
    }

    /// Fresh presignatures in the pool of (`key`, `signers`).
    pub fn level(&self, key: KeyId, signers: &[PartyId]) -> usize {
        self.pools()
            .get(&(key, signers.to_vec()))
            .map_or(0, VecDeque::len)
    }

    /// Presigns until every tracked pool holds the target; returns how many were made.
    pub async fn refill(&self) -> Result<usize, StarterError> {
        let mut made = 0;
        loop {
            let low = self
                .pools()
                .iter()
                .find(|(_, fresh)| fresh.len() < self.target)
                .map(|((key, signers), _)| (*key, signers.clone()));
            let Some((key, signers)) = low else {
                return Ok(made);
            };
            let output = self
                .starter
                .run(
                    self.control.as_ref(),
                    &signers,
                    Operation::Presign { key },
                    self.deadline,
                )
                .await?;
            let Output::Presign { presignature } = output else {
                return Err(StarterError::Channel(
                    "presigning returned no presignature".into(),
                ));
            };
            self.pools()
                .entry((key, signers))
                .or_default()
                .push_back((presignature, Instant::now()));
            made += 1;
        }
    }

    /// Refills in the background every `interval` until `stop` is set. Failures are logged and
    /// retried at the next interval.
    pub fn spawn_refill(
        self: &Arc<Self>,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match pool.refill().await {
                    Ok(0) => {}
                    Ok(made) => tracing::info!(made, "presignature pools refilled"),
                    Err(e) => {
                        tracing::warn!(error = %e, "presignature refill failed; retrying later")
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    }

    /// Takes the oldest fresh presignature of (`key`, `signers`), if any. It is gone from the
    /// pool whether or not the signing that uses it succeeds.
    pub fn take(&self, key: KeyId, signers: &[PartyId]) -> Option<SessionId> {
        self.pools()
            .get_mut(&(key, signers.to_vec()))?
            .pop_front()
            .map(|(session, _)| session)
    }

    /// Signs an approved `request` by `signers`: online from a pooled presignature when there
    /// is one and the request is for the master key, else (or if the online session fails)
    /// with full interactive signing, both at `link` in the key's spend chain. The nodes
    /// re-check the request either way.
    pub async fn sign(
        &self,
        signers: &[PartyId],
        request: &SignRequest,
        approvals: &[Approval],
        link: Option<SpendLink>,
    ) -> Result<(Output, SignPath), StarterError> {
        let pooled = if request.path.is_empty() {
            self.take(request.key, signers)
        } else {
            None
        };
        if let Some(presignature) = pooled {
            let operation = Operation::OnlineSign {
                presignature,
                request: request.clone(),
                approvals: approvals.to_vec(),
                link,
            };
            match self
                .starter
                .run(self.control.as_ref(), signers, operation, self.deadline)
                .await
            {
                Ok(output) => return Ok((output, SignPath::Online)),
                Err(e) => {
                    tracing::warn!(error = %e, "online signing failed; falling back to full signing")
                }
            }
        }
        let operation = Operation::Sign {
            request: request.clone(),
            approvals: approvals.to_vec(),
            link,
        };
        let output = self
            .starter
            .run(self.control.as_ref(), signers, operation, self.deadline)
            .await?;
        Ok((output, SignPath::Full))
    }
}
