//! Evaluating sign requests against the example policy.

use crate::common;

use alloy_primitives::U256;
use common::*;
use tessera_policy::{
    derive, evaluate, Action, Approval, Asset, Decision, Payload, PolicyHash, Reason, SignRequest,
    Verdict,
};
use tessera_wire::RequestId;

const USDC_UNIT: u64 = 1_000_000;

fn usdc() -> Asset {
    Asset::Erc20 {
        chain_id: 1,
        token: addr(USDC),
    }
}

fn usdc_transfer(to: [u8; 20], units: u64) -> Payload {
    Payload::EthereumTx {
        raw: eip1559(
            addr(USDC),
            U256::ZERO,
            erc20_transfer_input(to, U256::from(units * USDC_UNIT)),
        ),
    }
}

fn eth_transfer(to: [u8; 20], wei: U256) -> Payload {
    Payload::EthereumTx {
        raw: eip1559(to, wei, vec![]),
    }
}

fn run(request: &SignRequest, approvals: &[Approval], now: u64) -> Decision {
    evaluate(&example(), request, approvals, &MapHistory::default(), now)
}

fn codes(decision: &Decision) -> Vec<&'static str> {
    decision.reasons.iter().map(Reason::code).collect()
}

/// A treasury request approved by bob and carol, at Monday 10:00.
fn approved_treasury(payload: Payload) -> (SignRequest, Vec<Approval>) {
    let request = new_request(&example(), TREASURY_KEY, payload, MONDAY_10AM);
    let approvals = approve(&request, &["bob", "carol"]);
    (request, approvals)
}

#[test]
fn actions_are_derived_from_the_decoded_transaction() {
    let usdc_to_deposit = derive(&usdc_transfer(DEPOSIT, 500)).unwrap();
    assert_eq!(
        usdc_to_deposit.action,
        Action::Transfer {
            asset: usdc(),
            amount: U256::from(500 * USDC_UNIT),
            to: DEPOSIT,
        }
    );
    assert_eq!(
        usdc_to_deposit.spend(),
        Some((usdc(), U256::from(500 * USDC_UNIT)))
    );
    let raw = eip1559(
        addr(USDC),
        U256::ZERO,
        erc20_transfer_input(DEPOSIT, U256::from(500 * USDC_UNIT)),
    );
    assert_eq!(
        usdc_to_deposit.digest,
        tessera_chain::UnsignedTx::decode(&raw)
            .unwrap()
            .signing_digest()
    );

    // The same call with ETH attached is a contract call (and spends that ETH).
    let with_value = eip1559(
        addr(USDC),
        U256::from(1u8),
        erc20_transfer_input(DEPOSIT, U256::from(5u8)),
    );
    let derived = derive(&Payload::EthereumTx { raw: with_value }).unwrap();
    assert_eq!(
        derived.action,
        Action::ContractCall {
            chain_id: 1,
            to: addr(USDC),
            value: U256::from(1u8),
            selector: Some([0xa9, 0x05, 0x9c, 0xbb]),
        }
    );
    assert_eq!(
        derived.spend(),
        Some((Asset::Native { chain_id: 1 }, U256::from(1u8)))
    );
    // A trailing byte or a dirty address word: not a plain transfer.
    let mut long = erc20_transfer_input(DEPOSIT, U256::from(5u8));
    long.push(0);
    let mut dirty = erc20_transfer_input(DEPOSIT, U256::from(5u8));
    dirty[15] = 1;
    for input in [long, dirty] {
        let derived = derive(&Payload::EthereumTx {
            raw: eip1559(addr(USDC), U256::ZERO, input),
        })
        .unwrap();
        assert!(matches!(derived.action, Action::ContractCall { .. }));
        assert_eq!(derived.spend(), None);
    }
    // Native transfer (legacy), data to an address, contract creation, message.
    let native = derive(&Payload::EthereumTx {
        raw: legacy(11155111, Some(DEPOSIT), eth(2), vec![]),
    })
    .unwrap();
    assert_eq!(
        native.action,
        Action::Transfer {
            asset: Asset::Native { chain_id: 11155111 },
            amount: eth(2),
            to: DEPOSIT,
        }
    );
    let short = derive(&Payload::EthereumTx {
        raw: legacy(1, Some(DEPOSIT), U256::ZERO, vec![0xde, 0xad]),
    })
    .unwrap();
    assert_eq!(
        short.action,
        Action::ContractCall {
            chain_id: 1,
            to: DEPOSIT,
            value: U256::ZERO,
            selector: None,
        }
    );
    let create = derive(&Payload::EthereumTx {
        raw: legacy(1, None, eth(1), vec![0x60, 0x00]),
    })
    .unwrap();
    assert_eq!(
        create.action,
        Action::ContractCreation {
            chain_id: 1,
            value: eth(1),
        }
    );
    let message = derive(&Payload::Message {
        bytes: b"gm".to_vec(),
    })
    .unwrap();
    assert_eq!(message.action, Action::Message { len: 2 });
    assert_eq!(
        message.digest,
        tessera_chain::personal_message_digest(b"gm")
    );
    assert_eq!(message.spend(), None);
}

