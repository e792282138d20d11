//! `tessera key`, `tessera request`, `tessera committee` and `tessera policy show`: the
//! coordinator's API, called as one principal who signs every call with their own key.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::{Chain, Eip1559Request, U256};
use tessera_coordinator::api::model::{
    DerivationPath, MessageBody, PayloadBody, PsbtBody, SubmitBody,
};
use tessera_coordinator::api::model::{KeyChangeView, KeyView};
use tessera_coordinator::client::{CoordinatorClient, RequestQuery};
use tessera_coordinator::store::{KeyChangeState, ProposalId, RequestState};
use tessera_policy::KeyOperation;
use tessera_wire::{KeyKind, PartyId, RequestId};

use crate::confirm::{describe_key_change, describe_request, ConfirmArgs};
use crate::operator::load_key;

/// Who calls the coordinator, and where.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The coordinator's base URL.
    #[arg(
        long,
        env = "TESSERA_COORDINATOR_URL",
        default_value = "http://127.0.0.1:8700"
    )]
    coordinator: String,
    /// Your principal name in the policy.
    #[arg(long, env = "TESSERA_PRINCIPAL")]
    principal: String,
    /// Your secret key file (`tessera operator new`).
    #[arg(long = "key-file", env = "TESSERA_PRINCIPAL_KEY")]
    key_file: PathBuf,
    /// The CA certificate (PEM) the coordinator's HTTPS certificate must chain to; needed for
    /// an https URL (`tessera dev` prints its own). No other CA is trusted.
    #[arg(long = "ca-cert", env = "TESSERA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ApiArgs {
    pub(crate) fn client(&self) -> Result<CoordinatorClient> {
        let key = load_key(&self.key_file)?;
        client(
            &self.coordinator,
            &self.principal,
            key,
            self.ca_cert.as_deref(),
        )
    }
}

/// A client of the coordinator at `url` as `principal`, trusting only the CA in `ca_cert` for
/// an https URL.
pub(crate) fn client(
    url: &str,
    principal: &str,
    key: tessera_policy::OperatorKey,
    ca_cert: Option<&std::path::Path>,
) -> Result<CoordinatorClient> {
    match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            CoordinatorClient::with_ca(url, principal, key, &pem)
        }
        None => CoordinatorClient::new(url, principal, key),
    }
    .context("cannot set up the coordinator client")
}

