//! A key's epochs at this node (`docs/protocols/reshare.md`): its side of a reshare or
//! refresh, kept pending; activation of the new epoch on the session's activation certificate;
//! closing the old epoch on the closure certificate; abandoning a session on proof or expiry.
//! Every step is checked here, against the roster and the pinned policy, whatever the
//! coordinator says.

use tessera_audit::NewEvent;
use tessera_control::certificate::{verify_abandonment, verify_activation, verify_closure};
use tessera_control::{now_unix, EpochReport, Output, SignedOutcome};
use tessera_mpc::reshare::{reshare_frost, AuxInput, Kind, ReshareSetup, SharesOutput};
use tessera_mpc::AuxInfo;
use tessera_mpc::{MpcConfig, SessionSpec};
use tessera_policy::{evaluate_key_change, ApprovedKeyChange, KeyChangeDecision, KeyOperation};
use tessera_store::SecretStore;
use tessera_wire::{KeyId, KeyKind, PartyId, SessionId};

use crate::node::{Node, NodeError};
use crate::state::{
    Abandonment, Activation, Closure, KeyRecord, ReshareRecord, StateError, StoredShare,
};

/// A receiver's new epoch: its share and, for an ECDSA key, the new auxiliary info with its
/// digest.
type NewEpoch = (StoredShare, Option<(AuxInfo, Hash)>);

type Hash = [u8; 32];

/// A FROST key's session result: the confirmation and, for a receiver, its new share (as
/// `stored` keeps it) without auxiliary info.
fn frost_epoch<E: tessera_mpc::reshare::ReshareCurve>(
    out: SharesOutput<E>,
    stored: impl FnOnce(cggmp24::IncompleteKeyShare<E>) -> StoredShare,
) -> (Hash, Option<NewEpoch>) {
    (out.confirmation, out.share.map(|s| (stored(s), None)))
}

/// A key record whose share is not on its kind's curve (a corrupt record).
fn wrong_share(key: KeyId) -> NodeError {
    NodeError::Refused(format!(
        "key {key}'s record holds a share on another curve than its kind's; the record is \
         corrupt, restore it from a backup"
    ))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Reshare => "reshare",
        Kind::Refresh => "refresh",
    }
}

