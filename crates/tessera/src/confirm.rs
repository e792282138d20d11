//! Before the CLI signs anything for a person (an approval, a rejection, a submitter's or an
//! admin's signature): the object is checked locally, its policy compared with the one the
//! signer pinned, what it does shown in plain words, and the person asked.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use tessera_chain::{checksummed, TxKind, UnsignedTx};
use tessera_policy::{Action, KeyChange, Payload, PolicyHash, SignRequest};

/// How a signature is confirmed.
#[derive(Args, Clone, Debug)]
pub struct ConfirmArgs {
    /// The policy you trust, by hash (`tessera policy check` prints it as policy_pin): refuse
    /// to sign anything made under another policy. Without it, the policy is only shown.
    #[arg(long = "policy-pin", env = "TESSERA_POLICY_PIN")]
    pub policy_pin: Option<PolicyHash>,
    /// Sign without asking (for scripts that checked what they sign by other means). Without
    /// it, the command asks on the terminal and refuses when there is none.
    #[arg(long)]
    pub yes: bool,
}

impl ConfirmArgs {
    /// Refuses an object made under another policy than the pinned one.
    pub fn check_policy(&self, policy: &PolicyHash, what: &str) -> Result<()> {
        match &self.policy_pin {
            Some(pin) if pin != policy => bail!(
                "{what} was made under policy {policy}, not the policy you pinned ({pin}); \
                 nothing was signed. If the policy changed, check the new one \
                 (tessera policy show) and pin its hash"
            ),
            Some(_) => Ok(()),
            None => {
                eprintln!(
                    "note: no --policy-pin given; {what} is under policy {policy} (pin it to \
                     have it checked)"
                );
                Ok(())
            }
        }
    }

    /// Shows `lines` and asks whether to `act`, unless `--yes` was given.
    pub fn confirm(&self, act: &str, lines: &[String]) -> Result<()> {
        eprintln!("about to {act}:");
        for line in lines {
            eprintln!("  {line}");
        }
        if self.yes {
            return Ok(());
        }
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!(
                "not signing without confirmation: run this in a terminal to be asked, or pass \
                 --yes once you have checked the above"
            );
        }
        eprint!("{act}? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            Ok(())
        } else {
            bail!("not confirmed; nothing was signed")
        }
    }
}

/// What signing `request` does, in plain words: for a transaction its chain, destination,
/// amount and the most it can cost in fees; for a message its text. `key_name` is how the
/// coordinator names the key.
pub fn describe_request(request: &SignRequest, key_name: &str) -> Result<Vec<String>> {
    let derived = request
        .check()
        .context("the request does not check out locally; do not sign it")?;
    let mut lines = vec![format!(
        "request {} with key {key_name}{}",
        request.id,
        if request.path.is_empty() {
            String::new()
        } else {
            format!(
                " at path m/{}",
                request
                    .path
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            )
        }
    )];
    match &request.payload {
        Payload::EthereumTx { raw } => {
            let tx = UnsignedTx::decode(raw).context("the transaction does not decode")?;
            lines.push(format!(
                "Ethereum transaction on chain {}, nonce {}",
                tx.chain_id(),
                tx.nonce()
            ));
            match &derived.action {
                Action::Transfer { asset, amount, to } => {
                    lines.push(format!("transfer {amount} {asset}"));
                    lines.push(format!("to {to}"));
                }
                other => {
                    lines.push(other.to_string());
                    if let TxKind::Call(to) = tx.to() {
                        lines.push(format!("to {}", checksummed(&to)));
                    }
                }
            }
            lines.push(format!(
                "maximum fee {} wei (gas limit times the most it pays per gas)",
                tx.max_fee()
            ));
        }
        Payload::Message { bytes } => {
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => format!("{text:?}"),
                Err(_) => format!("0x{}", hex::encode(bytes)),
            };
            lines.push(format!("EIP-191 message of {} bytes: {text}", bytes.len()));
        }
        Payload::Ed25519Message { bytes } => {
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => format!("{text:?}"),
                Err(_) => format!("0x{}", hex::encode(bytes)),
            };
            lines.push(format!(
                "raw Ed25519 message of {} bytes: {text}",
                bytes.len()
            ));
        }
        Payload::BitcoinPsbt {
            network, signer, ..
        } => {
            let inputs: Vec<String> = derived.inputs.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "Bitcoin transaction on {network}: signs input(s) {} for key {}",
                inputs.join(", "),
                hex::encode(signer)
            ));
            if let Action::BitcoinTransfer {
                payments, change, ..
            } = &derived.action
            {
                for (to, amount) in payments {
                    lines.push(format!("pay {amount} sat to {to}"));
                }
                lines.push(format!("change {change} sat back to the key (no spend)"));
            }
            if let Some((_, fee)) = &derived.max_fee {
                lines.push(format!("fee {fee} sat (inputs minus outputs)"));
            }
        }
        Payload::SolanaTransfer { .. } => {
            lines.push(format!("Solana {}", derived.action));
            if let Some(from) = &derived.signer {
                lines.push(format!(
                    "from {}",
                    <[u8; 32]>::try_from(from.as_slice())
                        .map(|k| tessera_chain::solana::address(&k))
                        .unwrap_or_else(|_| hex::encode(from))
                ));
            }
            if let Some((_, fee)) = &derived.max_fee {
                lines.push(format!("fee {fee} lamports"));
            }
        }
    }
    lines.push(format!(
        "submitted by {}, expires at {} (Unix seconds)",
        request.submitted_by, request.expires_at
    ));
    lines.push(format!("policy {}", request.policy));
    lines.push(format!(
        "request digest {} (recomputed here)",
        hex::encode(request.request_digest())
    ));
    Ok(lines)
}

/// What approving `change` does, in plain words.
pub fn describe_key_change(change: &KeyChange, key_name: &str) -> Vec<String> {
    vec![
        format!("key change {} of key {key_name}", change.id),
        format!("operation {}", change.operation),
        format!(
            "from epoch {} ({}-of-{} on {})",
            change.from.epoch,
            change.from.threshold,
            change.from.committee.len(),
            tessera_wire::PartyId::list(&change.from.committee)
        ),
        format!(
            "proposed by {}, expires at {} (Unix seconds)",
            change.proposed_by, change.expires_at
        ),
        format!("policy {}", change.policy),
        format!(
            "change digest {} (recomputed here)",
            hex::encode(change.change_digest())
        ),
    ]
}
