//! `tessera audit`: verify and read the audit logs (files, or the JetStream stream).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_audit::filter::{format_time, parse_time};
use tessera_audit::stream::{default_stream_name, read_all};
use tessera_audit::verify::ChainSummary;
use tessera_audit::{
    file, AuditError, AuditRecord, Emitter, Filter, Summary, TrustedKeys, Verifier,
};
use tessera_channel::RosterHash;

use crate::api::{runtime, ApiArgs};
use crate::roster::load_roster;

/// Audit log commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify audit logs: every record's hash, every signature against the roster's keys,
    /// and each emitter's chain (sequence from 1 with no gap, each record linked to the one
    /// before). Prints a summary, or the first broken record and why, and exits with
    /// status 1. Given files and a stream, also checks that they agree (a file missing the
    /// stream's last records was cut short).
    Verify(VerifyArgs),
    /// Show audit events, oldest first, filtered by request, key, actor, emitter, action and
    /// time. With --roster the records are verified first.
    Show(ShowArgs),
    /// The coordinator's own audit events through its API (auditors and admins): the
    /// coordinator verifies its chain and answers the matching events.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many events (the newest; 1 to 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// Only events before this position: the `--before` a previous answer printed, for
        /// older events.
        #[arg(long)]
        before: Option<u64>,
    },
}

/// Where the records come from.
#[derive(Args)]
pub struct Source {
    /// Audit log files (one per emitter, e.g. `audit/p1.audit.jsonl`).
    files: Vec<PathBuf>,
    /// Read the JetStream stream on this NATS server (e.g. nats://127.0.0.1:4222).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The stream's name (default: TESSERA_AUDIT_<CLUSTER>, from the roster's cluster).
    #[arg(long, requires = "nats")]
    stream: Option<String>,
}

/// Options of `tessera audit verify`.
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: Source,
    /// The signed roster: records must be signed by its parties' and coordinators' keys.
    #[arg(long)]
    roster: PathBuf,
    /// The roster hash the nodes pin (64 hex digits); refuse a roster that differs.
    #[arg(long)]
    roster_pin: Option<String>,
    /// Print the summary (or the break) as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `tessera audit show`.
#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    source: Source,
    /// Verify the records against this roster before showing them.
    #[arg(long)]
    roster: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Which events to show.
#[derive(Args)]
pub struct FilterArgs {
    /// Events about this sign request (id).
    #[arg(long)]
    request: Option<String>,
    /// Events about this key (id).
    #[arg(long)]
    key: Option<String>,
    /// Events caused by this actor (principal name, party id, `system`).
    #[arg(long)]
    actor: Option<String>,
    /// Events written by this emitter (`p1`, `coordinator:<name>`).
    #[arg(long)]
    emitter: Option<String>,
    /// Events whose action starts with this (`request.`, `session.joined`).
    #[arg(long)]
    action: Option<String>,
    /// Events at or after this time (RFC 3339, e.g. 2026-11-22T07:00:00Z, or Unix ms).
    #[arg(long)]
    since: Option<String>,
    /// Events before this time (RFC 3339 or Unix ms).
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        Ok(Filter {
            request: self.request.clone(),
            key: self.key.clone(),
            actor: self.actor.clone(),
            emitter: self.emitter.clone(),
            action: self.action.clone(),
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
        })
    }
}

pub fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Show(args) => show(args),
        AuditCommand::Events {
            api,
            filter,
            limit,
            before,
        } => events(api, filter, limit, before),
    }
}

/// The records of each source: files one by one, then the stream.
struct Loaded {
    sources: Vec<(String, Vec<Result<AuditRecord, AuditError>>)>,
}

fn load(source: &Source, cluster: Option<&str>) -> Result<Loaded> {
    if source.files.is_empty() && source.nats.is_none() {
        bail!("name audit log files, or a stream with --nats URL (see --help)");
    }
    let mut sources = Vec::new();
    for path in &source.files {
        let records = file::read(path)?;
        sources.push((path.display().to_string(), records));
    }
    if let Some(url) = &source.nats {
        let name = match (&source.stream, cluster) {
            (Some(name), _) => name.clone(),
            (None, Some(cluster)) => default_stream_name(cluster),
            (None, None) => bail!("name the stream with --stream (or give --roster)"),
        };
        let records = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let client = async_nats::connect(url.as_str())
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                let js = async_nats::jetstream::new(client);
                anyhow::Ok(read_all(&js, &name).await?)
            })?;
        sources.push((format!("stream {name}"), records));
    }
    Ok(Loaded { sources })
}

fn trusted_keys(roster: &Path, pin: Option<&str>) -> Result<TrustedKeys> {
    let signed = load_roster(roster)?;
    if let Some(pin) = pin {
        let pin = RosterHash::from_hex(pin).context("--roster-pin")?;
        let actual = signed.roster.hash();
        if !actual.matches(&pin) {
            bail!(
                "the roster {} has hash {actual}, not the pinned {pin}",
                roster.display()
            );
        }
    }
    Ok(TrustedKeys::from_roster(&signed.roster)?)
}

