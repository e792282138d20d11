//! `tessera backup`: a node's share of one epoch of a key (with that epoch's auxiliary info)
//! encrypted for recovery officers, any `k` of whom can restore it into a node's store. The
//! party signs the backup with its roster identity; restore checks that signature, and refuses
//! a backup of an epoch that was replaced unless told otherwise (an override recorded in the
//! node's audit log).

use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use tessera_audit::{AuditLog, NewEvent};
use tessera_backup::{Backup, Metadata, Officer, SIGNATURE_LABEL};
use tessera_channel::identity::PartyIdentity;
use tessera_channel::{Roster, SignedRoster};
use tessera_mpc::{AuxInfo, KeyShare};
use tessera_node::config::NodeConfig;
use tessera_node::state::{committee_name, KeyRecord, NodeState, ReshareRecord};
use tessera_store::FileStore;
use tessera_wire::{KeyId, KeyKind};
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
    /// Encrypt this node's share of a key (its active epoch) for recovery officers, any
    /// `--threshold` of whom can restore it; signed with the party's identity.
    Create(CreateArgs),
    /// Show what a backup holds and who can restore it (no secret needed); with `--roster`,
    /// also check who signed it.
    Inspect {
        /// The backup file.
        backup: PathBuf,
        /// The signed roster, to check the party's signature.
        #[arg(long)]
        roster: Option<PathBuf>,
    },
    /// List backups with their key epochs, marking those of an epoch that a refresh or
    /// reshare replaced (stale: they cannot be used with the key's current shares).
    List(ListArgs),
    /// Restore a share into a node's store with officers' keys. The party's signature and the
    /// share (against the key's public key) are checked before anything is written, and a
    /// backup of a replaced epoch is refused.
    Restore(RestoreArgs),
}

