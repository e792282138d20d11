//! `tessera identity`, `tessera coordinator` and `tessera admin`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use tessera_channel::identity::{AdminKey, CoordinatorKey, PartyIdentity};
use tessera_wire::{ClusterId, PartyId};

use crate::files::write_file;

/// Party identity commands.
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Generate a party's keys: writes `<out>/<party>.identity.json` (secret, mode 0600) and
    /// `<out>/<party>.public.json` (give this one to the admins).
    New {
        /// The party id, e.g. p1.
        #[arg(long)]
        party: PartyId,
        /// The cluster name (a-z, 0-9, '-').
        #[arg(long)]
        cluster: ClusterId,
        /// Directory to write the files to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Do not create a NATS NKey (for parties that never use a broker).
        #[arg(long)]
        no_nats: bool,
    },
    /// Print the public part of an identity file.
    Show {
        /// The identity file.
        file: PathBuf,
    },
}

/// Coordinator key commands.
#[derive(Subcommand)]
pub enum CoordinatorCommand {
    /// Generate a coordinator's key (it signs protocol session starts): writes
    /// `<out>/<name>.coordinator.json` (secret, mode 0600) and
    /// `<out>/<name>.coordinator.public.json` (give this one to the admins for
    /// `tessera roster build --coordinator`).
    New {
        /// The coordinator's name (1 to 32 characters: a-z, 0-9, '-').
        #[arg(long)]
        name: String,
        /// The cluster name (a-z, 0-9, '-').
        #[arg(long)]
        cluster: ClusterId,
        /// Directory to write the files to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Do not create a NATS NKey (for a coordinator that never uses a broker).
        #[arg(long)]
        no_nats: bool,
    },
}

/// Admin key commands.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Generate an admin key: writes `<name>.key` (secret, mode 0600) and `<name>.pub`.
    New {
        /// Path prefix of the files, e.g. `keys/admin1`.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run_identity(cmd: IdentityCommand) -> Result<()> {
    match cmd {
        IdentityCommand::New {
            party,
            cluster,
            out,
            no_nats,
        } => {
            let nkey = (!no_nats).then(nkeys::KeyPair::new_user);
            let seed = nkey
                .as_ref()
                .map(|k| k.seed().context("encoding the NKey seed"))
                .transpose()?;
            let identity = PartyIdentity::generate(party, cluster, seed);
            let public = identity.public(nkey.as_ref().map(|k| k.public_key()));
            let secret_path = out.join(format!("{party}.identity.json"));
            let public_path = out.join(format!("{party}.public.json"));
            write_file(&secret_path, identity.to_json().as_bytes(), true, false)?;
            write_file(
                &public_path,
                serde_json::to_string_pretty(&public)?.as_bytes(),
                false,
                false,
            )?;
            println!(
                "secret identity: {} (mode 0600; keep it on {party}'s machine)",
                secret_path.display()
            );
            println!(
                "public identity: {} (send it to the admins for the roster)",
                public_path.display()
            );
            Ok(())
        }
        IdentityCommand::Show { file } => {
            let text = crate::files::read_secret(&file, "identity file")?;
            let identity = PartyIdentity::from_json(&text)
                .with_context(|| format!("{} is not a Tessera identity file", file.display()))?;
            let nats_user = identity
                .nats_seed()
                .map(|s| nkeys::KeyPair::from_seed(s).map(|k| k.public_key()))
                .transpose()
                .context("the identity's NATS seed is not valid")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&identity.public(nats_user))?
            );
            Ok(())
        }
    }
}

pub fn run_coordinator(cmd: CoordinatorCommand) -> Result<()> {
    match cmd {
        CoordinatorCommand::New {
            name,
            cluster,
            out,
            no_nats,
        } => {
            let nkey = (!no_nats).then(nkeys::KeyPair::new_user);
            let seed = nkey
                .as_ref()
                .map(|k| k.seed().context("encoding the NKey seed"))
                .transpose()?;
            let key = CoordinatorKey::generate(&name, cluster, seed)?;
            let public = key.public(nkey.as_ref().map(|k| k.public_key()));
            let secret_path = out.join(format!("{name}.coordinator.json"));
            let public_path = out.join(format!("{name}.coordinator.public.json"));
            // Check both before writing either, so a refusal leaves no half-made pair.
            for path in [&secret_path, &public_path] {
                if path.exists() {
                    bail!(
                        "{} already exists; move it away first (this command never overwrites \
                         keys)",
                        path.display()
                    );
                }
            }
            write_file(&secret_path, key.to_json().as_bytes(), true, false)?;
            write_file(
                &public_path,
                serde_json::to_string_pretty(&public)?.as_bytes(),
                false,
                false,
            )?;
            println!(
                "secret coordinator key: {} (mode 0600; keep it on the coordinator's machine)",
                secret_path.display()
            );
            println!(
                "public coordinator key: {} (send it to the admins for the roster)",
                public_path.display()
            );
            Ok(())
        }
    }
}

pub fn run_admin(cmd: AdminCommand) -> Result<()> {
    match cmd {
        AdminCommand::New { out } => {
            let key = AdminKey::generate();
            let secret = out.with_extension("key");
            let public = out.with_extension("pub");
            write_file(&secret, key.to_hex().as_bytes(), true, false)?;
            let public_hex = hex::encode(key.verifying_key().as_bytes());
            write_file(&public, format!("{public_hex}\n").as_bytes(), false, false)?;
            println!("admin key: {} (secret, mode 0600)", secret.display());
            println!("admin public key: {} = {public_hex}", public.display());
            Ok(())
        }
    }
}
