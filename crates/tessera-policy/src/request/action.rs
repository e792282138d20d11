//! What a payload does, derived from decoding it and from nothing else.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::{checksummed, Address, TxKind, UnsignedTx};

use super::destination::Destination;
use crate::encoding::parse_address;
use crate::PolicyError;

/// The selector of ERC-20 `transfer(address,uint256)`.
pub const ERC20_TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// The selector of ERC-20 `transferFrom(address,address,uint256)`.
pub const ERC20_TRANSFER_FROM_SELECTOR: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];

/// Something a limit can be set on. Text form: `eth:<chain id>` for the chain's native coin,
/// `erc20:<chain id>:0x<token contract>` for an ERC-20 token, `btc:<network>` for bitcoin (in
/// satoshis), `sol` for SOL (in lamports; a Solana transaction names no cluster, so one limit
/// covers them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// The native coin (ETH on mainnet), in wei.
    Native {
        /// EIP-155 chain id.
        chain_id: u64,
    },
    /// An ERC-20 token, in its base units.
    Erc20 {
        /// EIP-155 chain id.
        chain_id: u64,
        /// The token contract.
        token: Address,
    },
    /// Bitcoin on a network, in satoshis.
    Bitcoin {
        /// The network.
        network: BitcoinNetwork,
    },
    /// SOL, in lamports.
    Sol,
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asset::Native { chain_id } => write!(f, "eth:{chain_id}"),
            Asset::Erc20 { chain_id, token } => {
                write!(f, "erc20:{chain_id}:{}", checksummed(token))
            }
            Asset::Bitcoin { network } => write!(f, "btc:{network}"),
            Asset::Sol => f.write_str("sol"),
        }
    }
}

fn parse_chain_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&id| id != 0)
}

impl FromStr for Asset {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let invalid = |reason: String| PolicyError::Parse {
            what: "asset",
            text: s.to_owned(),
            reason,
        };
        let bad_chain = || invalid("the chain id must be a positive decimal number".into());
        if let Some(chain) = s.strip_prefix("eth:") {
            let chain_id = parse_chain_id(chain).ok_or_else(bad_chain)?;
            Ok(Asset::Native { chain_id })
        } else if let Some(rest) = s.strip_prefix("erc20:") {
            let (chain, token) = rest
                .split_once(':')
                .ok_or_else(|| invalid("expected erc20:<chain id>:0x<token address>".into()))?;
            let chain_id = parse_chain_id(chain).ok_or_else(bad_chain)?;
            let token = parse_address(token).map_err(|e| invalid(e.to_string()))?;
            Ok(Asset::Erc20 { chain_id, token })
        } else if let Some(network) = s.strip_prefix("btc:") {
            let network = network.parse().map_err(|e| invalid(format!("{e}")))?;
            Ok(Asset::Bitcoin { network })
        } else if s == "sol" {
            Ok(Asset::Sol)
        } else {
            Err(invalid(
                "expected eth:<chain id>, erc20:<chain id>:0x<token address>, btc:<network> \
                 or sol"
                    .into(),
            ))
        }
    }
}

impl Serialize for Asset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Asset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The kind of an [`Action`], as named in a rule's `kinds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A native transfer or an ERC-20 `transfer`.
    Transfer,
    /// Any other transaction with a destination.
    ContractCall,
    /// A transaction that creates a contract.
    ContractCreation,
    /// An EIP-191 `personal_sign` message.
    Message,
    /// Raw bytes signed with an Ed25519 key (no chain's transaction format around them).
    RawMessage,
}