#[test]
fn approvals_move_a_request_from_pending_to_allow() {
    let policy = example();
    let request = new_request(
        &policy,
        TREASURY_KEY,
        usdc_transfer(DEPOSIT, 500),
        MONDAY_10AM,
    );
    let decision = run(&request, &[], MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Pending);
    assert_eq!(codes(&decision), ["needs_approvals"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        "needs 2 approvals by approver from rule 'treasury transfers', has 0"
    );

    let bob = approve(&request, &["bob"]);
    let decision = run(&request, &bob, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Pending);
    assert!(decision.reasons[0].to_string().ends_with("has 1"));
    assert_eq!(decision.approved_by, ["bob"]);

    // An admin's valid approval does not count for a rule that wants approvers.
    let with_dave = approve(&request, &["bob", "dave"]);
    let decision = run(&request, &with_dave, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Pending);
    assert!(decision.reasons[0].to_string().ends_with("has 1"));

    let both = approve(&request, &["bob", "carol"]);
    let decision = run(&request, &both, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Allow, "{decision}");
    assert!(decision.reasons.is_empty());
    assert_eq!(decision.approved_by, ["bob", "carol"]);
    assert!(decision.is_allowed());
}

#[test]
fn a_named_approver_list_is_respected() {
    let policy = example();
    let request = new_request(
        &policy,
        HOT_KEY,
        Payload::Message {
            bytes: b"login".to_vec(),
        },
        MONDAY_10AM,
    );
    // carol is an approver but not in the rule's `from`.
    let decision = run(&request, &approve(&request, &["carol"]), MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Pending);
    assert_eq!(
        decision.reasons[0].to_string(),
        "needs 1 approval by approver (only bob, frank) from rule 'hot wallet', has 0"
    );
    let decision = run(&request, &approve(&request, &["frank"]), MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Allow, "{decision}");
}

#[test]
fn limits_deny_with_the_amount_the_limit_and_the_rule() {
    let (request, approvals) = approved_treasury(eth_transfer(DEPOSIT, eth(10)));
    assert_eq!(
        run(&request, &approvals, MONDAY_10AM).verdict,
        Verdict::Allow
    );

    let (request, approvals) = approved_treasury(eth_transfer(DEPOSIT, eth(10) + U256::from(1)));
    let decision = run(&request, &approvals, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(codes(&decision), ["over_per_request"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        "amount 10000000000000000001 of eth:1 (base units) exceeds the per-request limit \
         10000000000000000000 of rule 'treasury transfers'"
    );

    // ETH on a chain the rule sets no limit for.
    let (request, approvals) = approved_treasury(Payload::EthereumTx {
        raw: legacy(5, Some(DEPOSIT), U256::from(1u8), vec![]),
    });
    let decision = run(&request, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["no_limit"]);
    assert!(decision.reasons[0]
        .to_string()
        .contains("no limit for eth:5"));

    // A token the rule does not list.
    let other_token = [0x22; 20];
    let (request, approvals) = approved_treasury(Payload::EthereumTx {
        raw: eip1559(
            other_token,
            U256::ZERO,
            erc20_transfer_input(DEPOSIT, U256::from(1u8)),
        ),
    });
    let decision = run(&request, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["no_limit"]);
}

#[test]
fn value_sent_with_a_call_is_limited_like_a_transfer() {
    let policy = example();
    let swap = |value: U256, to: [u8; 20]| {
        let request = new_request(
            &policy,
            HOT_KEY,
            Payload::EthereumTx {
                raw: eip1559(to, value, vec![0x35, 0x93, 0x56, 0x4c, 0, 0]),
            },
            MONDAY_10AM,
        );
        let approvals = approve(&request, &["bob"]);
        run(&request, &approvals, MONDAY_10AM)
    };
    let tenth = eth(1) / U256::from(10u8);
    assert_eq!(swap(tenth, addr(ROUTER)).verdict, Verdict::Allow);
    assert_eq!(swap(U256::ZERO, addr(ROUTER)).verdict, Verdict::Allow);
    assert_eq!(codes(&swap(eth(1), addr(ROUTER))), ["over_per_request"]);
    assert_eq!(codes(&swap(tenth, [0x33; 20])), ["destination_not_allowed"]);
}

#[test]
fn destinations_kinds_and_keys_deny() {
    let policy = example();
    let (request, approvals) = approved_treasury(usdc_transfer(addr(DEAD), 1));
    let decision = run(&request, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["destination_denied"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        "destination 0x000000000000000000000000000000000000dEaD is on the deny list of rule \
         'treasury transfers'"
    );

    let (request, approvals) = approved_treasury(Payload::Message {
        bytes: b"hi".to_vec(),
    });
    let decision = run(&request, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["kind_not_allowed"]);
    assert!(decision.reasons[0]
        .to_string()
        .contains("rule 'treasury transfers' does not allow message"));

    let unknown = "ab".repeat(16);
    let request = new_request(
        &policy,
        &unknown,
        eth_transfer(DEPOSIT, eth(1)),
        MONDAY_10AM,
    );
    let decision = run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(codes(&decision), ["no_rule"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        format!("no rule covers key {unknown}; default deny")
    );
}

#[test]
fn hours_are_checked_at_the_time_of_evaluation() {
    // Each request is created 100 s before it is evaluated.
    let at = |now: u64| {
        let (request, approvals) = request_at(now - 100);
        run(&request, &approvals, now)
    };
    assert_eq!(at(MONDAY_10AM).verdict, Verdict::Allow);
    let monday_8am = MONDAY_10AM - 2 * 3600;
    assert_eq!(at(monday_8am).verdict, Verdict::Allow);
    assert_eq!(at(monday_8am + 10 * 3600 - 1).verdict, Verdict::Allow);

    let decision = at(monday_8am - 1);
    assert_eq!(codes(&decision), ["outside_hours"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        "rule 'treasury transfers' allows requests only mon,tue,wed,thu,fri 08:00-18:00 UTC; \
         it is now mon 07:59 UTC"
    );
    let six_pm = monday_8am + 10 * 3600;
    assert_eq!(codes(&at(six_pm)), ["outside_hours"]);
    let saturday = MONDAY_10AM + 5 * 86_400;
    let decision = at(saturday);
    assert_eq!(codes(&decision), ["outside_hours"]);
    assert!(decision.reasons[0]
        .to_string()
        .contains("it is now sat 10:00"));
    // Friday 17:59 is inside, Sunday is not.
    assert_eq!(at(six_pm + 4 * 86_400 - 60).verdict, Verdict::Allow);
    assert_eq!(codes(&at(MONDAY_10AM - 86_400)), ["outside_hours"]);
}

fn request_at(created_at: u64) -> (SignRequest, Vec<Approval>) {
    let request = new_request(
        &example(),
        TREASURY_KEY,
        eth_transfer(DEPOSIT, eth(1)),
        created_at,
    );
    let approvals = approve(&request, &["bob", "carol"]);
    (request, approvals)
}

#[test]
fn the_rolling_window_counts_what_was_already_spent() {
    let policy = example();
    let treasury = key_id(TREASURY_KEY);
    let native = Asset::Native { chain_id: 1 };
    let mut history = MapHistory::default();
    let mut now = MONDAY_10AM;
    // Five 10 ETH transfers fill the 50 ETH daily window.
    for i in 0..6 {
        let request = new_request(&policy, TREASURY_KEY, eth_transfer(DEPOSIT, eth(10)), now);
        let approvals = approve(&request, &["bob", "carol"]);
        let decision = evaluate(&policy, &request, &approvals, &history, now);
        if i < 5 {
            assert_eq!(decision.verdict, Verdict::Allow, "transfer {i}: {decision}");
            let (asset, amount) = request.check().unwrap().spend().unwrap();
            history.record(treasury, asset, now, amount);
        } else {
            assert_eq!(codes(&decision), ["over_window"]);
            assert_eq!(
                decision.reasons[0].to_string(),
                "amount 10000000000000000000 of eth:1 (base units) on top of \
                 50000000000000000000 already spent in the last 86400 s exceeds the limit \
                 50000000000000000000 per 86400 s of rule 'treasury transfers'"
            );
        }
        now += 60;
    }
    // The history was asked about the right key, asset and window start.
    let (key, asset, since) = *history.queries.borrow().last().unwrap();
    assert_eq!((key, asset, since), (treasury, native, now - 60 - 86_400));
    // Other assets have their own window.
    let request = new_request(&policy, TREASURY_KEY, usdc_transfer(DEPOSIT, 10), now);
    let approvals = approve(&request, &["bob", "carol"]);
    assert!(evaluate(&policy, &request, &approvals, &history, now).is_allowed());

    // A day after the first transfer it leaves the window: 10 ETH fit again, 10 ETH + 1 not.
    let next_day = MONDAY_10AM + 86_400;
    let fits = new_request(
        &policy,
        TREASURY_KEY,
        eth_transfer(DEPOSIT, eth(10)),
        next_day,
    );
    let approvals = approve(&fits, &["bob", "carol"]);
    assert_eq!(
        evaluate(&policy, &fits, &approvals, &history, next_day + 1).verdict,
        Verdict::Allow
    );
    let at_the_edge = evaluate(&policy, &fits, &approvals, &history, next_day);
    assert_eq!(codes(&at_the_edge), ["over_window"], "since is inclusive");
}

#[test]
fn request_times_and_policy_are_checked() {
    let policy = example();
    let (request, approvals) = approved_treasury(eth_transfer(DEPOSIT, eth(1)));

    let decision = run(&request, &approvals, request.expires_at);
    assert_eq!(codes(&decision), ["expired"]);
    assert_eq!(
        run(&request, &approvals, request.expires_at - 1).verdict,
        Verdict::Allow
    );

    assert_eq!(
        run(&request, &approvals, request.created_at - 60).verdict,
        Verdict::Allow
    );
    let decision = run(&request, &approvals, request.created_at - 61);
    assert_eq!(codes(&decision), ["from_the_future"]);

    let long = SignRequest::new(
        RequestId::random(),
        key_id(TREASURY_KEY),
        vec![],
        eth_transfer(DEPOSIT, eth(1)),
        policy.hash(),
        "alice",
        MONDAY_10AM,
        MONDAY_10AM + 86_401,
    )
    .unwrap();
    let approvals = approve(&long, &["bob", "carol"]);
    let decision = run(&long, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["lifetime_too_long"]);

    let mut other = request.clone();
    other.policy = PolicyHash([7; 32]);
    let approvals = approve(&other, &["bob", "carol"]);
    let decision = run(&other, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["wrong_policy"]);
    assert!(decision.reasons[0]
        .to_string()
        .contains(&policy.hash().to_string()));
}

#[test]
fn the_submitter_must_be_an_operator() {
    for (who, code) in [
        ("mallory", "unknown_submitter"),
        ("grace", "submitter_not_operator"),
    ] {
        let mut request = approved_treasury(eth_transfer(DEPOSIT, eth(1))).0;
        request.submitted_by = who.into();
        let approvals = approve(&request, &["bob", "carol"]);
        assert_eq!(codes(&run(&request, &approvals, MONDAY_10AM)), [code]);
    }
}

#[test]
fn bad_approvals_deny_and_name_the_approver() {
    let (request, approvals) = approved_treasury(eth_transfer(DEPOSIT, eth(1)));

    // Unknown approver.
    let mut with_stranger = approvals.clone();
    with_stranger.push(Approval::sign(
        &request.request_digest(),
        "mallory",
        &key("bob"),
    ));
    let decision = run(&request, &with_stranger, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(codes(&decision), ["unknown_approver"]);
    assert!(decision.reasons[0].to_string().contains("'mallory'"));

    // A signature by another key.
    let forged = vec![
        approvals[0].clone(),
        Approval::sign(&request.request_digest(), "carol", &key("erin")),
    ];
    let decision = run(&request, &forged, MONDAY_10AM);
    assert_eq!(codes(&decision), ["bad_approval", "needs_approvals"]);
    assert_eq!(decision.verdict, Verdict::Deny, "deny dominates pending");
    assert!(decision.reasons[0].to_string().contains("'carol'"));

    // The same approver twice.
    let twice = vec![approvals[0].clone(), approvals[0].clone()];
    let decision = run(&request, &twice, MONDAY_10AM);
    assert_eq!(codes(&decision), ["duplicate_approval", "needs_approvals"]);
    assert!(decision.reasons[0].to_string().contains("'bob'"));

    // The submitter approving their own request.
    let mut own = approvals.clone();
    own.push(Approval::sign(
        &request.request_digest(),
        "alice",
        &key("alice"),
    ));
    let decision = run(&request, &own, MONDAY_10AM);
    assert_eq!(codes(&decision), ["self_approval"]);
    assert!(decision.reasons[0].to_string().contains("'alice'"));

    // More approvals than principals.
    let flood = vec![approvals[0].clone(); 8];
    let decision = run(&request, &flood, MONDAY_10AM);
    assert_eq!(codes(&decision), ["too_many_approvals", "needs_approvals"]);
}

#[test]
fn an_altered_request_is_denied() {
    let (request, approvals) = approved_treasury(eth_transfer(DEPOSIT, eth(1)));
    assert!(run(&request, &approvals, MONDAY_10AM).is_allowed());

    // The digest changed: a node must notice without trusting it.
    let mut wrong_digest = request.clone();
    wrong_digest.digest[0] ^= 1;
    let decision = run(&wrong_digest, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["digest_mismatch"]);
    assert!(decision.reasons[0]
        .to_string()
        .contains(&hex::encode(request.digest)));

    // The payload changed, digest left as approved.
    let mut swapped = request.clone();
    swapped.payload = eth_transfer([0x66; 20], eth(1));
    assert_eq!(
        codes(&run(&swapped, &approvals, MONDAY_10AM)),
        ["digest_mismatch"]
    );

    // The payload changed and the digest recomputed: the approvals no longer match.
    swapped.digest = derive(&swapped.payload).unwrap().digest;
    let decision = run(&swapped, &approvals, MONDAY_10AM);
    assert_eq!(
        codes(&decision),
        ["bad_approval", "bad_approval", "needs_approvals"]
    );
    assert_eq!(decision.verdict, Verdict::Deny);

    // A malformed field.
    let mut hardened = request.clone();
    hardened.path = vec![1 << 31];
    let decision = run(&hardened, &approvals, MONDAY_10AM);
    assert_eq!(codes(&decision), ["invalid_request"]);
    assert!(decision.reasons[0].to_string().contains("hardened"));
}

#[test]
fn every_reason_is_reported_and_deny_dominates() {
    // Over the limit, to a denied address, outside hours, without approvals.
    let saturday = MONDAY_10AM + 5 * 86_400;
    let request = new_request(
        &example(),
        TREASURY_KEY,
        eth_transfer(addr(DEAD), eth(11)),
        saturday,
    );
    let decision = run(&request, &[], saturday);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(
        codes(&decision),
        [
            "over_per_request",
            "destination_denied",
            "outside_hours",
            "needs_approvals"
        ]
    );
    let json = serde_json::to_value(&decision).unwrap();
    assert_eq!(json["verdict"], "deny");
    assert_eq!(json["reasons"][0]["code"], "over_per_request");
    assert_eq!(
        json["reasons"][0]["message"],
        decision.reasons[0].to_string()
    );
}

#[test]
fn a_closure_can_serve_as_spend_history() {
    let policy = example();
    let tenth = eth(1) / U256::from(10u8);
    let request = new_request(
        &policy,
        HOT_KEY,
        eth_transfer(DEPOSIT, tenth * U256::from(4u8)),
        MONDAY_10AM,
    );
    let approvals = approve(&request, &["bob"]);
    let hot = key_id(HOT_KEY);
    // 1.8 ETH already spent on this key within the hour: 0.4 more exceeds 2 ETH per hour.
    let history = move |key: tessera_wire::KeyId, asset: &Asset, since: u64| {
        if key == hot && *asset == (Asset::Native { chain_id: 1 }) && since == MONDAY_10AM - 3600 {
            tenth * U256::from(18u8)
        } else {
            U256::ZERO
        }
    };
    let decision = evaluate(&policy, &request, &approvals, &history, MONDAY_10AM);
    assert_eq!(codes(&decision), ["over_window"]);
    let none = |_: tessera_wire::KeyId, _: &Asset, _: u64| U256::ZERO;
    assert!(evaluate(&policy, &request, &approvals, &none, MONDAY_10AM).is_allowed());
}
