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
            to: tessera_policy::Destination::Ethereum(DEPOSIT),
        }
    );
    assert_eq!(
        usdc_to_deposit.spends(),
        vec![(usdc(), U256::from(500 * USDC_UNIT))]
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

    // The same call with ETH attached, a trailing byte or a dirty address word: what moves
    // cannot be told for sure, so it is refused, never a zero-value contract call that token
    // limits and destination lists would not see.
    let mut long = erc20_transfer_input(DEPOSIT, U256::from(5u8));
    long.push(0);
    let mut dirty = erc20_transfer_input(DEPOSIT, U256::from(5u8));
    dirty[15] = 1;
    for (value, input, says) in [
        (
            U256::from(1u8),
            erc20_transfer_input(DEPOSIT, U256::from(5u8)),
            "also sends 1 wei",
        ),
        (U256::ZERO, long, "65 bytes instead of 64"),
        (U256::ZERO, dirty, "non-zero padding"),
    ] {
        let payload = Payload::EthereumTx {
            raw: eip1559(addr(USDC), value, input),
        };
        let err = derive(&payload).unwrap_err();
        assert!(
            matches!(
                err,
                tessera_policy::PolicyError::AmbiguousTokenTransfer { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(says), "{err}");
        // No request can be made with it; one that carries it anyway (made up by a
        // coordinator) is denied as invalid, on the coordinator and every node.
        let mut request = new_request(
            &example(),
            TREASURY_KEY,
            usdc_transfer(DEPOSIT, 5),
            MONDAY_10AM,
        );
        request.payload = payload;
        let decision = run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM);
        assert_eq!(decision.verdict, Verdict::Deny);
        assert_eq!(codes(&decision), ["invalid_request"]);
    }
    // transferFrom(from, to, amount) moves `amount` of the token to `to`: a transfer, with
    // the limits and destination lists applied to `to`.
    let mut transfer_from = tessera_policy::ERC20_TRANSFER_FROM_SELECTOR.to_vec();
    transfer_from.extend_from_slice(&[0u8; 12]);
    transfer_from.extend_from_slice(&addr(DEAD));
    transfer_from.extend_from_slice(&erc20_transfer_input(DEPOSIT, U256::from(7u8))[4..]);
    let derived = derive(&Payload::EthereumTx {
        raw: eip1559(addr(USDC), U256::ZERO, transfer_from.clone()),
    })
    .unwrap();
    assert_eq!(
        derived.action,
        Action::Transfer {
            asset: usdc(),
            amount: U256::from(7u8),
            to: tessera_policy::Destination::Ethereum(DEPOSIT),
        }
    );
    let to_dead = {
        let mut input = transfer_from[..36].to_vec();
        input.extend_from_slice(&[0u8; 12]);
        input.extend_from_slice(&addr(DEAD));
        input.extend_from_slice(&U256::from(7u8).to_be_bytes::<32>());
        input
    };
    let request = new_request(
        &example(),
        TREASURY_KEY,
        Payload::EthereumTx {
            raw: eip1559(addr(USDC), U256::ZERO, to_dead),
        },
        MONDAY_10AM,
    );
    let decision = run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM);
    assert!(
        codes(&decision).contains(&"destination_denied"),
        "{:?}",
        codes(&decision)
    );
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
            to: tessera_policy::Destination::Ethereum(DEPOSIT),
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
    assert!(message.spends().is_empty());
    assert_eq!(message.max_fee, None);
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
    assert_eq!(
        codes(&decision),
        ["not_signed_by_submitter", "needs_approvals"]
    );
    assert!(decision.reasons[0].to_string().contains("'alice'"));
    assert_eq!(
        decision.reasons[1].to_string(),
        "needs 2 approvals by approver from rule 'treasury transfers', has 0"
    );

    // The submitter's signature shows they asked for it, and counts as no approval.
    let alice = approve(&request, &[]);
    let decision = run(&request, &alice, MONDAY_10AM);
    assert_eq!(codes(&decision), ["needs_approvals"]);
    assert!(decision.approved_by.is_empty());

    // Every approval there, but not the submitter's signature: whoever relayed the request
    // cannot make it up in the submitter's name.
    let unsigned = &approve(&request, &["bob", "carol"])[..2];
    let decision = run(&request, unsigned, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Pending);
    assert_eq!(codes(&decision), ["not_signed_by_submitter"]);
    assert_eq!(decision.approved_by, ["bob", "carol"]);
    // A signature in the submitter's name by another key does not verify.
    let mut forged = unsigned.to_vec();
    forged.push(Approval::sign(
        &request.request_digest(),
        "alice",
        &key("bob"),
    ));
    let decision = run(&request, &forged, MONDAY_10AM);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(
        codes(&decision),
        ["bad_approval", "not_signed_by_submitter"]
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
        "amount 10000000000000000001 of eth:1 (base units; for the native coin, the value plus \
         the maximum fee) exceeds the per-request limit 10000000000000000000 of rule 'treasury \
         transfers'"
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
            for (asset, amount) in request.check().unwrap().spends() {
                history.record(treasury, asset, now, amount);
            }
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
        let approvals = &approve(&request, &["bob", "carol"])[..2];
        assert_eq!(codes(&run(&request, approvals, MONDAY_10AM)), [code]);
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
        approvals[2].clone(),
    ];
    let decision = run(&request, &forged, MONDAY_10AM);
    assert_eq!(codes(&decision), ["bad_approval", "needs_approvals"]);
    assert_eq!(decision.verdict, Verdict::Deny, "deny dominates pending");
    assert!(decision.reasons[0].to_string().contains("'carol'"));

    // The same approver twice.
    let twice = vec![
        approvals[0].clone(),
        approvals[0].clone(),
        approvals[2].clone(),
    ];
    let decision = run(&request, &twice, MONDAY_10AM);
    assert_eq!(codes(&decision), ["duplicate_approval", "needs_approvals"]);
    assert!(decision.reasons[0].to_string().contains("'bob'"));

    // The submitter signing twice.
    let mut own = approvals.clone();
    own.push(approvals[2].clone());
    let decision = run(&request, &own, MONDAY_10AM);
    assert_eq!(codes(&decision), ["duplicate_approval"]);
    assert!(decision.reasons[0].to_string().contains("'alice'"));

    // More approvals than principals.
    let flood = vec![approvals[0].clone(); 8];
    let decision = run(&request, &flood, MONDAY_10AM);
    assert_eq!(
        codes(&decision),
        [
            "too_many_approvals",
            "not_signed_by_submitter",
            "needs_approvals"
        ]
    );
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
        [
            "bad_approval",
            "bad_approval",
            "bad_approval",
            "not_signed_by_submitter",
            "needs_approvals"
        ]
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
            "not_signed_by_submitter",
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

#[test]
fn the_maximum_fee_counts_toward_the_native_limits_and_its_cap() {
    let native = Asset::Native { chain_id: 1 };
    // 21,000 gas at up to 100 gwei: at most 0.0021 ETH in fees.
    let fee = U256::from(21_000u64 * 100_000_000_000);
    let paying = |value: U256, input: Vec<u8>, to: [u8; 20]| Payload::EthereumTx {
        raw: eip1559_paying(to, value, input, 21_000, 100_000_000_000),
    };
    // A native transfer spends its value plus its maximum fee.
    let derived = derive(&paying(eth(1), vec![], DEPOSIT)).unwrap();
    assert_eq!(derived.max_fee, Some((native, fee)));
    assert_eq!(derived.spends(), vec![(native, eth(1) + fee)]);
    // So a transfer of exactly the per-request limit is over it once the fee is added...
    let request = new_request(
        &example(),
        TREASURY_KEY,
        paying(eth(10), vec![], DEPOSIT),
        MONDAY_10AM,
    );
    let decision = run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM);
    assert_eq!(codes(&decision), ["over_per_request"]);
    assert!(
        decision.reasons[0]
            .to_string()
            .contains(&(eth(10) + fee).to_string()),
        "{}",
        decision.reasons[0]
    );
    // ...and one that leaves room for the fee is not.
    let request = new_request(
        &example(),
        TREASURY_KEY,
        paying(eth(10) - fee, vec![], DEPOSIT),
        MONDAY_10AM,
    );
    assert!(run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM).is_allowed());

    // A token transfer spends the token and pays its fee in ETH: both are limited, and the
    // fee fills the ETH window like any ETH.
    let usdc_paid = paying(
        U256::ZERO,
        erc20_transfer_input(DEPOSIT, U256::from(5 * USDC_UNIT)),
        addr(USDC),
    );
    let derived = derive(&usdc_paid).unwrap();
    assert_eq!(
        derived.spends(),
        vec![(native, fee), (usdc(), U256::from(5 * USDC_UNIT))]
    );
    let request = new_request(&example(), TREASURY_KEY, usdc_paid, MONDAY_10AM);
    let approvals = approve(&request, &["bob", "carol"]);
    let mut history = MapHistory::default();
    history.record(
        key_id(TREASURY_KEY),
        native,
        MONDAY_10AM - 60,
        eth(50) - fee,
    );
    assert!(evaluate(&example(), &request, &approvals, &history, MONDAY_10AM).is_allowed());
    history.record(
        key_id(TREASURY_KEY),
        native,
        MONDAY_10AM - 30,
        U256::from(1u8),
    );
    let decision = evaluate(&example(), &request, &approvals, &history, MONDAY_10AM);
    assert_eq!(codes(&decision), ["over_window"]);
    assert!(decision.reasons[0].to_string().contains("of eth:1"));

    // The rule's fee cap (0.05 ETH in the example): a gas limit of 1,000,000 at 100 gwei is
    // 0.1 ETH, refused even though the value is small.
    let greedy = Payload::EthereumTx {
        raw: eip1559_paying(DEPOSIT, eth(1), vec![], 1_000_000, 100_000_000_000),
    };
    let request = new_request(&example(), TREASURY_KEY, greedy, MONDAY_10AM);
    let decision = run(&request, &approve(&request, &["bob", "carol"]), MONDAY_10AM);
    assert_eq!(codes(&decision), ["over_fee_cap"]);
    assert_eq!(
        decision.reasons[0].to_string(),
        "the maximum fee 100000000000000000 of eth:1 (gas limit times the most paid per gas) \
         exceeds the fee cap 50000000000000000 of rule 'treasury transfers': lower the gas \
         limit or the fee per gas"
    );
}

