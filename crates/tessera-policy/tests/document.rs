//! Parsing and validating policy documents.

use crate::common;

use alloy_primitives::U256;
use common::*;
use sha2::{Digest, Sha256};
use tessera_policy::document::{KeySelector, Weekday, MAX_POLICY_BYTES};
use tessera_policy::{ActionKind, Asset, PolicyDocument, PolicyError, Role};

#[test]
fn the_shipped_example_parses_with_every_field_read() {
    let policy = example();
    assert_eq!(policy.revision(), 1);
    assert_eq!(policy.description(), "Acme treasury (example)");
    assert_eq!(policy.max_request_lifetime_secs(), 86_400);
    assert_eq!(policy.admin_approvals(), 2);
    assert_eq!(policy.principals().len(), 7);
    let admins: Vec<&str> = policy
        .principals_with_role(Role::Admin)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(admins, ["dave", "erin", "frank"]);
    for name in ["alice", "bob", "carol", "dave", "erin", "frank", "grace"] {
        assert_eq!(
            policy.principal(name).unwrap().key,
            key(name).public(),
            "{name}"
        );
    }
    assert!(policy.principal("mallory").is_none());
    assert_eq!(policy.groups()["treasury"].len(), 2);

    let treasury = &policy.rules()[0];
    assert_eq!(treasury.name, "treasury transfers");
    assert_eq!(treasury.keys, [KeySelector::Group("treasury".into())]);
    assert_eq!(treasury.kinds, [ActionKind::Transfer].into());
    assert_eq!(treasury.approvals.count, 2);
    assert_eq!(treasury.approvals.roles, [Role::Approver].into());
    let eth1 = treasury.limit(&Asset::Native { chain_id: 1 }).unwrap();
    assert_eq!(eth1.per_request, eth(10));
    let window = eth1.window.as_ref().unwrap();
    assert_eq!((window.amount, window.secs), (eth(50), 86_400));
    let usdc = Asset::Erc20 {
        chain_id: 1,
        token: addr(USDC),
    };
    assert_eq!(
        treasury.limit(&usdc).unwrap().per_request,
        U256::from(1_000_000_000_000u64)
    );
    assert!(treasury.destinations.deny.contains(&addr(DEAD)));
    let hours = treasury.hours.as_ref().unwrap();
    assert_eq!((hours.from, hours.to, hours.days.len()), (8, 18, 5));
    assert!(!hours.days.contains(&Weekday::Sat));

    let hot = &policy.rules()[1];
    assert_eq!(hot.approvals.from, ["bob".into(), "frank".into()].into());
    assert_eq!(hot.destinations.allow.len(), 2);
    let sepolia = hot.limit(&Asset::Native { chain_id: 11155111 }).unwrap();
    assert!(sepolia.window.is_none());
    assert!(hot.hours.is_none());

    let rules: Vec<&str> = policy
        .rules_for(&key_id(TREASURY_KEY))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(rules, ["treasury transfers"]);
    assert_eq!(policy.rules_for(&key_id(&"ab".repeat(16))).count(), 0);
}

#[test]
fn the_hash_is_the_sha256_of_the_exact_bytes() {
    let policy = example();
    let expected: [u8; 32] = Sha256::digest(EXAMPLE.as_bytes()).into();
    assert_eq!(policy.hash().0, expected);
    assert_eq!(policy.hash().to_string(), hex::encode(expected));
    assert_eq!(policy.bytes(), EXAMPLE.as_bytes());
    // One more space is another policy.
    let spaced = format!("{EXAMPLE} ");
    let other = PolicyDocument::from_toml(spaced.as_bytes()).unwrap();
    assert_ne!(other.hash(), policy.hash());
}

