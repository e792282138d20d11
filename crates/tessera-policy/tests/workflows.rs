//! Approval workflows (issue 16 B.9): approvals from named approver groups, tiers that ask for
//! more above an amount, and more admin approvals to move a key to another committee. The same
//! evaluation runs in the coordinator and in every node.

use crate::common;

use alloy_primitives::U256;
use common::*;
use tessera_policy::{
    evaluate, evaluate_key_change, Decision, KeyChange, KeyChangeDecision, KeyOperation, Payload,
    PolicyDocument, PolicyError, Reason, Verdict,
};
use tessera_wire::PartyId;

/// The example with approver groups (`heads`: bob; `compliance`: carol and frank), the
/// treasury rule asking one approval that must include a head, a tier above 5 ETH asking two
/// approvals including one from compliance, and admin approvals of 1 (2 to change a key's
/// committee).
fn workflows_text() -> String {
    let text = EXAMPLE
        .replace(
            "approvals = 2\n",
            "approvals = 1\ncommittee_change_approvals = 2\n",
        )
        .replace(
            "[groups]\n",
            "[approver_groups]\nheads = [\"bob\"]\ncompliance = [\"carol\", \"frank\"]\n\n[groups]\n",
        )
        .replace(
            "approvals = { count = 2, roles = [\"approver\"] }\n",
            "approvals = { count = 1, roles = [\"approver\"], groups = { heads = 1 } }\n\n\
             [[rules.tiers]]\nasset = \"eth:1\"\nabove = \"5000000000000000000\"\n\
             approvals = { count = 2, roles = [\"approver\"], groups = { compliance = 1 } }\n",
        );
    assert_ne!(text, EXAMPLE);
    text
}

