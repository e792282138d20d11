//! The chains Tessera signs for, and a key's address on each.

use std::fmt;
use std::str::FromStr;

use crate::bitcoin::{address_of_script, p2tr_script, p2wpkh_script, BitcoinNetwork};

/// A chain Tessera signs for. Text form: `ethereum`, `bitcoin`, `solana`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chain {
    /// Ethereum and EVM chains.
    Ethereum,
    /// Bitcoin.
    Bitcoin,
    /// Solana.
    Solana,
}

impl Chain {
    /// The name used in text.
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Ethereum => "ethereum",
            Chain::Bitcoin => "bitcoin",
            Chain::Solana => "solana",
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an address could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AddressError(pub String);

impl FromStr for Chain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, AddressError> {
        [Chain::Ethereum, Chain::Bitcoin, Chain::Solana]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                AddressError(format!(
                    "unknown chain {s:?}; expected ethereum, bitcoin or solana"
                ))
            })
    }
}

/// The address on `chain` of a key as its chain sees it (`public_key`): on Ethereum the
/// address of a 33-byte SEC1 key; on Bitcoin (on `network`) the P2WPKH address of a 33-byte
/// compressed key or the P2TR address of a 32-byte x-only Taproot output key; on Solana the
/// base58 form of a 32-byte Ed25519 key. Which kind of key may have an address on which chain
/// is the caller's to check (a 32-byte key could be either Taproot or Ed25519).
pub fn address_of_key(
    public_key: &[u8],
    chain: Chain,
    network: BitcoinNetwork,
) -> Result<String, AddressError> {
    let wrong = |what: &str| {
        AddressError(format!(
            "a {}-byte key has no {chain} address: {what}",
            public_key.len()
        ))
    };
    match (chain, public_key.len()) {
        (Chain::Ethereum, 33) => crate::address(public_key)
            .map(|a| crate::checksummed(&a))
            .map_err(|e| AddressError(e.to_string())),
        (Chain::Ethereum, _) => Err(wrong("expected a 33-byte secp256k1 key")),
        (Chain::Bitcoin, 33) | (Chain::Bitcoin, 32) => {
            let script = if public_key.len() == 33 {
                p2wpkh_script(public_key)
            } else {
                p2tr_script(public_key)
            }
            .map_err(|e| AddressError(e.to_string()))?;
            address_of_script(&script, network)
                .ok_or_else(|| AddressError("the script has no address".into()))
        }
        (Chain::Bitcoin, _) => Err(wrong(
            "expected a 33-byte compressed key (P2WPKH) or a 32-byte output key (P2TR)",
        )),
        (Chain::Solana, 32) => Ok(crate::solana::address(
            public_key.try_into().expect("32 bytes"),
        )),
        (Chain::Solana, _) => Err(wrong("expected a 32-byte Ed25519 key")),
    }
}