impl ActionKind {
    /// The name used in policy documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Transfer => "transfer",
            ActionKind::ContractCall => "contract_call",
            ActionKind::ContractCreation => "contract_creation",
            ActionKind::Message => "message",
            ActionKind::RawMessage => "raw_message",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What signing a payload does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A value transfer: native (a transaction with empty input) or an ERC-20
    /// `transfer(address,uint256)` or `transferFrom(address,address,uint256)` with zero native
    /// value, or a Solana System Program transfer.
    Transfer {
        /// What is moved.
        asset: Asset,
        /// How much, in the asset's base units.
        amount: U256,
        /// The recipient (for ERC-20: the `to` argument, not the token contract).
        to: Destination,
    },
    /// A Bitcoin transaction (a kind of transfer): what it pays to others, and what comes
    /// back to the signing key's own address (change, which is no spend).
    BitcoinTransfer {
        /// The network.
        network: BitcoinNetwork,
        /// Each output that pays anyone but the signing key, in output order, in satoshis.
        payments: Vec<(Destination, U256)>,
        /// The sum of the outputs back to the signing key, in satoshis.
        change: U256,
    },
    /// Any other transaction with a destination.
    ContractCall {
        /// EIP-155 chain id.
        chain_id: u64,
        /// The called address.
        to: Address,
        /// Native value sent with the call, in wei.
        value: U256,
        /// The first four bytes of the input, if it has at least four.
        selector: Option<[u8; 4]>,
    },
    /// Contract creation.
    ContractCreation {
        /// EIP-155 chain id.
        chain_id: u64,
        /// Native value given to the new contract, in wei.
        value: U256,
    },
    /// An EIP-191 `personal_sign` message.
    Message {
        /// Its length in bytes.
        len: usize,
    },
    /// Raw bytes signed with an Ed25519 key.
    RawMessage {
        /// Its length in bytes.
        len: usize,
    },
}

impl Action {
    /// Classifies a decoded transaction. A call with the ERC-20 `transfer` or `transferFrom`
    /// selector is a token transfer if it is canonically encoded with no native value, and
    /// refused otherwise ([`PolicyError::AmbiguousTokenTransfer`]): it is never a zero-value
    /// contract call that limits and destination lists would not see.
    pub fn of_transaction(tx: &UnsignedTx) -> Result<Action, PolicyError> {
        let chain_id = tx.chain_id();
        let value = tx.value();
        Ok(match tx.to() {
            TxKind::Create => Action::ContractCreation { chain_id, value },
            TxKind::Call(to) => {
                let input = tx.input();
                if input.is_empty() {
                    return Ok(Action::Transfer {
                        asset: Asset::Native { chain_id },
                        amount: value,
                        to: Destination::Ethereum(to),
                    });
                }
                if let Some((recipient, amount)) = erc20_transfer(input, value)? {
                    return Ok(Action::Transfer {
                        asset: Asset::Erc20 {
                            chain_id,
                            token: to,
                        },
                        amount,
                        to: Destination::Ethereum(recipient),
                    });
                }
                Action::ContractCall {
                    chain_id,
                    to,
                    value,
                    selector: input.first_chunk::<4>().copied(),
                }
            }
        })
    }