impl<S: SecretStore + Send + Sync + 'static> Node<S> {
    fn lifecycle_event(&self, action: &str, key: KeyId, reshare: SessionId) -> NewEvent {
        NewEvent::new("system", action, format!("key:{key}"))
            .detail("key", key)
            .detail("reshare", reshare)
    }

    /// This party's side of a reshare or refresh: deals from its share if it is a dealer,
    /// and keeps its new epoch (share and fresh auxiliary info) pending if it receives one.
    /// The session is recorded before the protocol runs, so that it runs here at most once.
    pub(crate) async fn reshare(
        &self,
        spec: &SessionSpec,
        key: KeyId,
        setup: &ReshareSetup,
        approved: Option<&ApprovedKeyChange>,
        config: &MpcConfig,
    ) -> Result<Output, NodeError> {
        let approved_by = self.check_key_change(key, setup, approved)?;
        if !setup.key.fits(setup.key_kind) {
            return Err(NodeError::Refused(format!(
                "the setup names key kind {} but carries a key on {}",
                setup.key_kind,
                setup.key.curve_name()
            )));
        }
        let me = self.party();
        let share = if setup.old_committee.contains(&me) {
            let record = self.state.key_record(key)?;
            if record.committee != setup.old_committee {
                return Err(NodeError::Refused(format!(
                    "key {key} is held by committee {} here, not {}",
                    PartyId::list(&record.committee),
                    PartyId::list(&setup.old_committee)
                )));
            }
            if record.epoch != setup.epoch {
                return Err(NodeError::Refused(format!(
                    "key {key} is at epoch {} here, but the session starts from epoch {}",
                    record.epoch, setup.epoch
                )));
            }
            if record.kind != setup.key_kind {
                return Err(NodeError::Refused(format!(
                    "key {key} is of kind {} here, but the session is for kind {}",
                    record.kind, setup.key_kind
                )));
            }
            Some(record.share)
        } else {
            if self.state.has_key(key)? {
                return Err(NodeError::Refused(format!(
                    "this node holds key {key} but the reshare's old committee {} does not include it",
                    PartyId::list(&setup.old_committee)
                )));
            }
            None
        };
        self.state.start_reshare(key, spec.session)?;
        let result = self
            .run_reshare(spec, key, setup, approved, share, config)
            .await;
        match result {
            Ok(report) => {
                self.audit.note(
                    self.lifecycle_event("reshare.pending", key, spec.session)
                        .detail("kind", kind_name(setup.kind))
                        .detail("from_epoch", setup.epoch)
                        .detail("receives", report.aux.is_some())
                        .detail("new_committee", PartyId::list(&setup.new_committee))
                        .detail("new_threshold", setup.new_threshold)
                        .detail(
                            "change",
                            approved.map_or_else(|| "none".to_owned(), |a| a.change.id.to_string()),
                        )
                        .detail("approved_by", approved_by.join(", "))
                        .detail("confirmation", hex::encode(report.confirmation)),
                );
                Ok(Output::Reshare { report })
            }
            Err(e) => {
                if let Err(record) = self.state.fail_reshare(key, spec.session, &e.to_string()) {
                    self.audit.note(
                        self.lifecycle_event("reshare.record_failed", key, spec.session)
                            .detail("error", &record),
                    );
                }
                Err(e)
            }
        }
    }

    /// The session itself, once recorded as started: the change is marked used, the protocol
    /// of the key's kind run, the result kept pending.
    async fn run_reshare(
        &self,
        spec: &SessionSpec,
        key: KeyId,
        setup: &ReshareSetup,
        approved: Option<&ApprovedKeyChange>,
        share: Option<StoredShare>,
        config: &MpcConfig,
    ) -> Result<EpochReport, NodeError> {
        if let Some(approved) = approved {
            self.state.use_change(approved.change.id, spec.session)?;
        }
        // The share as the key's kind needs it (a record on another curve is corrupt).
        let secp256k1 = || {
            share
                .as_ref()
                .map(|s| s.secp256k1().ok_or_else(|| wrong_share(key)))
                .transpose()
        };
        let (confirmation, new_epoch) = match setup.key_kind {
            KeyKind::Ecdsa => {
                self.reshare_ecdsa(spec, setup, secp256k1()?, config)
                    .await?
            }
            KeyKind::Taproot => {
                let share = secp256k1()?.map(|s| &**s);
                let out = reshare_frost(self.net.clone(), spec, setup, share, config).await?;
                frost_epoch(out, StoredShare::Secp256k1)
            }
            KeyKind::Ed25519 => {
                let share = share
                    .as_ref()
                    .map(|s| s.ed25519().ok_or_else(|| wrong_share(key)))
                    .transpose()?
                    .map(|s| &**s);
                let out = reshare_frost(self.net.clone(), spec, setup, share, config).await?;
                frost_epoch(out, StoredShare::Ed25519)
            }
        };
        let report = EpochReport {
            key,
            reshare: spec.session,
            kind: setup.kind,
            from_epoch: setup.epoch,
            old_committee: setup.old_committee.clone(),
            dealers: setup.dealers.clone(),
            new_committee: setup.new_committee.clone(),
            new_threshold: setup.new_threshold,
            public_key: setup.key.public_key(),
            confirmation,
            authorisation: setup.authorisation,
            aux: new_epoch
                .as_ref()
                .and_then(|(_, aux)| aux.as_ref().map(|(_, digest)| *digest)),
        };
        let record = new_epoch.map(|(share, aux)| KeyRecord {
            committee: setup.new_committee.clone(),
            threshold: setup.new_threshold,
            epoch: report.to_epoch(),
            kind: setup.key_kind,
            share,
            aux: aux.map(|(aux, _)| aux),
        });
        let expires_at =
            now_unix().saturating_add(self.settings.pending_reshare_lifetime.as_secs());
        self.state
            .put_pending_reshare(key, spec.session, report.clone(), record, expires_at)?;
        Ok(report)
    }

    /// An ECDSA key's session: a prime set taken (receivers), the share protocol and the new
    /// auxiliary info. Returns the confirmation and, for a receiver, its new share with the
    /// new auxiliary info and that info's digest.
    async fn reshare_ecdsa(
        &self,
        spec: &SessionSpec,
        setup: &ReshareSetup,
        share: Option<&tessera_mpc::IncompleteKeyShare>,
        config: &MpcConfig,
    ) -> Result<(Hash, Option<NewEpoch>), NodeError> {
        let me = self.party();
        let aux = if setup.new_committee.contains(&me) {
            let Some(primes) = self.primes.take()? else {
                return Err(NodeError::Refused(format!(
                    "{me}'s prime pool is empty{}; a {} renews the auxiliary info and needs one \
                     prime set from every receiver, retry when it has one",
                    if self.primes.generating() {
                        " (a set is being generated, which takes minutes)"
                    } else {
                        ""
                    },
                    kind_name(setup.kind)
                )));
            };
            Some(AuxInput {
                primes,
                config: MpcConfig {
                    round_timeout: self.settings.aux_info_round_timeout,
                },
            })
        } else {
            None
        };
        let output =
            tessera_mpc::reshare::reshare(self.net.clone(), spec, setup, share, aux, config)
                .await?;
        Ok((
            output.confirmation,
            output
                .share
                .map(|s| (StoredShare::Secp256k1(s.core), Some((s.aux, s.aux_digest)))),
        ))
    }

    /// Re-checks the admins' approval of a reshare or refresh against the pinned policy and
    /// that it names this key, its source epoch, committee and threshold, the setup's target
    /// and the setup's authorisation digest; returns who approved. A reshare needs one; a
    /// refresh (same committee and threshold, enforced by the protocol's plan) may come
    /// without.
    fn check_key_change(
        &self,
        key: KeyId,
        setup: &ReshareSetup,
        approved: Option<&ApprovedKeyChange>,
    ) -> Result<Vec<String>, NodeError> {
        if setup.key_id != key {
            return Err(NodeError::Refused(format!(
                "the reshare setup is for key {}, not {key}",
                setup.key_id
            )));
        }
        let Some(approved) = approved else {
            if setup.authorisation != [0; 32] {
                return Err(NodeError::Refused(
                    "the setup names an approval the session start does not carry".into(),
                ));
            }
            return match setup.kind {
                Kind::Refresh => Ok(Vec::new()),
                Kind::Reshare => Err(NodeError::Refused(format!(
                    "resharing key {key} needs a key change approved by the policy's admins; \
                     none was given"
                ))),
            };
        };
        let change = &approved.change;
        if change.key != key {
            return Err(NodeError::Refused(format!(
                "the approved key change {} is for key {}, not {key}",
                change.id, change.key
            )));
        }
        let threshold = setup.key.threshold();
        if change.from.epoch != setup.epoch
            || change.from.committee != setup.old_committee
            || change.from.threshold != threshold
        {
            return Err(NodeError::Refused(format!(
                "the approved key change {} applies to {}, but the session starts from epoch {} \
                 ({threshold}-of-{} on {})",
                change.id,
                change.from,
                setup.epoch,
                setup.old_committee.len(),
                PartyId::list(&setup.old_committee)
            )));
        }
        let matches = match (&change.operation, setup.kind) {
            (KeyOperation::Refresh, Kind::Refresh) => true,
            (
                KeyOperation::Reshare {
                    committee,
                    threshold,
                },
                Kind::Reshare,
            ) => *committee == setup.new_committee && *threshold == setup.new_threshold,
            _ => false,
        };
        if !matches {
            return Err(NodeError::Refused(format!(
                "the approved key change {} is '{}', but the session asks for a {} to {}-of-{} \
                 on {}",
                change.id,
                change.operation,
                kind_name(setup.kind),
                setup.new_threshold,
                setup.new_committee.len(),
                PartyId::list(&setup.new_committee)
            )));
        }
        if change.change_digest() != setup.authorisation {
            return Err(NodeError::Refused(format!(
                "the setup's authorisation is not the digest of key change {}",
                change.id
            )));
        }
        self.evaluate_change(approved, now_unix())
    }

    /// The admins who approved `approved` under the pinned policy at time `at`.
    fn evaluate_change(
        &self,
        approved: &ApprovedKeyChange,
        at: u64,
    ) -> Result<Vec<String>, NodeError> {
        let change = &approved.change;
        match evaluate_key_change(&self.policy, change, &approved.approvals, at) {
            Ok(KeyChangeDecision::Allow { approved_by }) => Ok(approved_by),
            Ok(KeyChangeDecision::Pending {
                proposer_signed: false,
                ..
            }) => Err(NodeError::Refused(format!(
                "key change {} does not carry the signature of its proposer '{}'; a change \
                 nobody verifiably proposed is refused",
                change.id, change.proposed_by
            ))),
            Ok(KeyChangeDecision::Pending { needed, .. }) => Err(NodeError::Refused(format!(
                "key change {} needs {needed} more admin approvals under the policy this node \
                 pins",
                change.id
            ))),
            Err(e) => Err(NodeError::Refused(format!(
                "key change {} is refused under the policy this node pins: {e}",
                change.id
            ))),
        }
    }

    /// Activates the new epoch of reshare `reshare` here, on its activation certificate.
    pub(crate) fn activate_epoch(
        &self,
        key: KeyId,
        reshare: SessionId,
        certificate: &[SignedOutcome],
    ) -> Result<Output, NodeError> {
        let report = verify_activation(&self.roster, key, reshare, certificate)?;
        self.activate_verified(&report, certificate)?;
        Ok(Output::EpochActivated {
            key,
            reshare,
            epoch: report.to_epoch(),
        })
    }

    fn activate_verified(
        &self,
        report: &EpochReport,
        certificate: &[SignedOutcome],
    ) -> Result<(), NodeError> {
        let (key, reshare) = (report.key, report.reshare);
        let activation =
            self.state
                .activate_epoch(key, reshare, self.party(), report, certificate, now_unix());
        let activation = match activation {
            Ok(a) => a,
            Err(e) => {
                self.audit.note(
                    self.lifecycle_event("epoch.activation_refused", key, reshare)
                        .detail("error", &e),
                );
                return Err(e.into());
            }
        };
        self.forget_key(key);
        let action = match activation {
            Activation::Installed => "epoch.activated",
            Activation::Left => "epoch.left",
            Activation::AlreadyDone => return Ok(()),
        };
        self.audit.note(
            self.lifecycle_event(action, key, reshare)
                .detail("epoch", report.to_epoch())
                .detail("committee", PartyId::list(&report.new_committee))
                .detail("threshold", report.new_threshold),
        );
        Ok(())
    }

    /// Closes the epoch reshare `reshare` replaced, on its closure certificate: erases this
    /// node's share and auxiliary info of that epoch. A participant that missed the
    /// activation activates first; a holder that took no part checks the admins' approval of
    /// the change first.
    pub(crate) fn close_epoch(
        &self,
        key: KeyId,
        reshare: SessionId,
        certificate: &[SignedOutcome],
        activated: &[SignedOutcome],
        approved: Option<&ApprovedKeyChange>,
    ) -> Result<Output, NodeError> {
        let report = verify_activation(&self.roster, key, reshare, certificate)?;
        verify_closure(&self.roster, &report, activated)?;
        let me = self.party();
        if report.participants().contains(&me) {
            if let Some(ReshareRecord::Pending { .. }) = self.state.reshare(key, reshare)? {
                self.activate_verified(&report, certificate)?;
            }
        } else if report.old_committee.contains(&me) {
            self.check_closure_approval(&report, approved)?;
        }
        let closure = match self.state.close_epoch(key, reshare, me, &report) {
            Ok(c) => c,
            Err(e) => {
                self.audit.note(
                    self.lifecycle_event("epoch.close_refused", key, reshare)
                        .detail("error", &e),
                );
                return Err(e.into());
            }
        };
        self.forget_key(key);
        if closure == Closure::Erased {
            self.audit.note(
                self.lifecycle_event("epoch.closed", key, reshare)
                    .detail("epoch", report.from_epoch)
                    .detail("erased", "share and auxiliary info"),
            );
        }
        Ok(Output::EpochClosed {
            key,
            reshare,
            epoch: report.from_epoch,
            erased: closure == Closure::Erased,
        })
    }

    /// For a holder that took no part in the reshare: the admins approved moving this epoch of
    /// the key to the committee the certificates name (checked at the time of the change: it
    /// was carried out then).
    fn check_closure_approval(
        &self,
        report: &EpochReport,
        approved: Option<&ApprovedKeyChange>,
    ) -> Result<(), NodeError> {
        let key = report.key;
        let Some(approved) = approved else {
            return Err(NodeError::Refused(format!(
                "closing epoch {} of key {key} here needs the admins' approved change; none was \
                 given",
                report.from_epoch
            )));
        };
        let record = self.state.key_record(key).ok();
        let change = &approved.change;
        let from_ok = change.key == key
            && change.from.epoch == report.from_epoch
            && change.from.committee == report.old_committee
            && record
                .as_ref()
                .is_none_or(|r| r.threshold == change.from.threshold);
        let to_ok = change.operation
            == KeyOperation::Reshare {
                committee: report.new_committee.clone(),
                threshold: report.new_threshold,
            };
        if !from_ok || !to_ok || change.change_digest() != report.authorisation {
            return Err(NodeError::Refused(format!(
                "the approved key change {} is not the one reshare session {} carried out",
                change.id, report.reshare
            )));
        }
        self.evaluate_change(approved, change.created_at)?;
        Ok(())
    }

    /// Abandons reshare `reshare` here, on proof, on expiry, or because it left nothing here.
    pub(crate) fn abandon_reshare(
        &self,
        key: KeyId,
        reshare: SessionId,
        proof: Option<&SignedOutcome>,
    ) -> Result<Output, NodeError> {
        // A proof matters only where this node holds a result of the session.
        let participants = match self.state.reshare(key, reshare)? {
            Some(
                ReshareRecord::Pending { report, .. }
                | ReshareRecord::Activated { report, .. }
                | ReshareRecord::Closed { report },
            ) => report.participants(),
            _ => Vec::new(),
        };
        let proof_by = match proof {
            Some(proof) if !participants.is_empty() => Some(verify_abandonment(
                &self.roster,
                key,
                reshare,
                &participants,
                proof,
            )?),
            _ => None,
        };
        let abandonment = match self
            .state
            .abandon_reshare(key, reshare, proof_by, now_unix())
        {
            Ok(a) => a,
            Err(e) => {
                self.audit.note(
                    self.lifecycle_event("reshare.abandon_refused", key, reshare)
                        .detail("error", &e),
                );
                return Err(e.into());
            }
        };
        let action = match abandonment {
            Abandonment::Erased => Some("reshare.abandoned"),
            Abandonment::Reverted => Some("epoch.reverted"),
            Abandonment::Recorded => Some("reshare.abandoned"),
            Abandonment::AlreadyDone => None,
        };
        if let Some(action) = action {
            self.forget_key(key);
            let mut event = self.lifecycle_event(action, key, reshare);
            if let Some(by) = proof_by {
                event = event.detail("proof_by", by);
            }
            self.audit.note(event);
        }
        Ok(Output::ReshareAbandoned { key, reshare })
    }

    /// Abandons the pending reshare results that expired (their new shares erased) and, with
    /// `restarted`, the sessions a stop interrupted. Every result is audited, errors included
    /// (they leave the record as it was, to be tried again). A record that cannot be read, does
    /// not decode or cannot be written is audited as `reshare.abandon_failed` (naming its key
    /// and session) and logged, and the sweep goes on with the others: it is not an error of
    /// the sweep. Only a store whose records cannot be listed at all fails it: audited as
    /// `reshare.sweep_failed` and returned. Returns how many sessions were abandoned.
    pub fn sweep_reshares(&self, restarted: bool) -> Result<usize, StateError> {
        let swept = match self.state.sweep_reshares(now_unix(), restarted) {
            Ok(swept) => swept,
            Err(e) => {
                // The caller logs it (and retries on its next sweep, or fails the start-up).
                self.audit.note(
                    NewEvent::new(
                        "system",
                        "reshare.sweep_failed",
                        format!("node:{}", self.party()),
                    )
                    .detail("restarted", restarted)
                    .detail("error", &e),
                );
                return Err(e);
            }
        };
        let mut done = 0;
        for (key, session, result) in swept {
            match result {
                Ok(reason) => {
                    done += 1;
                    tracing::info!(%key, %session, reason, "reshare abandoned here");
                    self.audit.note(
                        self.lifecycle_event("reshare.abandoned", key, session)
                            .detail("reason", reason),
                    );
                }
                Err(e) => {
                    tracing::warn!(%key, %session, error = %e, "cannot read or abandon this reshare record; it is left as it was and tried again on the next sweep");
                    self.audit.note(
                        self.lifecycle_event("reshare.abandon_failed", key, session)
                            .detail("error", &e),
                    );
                }
            }
        }
        Ok(done)
    }
}