fn verify(args: VerifyArgs) -> Result<()> {
    let keys = trusted_keys(&args.roster, args.roster_pin.as_deref())?;
    let loaded = load(&args.source, Some(keys.cluster()))?;
    let mut summaries: Vec<(String, Summary)> = Vec::new();
    for (name, records) in loaded.sources {
        match Verifier::verify_all(keys.clone(), records) {
            Ok(summary) => summaries.push((name, summary)),
            Err(broken) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": false, "source": name, "broken": broken})
                    );
                }
                bail!("{name}: BROKEN at {broken}");
            }
        }
    }
    let disagreements = compare(&summaries);
    if args.json {
        let report: BTreeMap<&str, &Summary> =
            summaries.iter().map(|(n, s)| (n.as_str(), s)).collect();
        println!(
            "{}",
            serde_json::json!({"ok": disagreements.is_empty(), "sources": report, "disagreements": disagreements})
        );
    } else {
        for (name, summary) in &summaries {
            print_summary(name, summary);
        }
        for line in &disagreements {
            println!("DISAGREE: {line}");
        }
    }
    if !disagreements.is_empty() {
        bail!("the sources disagree (see above)");
    }
    Ok(())
}

/// Where the files and the stream hold different chains for one emitter. A stream behind the
/// file is normal for a moment (it is forwarded after the file is written); a file behind the
/// stream, or different heads at the same position, is not.
fn compare(summaries: &[(String, Summary)]) -> Vec<String> {
    let mut files: BTreeMap<&Emitter, &ChainSummary> = BTreeMap::new();
    let mut stream: Option<&Summary> = None;
    for (name, summary) in summaries {
        if name.starts_with("stream ") {
            stream = Some(summary);
        } else {
            files.extend(summary.chains.iter());
        }
    }
    let Some(stream) = stream else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (emitter, in_file) in files {
        let Some(in_stream) = stream.chains.get(emitter) else {
            continue;
        };
        if in_stream.last_seq > in_file.last_seq {
            out.push(format!(
                "{emitter}: the stream holds records up to seq {} but the file ends at {}: the \
                 file was cut short",
                in_stream.last_seq, in_file.last_seq
            ));
        } else if in_stream.last_seq == in_file.last_seq && in_stream.head != in_file.head {
            out.push(format!(
                "{emitter}: seq {} differs between the file and the stream",
                in_file.last_seq
            ));
        } else if in_stream.last_seq < in_file.last_seq {
            println!(
                "note: {emitter}: the stream is {} record(s) behind the file (not yet forwarded)",
                in_file.last_seq - in_stream.last_seq
            );
        }
    }
    out
}

fn print_summary(name: &str, summary: &Summary) {
    println!(
        "{name}: verified {} event(s) from {} emitter(s)",
        summary.events,
        summary.chains.len()
    );
    for (emitter, chain) in &summary.chains {
        println!(
            "  {:<24} seq 1..{:<6} {} .. {}  head {}",
            emitter.to_string(),
            chain.last_seq,
            format_time(chain.first_time),
            format_time(chain.last_time),
            chain.head
        );
    }
}

fn show(args: ShowArgs) -> Result<()> {
    let keys = args
        .roster
        .as_ref()
        .map(|r| trusted_keys(r, None))
        .transpose()?;
    let filter = args.filter.filter()?;
    let loaded = load(&args.source, keys.as_ref().map(|k| k.cluster()))?;
    let mut records = Vec::new();
    for (name, items) in loaded.sources {
        if let Some(keys) = &keys {
            if let Err(broken) = Verifier::verify_all(keys.clone(), items.iter().cloned_ok()) {
                bail!("{name}: BROKEN at {broken}; not showing unverified records");
            }
        }
        for item in items {
            match item {
                Ok(record) => records.push(record),
                Err(e) => eprintln!("warning: {name}: skipping an unreadable record: {e}"),
            }
        }
    }
    records.sort_by_key(|r| (r.time, r.emitter.clone(), r.seq));
    records.dedup_by(|a, b| a.emitter == b.emitter && a.seq == b.seq && a.hash == b.hash);
    for record in records.iter().filter(|r| filter.matches(r)) {
        if args.json {
            println!("{}", record.to_json_line());
        } else {
            print_record(record);
        }
    }
    Ok(())
}

fn events(
    api: ApiArgs,
    filter: FilterArgs,
    limit: Option<usize>,
    before: Option<u64>,
) -> Result<()> {
    let filter = filter.filter()?;
    let client = api.client()?;
    let answer = runtime()?.block_on(client.audit_events(&filter, limit, before))?;
    if api.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        for record in answer.events.iter().filter(|r| filter.matches(r)) {
            print_record(record);
        }
        if let Some(next) = answer.next_before {
            println!("older events: add --before {next}");
        }
        println!(
            "{} event(s) matched; {}",
            answer.matched,
            if answer.verified {
                format!("the chain of {} verified", answer.emitter)
            } else {
                format!(
                    "the chain is BROKEN: {}",
                    answer.broken.as_deref().unwrap_or("")
                )
            }
        );
    }
    if !answer.verified {
        bail!("the coordinator's audit chain is broken");
    }
    Ok(())
}

fn print_record(r: &AuditRecord) {
    let details: Vec<String> = r
        .details
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "{} {:<20} #{:<5} {:<14} {:<26} {} {}",
        format_time(r.time),
        r.emitter.to_string(),
        r.seq,
        r.actor,
        r.action,
        r.subject,
        details.join(" ")
    );
}

/// Clones the readable records and turns unreadable ones into errors for the verifier.
trait ClonedOk {
    fn cloned_ok(self) -> Vec<Result<AuditRecord, AuditError>>;
}

impl<'a, I: Iterator<Item = &'a Result<AuditRecord, AuditError>>> ClonedOk for I {
    fn cloned_ok(self) -> Vec<Result<AuditRecord, AuditError>> {
        self.map(|item| match item {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(AuditError::Invalid(e.to_string())),
        })
        .collect()
    }
}
