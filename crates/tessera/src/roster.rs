//! `tessera roster`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use tessera_channel::identity::AdminKey;
use tessera_channel::{CoordinatorEntry, PublicIdentity, Roster, RosterHash, SignedRoster};
use tessera_wire::ClusterId;

use crate::files::{read_secret, read_text, write_file};

/// Roster commands.
#[derive(Subcommand)]
pub enum RosterCommand {
    /// Build a roster from the parties' public identity files (and the coordinators' public key
    /// files) and sign it.
    Build {
        /// The cluster name.
        #[arg(long)]
        cluster: ClusterId,
        /// Roster version: raise it with every change.
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// The admin key that signs first.
        #[arg(long)]
        admin_key: PathBuf,
        /// Where to write the roster.
        #[arg(long)]
        out: PathBuf,
        /// A coordinator's `*.coordinator.public.json` file; repeat for each coordinator.
        /// Nodes accept session starts only when signed by a coordinator in the roster.
        #[arg(long = "coordinator")]
        coordinators: Vec<PathBuf>,
        /// The parties' `*.public.json` files.
        #[arg(required = true)]
        identities: Vec<PathBuf>,
    },
    /// Add an admin's signature to a roster file (in place).
    Sign {
        /// The admin key.
        #[arg(long)]
        admin_key: PathBuf,
        /// The roster file.
        roster: PathBuf,
    },
    /// Verify a roster's admin signatures (and optionally its pinned hash); print its hash.
    Verify {
        /// The roster file.
        roster: PathBuf,
        #[command(flatten)]
        signers: AdminQuorum,
        /// The hash the nodes pin; verification fails if it differs.
        #[arg(long)]
        pin: Option<String>,
    },
}

pub fn run(cmd: RosterCommand) -> Result<()> {
    match cmd {
        RosterCommand::Build {
            cluster,
            version,
            admin_key,
            out,
            coordinators,
            identities,
        } => {
            let mut publics = Vec::new();
            for path in &identities {
                let text = read_text(path, "public identity")?;
                let public: PublicIdentity = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a public identity file", path.display()))?;
                publics.push(public);
            }
            let mut entries = Vec::new();
            for path in &coordinators {
                let text = read_text(path, "coordinator public key")?;
                let entry: CoordinatorEntry = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is not a coordinator public key file (*.coordinator.public.json)",
                        path.display()
                    )
                })?;
                entries.push(entry);
            }
            let roster = Roster::build(cluster, version, &publics)?.with_coordinators(entries)?;
            let mut signed = SignedRoster::new(roster);
            signed.sign(&load_admin_key(&admin_key)?);
            write_file(&out, signed.to_json().as_bytes(), false, false)?;
            let coordinators = signed.roster.coordinators.len();
            println!(
                "roster: {} ({} parties, {coordinators} coordinator{})",
                out.display(),
                signed.roster.parties.len(),
                if coordinators == 1 { "" } else { "s" }
            );
            println!("hash:   {}", signed.roster.hash());
            println!("signed by 1 admin; add more with `tessera roster sign`");
            Ok(())
        }
        RosterCommand::Sign { admin_key, roster } => {
            let mut signed = load_roster(&roster)?;
            signed.sign(&load_admin_key(&admin_key)?);
            write_file(&roster, signed.to_json().as_bytes(), false, true)?;
            println!(
                "roster {} now carries {} signature(s)",
                roster.display(),
                signed.signatures.len()
            );
            Ok(())
        }
        RosterCommand::Verify {
            roster,
            signers,
            pin,
        } => {
            let signed = load_roster(&roster)?;
            let hash = match pin {
                Some(pin) => signers.verify_pinned(&signed, &RosterHash::from_hex(&pin)?)?,
                None => signers.verify(&signed)?,
            };
            println!(
                "roster OK: cluster {}, version {}",
                signed.roster.cluster, signed.roster.version
            );
            for e in &signed.roster.parties {
                println!(
                    "  {}  ed25519 {}  nats {}",
                    e.party,
                    e.ed25519,
                    e.nats_user.as_deref().unwrap_or("-")
                );
            }
            if signed.roster.coordinators.is_empty() {
                println!("  no coordinators (nodes will accept no session starts)");
            }
            for c in &signed.roster.coordinators {
                println!(
                    "  coordinator {}  ed25519 {}  nats {}",
                    c.name,
                    c.ed25519,
                    c.nats_user.as_deref().unwrap_or("-")
                );
            }
            println!("hash: {hash}");
            Ok(())
        }
    }
}

/// The admins whose signatures a roster needs, and how many of them.
#[derive(Args)]
pub struct AdminQuorum {
    /// Admin public key files (`*.pub`) or hex keys; repeat for each admin.
    #[arg(long = "admin", required = true)]
    admins: Vec<String>,
    /// How many distinct admins must have signed.
    #[arg(long, default_value_t = 1)]
    quorum: usize,
}

impl AdminQuorum {
    /// Verifies the roster's signatures; returns its hash.
    pub fn verify(&self, signed: &SignedRoster) -> Result<RosterHash> {
        Ok(signed.verify(&parse_admins(&self.admins)?, self.quorum)?)
    }

    /// Verifies the signatures and that the hash is the pinned one.
    pub fn verify_pinned(&self, signed: &SignedRoster, pin: &RosterHash) -> Result<RosterHash> {
        Ok(signed.verify_pinned(&parse_admins(&self.admins)?, self.quorum, pin)?)
    }
}

/// Reads a roster file.
pub fn load_roster(path: &Path) -> Result<SignedRoster> {
    let text = read_text(path, "roster")?;
    SignedRoster::from_json(&text)
        .with_context(|| format!("{} is not a valid roster file", path.display()))
}

fn load_admin_key(path: &Path) -> Result<AdminKey> {
    let text = read_secret(path, "admin key")?;
    AdminKey::from_hex(&text).with_context(|| format!("{} is not an admin key", path.display()))
}

/// Admin public keys from files or hex strings.
fn parse_admins(admins: &[String]) -> Result<Vec<VerifyingKey>> {
    admins
        .iter()
        .map(|a| {
            let text = if Path::new(a).exists() {
                read_text(Path::new(a), "admin public key")?
            } else {
                a.clone()
            };
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(text.trim(), &mut bytes).is_err() {
                bail!("{a:?} is neither an admin public key file nor 64 hex digits");
            }
            VerifyingKey::from_bytes(&bytes)
                .with_context(|| format!("{a:?} is not a valid Ed25519 key"))
        })
        .collect()
}
