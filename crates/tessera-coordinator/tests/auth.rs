//! Signed API requests and role checks (`tessera_coordinator::auth`), with real keys: the
//! development policy's Ed25519 principals and an Ethereum-address principal.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tessera_coordinator::auth::{
    authenticate, canonical_request, permitted, request_digest, require, sign_request, ApiRequest,
    AuthError, Caller, MemoryNonces, NonceStore, Permission, SignedHeaders, API_LABEL,
    HEADER_CONTENT_SHA256, HEADER_NONCE, HEADER_PRINCIPAL, HEADER_SIGNATURE, HEADER_TIMESTAMP,
    MAX_BODY_BYTES, MAX_SKEW_SECS, NONCE_TTL_SECS,
};
use tessera_coordinator::{Store, StoreError};
use tessera_policy::dev::DevPolicy;
use tessera_policy::{OperatorKey, PolicyDocument, Role};

const NOW: u64 = 1_750_000_000;
const METHOD: &str = "POST";
const TARGET: &str = "/v1/requests?key=5f0a3c1e&limit=10";
const BODY: &[u8] = br#"{"payload":{"message":"68656c6c6f"}}"#;

/// A signer: a principal's name and secret key.
struct Signer {
    name: &'static str,
    key: OperatorKey,
    roles: BTreeSet<Role>,
}

/// A policy with two Ed25519 admins and two Ethereum-address principals, one of them an
/// operator and approver.
struct EthPolicy {
    document: PolicyDocument,
    eth: Signer,
    ada: Signer,
}

fn eth_policy() -> EthPolicy {
    let eth = Signer {
        name: "erin.eth",
        key: OperatorKey::generate_ethereum(),
        roles: [Role::Operator, Role::Approver].into(),
    };
    let ada = Signer {
        name: "ada",
        key: OperatorKey::generate_ed25519(),
        roles: [Role::Admin].into(),
    };
    let abe = OperatorKey::generate_ed25519();
    let other_eth = OperatorKey::generate_ethereum();
    let text = format!(
        r#"
version = 1
revision = 1

[admin]
approvals = 1

[[principals]]
name = "{}"
roles = ["operator", "approver"]
key = "{}"

[[principals]]
name = "{}"
roles = ["admin"]
key = "{}"

[[principals]]
name = "abe"
roles = ["admin", "auditor"]
key = "{}"

[[principals]]
name = "frank.eth"
roles = ["auditor"]
key = "{}"

[[rules]]
name = "messages"
keys = ["*"]
kinds = ["message"]
approvals = {{ count = 0 }}
"#,
        eth.name,
        eth.key.public(),
        ada.name,
        ada.key.public(),
        abe.public(),
        other_eth.public(),
    );
    assert!(eth.key.public().to_string().starts_with("eth:0x"));
    let document = PolicyDocument::from_toml(text.as_bytes()).expect("test policy");
    EthPolicy { document, eth, ada }
}