/// Committee commands (admins).
#[derive(Subcommand)]
pub enum CommitteeCommand {
    /// Set up a committee: auxiliary info on its nodes (tens of seconds to minutes; each node
    /// uses one prime set from its pool). Waits until it is ready.
    Setup {
        #[command(flatten)]
        api: ApiArgs,
        /// The parties, in order, e.g. p1,p2,p3.
        #[arg(long, value_delimiter = ',', required = true)]
        parties: Vec<PartyId>,
    },
    /// List committees.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Key commands.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a threshold key on a ready committee (distributed key generation; admins).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// A unique name for the key.
        #[arg(long)]
        name: String,
        /// The committee, e.g. p1,p2,p3.
        #[arg(long, value_delimiter = ',', required = true)]
        committee: Vec<PartyId>,
        /// Signers needed (a taproot or ed25519 key signs with exactly this many).
        #[arg(long)]
        threshold: u16,
        /// The key's kind: ecdsa (Ethereum; Bitcoin P2WPKH), taproot (Bitcoin P2TR key path,
        /// FROST) or ed25519 (Solana, FROST).
        #[arg(long, default_value = "ecdsa")]
        kind: KeyKind,
    },
    /// List keys.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a key (name or id): who holds it, its epoch, and any rotation step still due
    /// (an activation, or holders of the previous epoch not confirmed erased).
    Show {
        #[command(flatten)]
        api: ApiArgs,
        /// The key's name or id.
        key: String,
    },
    /// Propose to refresh a key: every holder gets a new share of the same key (the public key,
    /// address and chain code stay), and for an ECDSA key new auxiliary info (fresh Paillier
    /// keys); shares and Paillier keys taken before no longer work with those after. For an
    /// ECDSA key each holder uses one prime set from its pool; the answer says if one has none
    /// ready (the refresh then waits for it). Taproot and Ed25519 keys need none. Admins
    /// propose; other admins approve with `tessera key approve-change`, and the last approval
    /// runs it (every holder must be reachable).
    Refresh {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// The key's name or id.
        key: String,
    },
    /// Propose to reshare a key to a committee and threshold: parties join or leave, the
    /// threshold changes, or a lost party is replaced from the remaining holders. For an ECDSA
    /// key the new committee makes the new epoch's auxiliary info (one prime set each). Admins
    /// propose;
    /// other admins approve with `tessera key approve-change`; every node re-checks their
    /// approvals before it takes part (the key's threshold of holders must be reachable), and
    /// every holder of the old epoch, dealer or not, erases it once the new one is active.
    Reshare {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// The key's name or id.
        key: String,
        /// The new committee, e.g. p1,p2,p3,p4,p5, in ascending order.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<PartyId>,
        /// Signers needed in the new committee.
        #[arg(long)]
        threshold: u16,
    },
    /// Propose how often a key is refreshed automatically (`--every 30d`), or to stop
    /// (`--off`). Once other admins approved, the coordinator refreshes it on schedule.
    ScheduleRefresh {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// The key's name or id.
        key: String,
        /// The interval: a number with s, m, h or d (e.g. 12h, 30d); at least 1h.
        #[arg(long, value_parser = parse_interval, required_unless_present = "off", conflicts_with = "off")]
        every: Option<u64>,
        /// Stop scheduled refreshes.
        #[arg(long)]
        off: bool,
    },
    /// List key changes (refresh, reshare, refresh schedule), newest first.
    Changes {
        #[command(flatten)]
        api: ApiArgs,
        /// Only changes in this state: pending, running, applied, failed or expired.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The page after this change (the id the previous page named as next).
        #[arg(long)]
        after: Option<ProposalId>,
    },
    /// Approve a key change, as an admin other than its proposer (the proposer's own
    /// signature is made when it proposes). The change is checked (its id, its policy against
    /// your --policy-pin), shown and, once you confirm, its digest as recomputed here is
    /// signed with your key; the approval that completes the change carries it out and waits
    /// for it.
    ApproveChange {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        confirm: ConfirmArgs,
        /// The key change's id.
        id: ProposalId,
    },
    /// Resend the due step of a key's last refresh or reshare: its activation to the
    /// participants it has not reached, or the closure of the previous epoch to holders that
    /// have not confirmed erasing it (the coordinator also does this by itself every rotation
    /// check).
    Activate {
        #[command(flatten)]
        api: ApiArgs,
        /// The key's name or id.
        key: String,
    },
    /// The address of a key, or of its HD child at `--path`, on a chain: Ethereum or Bitcoin
    /// (P2WPKH) for an ECDSA key, Bitcoin (P2TR) for a taproot key, Solana for an ed25519 key.
    /// With --json, also the public key a PSBT names as its signer.
    Address {
        #[command(flatten)]
        api: ApiArgs,
        /// The key's name or id.
        key: String,
        /// A non-hardened derivation path, e.g. 0/7 (default: the master key).
        #[arg(long, default_value = "")]
        path: String,
        /// ethereum, bitcoin or solana (default: the key's own: ethereum for ecdsa, bitcoin
        /// for taproot, solana for ed25519).
        #[arg(long)]
        chain: Option<Chain>,
        /// The Bitcoin network: mainnet, testnet, signet or regtest.
        #[arg(long, default_value = "mainnet")]
        network: BitcoinNetwork,
    },
}

/// A key change's id and lifetime.
#[derive(Args, Clone)]
pub struct ChangeArgs {
    /// The change's id (32 hex digits; default: a fresh random one). Reuse it to retry.
    #[arg(long)]
    id: Option<ProposalId>,
    /// Seconds until it expires unapproved (default: the coordinator's proposal lifetime).
    #[arg(long)]
    lifetime_secs: Option<u64>,
}

impl ChangeArgs {
    fn id(&self) -> ProposalId {
        self.id.unwrap_or_else(ProposalId::random)
    }
}

/// Parses an interval such as `3600`, `90m`, `12h` or `30d` into seconds.
fn parse_interval(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: use a number with s, m, h or d, e.g. 30d"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?}: use a number with s, m, h or d, e.g. 30d"))
}

/// Signs the key change the coordinator answered a proposal with, as its proposer, after
/// checking that it is the change asked for: this id, this key, this operation, proposed by
/// this principal (a change is allowed only with its proposer's signature). A retry of a
/// change already signed is left as it is.
async fn sign_as_proposer(
    client: &CoordinatorClient,
    api: &ApiArgs,
    id: ProposalId,
    key: &str,
    operation: &KeyOperation,
    view: KeyChangeView,
) -> Result<KeyChangeView> {
    let change = &view.change;
    let is_key = view.key_name == key || view.key_id.to_string() == key;
    if view.id != id
        || change.id.0 != id.0
        || !is_key
        || change.key != view.key_id
        || &change.operation != operation
        || change.proposed_by != api.principal
    {
        bail!(
            "the coordinator answered with a change that is not the one proposed (change {}, \
             key {}, '{}', by {}); nothing was signed",
            view.id,
            view.key_name,
            change.operation,
            change.proposed_by
        );
    }
    if view.decisions.iter().any(|d| d.principal == api.principal) {
        return Ok(view);
    }
    let signature = client.key_change_approval_for(change);
    Ok(client.approve_key_change(id, &signature).await?)
}

