//! `tessera backup`: a node's key share (with its committee's auxiliary info) encrypted for
//! recovery officers, any `k` of whom can restore it into a node's store.

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tessera_backup::{Backup, Metadata, Officer};
use tessera_mpc::{AuxInfo, KeyShare};
use tessera_node::config::NodeConfig;
use tessera_node::state::{committee_name, KeyRecord, NodeState};
use tessera_store::FileStore;
use tessera_wire::KeyId;
use zeroize::Zeroizing;

use crate::files::{read_secret, read_text, write_file};

/// Backups of key shares for recovery officers.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Create an age key for a recovery officer (prints its public key, `age1…`, which goes
    /// into `backup create --officer NAME=age1…`). An officer may use `age-keygen` instead.
    OfficerKey {
        /// Where to write the secret key (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Encrypt this node's share of a key for recovery officers, any `--threshold` of whom
    /// can restore it.
    Create(CreateArgs),
    /// Show what a backup holds and who can restore it (no secret needed).
    Inspect {
        /// The backup file.
        backup: PathBuf,
    },
    /// Restore a share into a node's store with officers' keys; the share is checked against
    /// the key's public key before anything is written.
    Restore(RestoreArgs),
}

/// Where a node's store is and how to open it.
#[derive(Args)]
pub struct StoreArgs {
    /// The node's configuration (its store and passphrase settings).
    #[arg(long, conflicts_with = "store", required_unless_present = "store")]
    config: Option<PathBuf>,
    /// The store directory, instead of `--config` (passphrase from `TESSERA_NODE_PASSPHRASE`
    /// or `--passphrase-file`).
    #[arg(long)]
    store: Option<PathBuf>,
    /// A file holding the store passphrase (with `--store`).
    #[arg(long, requires = "store")]
    passphrase_file: Option<PathBuf>,
}

/// `backup create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The key (its id).
    #[arg(long)]
    key: KeyId,
    /// A recovery officer, `NAME=age1…`; repeat for each (2 to 255).
    #[arg(long = "officer", required = true)]
    officers: Vec<String>,
    /// Officers needed to restore (at least 2).
    #[arg(long)]
    threshold: u8,
    /// Where to write the backup (never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// `backup restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// The backup file.
    backup: PathBuf,
    /// An officer's age key file; repeat until the backup's threshold is met.
    #[arg(long = "identity", required = true)]
    identities: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

/// What a backup encrypts: everything a node needs to sign with the key again.
#[derive(Serialize, Deserialize)]
struct Contents {
    key: KeyId,
    record: KeyRecord,
    aux: AuxInfo,
}

/// Runs a `tessera backup` command.
pub fn run(command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::OfficerKey { out } => officer_key(&out),
        BackupCommand::Create(args) => create(args),
        BackupCommand::Inspect { backup } => inspect(&backup),
        BackupCommand::Restore(args) => restore(args),
    }
}

fn officer_key(out: &Path) -> Result<()> {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let text = Zeroizing::new(format!(
        "# tessera recovery officer key\n# public key: {public}\n{}\n",
        identity.to_string().expose_secret()
    ));
    write_file(out, text.as_bytes(), true, false)?;
    println!("{public}");
    eprintln!(
        "secret key written to {}; keep it offline. Give the public key above to whoever makes backups.",
        out.display()
    );
    Ok(())
}

