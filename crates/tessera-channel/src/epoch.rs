//! One generation ("epoch") of a pairwise channel: the two directional keys a Noise handshake
//! produced, the send counter and the receive replay window.

use std::time::Instant;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use tessera_wire::{FrameHeader, RecordFrame, TAG_LEN};
use zeroize::Zeroizing;

use crate::replay::ReplayWindow;

/// Why a record did not open under these keys.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Counter already seen or behind the window.
    Replay,
    /// Tag did not verify.
    Authentication,
}

/// Keys and counters of one channel epoch. Keys are zeroized on drop.
pub(crate) struct EpochKeys {
    pub(crate) epoch: u32,
    send_key: Zeroizing<[u8; 32]>,
    recv_key: Zeroizing<[u8; 32]>,
    next_counter: u64,
    replay: ReplayWindow,
    pub(crate) established: Instant,
}

impl EpochKeys {
    /// Takes the two keys of a Noise split: the initiator sends with the first.
    pub(crate) fn from_split(
        epoch: u32,
        initiator: bool,
        split: ([u8; 32], [u8; 32]),
        now: Instant,
    ) -> Self {
        let (k1, k2) = (Zeroizing::new(split.0), Zeroizing::new(split.1));
        let (send_key, recv_key) = if initiator { (k1, k2) } else { (k2, k1) };
        EpochKeys {
            epoch,
            send_key,
            recv_key,
            next_counter: 0,
            replay: ReplayWindow::default(),
            established: now,
        }
    }

    /// Records sealed so far in this epoch.
    pub(crate) fn sent(&self) -> u64 {
        self.next_counter
    }

    /// Seals `plaintext` under `header` (epoch, counter and length are filled in here). The
    /// whole header is the associated data.
    pub(crate) fn seal(&mut self, mut header: FrameHeader, plaintext: &[u8]) -> RecordFrame {
        header.epoch = self.epoch;
        header.counter = self.next_counter;
        header.len = (plaintext.len() + TAG_LEN) as u32;
        // Counters never wrap: rekeying happens long before 2^64 records.
        self.next_counter += 1;
        let aad = header.to_bytes();
        let cipher = ChaCha20Poly1305::new(self.send_key.as_ref().into());
        let ciphertext = cipher
            .encrypt(
                &nonce(header.counter).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        RecordFrame { header, ciphertext }
    }

    /// Opens a record: replay check, then authentication, then (only then) the window moves.
    pub(crate) fn open(&mut self, frame: &RecordFrame) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let counter = frame.header.counter;
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let aad = frame.header.to_bytes();
        let cipher = ChaCha20Poly1305::new(self.recv_key.as_ref().into());
        let plaintext = cipher
            .decrypt(
                &nonce(counter).into(),
                Payload {
                    msg: &frame.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Authentication)?;
        self.replay.commit(counter);
        Ok(Zeroizing::new(plaintext))
    }
}

/// Noise's ChaChaPoly nonce encoding: 32 zero bits, then the 64-bit counter little-endian.
fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}
