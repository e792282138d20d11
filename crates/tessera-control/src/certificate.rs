//! Certificates: sets of the nodes' signed outcomes that a node checks itself before it
//! activates, closes or abandons an epoch of a key (`docs/protocols/reshare.md`, Reports and
//! certificates). The coordinator collects and forwards them; without the parties' identity
//! keys it cannot make one up or change one.
//!
//! - The **activation certificate** of a reshare session: every participant's signed
//!   successful [`Output::Reshare`], all with the same report.
//! - The **closure certificate**: every new holder's signed [`Output::EpochActivated`].
//! - An **abandonment proof**: one participant's signed [`Output::ReshareAbandoned`], which a
//!   node signs only once it recorded, durably, that it holds no result of the session and
//!   never will. (A signed failure of the session is not one: a node refuses a replayed start
//!   after it succeeded, and that refusal must not undo its result.)

use std::collections::BTreeMap;

use tessera_channel::Roster;
use tessera_wire::{KeyId, PartyId, SessionId};

use crate::messages::{EpochReport, Output, SessionOutcome, SignedOutcome};

/// Why a certificate or proof is not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// An outcome's signature or encoding is not valid.
    #[error("an outcome in the certificate does not verify: {0}")]
    Outcome(String),
    /// A party signed two different outcomes.
    #[error("{0} signed two different outcomes in the certificate")]
    Equivocation(PartyId),
    /// Parties whose outcome the certificate must hold are missing.
    #[error("the certificate holds no {what} from {}", PartyId::list(.missing))]
    Missing {
        /// What is missing.
        what: &'static str,
        /// Whose.
        missing: Vec<PartyId>,
    },
    /// An outcome is about something else.
    #[error("{party}'s outcome is not {what} of reshare session {reshare} of key {key}")]
    Unexpected {
        /// The party.
        party: PartyId,
        /// What the outcome had to be.
        what: &'static str,
        /// The reshare session.
        reshare: SessionId,
        /// The key.
        key: KeyId,
    },
    /// The participants' reports differ.
    #[error("{0} reports another result of the session than the other participants")]
    Disagrees(PartyId),
    /// An outcome from a party that has no part in it.
    #[error("{0} is not a participant of the session")]
    Outsider(PartyId),
}

/// The verified outcomes of `outcomes`, one per party (a party may appear twice only with the
/// same outcome).
fn verified(
    roster: &Roster,
    outcomes: &[SignedOutcome],
) -> Result<BTreeMap<PartyId, SessionOutcome>, CertificateError> {
    let mut by_party = BTreeMap::new();
    for signed in outcomes {
        let outcome = signed
            .verify(roster)
            .map_err(|e| CertificateError::Outcome(e.to_string()))?;
        if let Some(before) = by_party.insert(outcome.party, outcome.clone()) {
            if before != outcome {
                return Err(CertificateError::Equivocation(outcome.party));
            }
        }
    }
    Ok(by_party)
}

fn missing(expected: &[PartyId], present: &BTreeMap<PartyId, SessionOutcome>) -> Vec<PartyId> {
    expected
        .iter()
        .copied()
        .filter(|p| !present.contains_key(p))
        .collect()
}

/// Checks the activation certificate of reshare session `reshare` of `key`: one signed,
/// successful reshare outcome of that session from every participant the reports name, no
/// other, all reporting the same result, every receiver the same auxiliary digest (none for a
/// FROST key, which has no auxiliary info) and no other party one. Returns the common report
/// (with the receivers' auxiliary digest).
pub fn verify_activation(
    roster: &Roster,
    key: KeyId,
    reshare: SessionId,
    certificate: &[SignedOutcome],
) -> Result<EpochReport, CertificateError> {
    let outcomes = verified(roster, certificate)?;
    let mut reports = BTreeMap::new();
    for (party, outcome) in &outcomes {
        match &outcome.result {
            Ok(Output::Reshare { report })
                if outcome.session == reshare && report.reshare == reshare && report.key == key =>
            {
                reports.insert(*party, report.clone());
            }
            _ => {
                return Err(CertificateError::Unexpected {
                    party: *party,
                    what: "a successful report",
                    reshare,
                    key,
                })
            }
        }
    }
    let Some((_, first)) = reports.iter().next() else {
        return Err(CertificateError::Missing {
            what: "report",
            missing: Vec::new(),
        });
    };
    let first = first.clone();
    let participants = first.participants();
    if let Some(outsider) = reports.keys().find(|p| !participants.contains(p)) {
        return Err(CertificateError::Outsider(*outsider));
    }
    let absent = missing(&participants, &outcomes);
    if !absent.is_empty() {
        return Err(CertificateError::Missing {
            what: "successful report",
            missing: absent,
        });
    }
    let receivers_aux = first
        .new_committee
        .first()
        .and_then(|p| reports.get(p))
        .map(|r| r.aux)
        .ok_or(CertificateError::Missing {
            what: "receiver's report",
            missing: first.new_committee.first().copied().into_iter().collect(),
        })?;
    for (party, report) in &reports {
        let expected_aux = receivers_aux.filter(|_| first.new_committee.contains(party));
        if !report.same_result(&first) || report.aux != expected_aux {
            return Err(CertificateError::Disagrees(*party));
        }
    }
    Ok(EpochReport {
        aux: receivers_aux,
        ..first
    })
}

