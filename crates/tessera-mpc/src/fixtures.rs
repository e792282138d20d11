//! INSECURE test fixtures: pre-generated primes and a pre-generated 2-of-3 committee, so tests
//! skip the slow parts of the protocols. Public data: never use for real keys. Production code
//! never calls this module.

use serde::{Deserialize, Serialize};
use tessera_wire::PartyId;

use crate::{KeyShare, PrimeSet};

/// The fixture primes, re-checked for size (serde alone checks nothing).
pub fn insecure_test_primes() -> Vec<PrimeSet> {
    let sets: Vec<PrimeSet> =
        serde_json::from_str(include_str!("../fixtures/INSECURE-test-primes.json"))
            .expect("fixture primes parse");
    sets.into_iter()
        .map(|p| {
            PrimeSet::try_from(p.into_primes())
                .unwrap_or_else(|_| panic!("fixture primes too small"))
        })
        .collect()
}

/// A committee's key shares, as stored in a fixture file.
#[derive(Serialize, Deserialize)]
pub struct CommitteeFixture {
    /// Parties in key-generation order.
    pub committee: Vec<PartyId>,
    /// Signers needed.
    pub threshold: u16,
    /// One share per party, in committee order.
    pub shares: Vec<KeyShare>,
}

/// The fixture 2-of-3 committee (p1, p2, p3).
pub fn insecure_committee_2of3() -> CommitteeFixture {
    serde_json::from_str(include_str!("../fixtures/INSECURE-2of3-committee.json"))
        .expect("fixture committee parses and validates")
}

/// The fixture 3-of-5 committee (p1 to p5).
pub fn insecure_committee_3of5() -> CommitteeFixture {
    serde_json::from_str(include_str!("../fixtures/INSECURE-3of5-committee.json"))
        .expect("fixture committee parses and validates")
}
