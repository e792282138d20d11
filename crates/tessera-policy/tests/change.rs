//! The policy-change flow.

use crate::common;

use common::*;
use tessera_policy::{
    evaluate_change, Approval, ChangeDecision, PolicyChange, PolicyDocument, PolicyError,
    PolicyHash,
};
use tessera_wire::RequestId;

fn revised(revision: u64) -> String {
    EXAMPLE
        .replacen("revision = 1\n", &format!("revision = {revision}\n"), 1)
        .replacen(
            "per_request = \"500000000000000000\"",
            "per_request = \"400000000000000000\"",
            1,
        )
}

fn change(current: &PolicyDocument, document: &str, by: &str) -> PolicyChange {
    PolicyChange {
        id: RequestId::random(),
        previous: current.hash(),
        document: document.as_bytes().to_vec(),
        proposed_by: by.into(),
        created_at: MONDAY_10AM,
        expires_at: MONDAY_10AM + 3600,
    }
}

fn approvals(change: &PolicyChange, names: &[&str]) -> Vec<Approval> {
    names
        .iter()
        .map(|n| Approval::sign(&change.change_digest(), n, &key(n)))
        .collect()
}

fn pending(decision: ChangeDecision) -> (usize, Vec<String>, bool) {
    match decision {
        ChangeDecision::Pending {
            needed,
            approved_by,
            proposer_signed,
        } => (needed, approved_by, proposer_signed),
        ChangeDecision::Allow { .. } => panic!("allowed, expected pending"),
    }
}

#[test]
fn a_change_needs_two_other_admins() {
    let current = example();
    let text = revised(2);
    let proposal = change(&current, &text, "dave");
    let now = MONDAY_10AM + 10;

    let decision = evaluate_change(&current, &proposal, &[], now).unwrap();
    assert_eq!(pending(decision), (2, vec![], false));

    let decision = evaluate_change(&current, &proposal, &approvals(&proposal, &["erin"]), now);
    assert_eq!(
        pending(decision.unwrap()),
        (1, vec!["erin".to_owned()], false)
    );

    // The proposer's own signature and a non-admin's approval are valid but count as no
    // approval.
    let decision = evaluate_change(
        &current,
        &proposal,
        &approvals(&proposal, &["dave", "erin", "bob"]),
        now,
    );
    assert_eq!(
        pending(decision.unwrap()),
        (1, vec!["erin".to_owned()], true)
    );

    // Two other admins, but the proposer never signed: a change made up in dave's name (by
    // a coordinator, say) is not allowed.
    let decision = evaluate_change(
        &current,
        &proposal,
        &approvals(&proposal, &["erin", "frank"]),
        now,
    );
    assert_eq!(
        pending(decision.unwrap()),
        (0, vec!["erin".to_owned(), "frank".to_owned()], false)
    );

    let decision = evaluate_change(
        &current,
        &proposal,
        &approvals(&proposal, &["dave", "erin", "frank"]),
        now,
    )
    .unwrap();
    match decision {
        ChangeDecision::Allow {
            document,
            approved_by,
        } => {
            assert_eq!(document.revision(), 2);
            assert_eq!(document.bytes(), text.as_bytes());
            assert_eq!(document.hash(), PolicyHash::of(text.as_bytes()));
            assert_eq!(approved_by, ["erin", "frank"]);
            // The next change builds on the new document.
            let next = change(&document, &revised(3), "erin");
            let decision = evaluate_change(
                &document,
                &next,
                &approvals(&next, &["erin", "dave", "frank"]),
                now,
            )
            .unwrap();
            assert!(matches!(decision, ChangeDecision::Allow { .. }));
        }
        ChangeDecision::Pending { .. } => panic!("expected allow"),
    }
}

#[test]
fn stale_or_backwards_changes_are_refused() {
    let current = example();
    let now = MONDAY_10AM + 10;

    let mut stale = change(&current, &revised(2), "dave");
    stale.previous = PolicyHash::of(b"an older policy");
    let err = evaluate_change(&current, &stale, &[], now).unwrap_err();
    assert!(matches!(err, PolicyError::StalePolicy { .. }));
    assert!(err.to_string().contains(&current.hash().to_string()));

    for revision in [0, 1] {
        let backwards = change(&current, &revised(revision), "dave");
        let err = evaluate_change(&current, &backwards, &[], now).unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::RevisionNotIncreased { current: 1, proposed } if proposed == revision
            ),
            "{err}"
        );
    }

    let broken = change(
        &current,
        &revised(2).replacen("version = 1", "version = 9", 1),
        "dave",
    );
    assert!(matches!(
        evaluate_change(&current, &broken, &[], now),
        Err(PolicyError::UnsupportedVersion(9))
    ));
    let invalid = change(
        &current,
        &revised(2).replacen("\napprovals = 2\n", "\napprovals = 5\n", 1),
        "dave",
    );
    assert!(matches!(
        evaluate_change(&current, &invalid, &[], now),
        Err(PolicyError::Invalid { .. })
    ));
}

