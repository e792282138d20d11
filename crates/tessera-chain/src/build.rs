//! Building unsigned transactions: what an operator's tooling hands to Tessera.

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Bytes, U256};

use crate::Address;

/// An EIP-1559 transaction to build, with sane defaults for a plain transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eip1559Request {
    /// The chain (e.g. 1 mainnet, 11155111 Sepolia).
    pub chain_id: u64,
    /// The sender's next nonce.
    pub nonce: u64,
    /// The recipient (or contract).
    pub to: Address,
    /// Value in wei.
    pub value: U256,
    /// Call data (empty for a plain transfer).
    pub input: Vec<u8>,
    /// Gas limit (21 000 for a plain transfer).
    pub gas_limit: u64,
    /// Maximum fee per gas, in wei.
    pub max_fee_per_gas: u128,
    /// Maximum priority fee per gas, in wei.
    pub max_priority_fee_per_gas: u128,
}

impl Eip1559Request {
    /// A plain transfer of `value` wei to `to`, with a 21 000 gas limit and 30/1.5 gwei fees.
    pub fn transfer(chain_id: u64, nonce: u64, to: Address, value: U256) -> Self {
        Eip1559Request {
            chain_id,
            nonce,
            to,
            value,
            input: Vec::new(),
            gas_limit: 21_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_500_000_000,
        }
    }

    /// An ERC-20 `transfer(recipient, amount)` call on `token`, with a 65 000 gas limit.
    pub fn erc20_transfer(
        chain_id: u64,
        nonce: u64,
        token: Address,
        recipient: Address,
        amount: U256,
    ) -> Self {
        let mut input = Vec::with_capacity(68);
        input.extend_from_slice(&[0xa9, 0x05, 0x9c, 0xbb]);
        input.extend_from_slice(&[0u8; 12]);
        input.extend_from_slice(&recipient);
        input.extend_from_slice(&amount.to_be_bytes::<32>());
        Eip1559Request {
            input,
            gas_limit: 65_000,
            ..Eip1559Request::transfer(chain_id, nonce, token, U256::ZERO)
        }
    }

    /// The most it can cost in fees, in wei: gas limit times maximum fee per gas (what
    /// `UnsignedTx::max_fee` reads back, and what policy limits count besides the value).
    pub fn max_fee(&self) -> U256 {
        U256::from(self.gas_limit) * U256::from(self.max_fee_per_gas)
    }

    /// The unsigned transaction's bytes: `0x02 || rlp([...])`, as `UnsignedTx::decode` reads.
    pub fn encode(&self) -> Vec<u8> {
        TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce,
            gas_limit: self.gas_limit,
            max_fee_per_gas: self.max_fee_per_gas,
            max_priority_fee_per_gas: self.max_priority_fee_per_gas,
            to: alloy_primitives::Address::from(self.to).into(),
            value: self.value,
            access_list: Default::default(),
            input: Bytes::from(self.input.clone()),
        }
        .encoded_for_signing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TxKind, UnsignedTx};

    #[test]
    fn built_transfers_decode_to_what_was_asked() {
        let to = [0x11u8; 20];
        let raw = Eip1559Request::transfer(11155111, 7, to, U256::from(5u64)).encode();
        let tx = UnsignedTx::decode(&raw).unwrap();
        assert_eq!(tx.chain_id(), 11155111);
        assert_eq!(tx.nonce(), 7);
        assert_eq!(tx.to(), TxKind::Call(to));
        assert_eq!(tx.value(), U256::from(5u64));
        assert!(tx.input().is_empty());

        let token = [0x22u8; 20];
        let raw = Eip1559Request::erc20_transfer(1, 0, token, to, U256::from(9u64)).encode();
        let tx = UnsignedTx::decode(&raw).unwrap();
        assert_eq!(tx.to(), TxKind::Call(token));
        assert_eq!(tx.value(), U256::ZERO);
        assert_eq!(&tx.input()[..4], &[0xa9, 0x05, 0x9c, 0xbb]);
        assert_eq!(&tx.input()[16..36], &to[..]);
        assert_eq!(tx.input()[67], 9);
    }
}