    /// Its kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Transfer { .. } | Action::BitcoinTransfer { .. } => ActionKind::Transfer,
            Action::ContractCall { .. } => ActionKind::ContractCall,
            Action::ContractCreation { .. } => ActionKind::ContractCreation,
            Action::Message { .. } => ActionKind::Message,
            Action::RawMessage { .. } => ActionKind::RawMessage,
        }
    }

    /// The EVM chain a transaction is for (`None` for messages and other chains).
    pub fn chain_id(&self) -> Option<u64> {
        match self {
            Action::Transfer { asset, .. } => match asset {
                Asset::Native { chain_id } | Asset::Erc20 { chain_id, .. } => Some(*chain_id),
                Asset::Bitcoin { .. } | Asset::Sol => None,
            },
            Action::ContractCall { chain_id, .. } | Action::ContractCreation { chain_id, .. } => {
                Some(*chain_id)
            }
            Action::BitcoinTransfer { .. } | Action::Message { .. } | Action::RawMessage { .. } => {
                None
            }
        }
    }

    /// Every destination value goes to or that is called (for Bitcoin: every output but the
    /// change), in order.
    pub fn destinations(&self) -> Vec<Destination> {
        match self {
            Action::Transfer { to, .. } => vec![to.clone()],
            Action::ContractCall { to, .. } => vec![Destination::Ethereum(*to)],
            Action::BitcoinTransfer { payments, .. } => {
                payments.iter().map(|(to, _)| to.clone()).collect()
            }
            Action::ContractCreation { .. }
            | Action::Message { .. }
            | Action::RawMessage { .. } => Vec::new(),
        }
    }

    /// What signing this spends, for limits and for recording after signing: the transfer's
    /// asset and amount, or the native value sent with a call or creation (when not zero).
    /// Messages spend nothing.
    pub fn spend(&self) -> Option<(Asset, U256)> {
        match self {
            Action::Transfer { asset, amount, .. } => Some((*asset, *amount)),
            Action::BitcoinTransfer {
                network, payments, ..
            } => Some((
                Asset::Bitcoin { network: *network },
                payments
                    .iter()
                    .fold(U256::ZERO, |sum, (_, amount)| sum.saturating_add(*amount)),
            )),
            Action::ContractCall {
                chain_id, value, ..
            }
            | Action::ContractCreation { chain_id, value } => (!value.is_zero()).then_some((
                Asset::Native {
                    chain_id: *chain_id,
                },
                *value,
            )),
            Action::Message { .. } | Action::RawMessage { .. } => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Transfer {
                asset: Asset::Sol,
                amount,
                to,
            } => write!(f, "transfer of {amount} lamports (sol) to {to}"),
            Action::Transfer { asset, amount, to } => {
                write!(f, "transfer of {amount} {asset} to {to}")
            }
            Action::BitcoinTransfer {
                network,
                payments,
                change,
            } => {
                write!(f, "bitcoin transaction on {network} paying")?;
                for (i, (to, amount)) in payments.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep} {amount} sat to {to}")?;
                }
                if payments.is_empty() {
                    f.write_str(" nobody")?;
                }
                write!(f, " ({change} sat change)")
            }
            Action::ContractCall {
                chain_id,
                to,
                value,
                selector,
            } => {
                write!(f, "call to {} on chain {chain_id}", checksummed(to))?;
                if let Some(selector) = selector {
                    write!(f, " (selector 0x{})", hex::encode(selector))?;
                }
                write!(f, " with {value} wei")
            }
            Action::ContractCreation { chain_id, value } => {
                write!(f, "contract creation on chain {chain_id} with {value} wei")
            }
            Action::Message { len } => write!(f, "personal_sign message of {len} bytes"),
            Action::RawMessage { len } => write!(f, "raw Ed25519 message of {len} bytes"),
        }
    }
}

