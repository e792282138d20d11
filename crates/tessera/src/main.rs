//! `tessera`: the operator and admin command line.

mod api;
mod audit;
mod backup;
mod bench;
mod confirm;
mod demo;
mod dev;
mod eth;
mod files;
mod identity;
mod nats_config;
mod operator;
mod roster;
mod session;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Tessera: threshold-signature custody. No single machine ever holds a whole key.
#[derive(Parser)]
#[command(name = "tessera", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run three party nodes in one process: create a 2-of-3 ECDSA key and sign with it
    /// (no server needed; `--spawn-nats` runs them over a real broker).
    Demo(demo::DemoArgs),
    /// Run three party nodes and the coordinator (REST API on localhost, SQLite) in one
    /// process, with a development policy and its principals' key files, to try the whole
    /// request, approval and signing flow with `tessera request …`.
    Dev(dev::DevArgs),
    /// Time DKG, auxiliary info, presigning, online and full signing through Tessera (in
    /// memory, and over NATS with `--spawn-nats`) against the raw library; print the overheads.
    Bench(bench::BenchArgs),
    /// Create party identities (Ed25519 + X25519 + NATS NKey).
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Create coordinator keys (they sign protocol session starts).
    #[command(subcommand)]
    Coordinator(identity::CoordinatorCommand),
    /// Create admin keys (they sign rosters).
    #[command(subcommand)]
    Admin(identity::AdminCommand),
    /// Build, sign and verify the roster of a cluster.
    #[command(subcommand)]
    Roster(roster::RosterCommand),
    /// Start a session on running nodes as a roster coordinator: aux info, keygen, presign,
    /// sign.
    Session(session::SessionArgs),
    /// Write a nats-server configuration, CA and certificates for a roster.
    NatsConfig(nats_config::NatsConfigArgs),
    /// Create principals' keys (operators, approvers, admins, auditors sign with their own).
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Check a policy file offline, or show the coordinator's active policy.
    #[command(subcommand)]
    Policy(operator::PolicyCommand),
    /// Set up committees on the coordinator (auxiliary info; admins).
    #[command(subcommand)]
    Committee(api::CommitteeCommand),
    /// Create and inspect threshold keys through the coordinator.
    #[command(subcommand)]
    Key(api::KeyCommand),
    /// Submit, approve, reject, cancel, show and list signing requests.
    #[command(subcommand)]
    Request(api::RequestCommand),
    /// Verify the audit logs (hash chains and signatures against the roster) and show their
    /// events to auditors.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Back up a node's key share for recovery officers (Shamir k-of-m over their age keys),
    /// and restore it.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,tessera_node=error,round_based=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Identity(cmd) => identity::run_identity(cmd),
        Command::Coordinator(cmd) => identity::run_coordinator(cmd),
        Command::Admin(cmd) => identity::run_admin(cmd),
        Command::Roster(cmd) => roster::run(cmd),
        Command::NatsConfig(args) => nats_config::run(args),
        Command::Session(args) => session::run(args),
        Command::Operator(cmd) => operator::run_operator(cmd),
        Command::Policy(cmd) => operator::run_policy(cmd),
        Command::Committee(cmd) => api::run_committee(cmd),
        Command::Key(cmd) => api::run_key(cmd),
        Command::Request(cmd) => api::run_request(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Backup(cmd) => backup::run(cmd),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
