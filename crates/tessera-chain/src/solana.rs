//! Solana for Tessera: a SOL transfer a node can read and sign.
//!
//! - [`Transfer::decode`]: a legacy Solana message (the bytes an Ed25519 key signs), decoded
//!   strictly: exactly one signer (the sender, who pays the fee), exactly one instruction, a
//!   System Program `Transfer` from the sender, canonical lengths, no trailing bytes. Anything
//!   else (versioned messages, other programs or instructions, more signers) is refused: a
//!   node never signs a message it cannot fully account for.
//! - [`Transfer::build`]: the message for a transfer (for clients and tests).
//! - [`Transfer::assemble`]: the network transaction from the sender's signature.

/// The System Program's id (32 zero bytes; `11111111111111111111111111111111`).
pub const SYSTEM_PROGRAM: [u8; 32] = [0; 32];
/// The System Program's `Transfer` instruction.
const TRANSFER: u32 = 2;
/// Largest message accepted (a Solana packet is 1232 bytes).
pub const MAX_MESSAGE_LEN: usize = 1232;

/// Why a Solana message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SolanaError {
    /// The bytes end early, run on, or a length is not canonical.
    #[error("malformed Solana message: {0}")]
    Malformed(String),
    /// A versioned (v0) message: address lookup tables could hide accounts.
    #[error("versioned Solana messages (v{0}) are not signed; build a legacy message")]
    Versioned(u8),
    /// A message Tessera does not sign.
    #[error("unsupported Solana message: {0}")]
    Unsupported(String),
}

/// Lamports per signature, the base fee of a transaction (a plain transfer pays only this: it
/// carries no compute-budget instruction).
pub const FEE_LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// The text form of a Solana account address (an Ed25519 public key): base58.
pub fn address(key: &[u8; 32]) -> String {
    bitcoin::base58::encode(key)
}

/// Reads a base58 Solana address (32 bytes).
pub fn parse_address(text: &str) -> Result<[u8; 32], SolanaError> {
    let bytes = bitcoin::base58::decode(text)
        .map_err(|_| SolanaError::Malformed(format!("{text:?} is not base58")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        SolanaError::Malformed(format!(
            "{text:?} is {} bytes, a Solana address is 32",
            b.len()
        ))
    })
}

/// A SOL transfer, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The sender, who signs and pays the fee (an Ed25519 public key).
    pub from: [u8; 32],
    /// The recipient.
    pub to: [u8; 32],
    /// The amount, in lamports.
    pub lamports: u64,
    /// The recent blockhash the message is bound to.
    pub recent_blockhash: [u8; 32],
}

/// Reads the message strictly, front to back.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SolanaError> {
        if self.bytes.len() < n {
            return Err(SolanaError::Malformed(format!("it ends inside {what}")));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self, what: &str) -> Result<u8, SolanaError> {
        Ok(self.take(1, what)?[0])
    }

    fn array32(&mut self, what: &str) -> Result<[u8; 32], SolanaError> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }

    /// A `compact-u16` length, in its shortest form only.
    fn length(&mut self, what: &str) -> Result<usize, SolanaError> {
        let mut value: usize = 0;
        for i in 0..3 {
            let byte = self.byte(what)?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(SolanaError::Malformed(format!(
                        "the length of {what} is not in its shortest form"
                    )));
                }
                if value > usize::from(u16::MAX) {
                    return Err(SolanaError::Malformed(format!(
                        "the length of {what} overflows"
                    )));
                }
                return Ok(value);
            }
        }
        Err(SolanaError::Malformed(format!(
            "the length of {what} is too long"
        )))
    }
}

