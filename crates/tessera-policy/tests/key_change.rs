//! Key changes (refresh, reshare, refresh schedule) approved by admins.

use crate::common;

use common::*;
use tessera_policy::{
    evaluate_key_change, Approval, KeyChange, KeyChangeDecision, KeyOperation, PolicyError,
    PolicyHash,
};
use tessera_wire::PartyId;

fn reshare(committee: &[u16], threshold: u16) -> KeyOperation {
    KeyOperation::Reshare {
        committee: committee.iter().copied().map(PartyId).collect(),
        threshold,
    }
}

fn change(operation: KeyOperation, by: &str) -> KeyChange {
    treasury_key_change(&example(), operation, by)
}

fn approvals(change: &KeyChange, names: &[&str]) -> Vec<Approval> {
    key_change_approvals(change, names)
}

const NOW: u64 = MONDAY_10AM + 10;

#[test]
fn a_reshare_needs_two_admins_other_than_the_proposer() {
    let current = example();
    let proposal = change(reshare(&[1, 2, 4], 2), "dave");
    let decide = |names: &[&str]| {
        evaluate_key_change(&current, &proposal, &approvals(&proposal, names), NOW).unwrap()
    };
    assert_eq!(
        decide(&[]),
        KeyChangeDecision::Pending {
            needed: 2,
            approved_by: vec![],
            proposer_signed: false,
        }
    );
    // The proposer's own signature and an approver's (not an admin) count as no approval.
    assert_eq!(
        decide(&["dave", "bob", "erin"]),
        KeyChangeDecision::Pending {
            needed: 1,
            approved_by: vec!["erin".into()],
            proposer_signed: true,
        }
    );
    // Two other admins, but no signature of the proposer: a reshare made up "by dave" (as a
    // compromised coordinator would) is not allowed.
    assert_eq!(
        decide(&["erin", "frank"]),
        KeyChangeDecision::Pending {
            needed: 0,
            approved_by: vec!["erin".into(), "frank".into()],
            proposer_signed: false,
        }
    );
    assert_eq!(
        decide(&["dave", "erin", "frank"]),
        KeyChangeDecision::Allow {
            approved_by: vec!["erin".into(), "frank".into()]
        }
    );
}

#[test]
fn approvals_of_another_change_or_a_tampered_one_are_refused() {
    let current = example();
    let proposal = change(reshare(&[1, 2, 3], 2), "dave");
    let signed = approvals(&proposal, &["erin", "frank"]);
    // The committee was changed after the admins signed.
    let mut tampered = proposal.clone();
    tampered.operation = reshare(&[1, 2, 9], 2);
    assert!(matches!(
        evaluate_key_change(&current, &tampered, &signed, NOW),
        Err(PolicyError::BadApproval { .. })
    ));
    // Approved for epoch 0: the same change against epoch 1, or a different source
    // committee or threshold, carries no approval.
    for edit in [
        |c: &mut KeyChange| c.from.epoch = 1,
        |c: &mut KeyChange| c.from.committee = vec![PartyId(1), PartyId(2), PartyId(4)],
        |c: &mut KeyChange| c.from.threshold = 3,
    ] {
        let mut moved = proposal.clone();
        edit(&mut moved);
        assert!(matches!(
            evaluate_key_change(&current, &moved, &signed, NOW),
            Err(PolicyError::BadApproval { .. })
        ));
    }
    // Approvals of a refresh of the same key do not authorise a reshare.
    let refresh = change(KeyOperation::Refresh, "dave");
    let for_refresh = approvals(&refresh, &["erin", "frank"]);
    assert!(matches!(
        evaluate_key_change(&current, &proposal, &for_refresh, NOW),
        Err(PolicyError::BadApproval { .. })
    ));
    // One admin approving twice.
    let twice = approvals(&proposal, &["erin", "erin"]);
    assert!(matches!(
        evaluate_key_change(&current, &proposal, &twice, NOW),
        Err(PolicyError::DuplicateApproval(_))
    ));
}

#[test]
fn stale_expired_and_non_admin_changes_are_refused() {
    let current = example();
    let mut stale = change(KeyOperation::Refresh, "dave");
    stale.policy = PolicyHash([9; 32]);
    assert!(matches!(
        evaluate_key_change(&current, &stale, &[], NOW),
        Err(PolicyError::StalePolicy { .. })
    ));
    let proposal = change(KeyOperation::Refresh, "dave");
    assert!(matches!(
        evaluate_key_change(&current, &proposal, &[], MONDAY_10AM + 3600),
        Err(PolicyError::Expired { .. })
    ));
    let by_operator = change(KeyOperation::Refresh, "alice");
    assert!(matches!(
        evaluate_key_change(&current, &by_operator, &[], NOW),
        Err(PolicyError::ProposerNotAdmin(_))
    ));
}

#[test]
fn invalid_operations_are_refused() {
    let current = example();
    for operation in [
        reshare(&[1, 2, 2], 2),
        reshare(&[0, 1, 2], 2),
        reshare(&[1, 2, 3], 1),
        reshare(&[1, 2, 3], 4),
        KeyOperation::RefreshSchedule {
            every_secs: Some(60),
        },
    ] {
        let proposal = change(operation.clone(), "dave");
        let error = evaluate_key_change(&current, &proposal, &[], NOW).unwrap_err();
        assert!(
            matches!(error, PolicyError::Invalid { .. }),
            "{operation}: {error}"
        );
    }
    let schedule = change(
        KeyOperation::RefreshSchedule {
            every_secs: Some(30 * 86400),
        },
        "dave",
    );
    assert!(evaluate_key_change(&current, &schedule, &[], NOW).is_ok());
}

#[test]
fn a_key_change_round_trips_its_canonical_encoding() {
    let proposal = change(reshare(&[3, 1, 5], 3), "erin");
    let decoded = KeyChange::decode(&proposal.canonical_bytes()).unwrap();
    assert_eq!(decoded, proposal);
    assert_eq!(decoded.change_digest(), proposal.change_digest());
    assert!(KeyChange::decode(&[0xff; 10]).is_err());
}
