//! What is to be signed, and the digest and action derived from it.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use tessera_chain::{personal_message_digest, UnsignedTx};

use super::action::{Action, Asset};
use crate::PolicyError;

/// Largest unsigned transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Largest `personal_sign` message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// What a request asks to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// An unsigned Ethereum transaction (legacy EIP-155 or EIP-1559), as the bytes a wallet
    /// signs. Hex in JSON.
    EthereumTx {
        /// The unsigned transaction's canonical encoding.
        #[serde(with = "crate::encoding::bytes")]
        raw: Vec<u8>,
    },
    /// A message signed as EIP-191 `personal_sign`. Hex in JSON.
    Message {
        /// The message.
        #[serde(with = "crate::encoding::bytes")]
        bytes: Vec<u8>,
    },
}

impl Payload {
    /// Refuses payloads over [`MAX_TX_BYTES`] / [`MAX_MESSAGE_BYTES`].
    pub fn check_size(&self) -> Result<(), PolicyError> {
        let (what, len, max) = match self {
            Payload::EthereumTx { raw } => ("transaction", raw.len(), MAX_TX_BYTES),
            Payload::Message { bytes } => ("message", bytes.len(), MAX_MESSAGE_BYTES),
        };
        if len > max {
            return Err(PolicyError::TooLarge { what, len, max });
        }
        Ok(())
    }
}

/// The digest to sign and what signing it does, both derived from a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The digest the signature covers.
    pub digest: [u8; 32],
    /// What the payload does.
    pub action: Action,
    /// The most a transaction can cost in fees, in its chain's native coin (gas limit times
    /// gas price or maximum fee per gas); `None` for messages.
    pub max_fee: Option<(Asset, U256)>,
}

impl Derived {
    /// What signing spends, one entry per asset: what the action moves ([`Action::spend`])
    /// plus the maximum fee in the native coin (fees are spent whatever the transaction does).
    /// Limits and windows count these; record them once the signature is made.
    pub fn spends(&self) -> Vec<(Asset, U256)> {
        let mut spends: Vec<(Asset, U256)> = Vec::new();
        for (asset, amount) in self.action.spend().into_iter().chain(self.max_fee) {
            if amount.is_zero() {
                continue;
            }
            match spends.iter_mut().find(|(a, _)| *a == asset) {
                Some((_, sum)) => *sum = sum.saturating_add(amount),
                None => spends.push((asset, amount)),
            }
        }
        spends.sort();
        spends
    }
}

/// Decodes a payload and derives the digest to sign and its action. Transactions are decoded
/// strictly by `tessera_chain` (canonical encoding, chain id required).
pub fn derive(payload: &Payload) -> Result<Derived, PolicyError> {
    payload.check_size()?;
    match payload {
        Payload::EthereumTx { raw } => {
            let tx = UnsignedTx::decode(raw)?;
            Ok(Derived {
                digest: tx.signing_digest(),
                action: Action::of_transaction(&tx)?,
                max_fee: Some((
                    Asset::Native {
                        chain_id: tx.chain_id(),
                    },
                    tx.max_fee(),
                )),
            })
        }
        Payload::Message { bytes } => Ok(Derived {
            digest: personal_message_digest(bytes),
            action: Action::Message { len: bytes.len() },
            max_fee: None,
        }),
    }
}
