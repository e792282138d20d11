//! The canonical encoding of requests round-trips, in postcard and in JSON.

use proptest::prelude::*;
use tessera_policy::request::MAX_ENCODED_REQUEST;
use tessera_policy::{Payload, PolicyHash, SignRequest};
use tessera_wire::{KeyId, RequestId};

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|raw| Payload::EthereumTx { raw }),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|bytes| Payload::Message { bytes }),
    ]
}

prop_compose! {
    fn sign_request()(
        id in any::<[u8; 16]>(),
        key in any::<[u8; 16]>(),
        path in proptest::collection::vec(any::<u32>(), 0..20),
        payload in payload(),
        digest in any::<[u8; 32]>(),
        policy in any::<[u8; 32]>(),
        submitted_by in "[a-z0-9.@_-]{0,70}",
        created_at in any::<u64>(),
        expires_at in any::<u64>(),
    ) -> SignRequest {
        SignRequest {
            id: RequestId(id),
            key: KeyId(key),
            path,
            payload,
            digest,
            policy: PolicyHash(policy),
            submitted_by,
            created_at,
            expires_at,
        }
    }
}

proptest! {
    #[test]
    fn canonical_bytes_round_trip(request in sign_request()) {
        let bytes = request.canonical_bytes();
        prop_assert_eq!(bytes[0], tessera_wire::CODEC_VERSION);
        let back: SignRequest = tessera_wire::decode(&bytes, MAX_ENCODED_REQUEST).unwrap();
        prop_assert_eq!(&back, &request);
        // One encoding per value: re-encoding gives the same bytes and digest.
        prop_assert_eq!(back.canonical_bytes(), bytes.clone());
        prop_assert_eq!(back.request_digest(), request.request_digest());
        // Truncation or a trailing byte is refused.
        prop_assert!(SignRequest::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(SignRequest::decode(&longer).is_err());
    }

    #[test]
    fn json_round_trips(request in sign_request()) {
        let json = serde_json::to_string(&request).unwrap();
        let back: SignRequest = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, request);
    }
}