#[test]
fn a_fee_cap_is_set_on_the_native_coin_only() {
    let text = EXAMPLE.replace(
        "window_secs = 86400\n\n[rules.destinations]",
        "window_secs = 86400\nmax_fee = \"1\"\n\n[rules.destinations]",
    );
    assert_ne!(
        text, EXAMPLE,
        "the USDC limit is followed by the destinations"
    );
    let err = tessera_policy::PolicyDocument::from_toml(text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_fee applies to the chain's native coin"),
        "{err}"
    );
}

#[test]
fn destination_lists_can_name_one_chain() {
    let deposit = format!("0x{}", hex::encode(DEPOSIT));
    let with = |destinations: &str| {
        let text = EXAMPLE.replace(
            r#"deny = ["0x000000000000000000000000000000000000dEaD"]"#,
            destinations,
        );
        assert_ne!(text, EXAMPLE);
        tessera_policy::PolicyDocument::from_toml(text.as_bytes())
    };
    let on_chain_1 = |policy: &tessera_policy::PolicyDocument| {
        let request = new_request(
            policy,
            TREASURY_KEY,
            eth_transfer(DEPOSIT, eth(1)),
            MONDAY_10AM,
        );
        let approvals = approve(&request, &["bob", "carol"]);
        evaluate(
            policy,
            &request,
            &approvals,
            &MapHistory::default(),
            MONDAY_10AM,
        )
    };
    // Denied on its chain, not on another.
    let policy = with(&format!(r#"deny = ["eth:1:{deposit}"]"#)).unwrap();
    assert_eq!(codes(&on_chain_1(&policy)), ["destination_denied"]);
    let policy = with(&format!(r#"deny = ["eth:5:{deposit}"]"#)).unwrap();
    assert!(on_chain_1(&policy).is_allowed());
    // An allow list for another chain only lets nothing through on this one.
    let policy = with(&format!(r#"allow = ["eth:5:{deposit}"]"#)).unwrap();
    assert_eq!(codes(&on_chain_1(&policy)), ["destination_not_allowed"]);
    let policy = with(&format!(r#"allow = ["eth:1:{deposit}"]"#)).unwrap();
    assert!(on_chain_1(&policy).is_allowed());
    // An entry without a chain holds on every chain, as before.
    let policy = with(&format!(r#"deny = ["{deposit}"]"#)).unwrap();
    assert_eq!(codes(&on_chain_1(&policy)), ["destination_denied"]);
    // Malformed entries and contradictions are refused with what to write.
    for (bad, says) in [
        (format!(r#"deny = ["eth:0:{deposit}"]"#), "positive number"),
        (format!(r#"deny = ["eth:x:{deposit}"]"#), "positive number"),
        (
            r#"deny = ["eth:1"]"#.to_owned(),
            "eth:<chain id>:0x<address>",
        ),
        (
            format!(r#"deny = ["eth:1:{deposit}", "eth:1:{deposit}"]"#),
            "twice",
        ),
        (
            format!("allow = [\"eth:1:{deposit}\"]\ndeny = [\"eth:1:{deposit}\"]"),
            "both allowed and denied",
        ),
    ] {
        let err = with(&bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