/// Prints a key for people: what holds it, its epoch, and any rotation step still due.
fn print_key(key: &KeyView) {
    print!("{}", render_key(key));
}

/// A key for people (see [`print_key`]), one line per item.
fn render_key(key: &KeyView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "key        {} ({})", key.name, key.id);
    let _ = writeln!(out, "kind       {}", key.kind);
    let _ = writeln!(out, "status     {}, epoch {}", key.status, key.epoch);
    let _ = writeln!(
        out,
        "held by    {}-of-{} on {}",
        key.threshold,
        key.committee.len(),
        PartyId::list(&key.committee)
    );
    if let Some(public_key) = &key.public_key {
        let _ = writeln!(out, "public key {public_key}");
    }
    if let Some(address) = &key.address {
        let _ = writeln!(out, "address    {address}");
    }
    if let Some(error) = &key.error {
        let _ = writeln!(out, "error      {error}");
    }
    if let Some(every) = key.refresh_every_secs {
        let _ = writeln!(
            out,
            "refresh    every {every} s, next at {}",
            key.next_refresh_at
                .map_or_else(|| "-".to_owned(), |t| t.to_string())
        );
    }
    if let Some(at) = key.rotated_at {
        let _ = writeln!(out, "rotated at {at}");
    }
    if let Some(session) = &key.activation_due {
        let _ = writeln!(
            out,
            "due        the activation of epoch {} (session {session}) has not reached every \
             participant; it is resent every rotation check, or now with `tessera key activate {}`",
            key.epoch, key.name
        );
    }
    if !key.erasure_unconfirmed.is_empty() {
        let _ = writeln!(
            out,
            "not confirmed erased: {} still may hold epoch {} or older; they are asked again \
             every rotation check (or with `tessera key activate {}`)",
            PartyId::list(&key.erasure_unconfirmed),
            key.epoch.saturating_sub(1),
            key.name
        );
    }
    out
}

/// Prints a key change for people.
fn print_key_change(change: &KeyChangeView) {
    print!("{}", render_key_change(change));
}

/// A key change for people (see [`print_key_change`]), one line per item; the coordinator's
/// notes (e.g. receivers without a prime set ready) each on a `note` line.
fn render_key_change(change: &KeyChangeView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "change   {}", change.id);
    let _ = writeln!(out, "key      {} ({})", change.key_name, change.key_id);
    let _ = writeln!(out, "does     {}", change.operation);
    let _ = writeln!(out, "state    {}", change.state);
    let _ = writeln!(out, "by       {}", change.proposed_by);
    let approvers: Vec<&str> = change
        .decisions
        .iter()
        .map(|d| d.principal.as_str())
        .collect();
    if !approvers.is_empty() {
        let _ = writeln!(out, "approved {}", approvers.join(", "));
    }
    if let Some(error) = &change.error {
        let _ = writeln!(out, "error    {error}");
    }
    for note in &change.notes {
        let _ = writeln!(out, "note     {note}");
    }
    if change.state == KeyChangeState::Pending {
        let _ = writeln!(
            out,
            "next     other admins approve: tessera key approve-change {}",
            change.id
        );
    }
    out
}

/// What a request signs.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct WhatToSign {
    /// An unsigned Ethereum transaction (legacy EIP-155 or EIP-1559), hex.
    #[arg(long)]
    tx: Option<String>,
    /// Build an EIP-1559 transfer of `--value-wei` to this address (with `--chain-id` and
    /// `--nonce`).
    #[arg(long, requires_all = ["value_wei", "chain_id", "nonce"])]
    transfer_to: Option<String>,
    /// An EIP-191 message (text) to sign.
    #[arg(long)]
    message: Option<String>,
    /// A PSBT file (BIP-174, base64): the inputs that spend the key's output (at --path) are
    /// signed; with --network. The answer is the network transaction, or, if other keys'
    /// inputs remain, the PSBT to submit for them.
    #[arg(long, requires = "network")]
    psbt: Option<PathBuf>,
    /// Build a Solana SOL transfer from the key's address to this address (base58), with
    /// --lamports and --recent-blockhash.
    #[arg(long, requires_all = ["lamports", "recent_blockhash"])]
    solana_transfer: Option<String>,
    /// Raw bytes (text) to sign with an ed25519 key (policy kind raw_message).
    #[arg(long)]
    ed25519_message: Option<String>,
}

