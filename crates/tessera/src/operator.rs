//! `tessera operator` (principals' own keys) and `tessera policy check` (offline validation).
//!
//! Operators, approvers, admins and auditors each hold their own key; the policy names them by
//! the public key these commands print. Approvals and API calls are signed with the secret file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tessera_policy::{OperatorKey, PolicyDocument};

use crate::files::{read_secret, write_file};

/// Principal key commands.
#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Generate a principal's key: writes `<out>.key.json` (secret, mode 0600) and prints the
    /// public key to put in the policy's `[[principals]]` entry.
    New {
        /// Path prefix of the secret file, e.g. `keys/ana`.
        #[arg(long)]
        out: PathBuf,
        /// An Ethereum (secp256k1) key whose identity is its address, instead of Ed25519:
        /// approvals are then EIP-191 signatures, as a hardware wallet makes them.
        #[arg(long)]
        ethereum: bool,
    },
    /// Print the public key of a principal's key file.
    Show {
        /// The secret key file.
        file: PathBuf,
    },
}

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Show the coordinator's active policy (its hash is what nodes must pin).
    Show(crate::api::PolicyShowArgs),
    /// Validate a policy file and print the hash nodes pin (`policy_pin`), its revision, its
    /// principals and rules.
    Check {
        /// The policy file (TOML; see docs/policy.md).
        file: PathBuf,
    },
}

/// Loads a principal's secret key file.
pub fn load_key(path: &std::path::Path) -> Result<OperatorKey> {
    let text = read_secret(path, "the principal key")?;
    OperatorKey::from_json(&text)
        .with_context(|| format!("{} is not a principal key file", path.display()))
}

pub fn run_operator(cmd: OperatorCommand) -> Result<()> {
    match cmd {
        OperatorCommand::New { out, ethereum } => {
            let key = if ethereum {
                OperatorKey::generate_ethereum()
            } else {
                OperatorKey::generate_ed25519()
            };
            let path = out.with_extension("key.json");
            write_file(&path, key.to_json().as_bytes(), true, false)?;
            println!("wrote {} (secret, mode 0600)", path.display());
            println!("key = \"{}\"", key.public());
        }
        OperatorCommand::Show { file } => {
            println!("key = \"{}\"", load_key(&file)?.public());
        }
    }
    Ok(())
}

pub fn run_policy(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Show(args) => crate::api::run_policy_show(args)?,
        PolicyCommand::Check { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let policy = PolicyDocument::from_toml(&bytes)
                .with_context(|| format!("{} is not a valid policy", file.display()))?;
            println!("policy_pin = \"{}\"", policy.hash());
            println!("revision   {}", policy.revision());
            for p in policy.principals() {
                let roles: Vec<String> = p.roles.iter().map(ToString::to_string).collect();
                println!("principal  {} ({}) {}", p.name, roles.join(", "), p.key);
            }
            for rule in policy.rules() {
                println!("rule       {}", rule.name);
            }
            // Valid for the nodes, but a coordinator could never collect the approvals.
            let gaps = tessera_coordinator::auth::rbac::unservable_rules(&policy);
            if !gaps.is_empty() {
                anyhow::bail!(
                    "{} cannot be served by the coordinator's API:\n  {}",
                    file.display(),
                    gaps.join("\n  ")
                );
            }
        }
    }
    Ok(())
}