/// Where a node's store is and how to open it.
#[derive(Args)]
pub struct StoreArgs {
    /// The node's configuration (its store, passphrase, identity, roster and audit log).
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

/// How to learn a key's current epoch, to tell a stale backup.
#[derive(Args)]
pub struct EpochArgs {
    /// Ask this coordinator for the key's current epoch (with your principal and key file).
    #[arg(long = "check-coordinator")]
    coordinator: Option<String>,
    /// Your principal name in the policy (with `--check-coordinator`).
    #[arg(long, env = "TESSERA_PRINCIPAL")]
    principal: Option<String>,
    /// Your secret key file (with `--check-coordinator`).
    #[arg(long = "key-file", env = "TESSERA_PRINCIPAL_KEY")]
    key_file: Option<PathBuf>,
    /// The CA certificate (PEM) of an https coordinator (with `--check-coordinator`).
    #[arg(long = "ca-cert", env = "TESSERA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// The key's current epoch, if you know it (`tessera key show`).
    #[arg(long, conflicts_with = "coordinator")]
    current_epoch: Option<u64>,
}

/// `backup create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The party's identity file, which signs the backup (with `--store`; `--config` names
    /// it).
    #[arg(long, requires = "store")]
    identity: Option<PathBuf>,
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

/// `backup list`.
#[derive(Args)]
pub struct ListArgs {
    /// The backup files.
    #[arg(required = true)]
    backups: Vec<PathBuf>,
    #[command(flatten)]
    epoch: EpochArgs,
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
    /// The signed roster, to check the party's signature (with `--store`; `--config` names
    /// it).
    #[arg(long, requires = "store")]
    roster: Option<PathBuf>,
    #[command(flatten)]
    epoch: EpochArgs,
    /// DISASTER RECOVERY ONLY: restore even if the key has moved past the backup's epoch (a
    /// superseded share, useful only if the key's current epoch is lost too). Needs `--config`:
    /// the override is recorded in the node's audit log.
    #[arg(long)]
    allow_superseded: bool,
}

/// What a backup encrypts: everything a node needs to sign with the key again (the epoch
/// record holds its auxiliary info).
#[derive(Serialize, Deserialize)]
struct Contents {
    key: KeyId,
    record: KeyRecord,
}

/// Runs a `tessera backup` command.
pub fn run(command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::OfficerKey { out } => officer_key(&out),
        BackupCommand::Create(args) => create(args),
        BackupCommand::Inspect { backup, roster } => inspect(&backup, roster.as_deref()),
        BackupCommand::List(args) => list(args),
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

fn load_config(args: &StoreArgs) -> Result<Option<NodeConfig>> {
    args.config
        .as_deref()
        .map(|path| NodeConfig::load(path).map_err(Into::into))
        .transpose()
}

fn open_state(args: &StoreArgs, config: Option<&NodeConfig>) -> Result<NodeState<FileStore>> {
    let (dir, passphrase) = match (config, &args.store) {
        (Some(config), _) => (config.store.clone(), config.passphrase()?),
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

fn read_identity(path: &Path) -> Result<PartyIdentity> {
    let text = read_secret(path, "identity file")?;
    PartyIdentity::from_json(&text)
        .with_context(|| format!("{} is not a party identity file", path.display()))
}

fn read_roster(path: &Path) -> Result<Roster> {
    let text = read_text(path, "roster")?;
    Ok(SignedRoster::from_json(&text)
        .with_context(|| format!("{} is not a signed roster", path.display()))?
        .roster)
}

/// The bytes a party signs for a backup.
fn signed_bytes(digest: &[u8; 32]) -> Vec<u8> {
    [SIGNATURE_LABEL, &digest[..]].concat()
}

/// Whether `signature` is `party`'s (by its key in `roster`) over the backup `digest`.
fn signed_by(roster: &Roster, party: &str, digest: &[u8; 32], signature: &[u8]) -> bool {
    let Some(entry) = party
        .parse()
        .ok()
        .and_then(|p: tessera_wire::PartyId| roster.entry(p))
    else {
        return false;
    };
    let (Ok(key), Ok(signature)) = (
        entry.verifying_key(),
        ed25519_dalek::Signature::from_slice(signature),
    ) else {
        return false;
    };
    key.verify_strict(&signed_bytes(digest), &signature).is_ok()
}

fn public_key_hex(record: &KeyRecord) -> String {
    hex::encode(record.share.public_key())
}

fn create(args: CreateArgs) -> Result<()> {
    let officers = args
        .officers
        .iter()
        .map(|o| Officer::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    let config = load_config(&args.store)?;
    let identity = match (&config, &args.identity) {
        (Some(config), _) => read_identity(&config.identity)?,
        (None, Some(file)) => read_identity(file)?,
        (None, None) => {
            bail!("a backup is signed by its party: give --identity with --store (or use --config)")
        }
    };
    let state = open_state(&args.store, config.as_ref())?;
    let mut record = state.key_record(args.key)?;
    let party = record.committee[usize::from(record.share.index())];
    if party != identity.party() {
        bail!(
            "the store holds {party}'s share of key {} but the identity is {}'s",
            args.key,
            identity.party()
        );
    }
    if record.aux.is_none() {
        // A record written before epochs had their own auxiliary info.
        let aux: AuxInfo = state.aux(&record.committee)?;
        record.aux = Some(aux);
    }
    let metadata = Metadata {
        party: party.to_string(),
        key: args.key.to_string(),
        public_key: public_key_hex(&record),
        committee: committee_name(&record.committee),
        threshold: record.threshold,
        epoch: record.epoch,
        created_at: crate::now_unix(),
    };
    let epoch = record.epoch;
    let contents = Contents {
        key: args.key,
        record,
    };
    let plain = Zeroizing::new(serde_json::to_vec(&contents).context("encoding the share")?);
    let backup = tessera_backup::create(&plain, metadata, &officers, args.threshold, |digest| {
        identity.sign(&signed_bytes(digest))
    })?;
    write_file(&args.out, backup.to_json().as_bytes(), false, false)?;
    println!(
        "backup of {party}'s share of key {} (epoch {epoch}) written to {}, signed by {party}: \
         any {} of {} officers ({}) can restore it",
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
    println!(
        "it is stale once the key is refreshed or reshared: make a new one after every rotation \
         (`tessera backup list` tells)"
    );
    Ok(())
}

fn read_backup(path: &Path) -> Result<Backup> {
    Ok(Backup::from_json(&read_text(path, "backup")?)?)
}

fn inspect(path: &Path, roster: Option<&Path>) -> Result<()> {
    let backup = read_backup(path)?;
    let h = &backup.header;
    let m = &h.metadata;
    println!("backup      {} ({})", h.id, h.format);
    println!(
        "share       {} of key {}, epoch {}",
        m.party, m.key, m.epoch
    );
    println!(
        "key         {}-of-{} on {}, public key {}",
        m.threshold,
        m.committee.split('-').count(),
        m.committee,
        m.public_key
    );
    println!("created     {}", m.created_at);
    match roster {
        Some(roster) => {
            let roster = read_roster(roster)?;
            let signature = hex::decode(&backup.signature).unwrap_or_default();
            if !signed_by(&roster, &m.party, &backup.signed_digest(), &signature) {
                bail!(
                    "the backup's signature is not {}'s by this roster: it was not made by that \
                     party's node, or was changed since",
                    m.party
                );
            }
            println!("signed by   {} (checked against the roster)", m.party);
        }
        None => println!(
            "signed by   {} (not checked: give --roster to check)",
            m.party
        ),
    }
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

impl EpochArgs {
    /// The key's current epoch, from `--current-epoch` or the coordinator; `None` if neither
    /// was given.
    fn current(&self, key: &str) -> Result<Option<u64>> {
        if let Some(epoch) = self.current_epoch {
            return Ok(Some(epoch));
        }
        let Some(url) = &self.coordinator else {
            return Ok(None);
        };
        let (Some(principal), Some(key_file)) = (&self.principal, &self.key_file) else {
            bail!("--check-coordinator needs --principal and --key-file (or TESSERA_PRINCIPAL and TESSERA_PRINCIPAL_KEY)");
        };
        let client = crate::api::client(
            url,
            principal,
            crate::operator::load_key(key_file)?,
            self.ca_cert.as_deref(),
        )?;
        let view = crate::api::runtime()?
            .block_on(client.get_key(key))
            .with_context(|| format!("asking {url} for key {key}'s epoch"))?;
        Ok(Some(view.epoch))
    }
}

/// The latest epoch of `key` this store knows was replaced, from its reshare records: every
/// epoch up to it is superseded here.
fn replaced_here(state: &NodeState<FileStore>, key: KeyId) -> Result<Option<u64>> {
    Ok(state
        .reshares(key)?
        .into_iter()
        .filter_map(|(_, record)| match record {
            ReshareRecord::Activated { report, .. } | ReshareRecord::Closed { report } => {
                Some(report.from_epoch)
            }
            _ => None,
        })
        .max())
}

fn list(args: ListArgs) -> Result<()> {
    let mut stale = 0;
    for path in &args.backups {
        let backup = read_backup(path)?;
        let m = &backup.header.metadata;
        let status = match args.epoch.current(&m.key)? {
            Some(current) if current > m.epoch => {
                stale += 1;
                format!("STALE: the key is at epoch {current}; make a new backup")
            }
            Some(_) => "current".to_owned(),
            None => "epoch not checked (give --check-coordinator or --current-epoch)".to_owned(),
        };
        println!(
            "{}  {} of key {} epoch {}  created {}  {}",
            path.display(),
            m.party,
            m.key,
            m.epoch,
            m.created_at,
            status
        );
    }
    if stale > 0 {
        println!(
            "{stale} stale backup(s): their shares no longer work with the key's current ones"
        );
    }
    Ok(())
}

fn restore(args: RestoreArgs) -> Result<()> {
    if args.allow_superseded && args.store.config.is_none() {
        bail!(
            "--allow-superseded needs --config: the override is recorded in the node's audit log"
        );
    }
    let backup = read_backup(&args.backup)?;
    let m = backup.header.metadata.clone();
    let config = load_config(&args.store)?;
    let roster = match (&config, &args.roster) {
        (Some(config), _) => read_roster(&config.roster)?,
        (None, Some(roster)) => read_roster(roster)?,
        (None, None) => bail!(
            "restore checks the party's signature: give --roster with --store (or use --config)"
        ),
    };
    let mut identities = Vec::new();
    for file in &args.identities {
        let text = read_secret(file, "officer key")?;
        identities.extend(
            tessera_backup::parse_identities(&text)
                .with_context(|| format!("reading {}", file.display()))?,
        );
    }
    let restored = tessera_backup::restore(&backup, &identities, |party, digest, signature| {
        signed_by(&roster, party, digest, signature)
    })?;
    let contents: Contents = serde_json::from_slice(&restored.secret)
        .context("the backup decrypted but its contents do not decode")?;
    if contents.key.to_string() != m.key
        || public_key_hex(&contents.record) != m.public_key
        || contents.record.epoch != m.epoch
    {
        bail!("the restored share is not of the key and epoch the backup names; refusing it");
    }
    if !contents.record.share.fits(contents.record.kind) {
        bail!(
            "the restored share is not on the curve of a {} key; refusing it",
            contents.record.kind
        );
    }
    if let (KeyKind::Ecdsa, Some(core)) = (contents.record.kind, contents.record.share.secp256k1())
    {
        let aux = contents
            .record
            .aux
            .clone()
            .context("the backup holds no auxiliary info for the share")?;
        KeyShare::from_parts((core.clone(), aux))
            .map_err(|e| anyhow::anyhow!("the restored share does not validate: {e}"))?;
    }

    let state = open_state(&args.store, config.as_ref())?;
    if state.has_key(contents.key)? {
        bail!(
            "this store already holds key {}; restore into the store of the node that lost it",
            contents.key
        );
    }
    let known = [
        args.epoch.current(&m.key)?,
        replaced_here(&state, contents.key)?.map(|e| e.saturating_add(1)),
    ];
    let current = known.iter().flatten().copied().max();
    let superseded = current.is_some_and(|c| c > m.epoch);
    if superseded && !args.allow_superseded {
        bail!(
            "this backup holds epoch {} of key {}, but the key is at epoch {}: a refresh or \
             reshare replaced it, and its share no longer works with the current ones. Restore \
             a backup of the current epoch, or replace this party by resharing from the \
             remaining holders (`tessera key reshare`). For disaster recovery only, \
             --allow-superseded restores it anyway (recorded in the node's audit log)",
            m.epoch,
            m.key,
            current.unwrap_or_default()
        );
    }
    if current.is_none() {
        eprintln!(
            "note: the key's current epoch was not checked (give --check-coordinator or \
             --current-epoch); the backup holds epoch {}",
            m.epoch
        );
    }
    state.put_key(contents.key, &contents.record)?;
    // What the node will load: the stored record as a complete key share.
    let (_, share) = state.key_share(contents.key)?;
    if hex::encode(share.core.shared_public_key.to_bytes(true)) != m.public_key {
        bail!("the stored share does not load with the public key the backup names");
    }
    if let Some(config) = &config {
        let identity = read_identity(&config.identity)?;
        let party = identity.party();
        let log = AuditLog::open(Box::new(identity), config.audit_options(party))
            .context("opening the node's audit log (is the node stopped?)")?;
        let mut event = NewEvent::new(
            "operator",
            if superseded {
                "backup.restored_superseded"
            } else {
                "backup.restored"
            },
            format!("key:{}", m.key),
        )
        .detail("key", &m.key)
        .detail("epoch", m.epoch)
        .detail("backup", &backup.header.id)
        .detail("officers", restored.officers.join(", "));
        if let Some(current) = current {
            event = event.detail("current_epoch", current);
        }
        log.record(event)
            .context("recording the restore in the node's audit log")?;
    }
    println!(
        "restored {}'s share of key {} (epoch {}, public key {}) with {}; the node can sign \
         with it again",
        m.party,
        m.key,
        m.epoch,
        m.public_key,
        restored.officers.join(", ")
    );
    if superseded {
        eprintln!(
            "warning: epoch {} is superseded (the key is at epoch {}); restored on purpose, and \
             recorded in the node's audit log",
            m.epoch,
            current.unwrap_or_default()
        );
    }
    Ok(())
}
