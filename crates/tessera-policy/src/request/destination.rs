//! Where value goes, on any chain Tessera signs for.

use std::fmt;

use tessera_chain::bitcoin::{address_of_script, script_of_address, BitcoinNetwork};
use tessera_chain::{checksummed, Address};

use crate::encoding::parse_address;
use crate::PolicyError;

/// A destination of value. Text form: `0x…` for Ethereum (every chain),
/// `btc:<network>:<address>` for Bitcoin, `sol:<base58 address>` for Solana.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// An Ethereum address.
    Ethereum(Address),
    /// A Bitcoin output script on a network (compared by script, so every spelling of an
    /// address is the same destination).
    Bitcoin {
        /// The network.
        network: BitcoinNetwork,
        /// The output script.
        script: Vec<u8>,
    },
    /// A Solana account (an Ed25519 public key).
    Solana([u8; 32]),
}

impl Destination {
    /// Reads `btc:<network>:<address>` or `sol:<base58>`; anything else is read as an
    /// Ethereum address.
    pub fn parse(text: &str) -> Result<Destination, PolicyError> {
        let invalid = |reason: String| PolicyError::Parse {
            what: "destination",
            text: text.to_owned(),
            reason,
        };
        if let Some(rest) = text.strip_prefix("btc:") {
            let (network, address) = rest
                .split_once(':')
                .ok_or_else(|| invalid("expected btc:<network>:<address>".into()))?;
            let network: BitcoinNetwork = network.parse().map_err(|e| invalid(format!("{e}")))?;
            let script = script_of_address(address, network).map_err(|e| invalid(e.to_string()))?;
            Ok(Destination::Bitcoin { network, script })
        } else if let Some(rest) = text.strip_prefix("sol:") {
            let key =
                tessera_chain::solana::parse_address(rest).map_err(|e| invalid(e.to_string()))?;
            Ok(Destination::Solana(key))
        } else {
            parse_address(text).map(Destination::Ethereum)
        }
    }

    /// The Ethereum address, if it is one.
    pub fn ethereum(&self) -> Option<&Address> {
        match self {
            Destination::Ethereum(address) => Some(address),
            _ => None,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Ethereum(address) => f.write_str(&checksummed(address)),
            Destination::Bitcoin { network, script } => match address_of_script(script, *network) {
                Some(address) => write!(f, "btc:{network}:{address}"),
                None => write!(f, "btc:{network}:script:{}", hex::encode(script)),
            },
            Destination::Solana(key) => {
                write!(f, "sol:{}", tessera_chain::solana::address(key))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_round_trip_through_text() {
        for text in [
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
            "btc:mainnet:bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "btc:regtest:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "sol:11111111111111111111111111111111",
        ] {
            let destination = Destination::parse(text).unwrap();
            assert_eq!(destination.to_string(), text);
            assert_eq!(
                Destination::parse(&destination.to_string()).unwrap(),
                destination
            );
        }
        for bad in [
            "btc:mainnet",
            "btc:bitcoin:bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "btc:regtest:bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "sol:0OIl",
            "sol:111",
            "0x12",
        ] {
            let err = Destination::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("destination") || err.contains("address"),
                "{bad}: {err}"
            );
        }
    }
}