/// Applies a replacement that must change the example, and returns the parse error.
fn refuse(from: &str, to: &str) -> PolicyError {
    assert!(EXAMPLE.contains(from), "the example has no {from:?}");
    let text = EXAMPLE.replacen(from, to, 1);
    match PolicyDocument::from_toml(text.as_bytes()) {
        Ok(_) => panic!("accepted after replacing {from:?} with {to:?}"),
        Err(e) => e,
    }
}

fn assert_invalid(err: PolicyError, at: &str, problem: &str) {
    match &err {
        PolicyError::Invalid { at: a, problem: p } => {
            assert!(a.contains(at), "at {a:?} does not name {at:?}: {err}");
            assert!(p.contains(problem), "problem {p:?} lacks {problem:?}");
        }
        other => panic!("expected an Invalid error at {at}, got {other}"),
    }
}

fn assert_toml(err: PolicyError, mentions: &str) {
    match &err {
        PolicyError::Toml(message) => {
            assert!(message.contains(mentions), "{message:?} lacks {mentions:?}")
        }
        other => panic!("expected a TOML error mentioning {mentions}, got {other}"),
    }
}

#[test]
fn the_version_must_be_1() {
    assert!(matches!(
        refuse("version = 1\n", "version = 2\n"),
        PolicyError::UnsupportedVersion(2)
    ));
    // A newer version with new fields is a version error, not an unknown-field error.
    assert!(matches!(
        refuse("version = 1\n", "version = 2\nshiny = true\n"),
        PolicyError::UnsupportedVersion(2)
    ));
    assert_invalid(refuse("version = 1\n", ""), "version", "missing");
}

#[test]
fn unknown_fields_and_values_are_refused() {
    assert_toml(
        refuse("revision = 1\n", "revision = 1\ncolour = 3\n"),
        "colour",
    );
    assert_toml(
        refuse(
            "kinds = [\"transfer\"]\n",
            "kinds = [\"transfer\"]\ncolor = 1\n",
        ),
        "color",
    );
    assert_toml(
        refuse(
            "per_request = \"500000000000000000\"",
            "per_requests = \"5\"",
        ),
        "per_requests",
    );
    assert_toml(
        refuse("roles = [\"auditor\"]", "roles = [\"root\"]"),
        "root",
    );
    assert_toml(
        refuse("kinds = [\"transfer\"]\n", "kinds = [\"swap\"]\n"),
        "swap",
    );
    assert_toml(refuse("revision = 1\n", "revision = -1\n"), "revision");
    assert_toml(refuse("[admin]", "[admin"), "");
}

#[test]
fn principals_are_checked() {
    assert_invalid(
        refuse("name = \"bob\"", "name = \"alice\""),
        "principal 'alice'",
        "used by another principal",
    );
    assert_invalid(
        refuse(
            "ed25519:df4faf115dddbac267fa6a4b9900e4d4430017813ca847faf68ca018ae9aa371",
            "ed25519:46EA1A1B388C92A672388804CD1482A505D62FACB554BD18F63F7F38190E37B2",
        ),
        "principal 'grace'",
        "same key as principal 'alice'",
    );
    assert_invalid(
        refuse("roles = [\"auditor\"]", "roles = []"),
        "principal 'grace'",
        "no roles",
    );
    assert_invalid(
        refuse("name = \"grace\"", "name = \"grace hopper\""),
        "principal 'grace hopper'",
        "1 to 64 characters",
    );
    assert_toml(
        refuse(
            "eth:0xEe64Ccaa4841fB30B9cfdf8cb769e17e0550a896",
            "eth:0xEe64",
        ),
        "40 hex digits",
    );
}

#[test]
fn admin_approvals_must_be_reachable() {
    assert_invalid(
        refuse("\napprovals = 2\n", "\napprovals = 3\n"),
        "admin.approvals",
        "3 admin(s)",
    );
    assert_invalid(
        refuse("\napprovals = 2\n", "\napprovals = 0\n"),
        "admin.approvals",
        "at least 1",
    );
}