/// Request commands.
// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum RequestCommand {
    /// Submit a signing request (operators), then sign the request the coordinator answered
    /// with as its submitter, once it is shown and confirmed (the nodes sign nothing its
    /// submitter did not sign). Prints the request and the policy's decision.
    Submit {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        confirm: ConfirmArgs,
        /// The key's name or id.
        #[arg(long = "signing-key")]
        key: String,
        /// A non-hardened derivation path, e.g. 0/7 (default: the master key).
        #[arg(long, default_value = "")]
        path: String,
        #[command(flatten)]
        what: WhatToSign,
        /// Value in wei, for `--transfer-to`.
        #[arg(long)]
        value_wei: Option<String>,
        /// Chain id, for `--transfer-to` (1 mainnet, 11155111 Sepolia).
        #[arg(long)]
        chain_id: Option<u64>,
        /// The sender's nonce, for `--transfer-to`.
        #[arg(long)]
        nonce: Option<u64>,
        /// The Bitcoin network, for `--psbt`: mainnet, testnet, signet or regtest.
        #[arg(long)]
        network: Option<BitcoinNetwork>,
        /// Lamports to send, for `--solana-transfer`.
        #[arg(long)]
        lamports: Option<u64>,
        /// The recent blockhash (base58) the transfer is bound to, for `--solana-transfer`.
        #[arg(long)]
        recent_blockhash: Option<String>,
        /// The request id (32 hex digits; default random). Resubmitting with the same id is
        /// safe: the stored request is returned.
        #[arg(long)]
        id: Option<RequestId>,
        /// Seconds until it expires unsigned.
        #[arg(long)]
        lifetime_secs: Option<u64>,
    },
    /// Approve a request (approvers). The request is fetched, decoded and checked locally,
    /// its policy compared with your --policy-pin, and what it does shown (chain,
    /// destination, amount, maximum fee); once you confirm, your key signs its digest as
    /// recomputed here.
    Approve {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        confirm: ConfirmArgs,
        /// The request id.
        id: RequestId,
    },
    /// Reject a request (approvers), after the same checks as approve.
    Reject {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        confirm: ConfirmArgs,
        /// The request id.
        id: RequestId,
    },
    /// Cancel a request (its submitter, or an admin) before it is signed.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        /// The request id.
        id: RequestId,
    },
    /// Show a request: state, decisions, reasons, and once signed the signed transaction.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        /// The request id.
        id: RequestId,
    },
    /// List requests, newest first.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only requests in this state (pending_approval, approved, signing, signed, rejected,
        /// failed, cancelled, expired).
        #[arg(long)]
        state: Option<String>,
        /// Only requests for this key (name or id).
        #[arg(long = "signing-key")]
        key: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// The page after this request (the id the previous page named as next).
        #[arg(long)]
        after: Option<RequestId>,
    },
}

/// `tessera policy show`.
#[derive(Args)]
pub struct PolicyShowArgs {
    #[command(flatten)]
    api: ApiArgs,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A derivation path as the API writes it: `m/0/7`, `0/7` or empty for the master key.
fn parse_path(text: &str) -> Result<DerivationPath> {
    if text.is_empty() {
        return Ok(DerivationPath::default());
    }
    text.parse()
        .map_err(|e: String| anyhow::anyhow!("--path {text:?}: {e}"))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_change_or_json(api: &ApiArgs, change: &KeyChangeView) -> Result<()> {
    if api.json {
        return print_json(change);
    }
    print_key_change(change);
    Ok(())
}

pub fn run_committee(cmd: CommitteeCommand) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            CommitteeCommand::Setup { api, parties } => {
                let client = api.client()?;
                eprintln!("setting up committee {} (auxiliary info; tens of seconds)...", PartyId::list(&parties));
                let mut view = client.setup_committee(&parties).await?;
                let started = std::time::Instant::now();
                while view.status.to_string() == "creating" {
                    if started.elapsed() > std::time::Duration::from_secs(1800) {
                        bail!("the committee is still being set up after 30 minutes; check the nodes' logs");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    view = client.get_committee(&parties).await?;
                }
                if api.json {
                    return print_json(&view);
                }
                match &view.error {
                    Some(error) => bail!("committee set-up failed: {error}"),
                    None => println!("committee {} is {}", PartyId::list(&parties), view.status),
                }
            }
            CommitteeCommand::List { api } => {
                let list = api.client()?.list_committees().await?;
                if api.json {
                    return print_json(&list);
                }
                for c in list {
                    println!("{} {}", PartyId::list(&c.parties), c.status);
                }
            }
        }
        Ok(())
    })
}