fn workflows() -> PolicyDocument {
    PolicyDocument::from_toml(workflows_text().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn transfer(wei: U256) -> Payload {
    Payload::EthereumTx {
        raw: eip1559(DEPOSIT, wei, vec![]),
    }
}

/// The decision on a treasury request doing `payload`, approved by `approvers` (and signed by
/// its submitter), with `history` spent before, at Monday 10:00.
fn decide_with(
    policy: &PolicyDocument,
    payload: Payload,
    approvers: &[&str],
    history: &MapHistory,
) -> Decision {
    let request = new_request(policy, TREASURY_KEY, payload, MONDAY_10AM);
    evaluate(
        policy,
        &request,
        &approve(&request, approvers),
        history,
        MONDAY_10AM + 5,
    )
}

fn decide(policy: &PolicyDocument, wei: U256, approvers: &[&str]) -> (Verdict, Vec<String>) {
    let decision = decide_with(policy, transfer(wei), approvers, &MapHistory::default());
    (
        decision.verdict,
        decision.reasons.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn a_rule_can_require_approvals_from_named_groups() {
    let policy = workflows();
    // One approval, but it must be a head's.
    assert_eq!(decide(&policy, eth(1), &["bob"]).0, Verdict::Allow);
    let (verdict, reasons) = decide(&policy, eth(1), &["carol"]);
    assert_eq!(verdict, Verdict::Pending);
    assert_eq!(
        reasons,
        ["needs 1 approval from group 'heads' for rule 'treasury transfers', has 0"]
    );
    let (verdict, reasons) = decide(&policy, eth(1), &[]);
    assert_eq!(verdict, Verdict::Pending);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // The reason's code is stable for clients and metrics.
    let decision = decide_with(
        &policy,
        transfer(eth(1)),
        &["carol"],
        &MapHistory::default(),
    );
    assert_eq!(
        decision
            .reasons
            .iter()
            .map(Reason::code)
            .collect::<Vec<_>>(),
        ["needs_group_approvals"]
    );
    assert!(decision.reasons[0].is_pending());
}

#[test]
fn a_tier_asks_for_more_above_an_amount() {
    let policy = workflows();
    // 6 ETH (and its fee) is above 5 ETH: the tier applies.
    let (verdict, reasons) = decide(&policy, eth(6), &["bob"]);
    assert_eq!(verdict, Verdict::Pending);
    let tier = "rule 'treasury transfers (above 5000000000000000000 eth:1)'";
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("needs 2 approvals") && r.contains(tier)),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("group 'compliance'") && r.contains("treasury transfers (above")),
        "{reasons:?}"
    );
    // Two approvals, one of them from compliance, and a head for the rule itself.
    assert_eq!(decide(&policy, eth(6), &["bob", "carol"]).0, Verdict::Allow);
    assert_eq!(decide(&policy, eth(6), &["bob", "frank"]).0, Verdict::Allow);
    // Two approvals without compliance, or compliance without a head, are not enough.
    let (verdict, reasons) = decide(&policy, eth(6), &["carol", "frank"]);
    assert_eq!(verdict, Verdict::Pending);
    assert_eq!(
        reasons,
        ["needs 1 approval from group 'heads' for rule 'treasury transfers', has 0"]
    );
    // Below the tier, one head is enough.
    assert_eq!(decide(&policy, eth(4), &["bob"]).0, Verdict::Allow);
    // The tier counts what the request spends in its asset, its maximum fee included: 5 ETH
    // exactly is not above it, but 5 ETH paying a fee is.
    assert_eq!(decide(&policy, eth(5), &["bob"]).0, Verdict::Allow);
    let paying = Payload::EthereumTx {
        raw: eip1559_paying(DEPOSIT, eth(5), vec![], 21_000, 1_000_000_000),
    };
    let decision = decide_with(&policy, paying, &["bob"], &MapHistory::default());
    assert_eq!(decision.verdict, Verdict::Pending, "{:?}", decision.reasons);
}

fn key_change(policy: &PolicyDocument, operation: KeyOperation) -> KeyChange {
    treasury_key_change(policy, operation, "dave")
}

fn decide_change(
    policy: &PolicyDocument,
    change: &KeyChange,
    admins: &[&str],
) -> KeyChangeDecision {
    let mut names = admins.to_vec();
    names.push("dave");
    evaluate_key_change(
        policy,
        change,
        &key_change_approvals(change, &names),
        MONDAY_10AM + 5,
    )
    .unwrap()
}

#[test]
fn moving_a_key_to_another_committee_needs_more_admins_than_a_refresh() {
    let policy = workflows();
    let refresh = key_change(&policy, KeyOperation::Refresh);
    assert!(!refresh.changes_committee());
    assert!(matches!(
        decide_change(&policy, &refresh, &["erin"]),
        KeyChangeDecision::Allow { .. }
    ));
    // A party joins: two other admins.
    let joins = key_change(
        &policy,
        KeyOperation::Reshare {
            committee: vec![PartyId(1), PartyId(2), PartyId(3), PartyId(4)],
            threshold: 2,
        },
    );
    assert!(joins.changes_committee());
    assert!(matches!(
        decide_change(&policy, &joins, &["erin"]),
        KeyChangeDecision::Pending { needed: 1, .. }
    ));
    assert!(matches!(
        decide_change(&policy, &joins, &["erin", "frank"]),
        KeyChangeDecision::Allow { .. }
    ));
    // Only the threshold changes: that changes who can sign too.
    let quorum = key_change(
        &policy,
        KeyOperation::Reshare {
            committee: vec![PartyId(1), PartyId(2), PartyId(3)],
            threshold: 3,
        },
    );
    assert!(quorum.changes_committee());
    // A reshare to the same committee and threshold is a refresh in effect.
    let same = key_change(
        &policy,
        KeyOperation::Reshare {
            committee: vec![PartyId(1), PartyId(2), PartyId(3)],
            threshold: 2,
        },
    );
    assert!(!same.changes_committee());
    assert!(matches!(
        decide_change(&policy, &same, &["erin"]),
        KeyChangeDecision::Allow { .. }
    ));
    // Without the setting, a committee change needs what a refresh needs.
    assert_eq!(
        example().committee_change_approvals(),
        example().admin_approvals()
    );
}

fn refused(text: &str) -> String {
    match PolicyDocument::from_toml(text.as_bytes()) {
        Err(e @ PolicyError::Invalid { .. }) => e.to_string(),
        other => panic!("accepted or refused otherwise: {other:?}"),
    }
}

#[test]
fn workflow_mistakes_are_refused_with_what_to_fix() {
    let base = workflows_text();
    let cases = [
        (
            base.replace("groups = { heads = 1 }", "groups = { chiefs = 1 }"),
            "not an approver group",
        ),
        (
            base.replace("groups = { heads = 1 }", "groups = { heads = 2 }"),
            "which has 1 member(s)",
        ),
        (
            base.replace("groups = { heads = 1 }", "groups = { heads = 0 }"),
            "ask between 1 and 1",
        ),
        (
            base.replace("heads = [\"bob\"]", "heads = [\"bobby\"]"),
            "'bobby' is not a principal",
        ),
        (
            base.replace("heads = [\"bob\"]", "heads = []"),
            "has no members",
        ),
        (
            base.replace("asset = \"eth:1\"\nabove", "asset = \"eth:5\"\nabove"),
            "has no limit for eth:5",
        ),
        (
            base.replace("above = \"5000000000000000000\"", "above = \"5 ETH\""),
            "is not an amount",
        ),
        (
            base.replace(
                "approvals = { count = 2, roles = [\"approver\"], groups = { compliance = 1 } }",
                "approvals = { count = 0, roles = [\"approver\"] }",
            ),
            "asks for no approvals",
        ),
        (
            base.replace(
                "committee_change_approvals = 2",
                "committee_change_approvals = 0",
            ),
            "below admin.approvals",
        ),
        (
            base.replace(
                "committee_change_approvals = 2",
                "committee_change_approvals = 3",
            ),
            "can never be reached",
        ),
    ];
    for (text, expected) in cases {
        let message = refused(&text);
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
}

/// Issue 16 B.8: a rolling window shared by a group of keys counts what every key of the group
/// spent, so spreading transfers over the group's keys does not pass the limit.
#[test]
fn a_window_shared_by_a_group_of_keys_counts_them_all() {
    const OTHER_TREASURY_KEY: &str = "6e1b4d2f0c8e5f3ab2d4c6e8f0a2b3c5";
    let shared_text = EXAMPLE.replace(
        "window_secs = 86400\nmax_fee",
        "window_secs = 86400\nwindow_keys = \"group:treasury\"\nmax_fee",
    );
    assert_ne!(shared_text, EXAMPLE);
    let shared = PolicyDocument::from_toml(shared_text.as_bytes()).unwrap();
    let own = example();
    let mut history = MapHistory::default();
    // 45 ETH already went out through the other treasury key.
    history.record(
        key_id(OTHER_TREASURY_KEY),
        tessera_policy::Asset::Native { chain_id: 1 },
        MONDAY_10AM - 3600,
        eth(45),
    );
    let decide = |policy: &PolicyDocument| {
        decide_with(policy, transfer(eth(6)), &["bob", "carol"], &history)
    };
    // Each key's own window: 6 ETH fits on this key.
    assert_eq!(decide(&own).verdict, Verdict::Allow);
    // Shared by the group: 45 + 6 is over 50.
    let decision = decide(&shared);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(
        decision
            .reasons
            .iter()
            .map(Reason::code)
            .collect::<Vec<_>>(),
        ["over_window"]
    );
    // Within the shared room, it passes.
    let fits = decide_with(&shared, transfer(eth(5)), &["bob", "carol"], &history);
    assert_eq!(fits.verdict, Verdict::Allow, "{:?}", fits.reasons);

    // Mistakes are named.
    for (text, expected) in [
        (
            shared_text.replace("\"group:treasury\"\nmax_fee", "\"treasury\"\nmax_fee"),
            "write \"group:<name>\"",
        ),
        (
            shared_text.replace("\"group:treasury\"\nmax_fee", "\"group:cold\"\nmax_fee"),
            "group 'cold', which is not defined",
        ),
        (
            EXAMPLE
                .replace(
                    "per_request = \"500000000000000000\"     # 0.5 ETH",
                    "per_request = \"500000000000000000\"\nwindow_keys = \"group:treasury\"",
                )
                .replace(
                    "per_window = \"2000000000000000000\"     # 2 ETH\nwindow_secs = 3600\n",
                    "",
                ),
            "set per_window and window_secs too",
        ),
    ] {
        let message = refused(&text);
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
}

/// Issue 16 A.1: the keys whose signings take a place in their spend chain are those a rolling
/// window counts: covered by a rule with a window, or sharing one.
#[test]
fn windows_count_the_keys_they_limit_and_the_keys_they_are_shared_with() {
    let own = example();
    assert!(own.windows_count(&key_id("5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4")));
    assert!(own.windows_count(&key_id("7a2c5e3b1d9f6a4bc3e5d7f9a1b3c4d6")));
    let elsewhere = key_id("00000000000000000000000000000001");
    assert!(!own.windows_count(&elsewhere), "no rule covers it");
    // A rule without any window counts nothing.
    let unlimited = EXAMPLE
        .replace("per_window = ", "# per_window = ")
        .replace("window_secs = ", "# window_secs = ");
    let unlimited = PolicyDocument::from_toml(unlimited.as_bytes()).unwrap();
    assert!(!unlimited.windows_count(&key_id("5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4")));
}