/// Owned headers, borrowed as the `(name, value)` slice an [`ApiRequest`] takes.
#[derive(Clone)]
struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    fn from(signed: &SignedHeaders) -> Headers {
        Headers(
            signed
                .iter()
                .map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn set(mut self, name: &str, value: impl AsRef<[u8]>) -> Headers {
        for (n, v) in &mut self.0 {
            if n == name {
                *v = value.as_ref().to_vec();
            }
        }
        self
    }

    fn without(mut self, name: &str) -> Headers {
        self.0.retain(|(n, _)| n != name);
        self
    }

    fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Headers {
        self.0.push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn pairs(&self) -> Vec<(&str, &[u8])> {
        self.0
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect()
    }
}

/// A request to authenticate, owned.
#[derive(Clone)]
struct Req {
    method: String,
    target: String,
    headers: Headers,
    body: Vec<u8>,
}

impl Req {
    fn signed(signer: &Signer, now: u64) -> Req {
        let headers = sign_request(&signer.key, signer.name, METHOD, TARGET, BODY, now);
        Req {
            method: METHOD.into(),
            target: TARGET.into(),
            headers: Headers::from(&headers),
            body: BODY.to_vec(),
        }
    }

    async fn run(
        &self,
        policy: &PolicyDocument,
        nonces: &dyn NonceStore,
        now: u64,
    ) -> Result<Caller, AuthError> {
        let pairs = self.headers.pairs();
        let request = ApiRequest {
            method: &self.method,
            path_and_query: &self.target,
            headers: &pairs,
            body: &self.body,
        };
        authenticate(&request, policy, nonces, now).await
    }
}

/// A nonce store that records every call and then defers to a [`MemoryNonces`].
#[derive(Default)]
struct Spy {
    calls: Mutex<Vec<(String, String, u64)>>,
    inner: MemoryNonces,
}

impl Spy {
    fn calls(&self) -> Vec<(String, String, u64)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl NonceStore for Spy {
    async fn remember(
        &self,
        principal: &str,
        nonce: &str,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        self.calls
            .lock()
            .unwrap()
            .push((principal.into(), nonce.into(), expires_at));
        self.inner.remember(principal, nonce, expires_at).await
    }
}

fn dev() -> (DevPolicy, Signer) {
    let dev = DevPolicy::generate().expect("development policy");
    let olivia = Signer {
        name: "olivia",
        key: OperatorKey::from_json(&dev.operator.key.to_json()).unwrap(),
        roles: [Role::Operator].into(),
    };
    (dev, olivia)
}

#[test]
fn the_canonical_text_is_fixed() {
    let nonce = "00112233445566778899aabbccddeeff";
    let text = canonical_request("POST", "/v1/requests?a=1&b=2", 1_700_000_000, nonce, b"{}");
    assert_eq!(
        text,
        "tessera/api-request/v1\nPOST\n/v1/requests?a=1&b=2\n1700000000\n\
         00112233445566778899aabbccddeeff\n\
         44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let empty = canonical_request("GET", "/v1/keys", 5, nonce, b"");
    assert!(empty.ends_with(
        "\nGET\n/v1/keys\n5\n00112233445566778899aabbccddeeff\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ));
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
    assert_eq!(
        request_digest("POST", "/v1/requests?a=1&b=2", 1_700_000_000, nonce, b"{}"),
        digest
    );
    assert_eq!(API_LABEL, b"tessera/api-request/v1");
}

#[test]
fn signed_headers_have_the_documented_form() {
    let (_dev, olivia) = dev();
    let a = sign_request(&olivia.key, "olivia", "GET", "/v1/keys", b"", NOW);
    let b = sign_request(&olivia.key, "olivia", "GET", "/v1/keys", b"", NOW);
    assert_eq!(a.principal, "olivia");
    assert_eq!(a.timestamp, NOW.to_string());
    assert_eq!(a.nonce.len(), 32);
    assert!(a
        .nonce
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_ne!(a.nonce, b.nonce, "a fresh nonce per request");
    assert_eq!(a.signature.len(), 128);
    let names: Vec<&str> = a.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            HEADER_PRINCIPAL,
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
            HEADER_CONTENT_SHA256
        ]
    );
    // The declared body hash is the SHA-256 the signature covers.
    assert_eq!(
        a.content_sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let eth = OperatorKey::generate_ethereum();
    assert_eq!(
        sign_request(&eth, "e", "GET", "/", b"", NOW)
            .signature
            .len(),
        130
    );
}

#[tokio::test]
async fn good_requests_authenticate_with_their_roles() {
    let (dev, olivia) = dev();
    let nonces = MemoryNonces::new();
    let caller = Req::signed(&olivia, NOW)
        .run(&dev.document, &nonces, NOW)
        .await
        .unwrap();
    assert_eq!(caller.name, "olivia");
    assert_eq!(caller.roles, olivia.roles);
    assert!(caller.has_role(Role::Operator));

    let policy = eth_policy();
    for signer in [&policy.eth, &policy.ada] {
        let caller = Req::signed(signer, NOW)
            .run(&policy.document, &nonces, NOW)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", signer.name));
        assert_eq!(caller.name, signer.name);
        assert_eq!(caller.roles, signer.roles);
    }

    // GET without a body, header names in any case, other headers ignored, timestamp at the
    // edges of the window.
    for (signed_at, now) in [
        (NOW, NOW),
        (NOW - MAX_SKEW_SECS, NOW),
        (NOW + MAX_SKEW_SECS, NOW),
    ] {
        let signed = sign_request(
            &policy.eth.key,
            policy.eth.name,
            "GET",
            "/v1/keys",
            b"",
            signed_at,
        );
        let mut headers: Vec<(String, Vec<u8>)> = signed
            .iter()
            .map(|(n, v)| (n.to_uppercase(), v.as_bytes().to_vec()))
            .collect();
        headers.insert(0, ("content-type".into(), b"application/json".to_vec()));
        let req = Req {
            method: "GET".into(),
            target: "/v1/keys".into(),
            headers: Headers(headers),
            body: vec![],
        };
        let caller = req.run(&policy.document, &nonces, now).await.unwrap();
        assert_eq!(caller.name, "erin.eth");
    }
}

#[tokio::test]
async fn any_tampering_fails_the_signature_and_uses_up_no_nonce() {
    let (dev, olivia) = dev();
    let policy = eth_policy();
    let cases: [(&str, &PolicyDocument, &Signer, &str); 2] = [
        ("ed25519", &dev.document, &olivia, "ana"),
        ("ethereum", &policy.document, &policy.eth, "ada"),
    ];
    for (kind, document, signer, other_principal) in cases {
        let good = Req::signed(signer, NOW);
        let ts = |r: &Req| -> u64 {
            let h = r
                .headers
                .0
                .iter()
                .find(|(n, _)| n == HEADER_TIMESTAMP)
                .unwrap();
            std::str::from_utf8(&h.1).unwrap().parse().unwrap()
        };
        let tampered: Vec<(&str, Req)> = vec![
            (
                "method",
                Req {
                    method: "PUT".into(),
                    ..good.clone()
                },
            ),
            (
                "path",
                Req {
                    target: TARGET.replace("/v1/requests", "/v1/requestz"),
                    ..good.clone()
                },
            ),
            (
                "query",
                Req {
                    target: TARGET.replace("limit=10", "limit=11"),
                    ..good.clone()
                },
            ),
            (
                "query dropped",
                Req {
                    target: "/v1/requests".into(),
                    ..good.clone()
                },
            ),
            (
                "body",
                Req {
                    body: BODY
                        .iter()
                        .map(|b| if *b == b'6' { b'7' } else { *b })
                        .collect(),
                    ..good.clone()
                },
            ),
            (
                "body emptied",
                Req {
                    body: vec![],
                    ..good.clone()
                },
            ),
            (
                "timestamp",
                Req {
                    headers: good
                        .headers
                        .clone()
                        .set(HEADER_TIMESTAMP, (ts(&good) + 1).to_string()),
                    ..good.clone()
                },
            ),
            (
                "nonce",
                Req {
                    headers: good
                        .headers
                        .clone()
                        .set(HEADER_NONCE, "0123456789abcdef0123456789abcdef"),
                    ..good.clone()
                },
            ),
            (
                "principal",
                Req {
                    headers: good.headers.clone().set(HEADER_PRINCIPAL, other_principal),
                    ..good.clone()
                },
            ),
            (
                "signature by another key",
                Req {
                    headers: good.headers.clone().set(HEADER_SIGNATURE, {
                        let other = if kind == "ed25519" {
                            OperatorKey::generate_ed25519()
                        } else {
                            OperatorKey::generate_ethereum()
                        };
                        sign_request(&other, signer.name, METHOD, TARGET, BODY, NOW).signature
                    }),
                    ..good.clone()
                },
            ),
        ];
        let spy = Spy::default();
        for (what, req) in tampered {
            // A changed body no longer matches the hash its header declares; without the
            // header, the signature must cover the body's own hash, and does not.
            if what.starts_with("body") {
                let err = req.clone().run(document, &spy, NOW).await.unwrap_err();
                assert!(
                    matches!(&err, AuthError::BodyMismatch),
                    "{kind}, {what}: {err:?}"
                );
                assert_eq!(err.status(), 400);
                let undeclared = Req {
                    headers: req.headers.clone().without(HEADER_CONTENT_SHA256),
                    ..req
                };
                let err = undeclared.run(document, &spy, NOW).await.unwrap_err();
                assert!(
                    matches!(&err, AuthError::BadSignature(_)),
                    "{kind}, {what} without its declared hash: {err:?}"
                );
                continue;
            }
            let err = req.run(document, &spy, NOW).await.unwrap_err();
            assert!(
                matches!(&err, AuthError::BadSignature(_)),
                "{kind}, {what}: {err:?}"
            );
            assert_eq!(err.status(), 401);
        }
        assert!(spy.calls().is_empty(), "{kind}: {:?}", spy.calls());

        // The genuine request still goes through: its nonce was not used up.
        let caller = good.run(document, &spy, NOW).await.unwrap();
        assert_eq!(caller.name, signer.name);
        let nonce = good
            .headers
            .0
            .iter()
            .find(|(n, _)| n == HEADER_NONCE)
            .unwrap();
        assert_eq!(
            spy.calls(),
            [(
                signer.name.to_owned(),
                String::from_utf8(nonce.1.clone()).unwrap(),
                NOW + NONCE_TTL_SECS
            )]
        );
    }
}

#[tokio::test]
async fn unknown_principals_are_refused_without_detail() {
    let (dev, _) = dev();
    let stranger = Signer {
        name: "mallory",
        key: OperatorKey::generate_ed25519(),
        roles: BTreeSet::new(),
    };
    let spy = Spy::default();
    let err = Req::signed(&stranger, NOW)
        .run(&dev.document, &spy, NOW)
        .await
        .unwrap_err();
    // The same answer as a bad signature by a principal.
    assert!(
        matches!(&err, AuthError::BadSignature(n) if n == "mallory"),
        "{err:?}"
    );
    assert_eq!(err.status(), 401);
    assert!(
        err.to_string()
            .starts_with("the request signature does not verify for principal 'mallory'"),
        "{err}"
    );
    assert!(spy.calls().is_empty());
}

#[tokio::test]
async fn missing_and_malformed_headers_are_named() {
    let (dev, olivia) = dev();
    let good = Req::signed(&olivia, NOW);
    let spy = Spy::default();

    for header in [
        HEADER_PRINCIPAL,
        HEADER_TIMESTAMP,
        HEADER_NONCE,
        HEADER_SIGNATURE,
    ] {
        let req = Req {
            headers: good.headers.clone().without(header),
            ..good.clone()
        };
        let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::Missing(h) if h == header),
            "{header}: {err:?}"
        );
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains(header), "{err}");
    }
    // No headers at all: the first is named.
    let req = Req {
        headers: Headers(vec![]),
        ..good.clone()
    };
    let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::Missing(HEADER_PRINCIPAL)),
        "{err:?}"
    );

    let long_sig = "ab".repeat(66);
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        (HEADER_PRINCIPAL, b"".to_vec()),
        (HEADER_PRINCIPAL, b"olivia!".to_vec()),
        (HEADER_PRINCIPAL, "x".repeat(65).into_bytes()),
        (HEADER_PRINCIPAL, "oliv\u{ef}a".as_bytes().to_vec()),
        (HEADER_PRINCIPAL, b"olivia ".to_vec()),
        (HEADER_TIMESTAMP, b"".to_vec()),
        (HEADER_TIMESTAMP, b"abc".to_vec()),
        (HEADER_TIMESTAMP, format!("+{NOW}").into_bytes()),
        (HEADER_TIMESTAMP, format!("0{NOW}").into_bytes()),
        (HEADER_TIMESTAMP, format!("{NOW}.5").into_bytes()),
        (HEADER_TIMESTAMP, b"-1".to_vec()),
        (HEADER_TIMESTAMP, b"18446744073709551616".to_vec()),
        (HEADER_NONCE, b"".to_vec()),
        (HEADER_NONCE, b"0123456789abcdef".to_vec()),
        (HEADER_NONCE, b"0123456789abcdef0123456789abcdef0".to_vec()),
        (HEADER_NONCE, b"0123456789ABCDEF0123456789ABCDEF".to_vec()),
        (HEADER_NONCE, b"0123456789abcdef0123456789abcdeg".to_vec()),
        (HEADER_SIGNATURE, b"".to_vec()),
        (HEADER_SIGNATURE, "zz".repeat(64).into_bytes()),
        (HEADER_SIGNATURE, "ab".repeat(63).into_bytes()),
        (HEADER_SIGNATURE, long_sig.into_bytes()),
        (HEADER_SIGNATURE, vec![0xff; 128]),
    ];
    for (header, value) in malformed {
        let req = Req {
            headers: good.headers.clone().set(header, &value),
            ..good.clone()
        };
        let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(h, _) if *h == header),
            "{header} = {:?}: {err:?}",
            String::from_utf8_lossy(&value)
        );
        assert_eq!(err.status(), 400);
        assert!(
            err.to_string()
                .starts_with(&format!("malformed header {header}: ")),
            "{err}"
        );
    }

    // A header given twice, even with the same value, is refused (in any case).
    for header in [
        HEADER_PRINCIPAL,
        HEADER_TIMESTAMP,
        HEADER_NONCE,
        HEADER_SIGNATURE,
    ] {
        let value = good
            .headers
            .0
            .iter()
            .find(|(n, _)| n == header)
            .unwrap()
            .1
            .clone();
        let req = Req {
            headers: good.headers.clone().with(&header.to_uppercase(), value),
            ..good.clone()
        };
        let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(h, why) if *h == header && why.contains("more than once")),
            "{err:?}"
        );
    }

    // The method and target must be unambiguous in the canonical text.
    for (method, target) in [
        ("post", TARGET),
        ("", TARGET),
        ("GET\n/x", TARGET),
        ("POST", "v1/requests"),
        ("POST", "/v1/requests\n5"),
        ("POST", "/v1/a b"),
        ("POST", ""),
        ("POST", "https://coordinator.example/v1/requests"),
    ] {
        let req = Req {
            method: method.into(),
            target: target.into(),
            ..good.clone()
        };
        let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
        assert!(
            matches!(err, AuthError::InvalidRequest(_)),
            "{method:?} {target:?}: {err:?}"
        );
        assert_eq!(err.status(), 400);
    }
    assert!(spy.calls().is_empty());
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused_with_the_skew() {
    let (dev, olivia) = dev();
    let spy = Spy::default();
    let err = Req::signed(&olivia, NOW - MAX_SKEW_SECS - 1)
        .run(&dev.document, &spy, NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::Stale { skew: 61, max: 60 }),
        "{err:?}"
    );
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("61 s ago"), "{err}");
    assert!(err.to_string().contains("check your clock"), "{err}");

    let err = Req::signed(&olivia, NOW + 3600)
        .run(&dev.document, &spy, NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::FromTheFuture {
                skew: 3600,
                max: 60
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("3600 s ahead"), "{err}");
    assert!(err.to_string().contains("check your clock"), "{err}");

    // Time is checked before the principal and the signature.
    let stranger = Signer {
        name: "mallory",
        key: OperatorKey::generate_ed25519(),
        roles: BTreeSet::new(),
    };
    let err = Req::signed(&stranger, 0)
        .run(&dev.document, &spy, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Stale { .. }), "{err:?}");
    assert!(spy.calls().is_empty());
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let (dev, olivia) = dev();
    let nonces = MemoryNonces::new();
    let req = Req::signed(&olivia, NOW);
    req.run(&dev.document, &nonces, NOW).await.unwrap();
    let err = req.run(&dev.document, &nonces, NOW + 30).await.unwrap_err();
    assert!(matches!(err, AuthError::Replayed), "{err:?}");
    assert_eq!(err.status(), 401);
    assert!(err.to_string().contains("fresh random nonce"), "{err}");

    // Pruning forgets the nonce only once the timestamp itself is too old to be accepted.
    assert_eq!(nonces.prune(NOW + NONCE_TTL_SECS), 0);
    let err = req
        .run(&dev.document, &nonces, NOW + MAX_SKEW_SECS)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Replayed), "{err:?}");
    assert_eq!(nonces.prune(NOW + NONCE_TTL_SECS + 1), 1);
    assert!(nonces.is_empty());
    let err = req
        .run(&dev.document, &nonces, NOW + NONCE_TTL_SECS + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Stale { .. }), "{err:?}");

    // Another request by the same principal, and the same nonce by another principal, pass.
    Req::signed(&olivia, NOW)
        .run(&dev.document, &nonces, NOW)
        .await
        .unwrap();
}