pub fn run_key(cmd: KeyCommand) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            KeyCommand::Create {
                api,
                name,
                committee,
                threshold,
                kind,
            } => {
                let key = api
                    .client()?
                    .create_key(&name, &committee, threshold, kind)
                    .await?;
                if api.json {
                    return print_json(&key);
                }
                println!("key      {} ({})", key.name, key.id);
                println!("kind     {}", key.kind);
                println!("status   {}", key.status);
                if let Some(address) = &key.address {
                    println!("address  {address}");
                }
            }
            KeyCommand::Refresh { api, change, key } => {
                let client = api.client()?;
                let id = change.id();
                let view = client.refresh_key(&key, id, change.lifetime_secs).await?;
                let view =
                    sign_as_proposer(&client, &api, id, &key, &KeyOperation::Refresh, view).await?;
                print_change_or_json(&api, &view)?;
            }
            KeyCommand::Reshare {
                api,
                change,
                key,
                to,
                threshold,
            } => {
                let client = api.client()?;
                let id = change.id();
                let view = client
                    .reshare_key(&key, id, &to, threshold, change.lifetime_secs)
                    .await?;
                let operation = KeyOperation::Reshare {
                    committee: to.clone(),
                    threshold,
                };
                let view = sign_as_proposer(&client, &api, id, &key, &operation, view).await?;
                print_change_or_json(&api, &view)?;
            }
            KeyCommand::ScheduleRefresh {
                api,
                change,
                key,
                every,
                off: _,
            } => {
                let client = api.client()?;
                let id = change.id();
                let view = client
                    .schedule_refresh(&key, id, every, change.lifetime_secs)
                    .await?;
                let operation = KeyOperation::RefreshSchedule { every_secs: every };
                let view = sign_as_proposer(&client, &api, id, &key, &operation, view).await?;
                print_change_or_json(&api, &view)?;
            }
            KeyCommand::Changes {
                api,
                state,
                limit,
                after,
            } => {
                let state = state
                    .map(|s| s.parse::<KeyChangeState>())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
                let page = api
                    .client()?
                    .list_key_changes(state, Some(limit), after)
                    .await?;
                if api.json {
                    return print_json(&page);
                }
                for c in page.changes {
                    println!(
                        "{} {} {} {} (by {})",
                        c.id, c.key_name, c.state, c.operation, c.proposed_by
                    );
                }
                print_next_page(page.next_after);
            }
            KeyCommand::ApproveChange { api, confirm, id } => {
                let client = api.client()?;
                let change = client.get_key_change(id).await?;
                if change.id != id
                    || change.change.id.0 != id.0
                    || change.change.key != change.key_id
                {
                    bail!(
                        "the coordinator answered with key change {} for {id}; nothing was signed",
                        change.id
                    );
                }
                confirm.check_policy(&change.change.policy, &format!("key change {id}"))?;
                confirm.confirm(
                    "approve this key change",
                    &describe_key_change(&change.change, &change.key_name),
                )?;
                let signature = client.key_change_approval_for(&change.change);
                let view = client.approve_key_change(id, &signature).await?;
                print_change_or_json(&api, &view)?;
                if view.state == KeyChangeState::Failed {
                    bail!(
                        "key change {id} was approved but failed: {}",
                        view.error.as_deref().unwrap_or("no error recorded")
                    );
                }
            }
            KeyCommand::Activate { api, key } => {
                let key = api.client()?.activate_key(&key).await?;
                if api.json {
                    return print_json(&key);
                }
                match (&key.activation_due, key.erasure_unconfirmed.is_empty()) {
                    (None, true) => println!(
                        "key {}: epoch {} active and the previous one erased everywhere; \
                         {}-of-{} on {}",
                        key.name,
                        key.epoch,
                        key.threshold,
                        key.committee.len(),
                        PartyId::list(&key.committee)
                    ),
                    _ => print_key(&key),
                }
            }
            KeyCommand::List { api } => {
                let keys = api.client()?.list_keys().await?;
                if api.json {
                    return print_json(&keys);
                }
                for k in keys {
                    println!(
                        "{} {} {}-of-{} {} {}",
                        k.name,
                        k.id,
                        k.threshold,
                        k.committee.len(),
                        k.status,
                        k.address.as_deref().unwrap_or("-")
                    );
                }
            }
            KeyCommand::Show { api, key } => {
                let key = api.client()?.get_key(&key).await?;
                if api.json {
                    return print_json(&key);
                }
                print_key(&key);
            }
            KeyCommand::Address {
                api,
                key,
                path,
                chain,
                network,
            } => {
                let path = parse_path(&path)?;
                let address = api
                    .client()?
                    .key_address(&key, &path.0, chain, Some(network))
                    .await?;
                if api.json {
                    return print_json(&address);
                }
                println!("{}", address.address);
            }
        }
        Ok(())
    })
}

