//! `tessera nats-config`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tessera_transport::nats::provision::{provision, ServerSettings};

use crate::roster::{load_roster, AdminQuorum};

/// Write a nats-server configuration for a roster: a private CA, the server certificate, one
/// client certificate per party, and one NKey user per party whose permissions let it publish
/// only as itself and subscribe only to its own inbox. Each roster coordinator with a NATS user
/// gets a client certificate and an NKey user that may only publish control messages and read
/// results. Run the broker with `nats-server -c <out>/nats.conf`.
#[derive(Args)]
pub struct NatsConfigArgs {
    /// The roster file.
    #[arg(long)]
    roster: PathBuf,
    #[command(flatten)]
    signers: AdminQuorum,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port the server listens on.
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// Names (DNS or IP) the server certificate is valid for; repeat. Defaults to the host and
    /// localhost.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
}

pub fn run(args: NatsConfigArgs) -> Result<()> {
    let signed = load_roster(&args.roster)?;
    let hash = args.signers.verify(&signed)?;
    let tls_names = if args.tls_names.is_empty() {
        vec![args.host.clone(), "localhost".into()]
    } else {
        args.tls_names
    };
    let settings = ServerSettings {
        host: args.host,
        port: args.port,
        tls_names,
    };
    let written = provision(&signed.roster, &settings, &args.out)?;
    println!("roster {hash} verified");
    println!("server config:  {}", written.config.display());
    println!(
        "CA certificate: {} (every party trusts it)",
        written.ca_cert.display()
    );
    for c in &written.clients {
        println!(
            "client cert {}: {} + {} (mode 0600)",
            c.party,
            c.cert.display(),
            c.key.display()
        );
    }
    for c in &written.coordinators {
        println!(
            "client cert coordinator {}: {} + {} (mode 0600)",
            c.name,
            c.cert.display(),
            c.key.display()
        );
    }
    println!(
        "start the broker: nats-server -c {}",
        written.config.display()
    );
    println!("clients connect to {}", written.url);
    Ok(())
}