fn open_state(args: &StoreArgs) -> Result<NodeState<FileStore>> {
    let (dir, passphrase) = match (&args.config, &args.store) {
        (Some(config), _) => {
            let config = NodeConfig::load(config)?;
            let passphrase = config.passphrase()?;
            (config.store.clone(), passphrase)
        }
        (None, Some(store)) => {
            let passphrase = match &args.passphrase_file {
                Some(file) => {
                    let text = read_secret(file, "passphrase file")?;
                    Zeroizing::new(text.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
                }
                None => Zeroizing::new(
                    std::env::var("TESSERA_NODE_PASSPHRASE")
                        .context("no store passphrase: set TESSERA_NODE_PASSPHRASE or pass --passphrase-file")?
                        .into_bytes(),
                ),
            };
            (store.clone(), passphrase)
        }
        (None, None) => bail!("give --config or --store"),
    };
    let store = FileStore::open(&dir, &passphrase).with_context(|| {
        format!(
            "opening the store {} (a new node's store is created with `tessera-node init`)",
            dir.display()
        )
    })?;
    Ok(NodeState::new(std::sync::Arc::new(store)))
}

fn public_key_hex(record: &KeyRecord) -> String {
    hex::encode(record.share.shared_public_key.to_bytes(true))
}

fn create(args: CreateArgs) -> Result<()> {
    let officers = args
        .officers
        .iter()
        .map(|o| Officer::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    let state = open_state(&args.store)?;
    let record = state.key_record(args.key)?;
    let aux = state.aux(&record.committee)?;
    let party = record.committee[usize::from(record.share.i)];
    let metadata = Metadata {
        party: party.to_string(),
        key: args.key.to_string(),
        public_key: public_key_hex(&record),
        committee: committee_name(&record.committee),
        threshold: record.threshold,
        created_at: crate::now_unix(),
    };
    let contents = Contents {
        key: args.key,
        record,
        aux,
    };
    let plain = Zeroizing::new(serde_json::to_vec(&contents).context("encoding the share")?);
    let backup = tessera_backup::create(&plain, metadata, &officers, args.threshold)?;
    write_file(&args.out, backup.to_json().as_bytes(), false, false)?;
    println!(
        "backup of {party}'s share of key {} written to {}: any {} of {} officers ({}) can restore it",
        args.key,
        args.out.display(),
        args.threshold,
        officers.len(),
        officers
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn read_backup(path: &Path) -> Result<Backup> {
    Ok(Backup::from_json(&read_text(path, "backup")?)?)
}

fn inspect(path: &Path) -> Result<()> {
    let backup = read_backup(path)?;
    let h = &backup.header;
    let m = &h.metadata;
    println!("backup      {} ({})", h.id, h.format);
    println!("share       {} of key {}", m.party, m.key);
    println!(
        "key         {}-of-{} on {}, public key {}",
        m.threshold,
        m.committee.split('-').count(),
        m.committee,
        m.public_key
    );
    println!("created     {}", m.created_at);
    println!(
        "restore     any {} of {} officers:",
        h.threshold,
        h.officers.len()
    );
    for o in &h.officers {
        println!("  {:<16} {}", o.name, o.recipient);
    }
    Ok(())
}

fn restore(args: RestoreArgs) -> Result<()> {
    let backup = read_backup(&args.backup)?;
    let mut identities = Vec::new();
    for file in &args.identities {
        let text = read_secret(file, "officer key")?;
        identities.extend(
            tessera_backup::parse_identities(&text)
                .with_context(|| format!("reading {}", file.display()))?,
        );
    }
    let restored = tessera_backup::restore(&backup, &identities)?;
    let contents: Contents = serde_json::from_slice(&restored.secret)
        .context("the backup decrypted but its contents do not decode")?;
    let m = &backup.header.metadata;
    if contents.key.to_string() != m.key || public_key_hex(&contents.record) != m.public_key {
        bail!("the restored share is not of the key the backup names; refusing it");
    }
    KeyShare::from_parts((contents.record.share.clone(), contents.aux.clone()))
        .map_err(|e| anyhow::anyhow!("the restored share does not validate: {e}"))?;

    let state = open_state(&args.store)?;
    if state.has_key(contents.key)? {
        bail!(
            "this store already holds key {}; restore into the store of the node that lost it",
            contents.key
        );
    }
    if !state.has_aux(&contents.record.committee)? {
        state.put_aux(&contents.record.committee, &contents.aux)?;
    }
    state.put_key(contents.key, &contents.record)?;
    // What the node will load: the stored share with the store's auxiliary info.
    let (_, share) = state.key_share(contents.key)?;
    if hex::encode(share.core.shared_public_key.to_bytes(true)) != m.public_key {
        bail!("the stored share does not load with the public key the backup names");
    }
    println!(
        "restored {}'s share of key {} (public key {}) with {}; the node can sign with it again",
        m.party,
        m.key,
        m.public_key,
        restored.officers.join(", ")
    );
    Ok(())
}