#[test]
fn rule_approvals_are_checked() {
    assert_invalid(
        refuse("from = [\"bob\", \"frank\"]", "from = [\"bob\", \"zed\"]"),
        "rule 'hot wallet'",
        "'zed', who is not a principal",
    );
    assert_invalid(
        refuse("from = [\"bob\", \"frank\"]", "from = [\"bob\", \"dave\"]"),
        "rule 'hot wallet'",
        "'dave', who has none of the roles approver",
    );
    assert_invalid(
        refuse(
            "approvals = { count = 2, roles = [\"approver\"] }",
            "approvals = { count = 4, roles = [\"approver\"] }",
        ),
        "rule 'treasury transfers'",
        "only 3 principal(s)",
    );
    assert_invalid(
        refuse(
            "count = 1, roles = [\"approver\"], from = [\"bob\", \"frank\"]",
            "count = 3, roles = [\"approver\"], from = [\"bob\", \"frank\"]",
        ),
        "rule 'hot wallet'",
        "only 2 principal(s)",
    );
    assert_invalid(
        refuse(
            "approvals = { count = 2, roles = [\"approver\"] }",
            "approvals = { count = 2 }",
        ),
        "rule 'treasury transfers'",
        "roles is empty",
    );
}

#[test]
fn limits_are_checked() {
    assert_invalid(
        refuse(
            "per_request = \"10000000000000000000\"   # 10 ETH",
            "per_request = \"1e19\"",
        ),
        "rule 'treasury transfers', limit for eth:1",
        "per_request = \"1e19\" is not an amount",
    );
    assert_invalid(
        refuse(
            "per_request = \"10000000000000000000\"   # 10 ETH",
            "per_request = \"1_000\"",
        ),
        "rule 'treasury transfers', limit for eth:1",
        "not an amount",
    );
    // 2^256 does not fit.
    assert_invalid(
        refuse(
            "per_request = \"10000000000000000000\"   # 10 ETH",
            "per_request = \"115792089237316195423570985008687907853269984665640564039457584007913129639936\"",
        ),
        "limit for eth:1",
        "not an amount",
    );
    assert_invalid(
        refuse(
            "per_request = \"10000000000000000000\"   # 10 ETH",
            "per_request = \"60000000000000000000\"",
        ),
        "rule 'treasury transfers', limit for eth:1",
        "above per_window",
    );
    assert_invalid(
        refuse("window_secs = 3600", "window_secs = 0"),
        "rule 'hot wallet', limit for eth:1",
        "window_secs",
    );
    assert_invalid(
        refuse("window_secs = 3600", ""),
        "rule 'hot wallet', limit for eth:1",
        "set both or neither",
    );
    assert_invalid(
        refuse("asset = \"eth:11155111\"", "asset = \"eth:1\""),
        "rule 'hot wallet'",
        "two [[rules.limits]] for asset eth:1",
    );
    assert_invalid(
        refuse("asset = \"eth:11155111\"", "asset = \"btc:0\""),
        "rule 'hot wallet'",
        "btc:0",
    );
    // A rule that allows transfers needs limits.
    let start = EXAMPLE
        .find("[[rules.limits]]\nasset = \"eth:1\"\nper_request = \"500")
        .unwrap();
    let end = EXAMPLE.find("[rules.destinations]\nallow").unwrap();
    let text = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
    assert_invalid(
        PolicyDocument::from_toml(text.as_bytes()).unwrap_err(),
        "rule 'hot wallet'",
        "sets no [[rules.limits]]",
    );
}