#[test]
fn only_admins_propose_and_approvals_must_be_genuine() {
    let current = example();
    let now = MONDAY_10AM + 10;
    for who in ["alice", "bob", "nobody"] {
        let proposal = change(&current, &revised(2), who);
        assert!(matches!(
            evaluate_change(&current, &proposal, &[], now),
            Err(PolicyError::ProposerNotAdmin(ref n)) if n == who
        ));
    }

    let proposal = change(&current, &revised(2), "dave");
    // Signed for another change.
    let other = change(&current, &revised(3), "dave");
    let misplaced = approvals(&other, &["erin"]);
    assert!(matches!(
        evaluate_change(&current, &proposal, &misplaced, now),
        Err(PolicyError::BadApproval { ref approver, .. }) if approver == "erin"
    ));
    // Signed with another key.
    let forged = vec![Approval::sign(
        &proposal.change_digest(),
        "frank",
        &key("bob"),
    )];
    assert!(matches!(
        evaluate_change(&current, &proposal, &forged, now),
        Err(PolicyError::BadApproval { ref approver, .. }) if approver == "frank"
    ));
    let twice = approvals(&proposal, &["erin", "erin"]);
    assert!(matches!(
        evaluate_change(&current, &proposal, &twice, now),
        Err(PolicyError::DuplicateApproval(ref n)) if n == "erin"
    ));
    let stranger = vec![Approval::sign(
        &proposal.change_digest(),
        "zed",
        &key("erin"),
    )];
    assert!(matches!(
        evaluate_change(&current, &proposal, &stranger, now),
        Err(PolicyError::UnknownApprover(ref n)) if n == "zed"
    ));
}

#[test]
fn change_times_are_checked() {
    let current = example();
    let proposal = change(&current, &revised(2), "dave");
    let ok = approvals(&proposal, &["erin", "frank"]);
    assert!(evaluate_change(&current, &proposal, &ok, proposal.expires_at - 1).is_ok());
    assert!(matches!(
        evaluate_change(&current, &proposal, &ok, proposal.expires_at),
        Err(PolicyError::Expired { .. })
    ));
    assert!(matches!(
        evaluate_change(&current, &proposal, &ok, proposal.created_at - 61),
        Err(PolicyError::FromTheFuture { .. })
    ));
    let mut long = proposal.clone();
    long.expires_at = long.created_at + 86_401;
    assert!(matches!(
        evaluate_change(&current, &long, &[], MONDAY_10AM),
        Err(PolicyError::LifetimeTooLong { .. })
    ));
    let mut inverted = proposal.clone();
    inverted.expires_at = inverted.created_at;
    assert!(matches!(
        evaluate_change(&current, &inverted, &[], MONDAY_10AM),
        Err(PolicyError::BadLifetime { .. })
    ));
}

#[test]
fn the_change_digest_is_domain_separated_and_covers_the_document() {
    let current = example();
    let proposal = change(&current, &revised(2), "dave");
    let mut expected = sha2::Sha256::default();
    sha2::Digest::update(&mut expected, b"tessera/policy-change/v1");
    sha2::Digest::update(&mut expected, proposal.canonical_bytes());
    let expected: [u8; 32] = sha2::Digest::finalize(expected).into();
    assert_eq!(proposal.change_digest(), expected);
    let mut edited = proposal.clone();
    edited.document.push(b'\n');
    assert_ne!(edited.change_digest(), proposal.change_digest());
    assert_eq!(
        PolicyChange::decode(&proposal.canonical_bytes()).unwrap(),
        proposal
    );
    let json = serde_json::to_string(&proposal).unwrap();
    assert_eq!(
        serde_json::from_str::<PolicyChange>(&json).unwrap(),
        proposal
    );
}