/// What to sign besides an Ethereum transaction or message: a PSBT, a Solana transfer or a raw
/// Ed25519 message, built with the key's own public key where the payload names it.
async fn chain_payload(
    client: &CoordinatorClient,
    key: &str,
    path: &[u32],
    what: &WhatToSign,
    network: Option<BitcoinNetwork>,
    lamports: Option<u64>,
    recent_blockhash: Option<&str>,
) -> Result<Option<PayloadBody>> {
    if let Some(file) = &what.psbt {
        let network = network.context("--network is needed with --psbt")?;
        let psbt = std::fs::read_to_string(file)
            .with_context(|| format!("reading the PSBT {}", file.display()))?;
        let signer = client
            .key_address(key, path, Some(Chain::Bitcoin), Some(network))
            .await?
            .public_key;
        return Ok(Some(PayloadBody::BitcoinPsbt(PsbtBody {
            network: network.to_string(),
            psbt: psbt.trim().to_owned(),
            signer,
        })));
    }
    if let Some(to) = &what.solana_transfer {
        let to = tessera_chain::solana::parse_address(to).context("--solana-transfer")?;
        let blockhash = recent_blockhash.context("--recent-blockhash is needed")?;
        let recent_blockhash =
            tessera_chain::solana::parse_address(blockhash).context("--recent-blockhash")?;
        let from = client
            .key_address(key, path, Some(Chain::Solana), None)
            .await?
            .public_key;
        let from: [u8; 32] = hex::decode(&from)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("the coordinator answered with a malformed Solana key")?;
        let message = tessera_chain::solana::Transfer {
            from,
            to,
            lamports: lamports.context("--lamports is needed with --solana-transfer")?,
            recent_blockhash,
        }
        .build();
        return Ok(Some(PayloadBody::SolanaTransfer(hex::encode(message))));
    }
    if let Some(text) = &what.ed25519_message {
        return Ok(Some(PayloadBody::Ed25519Message(MessageBody::Utf8(
            text.clone(),
        ))));
    }
    Ok(None)
}

fn payload(
    what: &WhatToSign,
    value_wei: Option<&str>,
    chain_id: Option<u64>,
    nonce: Option<u64>,
) -> Result<PayloadBody> {
    if let Some(tx) = &what.tx {
        return Ok(PayloadBody::EthereumTx(
            tx.trim_start_matches("0x").to_owned(),
        ));
    }
    if let Some(text) = &what.message {
        return Ok(PayloadBody::Message(MessageBody::Utf8(text.clone())));
    }
    let Some(to) = &what.transfer_to else {
        bail!(
            "give --tx, --transfer-to, --message, --psbt, --solana-transfer or --ed25519-message"
        );
    };
    let to = tessera_policy::parse_address(to).context("--transfer-to")?;
    let value: U256 = value_wei
        .context("--value-wei is needed with --transfer-to")?
        .parse()
        .context("--value-wei must be a decimal number of wei")?;
    let raw = Eip1559Request::transfer(
        chain_id.context("--chain-id is needed with --transfer-to")?,
        nonce.context("--nonce is needed with --transfer-to")?,
        to,
        value,
    )
    .encode();
    Ok(PayloadBody::EthereumTx(hex::encode(raw)))
}

fn print_request(view: &tessera_coordinator::api::model::RequestView) {
    println!("request   {}", view.id);
    println!("key       {} path {:?}", view.key_name, view.path);
    println!("action    {}", view.action);
    println!("state     {}", view.state);
    for d in &view.decisions {
        if d.principal == view.submitted_by {
            println!("signed    {} (the submitter)", d.principal);
        } else {
            println!("decision  {} {}", d.principal, d.decision);
        }
    }
    for r in &view.reasons {
        println!("reason    {r}");
    }
    if let Some(address) = &view.address {
        println!("address   {address}");
    }
    if let Some(result) = &view.result {
        match hex::decode(result)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            // A PSBT (base64 of "psbt\xff...") whose other keys' inputs are still to sign.
            Some(psbt) if psbt.starts_with("cHNidP") => {
                println!("psbt      {psbt}");
                println!("next      the inputs of other keys are not signed yet: submit this PSBT for them");
            }
            _ => println!("result    0x{result}"),
        }
    }
    if let Some(error) = &view.error {
        println!("error     {error}");
    }
}