#[test]
fn keys_destinations_and_hours_are_checked() {
    assert_invalid(
        refuse("keys = [\"group:treasury\"]", "keys = [\"group:vault\"]"),
        "rule 'treasury transfers'",
        "unknown group 'vault'",
    );
    assert_invalid(
        refuse(
            "keys = [\"7a2c5e3b1d9f6a4bc3e5d7f9a1b3c4d6\"]",
            "keys = [\"7a2c5e\"]",
        ),
        "rule 'hot wallet'",
        "not a key id",
    );
    assert_invalid(
        refuse("keys = [\"group:treasury\"]", "keys = []"),
        "rule 'treasury transfers'",
        "`keys` is empty",
    );
    assert_invalid(
        refuse(
            "treasury = [\"5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4\",",
            "treasury = [\"5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4\", \"5f0a3c1e9b7d4e2fa1c3b5d7e9f1a2b4\",",
        ),
        "group 'treasury'",
        "listed twice",
    );
    assert_invalid(
        refuse(
            "0x000000000000000000000000000000000000dEaD",
            "0x000000000000000000000000000000000000DeaD",
        ),
        "rule 'treasury transfers'",
        "EIP-55",
    );
    assert_invalid(
        refuse(
            "deny = [\"0x000000000000000000000000000000000000dEaD\"]",
            "deny = [\"0x000000000000000000000000000000000000dEaD\"]\nallow = [\"0x000000000000000000000000000000000000dead\"]",
        ),
        "rule 'treasury transfers'",
        "both allowed and denied",
    );
    assert_invalid(
        refuse("from = 8\nto = 18", "from = 18\nto = 18"),
        "rule 'treasury transfers'",
        "from < to",
    );
    assert_invalid(
        refuse("from = 8\nto = 18", "from = 8\nto = 25"),
        "rule 'treasury transfers'",
        "0 to 24",
    );
    assert_invalid(
        refuse(
            "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
            "days = []",
        ),
        "rule 'treasury transfers'",
        "hours.days is empty",
    );
}

#[test]
fn rules_are_required_and_unique() {
    let cut = EXAMPLE.find("# Cold treasury").unwrap();
    let err = PolicyDocument::from_toml(&EXAMPLE.as_bytes()[..cut]).unwrap_err();
    assert_invalid(err, "rules", "no [[rules]]");
    assert_invalid(
        refuse("name = \"hot wallet\"", "name = \"treasury transfers\""),
        "rule 'treasury transfers'",
        "same name",
    );
    assert_invalid(
        refuse(
            "kinds = [\"transfer\", \"contract_call\", \"message\"]",
            "kinds = []",
        ),
        "rule 'hot wallet'",
        "`kinds` is empty",
    );
    assert_invalid(
        refuse(
            "kinds = [\"transfer\", \"contract_call\", \"message\"]",
            "kinds = [\"transfer\", \"message\", \"message\"]",
        ),
        "rule 'hot wallet'",
        "listed twice",
    );
    assert_invalid(
        refuse(
            "max_request_lifetime_secs = 86400",
            "max_request_lifetime_secs = 0",
        ),
        "max_request_lifetime_secs",
        "at least 1",
    );
}

#[test]
fn defaults_apply_when_fields_are_omitted() {
    // No lifetime, no description, no kinds (defaults to transfer).
    let text = EXAMPLE
        .replacen("max_request_lifetime_secs = 86400\n", "", 1)
        .replacen("description = \"Acme treasury (example)\"\n", "", 1)
        .replacen("kinds = [\"transfer\"]\n", "", 1);
    let policy = PolicyDocument::from_toml(text.as_bytes()).unwrap();
    assert_eq!(policy.max_request_lifetime_secs(), 86_400);
    assert_eq!(policy.description(), "");
    assert_eq!(policy.rules()[0].kinds, [ActionKind::Transfer].into());
}

#[test]
fn bytes_that_are_not_a_document_are_refused() {
    assert!(matches!(
        PolicyDocument::from_toml(b"version = 1\n\xff"),
        Err(PolicyError::Toml(_))
    ));
    assert!(matches!(
        PolicyDocument::from_toml(&vec![b' '; MAX_POLICY_BYTES + 1]),
        Err(PolicyError::DocumentTooLarge { .. })
    ));
    assert!(PolicyDocument::from_toml(b"").is_err());
}