/// An ERC-20 token transfer in `input`, as (recipient, amount): `None` if the selector is
/// neither `transfer` nor `transferFrom`. Either must be exactly the selector and its words
/// (two for `transfer(to, amount)`, three for `transferFrom(from, to, amount)`), each address
/// word's top 12 bytes zero, with no native value attached; anything else with those selectors
/// is refused.
fn erc20_transfer(input: &[u8], value: U256) -> Result<Option<(Address, U256)>, PolicyError> {
    let Some((selector, args)) = input.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let (function, words) = match *selector {
        ERC20_TRANSFER_SELECTOR => ("transfer", 2),
        ERC20_TRANSFER_FROM_SELECTOR => ("transferFrom", 3),
        _ => return Ok(None),
    };
    let refuse = |problem: String| PolicyError::AmbiguousTokenTransfer { function, problem };
    if args.len() != 32 * words {
        return Err(refuse(format!(
            "its arguments are {} bytes instead of {}",
            args.len(),
            32 * words
        )));
    }
    if !value.is_zero() {
        return Err(refuse(format!("it also sends {value} wei")));
    }
    let address = |word: &[u8]| -> Result<Address, PolicyError> {
        let (padding, address) = word.split_at(12);
        if padding.iter().any(|&b| b != 0) {
            return Err(refuse(
                "an address argument has non-zero padding".to_owned(),
            ));
        }
        Ok(address.try_into().expect("20 bytes"))
    };
    let words: Vec<&[u8]> = args.chunks_exact(32).collect();
    if words.len() == 3 {
        // `from` must be a well-formed address too; the recipient is `to`.
        address(words[0])?;
    }
    let recipient = address(words[words.len() - 2])?;
    Ok(Some((
        recipient,
        U256::from_be_slice(words[words.len() - 1]),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_round_trip_through_text() {
        let token = parse_address("0xdac17f958d2ee523a2206206994597c13d831ec7").unwrap();
        for asset in [
            Asset::Native { chain_id: 1 },
            Asset::Erc20 {
                chain_id: 137,
                token,
            },
            Asset::Bitcoin {
                network: BitcoinNetwork::Regtest,
            },
            Asset::Sol,
        ] {
            assert_eq!(asset.to_string().parse::<Asset>().unwrap(), asset);
        }
        assert_eq!(
            Asset::Erc20 { chain_id: 1, token }.to_string(),
            "erc20:1:0xdAC17F958D2ee523a2206206994597C13D831ec7"
        );
        for bad in [
            "eth:",
            "eth:0",
            "eth:-1",
            "eth:1x",
            "btc:1",
            "btc:",
            "sol:1",
            "erc20:1",
            "erc20:1:0x12",
        ] {
            assert!(bad.parse::<Asset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn erc20_transfer_input_is_strict() {
        let zero = U256::ZERO;
        let mut input = ERC20_TRANSFER_SELECTOR.to_vec();
        input.extend_from_slice(&[0u8; 12]);
        input.extend_from_slice(&[0x11; 20]);
        input.extend_from_slice(&U256::from(5u8).to_be_bytes::<32>());
        let transfer = Some(([0x11; 20], U256::from(5u8)));
        assert_eq!(erc20_transfer(&input, zero).unwrap(), transfer);
        // Not a token transfer: left to the rules on contract calls.
        let mut other = input.clone();
        other[0] = 0x09; // approve is 0x095ea7b3
        assert_eq!(erc20_transfer(&other, zero).unwrap(), None);
        assert_eq!(erc20_transfer(&[], zero).unwrap(), None);
        assert_eq!(erc20_transfer(&input[..3], zero).unwrap(), None);
        // A transfer in another shape is refused, never a zero-value call.
        let mut long = input.clone();
        long.push(0);
        let mut dirty = input.clone();
        dirty[4] = 1;
        for (bad, value, says) in [
            (&long[..], zero, "65 bytes instead of 64"),
            (&input[..67], zero, "63 bytes instead of 64"),
            (&input[..4], zero, "0 bytes instead of 64"),
            (&dirty[..], zero, "non-zero padding"),
            (&input[..], U256::from(1u8), "also sends 1 wei"),
        ] {
            let err = erc20_transfer(bad, value).unwrap_err().to_string();
            assert!(
                err.contains("ERC-20 transfer") && err.contains(says),
                "{err}"
            );
        }
        // transferFrom(from, to, amount): a transfer of `amount` to `to`.
        let mut from = ERC20_TRANSFER_FROM_SELECTOR.to_vec();
        from.extend_from_slice(&[0u8; 12]);
        from.extend_from_slice(&[0x22; 20]);
        from.extend_from_slice(&input[4..]);
        assert_eq!(erc20_transfer(&from, zero).unwrap(), transfer);
        let mut dirty_from = from.clone();
        dirty_from[5] = 9;
        let err = erc20_transfer(&dirty_from, zero).unwrap_err().to_string();
        assert!(
            err.contains("transferFrom") && err.contains("padding"),
            "{err}"
        );
        let err = erc20_transfer(&from[..99], zero).unwrap_err().to_string();
        assert!(err.contains("95 bytes instead of 96"), "{err}");
    }
}