/// Checks the closure certificate of the epoch `report`'s session started from: every new
/// holder's signed activation of the new epoch of that session.
pub fn verify_closure(
    roster: &Roster,
    report: &EpochReport,
    activated: &[SignedOutcome],
) -> Result<(), CertificateError> {
    let outcomes = verified(roster, activated)?;
    for (party, outcome) in &outcomes {
        if !report.new_committee.contains(party) {
            return Err(CertificateError::Outsider(*party));
        }
        let expected = Output::EpochActivated {
            key: report.key,
            reshare: report.reshare,
            epoch: report.to_epoch(),
        };
        if outcome.result.as_ref() != Ok(&expected) {
            return Err(CertificateError::Unexpected {
                party: *party,
                what: "the activation of the new epoch",
                reshare: report.reshare,
                key: report.key,
            });
        }
    }
    let absent = missing(&report.new_committee, &outcomes);
    if !absent.is_empty() {
        return Err(CertificateError::Missing {
            what: "activation",
            missing: absent,
        });
    }
    Ok(())
}

/// Checks an abandonment proof of reshare session `reshare` of `key` by one of `parties`: its
/// signed [`Output::ReshareAbandoned`]. Returns who signed it.
pub fn verify_abandonment(
    roster: &Roster,
    key: KeyId,
    reshare: SessionId,
    parties: &[PartyId],
    proof: &SignedOutcome,
) -> Result<PartyId, CertificateError> {
    let outcome = proof
        .verify(roster)
        .map_err(|e| CertificateError::Outcome(e.to_string()))?;
    if !parties.contains(&outcome.party) {
        return Err(CertificateError::Outsider(outcome.party));
    }
    let abandoned = Output::ReshareAbandoned { key, reshare };
    if outcome.result.as_ref() == Ok(&abandoned) {
        Ok(outcome.party)
    } else {
        Err(CertificateError::Unexpected {
            party: outcome.party,
            what: "the abandonment",
            reshare,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Each certificate refuses what the coordinator could make up: outcomes it altered or
    //! signed itself, left out, took from another session or party, or that contradict.
    use super::*;
    use crate::messages::{Failure, SessionOutcome};
    use tessera_channel::identity::PartyIdentity;
    use tessera_mpc::reshare::Kind;
    use tessera_wire::ClusterId;

    struct Parties {
        ids: Vec<PartyIdentity>,
        roster: Roster,
    }

    fn parties() -> Parties {
        let cluster = ClusterId::new("certificates").unwrap();
        let ids: Vec<PartyIdentity> = (1..=4)
            .map(|p| PartyIdentity::generate(PartyId(p), cluster.clone(), None))
            .collect();
        let publics: Vec<_> = ids.iter().map(|i| i.public(None)).collect();
        let roster = Roster::build(cluster, 1, &publics).unwrap();
        Parties { ids, roster }
    }

    const KEY: KeyId = KeyId([1; 16]);
    const SESSION: SessionId = SessionId([2; 16]);

    /// p1 and p2 deal, p2 and p3 receive.
    fn report(aux: Option<[u8; 32]>) -> EpochReport {
        EpochReport {
            key: KEY,
            reshare: SESSION,
            kind: Kind::Reshare,
            from_epoch: 4,
            old_committee: vec![PartyId(1), PartyId(2), PartyId(4)],
            dealers: vec![PartyId(1), PartyId(2)],
            new_committee: vec![PartyId(2), PartyId(3)],
            new_threshold: 2,
            public_key: vec![2; 33],
            confirmation: [3; 32],
            authorisation: [4; 32],
            aux,
        }
    }

    fn signed(
        p: &Parties,
        party: u16,
        session: SessionId,
        result: Result<Output, Failure>,
    ) -> SignedOutcome {
        let outcome = SessionOutcome {
            session,
            party: PartyId(party),
            result,
        };
        SignedOutcome::sign(&outcome, &p.ids[usize::from(party) - 1])
    }

    fn reshared(p: &Parties, party: u16, aux: Option<[u8; 32]>) -> SignedOutcome {
        signed(
            p,
            party,
            SESSION,
            Ok(Output::Reshare {
                report: report(aux),
            }),
        )
    }

    const AUX: [u8; 32] = [9; 32];

    fn certificate(p: &Parties) -> Vec<SignedOutcome> {
        vec![
            reshared(p, 1, None),
            reshared(p, 2, Some(AUX)),
            reshared(p, 3, Some(AUX)),
        ]
    }

    #[test]
    fn the_activation_certificate_needs_every_participants_same_signed_report() {
        let p = parties();
        let good = certificate(&p);
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &good).unwrap(),
            report(Some(AUX))
        );
        // Every participant, each once (a repeat of the same outcome is harmless).
        let mut repeated = good.clone();
        repeated.push(good[0].clone());
        verify_activation(&p.roster, KEY, SESSION, &repeated).unwrap();
        let err = verify_activation(&p.roster, KEY, SESSION, &good[1..]).unwrap_err();
        assert!(
            matches!(err, CertificateError::Missing { ref missing, .. } if missing == &[PartyId(1)]),
            "{err}"
        );
        // An altered body no longer verifies; a body signed by another party is refused.
        let mut altered = good.clone();
        altered[1].body[5] ^= 1;
        assert!(matches!(
            verify_activation(&p.roster, KEY, SESSION, &altered),
            Err(CertificateError::Outcome(_))
        ));
        let mut stolen = good.clone();
        stolen[0].party = PartyId(4);
        assert!(matches!(
            verify_activation(&p.roster, KEY, SESSION, &stolen),
            Err(CertificateError::Outcome(_))
        ));
        // Another session or key; an outsider (p4 holds the key but takes no part).
        assert!(matches!(
            verify_activation(&p.roster, KEY, SessionId([7; 16]), &good),
            Err(CertificateError::Unexpected { .. })
        ));
        assert!(matches!(
            verify_activation(&p.roster, KeyId([7; 16]), SESSION, &good),
            Err(CertificateError::Unexpected { .. })
        ));
        let mut outsider = good.clone();
        outsider.push(reshared(&p, 4, None));
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &outsider),
            Err(CertificateError::Outsider(PartyId(4)))
        );
        // A participant that failed, or reports another result, or another auxiliary info.
        let mut failed = good.clone();
        failed[0] = signed(
            &p,
            1,
            SESSION,
            Err(Failure {
                message: "timed out".into(),
                blamed: vec![],
            }),
        );
        assert!(matches!(
            verify_activation(&p.roster, KEY, SESSION, &failed),
            Err(CertificateError::Unexpected {
                party: PartyId(1),
                ..
            })
        ));
        let mut other = report(None);
        other.new_threshold = 1;
        let mut disagrees = good.clone();
        disagrees[0] = signed(&p, 1, SESSION, Ok(Output::Reshare { report: other }));
        assert!(matches!(
            verify_activation(&p.roster, KEY, SESSION, &disagrees),
            Err(CertificateError::Disagrees(_))
        ));
        let mut other_aux = good.clone();
        other_aux[2] = reshared(&p, 3, Some([8; 32]));
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &other_aux),
            Err(CertificateError::Disagrees(PartyId(3)))
        );
        let mut dealer_aux = good.clone();
        dealer_aux[0] = reshared(&p, 1, Some(AUX));
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &dealer_aux),
            Err(CertificateError::Disagrees(PartyId(1)))
        );
        // One party, two different outcomes.
        let mut twice = good.clone();
        twice.push(reshared(&p, 2, Some([8; 32])));
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &twice),
            Err(CertificateError::Equivocation(PartyId(2)))
        );
        assert!(matches!(
            verify_activation(&p.roster, KEY, SESSION, &[]),
            Err(CertificateError::Missing { .. })
        ));
    }

    #[test]
    fn a_frost_keys_receivers_report_no_auxiliary_digest_all_of_them() {
        let p = parties();
        // A FROST key has no auxiliary info: no receiver reports a digest.
        let frost = vec![
            reshared(&p, 1, None),
            reshared(&p, 2, None),
            reshared(&p, 3, None),
        ];
        assert_eq!(
            verify_activation(&p.roster, KEY, SESSION, &frost).unwrap(),
            report(None)
        );
        // One receiver with a digest and one without disagree, whichever comes first.
        for (p2, p3) in [(None, Some(AUX)), (Some(AUX), None)] {
            let mixed = vec![
                reshared(&p, 1, None),
                reshared(&p, 2, p2),
                reshared(&p, 3, p3),
            ];
            assert_eq!(
                verify_activation(&p.roster, KEY, SESSION, &mixed),
                Err(CertificateError::Disagrees(PartyId(3)))
            );
        }
    }

    #[test]
    fn the_closure_certificate_needs_every_new_holders_signed_activation() {
        let p = parties();
        let r = report(Some(AUX));
        let activated = |party: u16, epoch: u64| {
            signed(
                &p,
                party,
                SessionId([party as u8; 16]),
                Ok(Output::EpochActivated {
                    key: KEY,
                    reshare: SESSION,
                    epoch,
                }),
            )
        };
        verify_closure(&p.roster, &r, &[activated(2, 5), activated(3, 5)]).unwrap();
        assert!(matches!(
            verify_closure(&p.roster, &r, &[activated(2, 5)]),
            Err(CertificateError::Missing { ref missing, .. }) if missing == &[PartyId(3)]
        ));
        assert!(matches!(
            verify_closure(&p.roster, &r, &[activated(2, 5), activated(3, 6)]),
            Err(CertificateError::Unexpected {
                party: PartyId(3),
                ..
            })
        ));
        // A leaving dealer's activation is no new holder's.
        assert_eq!(
            verify_closure(
                &p.roster,
                &r,
                &[activated(2, 5), activated(3, 5), activated(1, 5)]
            ),
            Err(CertificateError::Outsider(PartyId(1)))
        );
        // The reshare reports themselves are not activations.
        assert!(matches!(
            verify_closure(&p.roster, &r, &certificate(&p)[1..]),
            Err(CertificateError::Unexpected { .. })
        ));
    }

    #[test]
    fn only_a_participants_signed_abandonment_proves_a_session_abandoned() {
        let p = parties();
        let participants = report(None).participants();
        let abandoned = |party: u16, session: SessionId| {
            signed(
                &p,
                party,
                SessionId([0; 16]),
                Ok(Output::ReshareAbandoned {
                    key: KEY,
                    reshare: session,
                }),
            )
        };
        assert_eq!(
            verify_abandonment(
                &p.roster,
                KEY,
                SESSION,
                &participants,
                &abandoned(3, SESSION)
            ),
            Ok(PartyId(3))
        );
        // Of another session, by a party outside it, or a failure of the session itself (a
        // node refuses a replayed start after it succeeded: that must not undo its result).
        assert!(matches!(
            verify_abandonment(
                &p.roster,
                KEY,
                SESSION,
                &participants,
                &abandoned(3, SessionId([7; 16]))
            ),
            Err(CertificateError::Unexpected { .. })
        ));
        assert_eq!(
            verify_abandonment(
                &p.roster,
                KEY,
                SESSION,
                &participants,
                &abandoned(4, SESSION)
            ),
            Err(CertificateError::Outsider(PartyId(4)))
        );
        let failure = signed(
            &p,
            2,
            SESSION,
            Err(Failure {
                message: "session already started here".into(),
                blamed: vec![],
            }),
        );
        assert!(matches!(
            verify_abandonment(&p.roster, KEY, SESSION, &participants, &failure),
            Err(CertificateError::Unexpected { .. })
        ));
    }
}