pub fn run_request(cmd: RequestCommand) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            RequestCommand::Submit {
                api,
                confirm,
                key,
                path,
                what,
                value_wei,
                chain_id,
                nonce,
                network,
                lamports,
                recent_blockhash,
                id,
                lifetime_secs,
            } => {
                let client = api.client()?;
                let path = parse_path(&path)?;
                let payload = match chain_payload(
                    &client,
                    &key,
                    &path.0,
                    &what,
                    network,
                    lamports,
                    recent_blockhash.as_deref(),
                )
                .await?
                {
                    Some(payload) => payload,
                    None => payload(&what, value_wei.as_deref(), chain_id, nonce)?,
                };
                let body = SubmitBody {
                    id: id.unwrap_or_else(RequestId::random),
                    key,
                    path,
                    payload,
                    lifetime_secs,
                };
                let view = client.submit(&body).await?;
                let view = sign_as_submitter(&client, &api, &confirm, &body, view).await?;
                if api.json {
                    return print_json(&view);
                }
                print_request(&view);
            }
            RequestCommand::Approve { api, confirm, id } => decide(api, &confirm, id, true).await?,
            RequestCommand::Reject { api, confirm, id } => decide(api, &confirm, id, false).await?,
            RequestCommand::Cancel { api, id } => {
                let view = api.client()?.cancel(id).await?;
                if api.json {
                    return print_json(&view);
                }
                print_request(&view);
            }
            RequestCommand::Show { api, id } => {
                let view = api.client()?.get_request(id).await?;
                if api.json {
                    return print_json(&view);
                }
                print_request(&view);
            }
            RequestCommand::List {
                api,
                state,
                key,
                limit,
                after,
            } => {
                let query = RequestQuery {
                    state: state
                        .map(|s| s.parse())
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("--state: {e}"))?,
                    key,
                    limit: Some(limit),
                    after,
                };
                let page = api.client()?.list_requests(&query).await?;
                if api.json {
                    return print_json(&page);
                }
                for r in page.requests {
                    println!("{} {} {} {}", r.id, r.state, r.key_name, r.action);
                }
                print_next_page(page.next_after);
            }
        }
        Ok(())
    })
}

/// Says how to see the next page of a list, if there is one.
fn print_next_page(next: Option<impl std::fmt::Display>) {
    if let Some(next) = next {
        println!("(more: add --after {next})");
    }
}

/// Signs the request the coordinator answered a submission with, as its submitter, after
/// checking that it is the request asked for: this id, key, path, payload and lifetime,
/// submitted by this principal, with a digest recomputed here (nodes refuse a request its
/// submitter did not sign; the coordinator fills in the times and the policy, so the
/// submitter signs its answer). A retry of a request already signed is left as it is.
async fn sign_as_submitter(
    client: &CoordinatorClient,
    api: &ApiArgs,
    confirm: &ConfirmArgs,
    body: &SubmitBody,
    view: tessera_coordinator::api::model::RequestView,
) -> Result<tessera_coordinator::api::model::RequestView> {
    let request = &view.request;
    let payload = body.payload.to_payload().map_err(anyhow::Error::msg)?;
    let is_key = view.key_name == body.key || view.key_id.to_string() == body.key;
    let lifetime_ok = body
        .lifetime_secs
        .is_none_or(|secs| request.expires_at.checked_sub(request.created_at) == Some(secs));
    if view.id != body.id
        || request.id != body.id
        || !is_key
        || request.key != view.key_id
        || request.path != body.path.0
        || request.payload != payload
        || request.submitted_by != api.principal
        || !lifetime_ok
    {
        bail!(
            "the coordinator answered with a request that is not the one submitted (request {}, \
             key {}, path {:?}, submitted by {}); nothing was signed",
            request.id,
            view.key_name,
            request.path,
            request.submitted_by
        );
    }
    let lines = describe_request(request, &view.key_name).context(
        "the request the coordinator answered with does not check out locally; nothing was signed",
    )?;
    if view.state != RequestState::PendingApproval
        || view.decisions.iter().any(|d| d.principal == api.principal)
    {
        return Ok(view);
    }
    confirm.check_policy(&request.policy, &format!("request {}", request.id))?;
    confirm.confirm("sign this request as its submitter", &lines)?;
    Ok(client.sign_submitted(request).await?)
}

/// Approves or rejects request `id` after checking it locally: the payload is decoded here and
/// the digest recomputed, the policy compared with the signer's pin, and what it does shown and
/// confirmed, so the approver signs what they saw, not what the server claims.
async fn decide(api: ApiArgs, confirm: &ConfirmArgs, id: RequestId, approve: bool) -> Result<()> {
    let client = api.client()?;
    let view = client.get_request(id).await?;
    let request = &view.request;
    if request.id != id || view.id != id {
        bail!(
            "the coordinator answered with request {} for {id}; nothing was signed",
            request.id
        );
    }
    let lines = describe_request(request, &view.key_name)?;
    confirm.check_policy(&request.policy, &format!("request {id}"))?;
    confirm.confirm(
        if approve {
            "approve this request"
        } else {
            "reject this request"
        },
        &lines,
    )?;
    let view = if approve {
        client.approve_request(request).await?
    } else {
        client.reject_request(request).await?
    };
    if api.json {
        return print_json(&view);
    }
    print_request(&view);
    Ok(())
}