fn push_length(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Whether `bytes` parse, whole, as a Solana transaction message (legacy or version 0, any
/// program): raw bytes that do must not be signed as an opaque message, or a policy that
/// allows raw messages would sign a transaction it never saw.
pub fn is_transaction_message(bytes: &[u8]) -> bool {
    parse_any_message(bytes).is_ok()
}

fn parse_any_message(bytes: &[u8]) -> Result<(), SolanaError> {
    let mut r = Reader { bytes };
    let mut first = r.byte("the header")?;
    let versioned = first & 0x80 != 0;
    if versioned {
        if first & 0x7f != 0 {
            return Err(SolanaError::Versioned(first & 0x7f));
        }
        first = r.byte("the header")?;
    }
    let (_, _) = (r.byte("the header")?, r.byte("the header")?);
    let accounts = r.length("the account list")?;
    if first == 0 || accounts < usize::from(first) {
        return Err(SolanaError::Malformed("no signer".into()));
    }
    r.take(32 * accounts, "the account list")?;
    r.array32("the recent blockhash")?;
    for _ in 0..r.length("the instruction list")? {
        r.byte("an instruction's program")?;
        let n = r.length("an instruction's accounts")?;
        r.take(n, "an instruction's accounts")?;
        let n = r.length("an instruction's data")?;
        r.take(n, "an instruction's data")?;
    }
    if versioned {
        for _ in 0..r.length("the address table lookups")? {
            r.array32("a lookup table")?;
            for what in ["writable lookups", "read-only lookups"] {
                let n = r.length(what)?;
                r.take(n, what)?;
            }
        }
    }
    if r.bytes.is_empty() {
        Ok(())
    } else {
        Err(SolanaError::Malformed("trailing bytes".into()))
    }
}

impl Transfer {
    /// Decodes `message` (a legacy Solana message) as a SOL transfer, or refuses it.
    pub fn decode(message: &[u8]) -> Result<Self, SolanaError> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(SolanaError::Malformed(format!(
                "{} bytes; a Solana message has at most {MAX_MESSAGE_LEN}",
                message.len()
            )));
        }
        let mut r = Reader { bytes: message };
        let required = r.byte("the header")?;
        if required & 0x80 != 0 {
            return Err(SolanaError::Versioned(required & 0x7f));
        }
        let readonly_signed = r.byte("the header")?;
        let readonly_unsigned = r.byte("the header")?;
        let unsupported = |what: String| Err(SolanaError::Unsupported(what));
        if (required, readonly_signed, readonly_unsigned) != (1, 0, 1) {
            return unsupported(format!(
                "header {required}/{readonly_signed}/{readonly_unsigned}: a transfer has one \
                 signer (the sender), a writable recipient and the read-only System Program"
            ));
        }
        let accounts = r.length("the account list")?;
        if accounts != 3 {
            return unsupported(format!(
                "{accounts} accounts; a transfer names the sender, the recipient and the System \
                 Program"
            ));
        }
        let from = r.array32("the sender")?;
        let to = r.array32("the recipient")?;
        let program = r.array32("the program")?;
        if program != SYSTEM_PROGRAM {
            return unsupported("the third account is not the System Program".into());
        }
        if to == from || to == SYSTEM_PROGRAM {
            return unsupported("the recipient is the sender or the System Program".into());
        }
        let recent_blockhash = r.array32("the recent blockhash")?;
        let instructions = r.length("the instruction list")?;
        if instructions != 1 {
            return unsupported(format!(
                "{instructions} instructions; only a single System Program transfer is signed"
            ));
        }
        if r.byte("the instruction")? != 2 {
            return unsupported("the instruction is not for the System Program".into());
        }
        let indexes = r.length("the instruction's accounts")?;
        let indexes = r.take(indexes, "the instruction's accounts")?;
        if indexes != [0, 1] {
            return unsupported(format!(
                "the instruction's accounts are {indexes:?}; a transfer goes from the sender \
                 (0) to the recipient (1)"
            ));
        }
        let data = r.length("the instruction's data")?;
        let data = r.take(data, "the instruction's data")?;
        if data.len() != 12 || data[..4] != TRANSFER.to_le_bytes() {
            return unsupported("the System Program instruction is not a transfer".into());
        }
        let lamports = u64::from_le_bytes(data[4..].try_into().expect("8 bytes"));
        if !r.bytes.is_empty() {
            return Err(SolanaError::Malformed(format!(
                "{} bytes after the message",
                r.bytes.len()
            )));
        }
        Ok(Transfer {
            from,
            to,
            lamports,
            recent_blockhash,
        })
    }

    /// The legacy message for this transfer: what the sender's key signs.
    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![1, 0, 1];
        push_length(&mut out, 3);
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.to);
        out.extend_from_slice(&SYSTEM_PROGRAM);
        out.extend_from_slice(&self.recent_blockhash);
        push_length(&mut out, 1);
        out.push(2);
        push_length(&mut out, 2);
        out.extend_from_slice(&[0, 1]);
        push_length(&mut out, 12);
        out.extend_from_slice(&TRANSFER.to_le_bytes());
        out.extend_from_slice(&self.lamports.to_le_bytes());
        out
    }

    /// The network transaction: the sender's 64-byte Ed25519 signature over `message`, then
    /// `message` (which must decode as a transfer).
    pub fn assemble(message: &[u8], signature: &[u8; 64]) -> Result<Vec<u8>, SolanaError> {
        Transfer::decode(message)?;
        let mut out = Vec::with_capacity(1 + 64 + message.len());
        push_length(&mut out, 1);
        out.extend_from_slice(signature);
        out.extend_from_slice(message);
        Ok(out)
    }
}