#[tokio::test]
async fn replays_are_refused_through_the_sqlite_store() {
    let (dev, olivia) = dev();
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let req = Req::signed(&olivia, NOW);

    // Forgeries first: they must not use up the nonce in the database.
    let forged = Req {
        body: b"{}".to_vec(),
        ..req.clone()
    };
    let err = forged.run(&dev.document, &store, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::BodyMismatch), "{err:?}");
    let forged = Req {
        headers: forged.headers.clone().without(HEADER_CONTENT_SHA256),
        ..forged
    };
    let err = forged.run(&dev.document, &store, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::BadSignature(_)), "{err:?}");

    let caller = req.run(&dev.document, &store, NOW).await.unwrap();
    assert_eq!(caller.name, "olivia");
    let err = req.run(&dev.document, &store, NOW + 1).await.unwrap_err();
    assert!(matches!(err, AuthError::Replayed), "{err:?}");

    // The nonce is stored until timestamp + NONCE_TTL_SECS.
    let now = i64::try_from(NOW + NONCE_TTL_SECS).unwrap();
    assert_eq!(store.prune_nonces(now).await.unwrap(), 0);
    assert_eq!(store.prune_nonces(now + 1).await.unwrap(), 1);

    // A failing database is a 503, not an authentication failure.
    store.close().await;
    let err = Req::signed(&olivia, NOW)
        .run(&dev.document, &store, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), 503);
    assert!(!err.to_string().contains("sqlite"), "{err}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_first() {
    let (dev, olivia) = dev();
    let spy = Spy::default();
    let body = vec![b'x'; MAX_BODY_BYTES + 1];
    let signed = sign_request(&olivia.key, olivia.name, METHOD, TARGET, &body, NOW);
    let req = Req {
        method: METHOD.into(),
        target: TARGET.into(),
        headers: Headers::from(&signed),
        body,
    };
    let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
    assert!(
        matches!(err, AuthError::TooLarge { size, limit } if size == MAX_BODY_BYTES + 1 && limit == MAX_BODY_BYTES),
        "{err:?}"
    );
    assert_eq!(err.status(), 413);
    // Before anything else, even without headers.
    let req = Req {
        headers: Headers(vec![]),
        method: "bad".into(),
        ..req
    };
    let err = req.run(&dev.document, &spy, NOW).await.unwrap_err();
    assert!(matches!(err, AuthError::TooLarge { .. }), "{err:?}");

    // Exactly at the limit is fine.
    let body = vec![b'x'; MAX_BODY_BYTES];
    let signed = sign_request(&olivia.key, olivia.name, METHOD, TARGET, &body, NOW);
    let req = Req {
        method: METHOD.into(),
        target: TARGET.into(),
        headers: Headers::from(&signed),
        body,
    };
    req.run(&dev.document, &spy, NOW).await.unwrap();
}