pub fn run_policy_show(args: PolicyShowArgs) -> Result<()> {
    runtime()?.block_on(async {
        let policy = args.api.client()?.policy().await?;
        if args.api.json {
            return print_json(&policy);
        }
        println!("policy_pin = \"{}\"", policy.hash);
        println!("revision   {}", policy.revision);
        println!("{}", policy.document);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_coordinator::store::KeyStatus;
    use tessera_policy::{KeyChange, KeyEpoch, PolicyHash};
    use tessera_wire::KeyId;

    fn committee() -> Vec<PartyId> {
        vec![PartyId(1), PartyId(2), PartyId(4)]
    }

    /// A ready 2-of-3 key at epoch 2 on p1, p2, p4, with nothing due.
    fn key_view() -> KeyView {
        KeyView {
            id: KeyId::random(),
            name: "treasury".to_owned(),
            threshold: 2,
            committee: committee(),
            status: KeyStatus::Ready,
            kind: KeyKind::Ecdsa,
            public_key: Some("02ab".to_owned()),
            chain_code: None,
            address: Some("0x0000000000000000000000000000000000000001".to_owned()),
            error: None,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_100,
            refresh_every_secs: None,
            next_refresh_at: None,
            rotated_at: Some(1_700_000_100),
            epoch: 2,
            activation_due: None,
            erasure_unconfirmed: Vec::new(),
        }
    }

    /// A refresh of `treasury` just proposed, with the coordinator's `notes`.
    fn change_view(notes: Vec<String>) -> KeyChangeView {
        let key = KeyId::random();
        KeyChangeView {
            id: ProposalId::random(),
            key_id: key,
            key_name: "treasury".to_owned(),
            operation: "refresh".to_owned(),
            state: KeyChangeState::Pending,
            error: None,
            proposed_by: "alice".to_owned(),
            change_digest: "00".repeat(32),
            decisions: Vec::new(),
            created_at: 1_700_000_000,
            expires_at: 1_700_003_600,
            updated_at: 1_700_000_000,
            change: KeyChange {
                id: RequestId::random(),
                policy: PolicyHash([7; 32]),
                key,
                from: KeyEpoch {
                    epoch: 2,
                    committee: committee(),
                    threshold: 2,
                },
                operation: KeyOperation::Refresh,
                proposed_by: "alice".to_owned(),
                created_at: 1_700_000_000,
                expires_at: 1_700_003_600,
            },
            notes,
        }
    }

    #[test]
    fn a_key_shows_the_holders_not_confirmed_erased_by_name() {
        let mut key = key_view();
        key.erasure_unconfirmed = vec![PartyId(3)];
        let shown = render_key(&key);
        let line = shown
            .lines()
            .find(|l| l.starts_with("not confirmed erased: "))
            .unwrap_or_else(|| panic!("no erasure line in:\n{shown}"));
        assert!(
            line.starts_with("not confirmed erased: p3 still may hold epoch 1 or older"),
            "{line}"
        );
        assert!(line.contains("tessera key activate treasury"), "{line}");
        // The rest of the key is shown as before.
        assert!(shown.starts_with(&format!("key        treasury ({})\n", key.id)));
        assert!(
            shown.contains("held by    2-of-3 on p1, p2, p4\n"),
            "{shown}"
        );
    }

    #[test]
    fn a_key_whose_old_epoch_is_erased_everywhere_has_no_erasure_line() {
        let shown = render_key(&key_view());
        assert!(!shown.contains("not confirmed erased"), "{shown}");
        assert!(!shown.contains("p3"), "{shown}");
    }

    #[test]
    fn a_key_change_shows_the_coordinators_note_about_prime_sets() {
        let note = "p3 has no prime set ready now: the refresh renews the auxiliary info and \
                    will wait for their nodes to generate one (1 to 6 minutes each) when it runs";
        let change = change_view(vec![note.to_owned()]);
        let shown = render_key_change(&change);
        let notes: Vec<&str> = shown.lines().filter(|l| l.starts_with("note ")).collect();
        assert_eq!(notes, [format!("note     {note}")], "{shown}");
        // Before the next step, after the change itself.
        let (note_at, next_at) = (
            shown.find("note     ").unwrap(),
            shown.find("next     ").unwrap(),
        );
        assert!(note_at < next_at, "{shown}");
        assert!(
            shown.starts_with(&format!("change   {}\n", change.id)),
            "{shown}"
        );
        assert!(shown.contains("does     refresh\n"), "{shown}");
    }

    #[test]
    fn a_key_change_without_notes_has_no_note_line() {
        let shown = render_key_change(&change_view(Vec::new()));
        assert!(!shown.contains("note "), "{shown}");
    }
}
