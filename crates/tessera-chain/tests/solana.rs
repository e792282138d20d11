//! Solana transfers: a known message from another implementation decodes and rebuilds byte
//! for byte; a signed transaction verifies with ed25519-dalek; anything but a plain transfer
//! from the signer is refused.

use tessera_chain::solana::{SolanaError, Transfer, SYSTEM_PROGRAM};

/// A 42-lamport transfer with an all-zero blockhash, as another wallet library serializes it
/// (its published test vector).
const KNOWN: &str =
    "0100010353f9d600fe925083bb399907ea648d23a6a081fc7e9059202fd725f7edd281dd3cc1ff9ba3c7a876c8\
082df2f8a36ea9342ce3819dd4b6fa72d4a18e04a5363a00000000000000000000000000000000000000000000\
000000000000000000000000000000000000000000000000000000000000000000000000000000000000010202\
00010c020000002a00000000000000";

fn known() -> Vec<u8> {
    hex::decode(KNOWN).unwrap()
}

#[test]
fn a_known_transfer_decodes_and_rebuilds_byte_for_byte() {
    let transfer = Transfer::decode(&known()).unwrap();
    assert_eq!(transfer.lamports, 42);
    assert_eq!(transfer.recent_blockhash, [0; 32]);
    assert_eq!(hex::encode(transfer.from), &KNOWN[8..72]);
    assert_eq!(hex::encode(transfer.to), &KNOWN[72..136]);
    assert_eq!(transfer.build(), known());
}

#[test]
fn a_signed_transfer_verifies_with_the_senders_key() {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    let key = SigningKey::from_bytes(&[7; 32]);
    let transfer = Transfer {
        from: key.verifying_key().to_bytes(),
        to: [9; 32],
        lamports: 1_500_000_000,
        recent_blockhash: [3; 32],
    };
    let message = transfer.build();
    assert_eq!(Transfer::decode(&message).unwrap(), transfer);
    let signature = key.sign(&message).to_bytes();
    let tx = Transfer::assemble(&message, &signature).unwrap();
    assert_eq!(tx[0], 1, "one signature");
    assert_eq!(&tx[1..65], &signature);
    assert_eq!(&tx[65..], &message);
    let sig = ed25519_dalek::Signature::from_bytes(tx[1..65].try_into().unwrap());
    assert!(key.verifying_key().verify(&tx[65..], &sig).is_ok());
}

#[test]
fn anything_but_a_plain_transfer_is_refused() {
    let good = known();
    let edit = |at: usize, byte: u8| {
        let mut m = good.clone();
        m[at] = byte;
        m
    };
    let unsupported = |m: &[u8]| matches!(Transfer::decode(m), Err(SolanaError::Unsupported(_)));
    // A versioned message, another header, another program, a recipient that is the sender.
    assert_eq!(
        Transfer::decode(&edit(0, 0x80)),
        Err(SolanaError::Versioned(0))
    );
    assert!(unsupported(&edit(0, 2)), "two signers");
    assert!(unsupported(&edit(2, 0)), "no read-only program");
    let other_program = {
        let mut m = good.clone();
        m[4 + 64] = 6; // the third account is no longer the System Program
        m
    };
    assert!(unsupported(&other_program));
    let to_self = {
        let mut m = good.clone();
        let from: Vec<u8> = m[4..36].to_vec();
        m[36..68].copy_from_slice(&from);
        m
    };
    assert!(unsupported(&to_self));
    // Another instruction: an unknown System Program instruction, other accounts.
    let at_data = good.len() - 12;
    assert!(unsupported(&edit(at_data, 3)), "not a transfer");
    let at_accounts = at_data - 3;
    assert!(unsupported(&edit(at_accounts, 1)), "from the recipient");
    // Trailing, truncated, oversized.
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        Transfer::decode(&trailing),
        Err(SolanaError::Malformed(_))
    ));
    assert!(matches!(
        Transfer::decode(&good[..good.len() - 1]),
        Err(SolanaError::Malformed(_))
    ));
    assert!(matches!(
        Transfer::decode(&[0; 2000]),
        Err(SolanaError::Malformed(_))
    ));
    // A length not in its shortest form.
    let mut long_length = good[..3].to_vec();
    long_length.extend_from_slice(&[0x83, 0x00]);
    long_length.extend_from_slice(&good[4..]);
    assert!(matches!(
        Transfer::decode(&long_length),
        Err(SolanaError::Malformed(_))
    ));
    // Assembling refuses a message it would not sign.
    assert!(Transfer::assemble(&trailing, &[0; 64]).is_err());
    assert_eq!(SYSTEM_PROGRAM, [0; 32]);
}

#[test]
fn addresses_are_base58_of_32_bytes() {
    use tessera_chain::solana::{address, parse_address};
    // The System Program's address is 32 zero bytes.
    assert_eq!(address(&[0; 32]), "11111111111111111111111111111111");
    let key = [0x5a; 32];
    assert_eq!(parse_address(&address(&key)).unwrap(), key);
    assert!(parse_address("0OIl").is_err());
    assert!(parse_address("111").is_err());
}

#[test]
fn any_solana_transaction_message_is_recognised_as_one() {
    use tessera_chain::solana::is_transaction_message;
    let transfer = Transfer {
        from: [1; 32],
        to: [2; 32],
        lamports: 5,
        recent_blockhash: [3; 32],
    }
    .build();
    assert!(is_transaction_message(&transfer));
    // Another program's instruction, and the same as a version 0 message with a lookup table.
    let mut other = transfer.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    assert!(is_transaction_message(&other));
    let mut v0 = vec![0x80];
    v0.extend_from_slice(&transfer);
    v0.extend_from_slice(&[1]);
    v0.extend_from_slice(&[9; 32]);
    v0.extend_from_slice(&[1, 0, 0]);
    assert!(is_transaction_message(&v0));
    // Not messages: text, a truncated or padded message, a message with no signer.
    for bytes in [
        b"tessera login 42".to_vec(),
        transfer[..transfer.len() - 1].to_vec(),
        [transfer.clone(), vec![0]].concat(),
        [vec![0u8], transfer[1..].to_vec()].concat(),
        Vec::new(),
    ] {
        assert!(!is_transaction_message(&bytes), "{bytes:?}");
    }
}