#[test]
fn authenticate_can_run_in_a_spawned_task() {
    fn assert_send<T: Send>(_: &T) {}
    let (dev, _) = dev();
    let nonces = MemoryNonces::new();
    let request = ApiRequest {
        method: "GET",
        path_and_query: "/",
        headers: &[],
        body: b"",
    };
    assert_send(&authenticate(&request, &dev.document, &nonces, NOW));
}

/// The permission matrix as documented in `src/auth/rbac.rs`: `(permission, [(role, granted)])`.
fn documented_matrix() -> Vec<(String, Vec<(Role, bool)>)> {
    let source = include_str!("../src/auth/rbac.rs");
    let rows: Vec<Vec<String>> = source
        .lines()
        .filter_map(|line| line.strip_prefix("//! |"))
        .map(|row| {
            row.trim_end_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    let (header, body) = rows.split_first().expect("the table in rbac.rs");
    assert_eq!(header[0], "Permission");
    let roles: Vec<Role> = header[1..].iter().map(|r| r.parse().unwrap()).collect();
    assert_eq!(roles, Role::ALL, "one column per role, in Role::ALL order");
    assert!(
        body[0].iter().all(|c| c.chars().all(|ch| ch == '-')),
        "separator row"
    );
    body[1..]
        .iter()
        .map(|row| {
            assert_eq!(row.len(), roles.len() + 1, "{row:?}");
            let name = row[0].trim_matches('`').to_owned();
            let cells = roles
                .iter()
                .zip(&row[1..])
                .map(|(role, cell)| {
                    let granted = match cell.as_str() {
                        "yes" => true,
                        "no" => false,
                        other => panic!("{name}/{role}: cell {other:?} is neither yes nor no"),
                    };
                    (*role, granted)
                })
                .collect();
            (name, cells)
        })
        .collect()
}

#[test]
fn every_cell_of_the_documented_matrix_holds() {
    let matrix = documented_matrix();
    let documented: Vec<&str> = matrix.iter().map(|(p, _)| p.as_str()).collect();
    let declared: Vec<String> = Permission::ALL.iter().map(|p| format!("{p:?}")).collect();
    assert_eq!(
        documented, declared,
        "one row per permission, in declaration order"
    );

    for (permission, (name, cells)) in Permission::ALL.into_iter().zip(&matrix) {
        for (role, granted) in cells {
            assert_eq!(
                permitted(&BTreeSet::from([*role]), permission),
                *granted,
                "{role} / {name}: the code and the table in rbac.rs disagree"
            );
        }
        // Several roles grant the union; none grants nothing.
        let all: BTreeSet<Role> = Role::ALL.into();
        assert_eq!(
            permitted(&all, permission),
            cells.iter().any(|(_, g)| *g),
            "{name}"
        );
        assert!(!permitted(&BTreeSet::new(), permission), "{name}");
    }
}

#[test]
fn the_matrix_keeps_its_invariants() {
    let only = |role: Role| BTreeSet::from([role]);
    for permission in Permission::ALL {
        let reads = format!("{permission:?}").starts_with("Read");
        // The auditor writes nothing and reads everything; every role reads keys, requests and
        // the policy.
        assert_eq!(
            permitted(&only(Role::Auditor), permission),
            reads,
            "{permission:?}"
        );
        // Admins read everything.
        if reads {
            assert!(permitted(&only(Role::Admin), permission), "{permission:?}");
        }
    }
    // Separation of duties: admins neither submit nor approve requests. (They may cancel one:
    // stopping a request before it is signed moves nothing.)
    for p in [Permission::SubmitRequests, Permission::ApproveRequests] {
        assert!(!permitted(&only(Role::Admin), p), "{p:?}");
    }
    assert!(permitted(&only(Role::Admin), Permission::CancelRequests));
    assert!(!permitted(
        &only(Role::Operator),
        Permission::ApproveRequests
    ));
    assert!(!permitted(
        &only(Role::Approver),
        Permission::SubmitRequests
    ));
    for p in [
        Permission::CreateKeys,
        Permission::SetupCommittees,
        Permission::ProposePolicy,
        Permission::ApprovePolicy,
    ] {
        for role in [Role::Operator, Role::Approver, Role::Auditor] {
            assert!(!permitted(&only(role), p), "{role} / {p:?}");
        }
    }
}

#[test]
fn require_names_the_caller_the_permission_and_the_roles_that_would_do() {
    let caller = Caller {
        name: "olivia".into(),
        roles: [Role::Operator].into(),
    };
    require(&caller, Permission::SubmitRequests).unwrap();
    let err = require(&caller, Permission::ApproveRequests).unwrap_err();
    assert!(
        matches!(&err, AuthError::Forbidden { name, permission: Permission::ApproveRequests } if name == "olivia"),
        "{err:?}"
    );
    assert_eq!(err.status(), 403);
    assert_eq!(
        err.to_string(),
        "principal 'olivia' may not approve or reject sign requests: that needs the approver role"
    );
    let err = require(&caller, Permission::ReadAudit).unwrap_err();
    assert_eq!(
        err.to_string(),
        "principal 'olivia' may not read the audit log: that needs one of the roles admin, auditor"
    );
    let both = Caller {
        name: "erin".into(),
        roles: [Role::Operator, Role::Approver].into(),
    };
    require(&both, Permission::ApproveRequests).unwrap();
    require(&both, Permission::SubmitRequests).unwrap();
    let nobody = Caller {
        name: "x".into(),
        roles: BTreeSet::new(),
    };
    assert!(require(&nobody, Permission::ReadPolicy).is_err());
}

#[tokio::test]
async fn an_authenticated_caller_goes_through_require() {
    let policy = eth_policy();
    let nonces = MemoryNonces::new();
    let caller = Req::signed(&policy.ada, NOW)
        .run(&policy.document, &nonces, NOW)
        .await
        .unwrap();
    require(&caller, Permission::ProposePolicy).unwrap();
    assert_eq!(
        require(&caller, Permission::SubmitRequests)
            .unwrap_err()
            .status(),
        403
    );
}

/// A policy whose one rule asks for `approvals` approvals by `roles`, among an operator, two
/// approvers, two admins and an auditor.
fn policy_with_rule(approvals: &str) -> PolicyDocument {
    policy_with(approvals, "")
}

/// As [`policy_with_rule`], with `extra` TOML (e.g. `[approver_groups]`) before the rule.
fn policy_with(approvals: &str, extra: &str) -> PolicyDocument {
    let principal = |name: &str, role: &str| {
        format!(
            "[[principals]]\nname = \"{name}\"\nroles = [\"{role}\"]\nkey = \"{}\"\n\n",
            OperatorKey::generate_ed25519().public()
        )
    };
    let mut text = String::from(
        "version = 1\nrevision = 1\nmax_request_lifetime_secs = 3600\n\n[admin]\napprovals = 1\n\n",
    );
    for (name, role) in [
        ("olivia", "operator"),
        ("ana", "approver"),
        ("ben", "approver"),
        ("ada", "admin"),
        ("abe", "admin"),
        ("aude", "auditor"),
    ] {
        text.push_str(&principal(name, role));
    }
    text.push_str(extra);
    text.push_str(&format!(
        "[[rules]]\nname = \"all\"\nkeys = [\"*\"]\nkinds = [\"message\"]\napprovals = {approvals}\n"
    ));
    PolicyDocument::from_toml(text.as_bytes()).unwrap()
}

#[test]
fn rules_the_api_can_never_serve_are_named() {
    use tessera_coordinator::auth::rbac::unservable_rules;
    // Servable: approvers approve.
    assert!(unservable_rules(&DevPolicy::generate().unwrap().document).is_empty());
    assert!(
        unservable_rules(&policy_with_rule("{ count = 2, roles = [\"approver\"] }")).is_empty()
    );
    assert!(unservable_rules(&policy_with_rule("{ count = 0 }")).is_empty());
    // Valid for the nodes, but admins and auditors cannot approve requests through the API.
    let gaps = unservable_rules(&policy_with_rule("{ count = 1, roles = [\"admin\"] }"));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0].contains("rule 'all' needs 1 approval(s)"),
        "{}",
        gaps[0]
    );
    assert!(gaps[0].contains("(none)"), "{}", gaps[0]);
    assert!(
        gaps[0].contains("only the approver role may"),
        "{}",
        gaps[0]
    );
    // Enough approvers in the roles, but `from` names only one of them.
    let gaps = unservable_rules(&policy_with_rule(
        "{ count = 2, roles = [\"approver\", \"admin\"], from = [\"ana\", \"ada\"] }",
    ));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].contains("only 1 principal(s)"), "{}", gaps[0]);
    assert!(gaps[0].contains("(ana)"), "{}", gaps[0]);
    // An approver group whose members cannot approve through the API (admins), named.
    let groups = "[approver_groups]\nboard = [\"ada\", \"abe\", \"ana\"]\n\n";
    assert!(unservable_rules(&policy_with(
        "{ count = 1, roles = [\"approver\", \"admin\"], groups = { board = 1 } }",
        groups
    ))
    .is_empty());
    let gaps = unservable_rules(&policy_with(
        "{ count = 1, roles = [\"approver\", \"admin\"], groups = { board = 2 } }",
        groups,
    ));
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].contains("group 'board'"), "{}", gaps[0]);
    assert!(gaps[0].contains("(ana)"), "{}", gaps[0]);
}
