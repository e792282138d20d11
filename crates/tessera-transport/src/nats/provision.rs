//! Writes everything a `nats-server` needs to serve one cluster: a private CA, the server's TLS
//! certificate, one client certificate per party and per roster coordinator with a NATS user,
//! and a configuration with one NKey user each and subject permissions:
//!
//! | party `pN` may | subjects |
//! |---|---|
//! | publish | `tessera.<c>.node.*.inbox.N` (frames with itself as sender), `tessera.<c>.result.*.N` (its own results), `tessera.<c>.audit.N` (its audit events), `$JS.API.STREAM.INFO` and `.MSG.GET` of the audit stream |
//! | subscribe | `tessera.<c>.node.N.inbox.*` (its own inbox only), `tessera.<c>.ctrl`, `_INBOX.tessera.<c>.N.>` (its own reply inboxes) |
//! | reply | to requests it received (`allow_responses`) |
//!
//! | coordinator `<name>` may | subjects |
//! |---|---|
//! | publish | `tessera.<c>.ctrl` (control messages), `tessera.<c>.audit.coord-<name>` (its audit events), `$JS.API.STREAM.CREATE`, `.INFO` and `.MSG.GET` of the audit stream `TESSERA_AUDIT_<C>` |
//! | subscribe | `tessera.<c>.result.*.*`, `_INBOX.tessera.<c>.coord.<name>.>` (its own reply inboxes) |
//! | reply | never (no `allow_responses`) |
//!
//! A coordinator listed in the roster without a NATS user gets neither a broker user nor a
//! certificate.
//!
//! TLS is required with client-certificate verification against the private CA. JetStream is on
//! with a store directory (used by the audit stream).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tessera_channel::Roster;
use tessera_wire::{subject, PartyId};

use crate::TransportError;

/// Where the broker listens and what its certificate names.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Listen host (an IP address).
    pub host: String,
    /// Listen port.
    pub port: u16,
    /// Names the server certificate is valid for (IP addresses and DNS names).
    pub tls_names: Vec<String>,
}

impl ServerSettings {
    /// Loopback on `port`.
    pub fn loopback(port: u16) -> Self {
        ServerSettings {
            host: "127.0.0.1".into(),
            port,
            tls_names: vec!["127.0.0.1".into(), "localhost".into()],
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("tls://{}:{}", self.host, self.port)
    }
}

/// Paths of a party's client certificate and key.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    /// The party.
    pub party: PartyId,
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM (secret, mode 0600).
    pub key: PathBuf,
}

/// Paths of a coordinator's client certificate and key.
#[derive(Clone, Debug)]
pub struct CoordinatorClientFiles {
    /// The coordinator's name in the roster.
    pub name: String,
    /// Certificate PEM.
    pub cert: PathBuf,
    /// Key PEM (secret, mode 0600).
    pub key: PathBuf,
}

/// What [`provision`] wrote.
#[derive(Clone, Debug)]
pub struct Provisioned {
    /// The `nats-server` configuration file.
    pub config: PathBuf,
    /// The CA certificate every client must trust.
    pub ca_cert: PathBuf,
    /// One client certificate per party.
    pub clients: Vec<ClientFiles>,
    /// One client certificate per roster coordinator that has a NATS user.
    pub coordinators: Vec<CoordinatorClientFiles>,
    /// The URL clients connect to.
    pub url: String,
}

impl Provisioned {
    /// The client files of one party.
    pub fn client(&self, party: PartyId) -> Option<&ClientFiles> {
        self.clients.iter().find(|c| c.party == party)
    }

    /// The client files of one coordinator.
    pub fn coordinator_client(&self, name: &str) -> Option<&CoordinatorClientFiles> {
        self.coordinators.iter().find(|c| c.name == name)
    }
}

/// Writes the PKI and the configuration for `roster` under `dir`:
///
/// ```text
/// dir/nats.conf
/// dir/tls/ca.pem, ca-key.pem (0600), server-cert.pem, server-key.pem (0600)
/// dir/clients/pN/cert.pem, key.pem (0600)   one per party: give each party its own
/// dir/clients/coord-<name>/cert.pem, key.pem (0600)   one per coordinator with a NATS user
/// dir/jetstream/
/// ```
pub fn provision(
    roster: &Roster,
    settings: &ServerSettings,
    dir: &Path,
) -> Result<Provisioned, TransportError> {
    let (users, coordinator_users) = all_users(roster)?;
    let tls = dir.join("tls");
    mkdir(&tls)?;
    let (ca_cert, ca) = certificate_authority(roster)?;
    let ca_path = tls.join("ca.pem");
    write(&ca_path, ca_cert.pem(), false)?;
    write(&tls.join("ca-key.pem"), ca.key().serialize_pem(), true)?;

    let (server_cert, server_key) = leaf(
        "tessera-nats-server",
        settings.tls_names.clone(),
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    )?;
    let server_cert_path = tls.join("server-cert.pem");
    let server_key_path = tls.join("server-key.pem");
    write(&server_cert_path, server_cert.pem(), false)?;
    write(&server_key_path, server_key.serialize_pem(), true)?;

    let mut clients = Vec::new();
    for (party, _) in &users {
        let (cert, key) = leaf(
            &format!("tessera-{}-{party}", roster.cluster),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )?;
        let party_dir = dir.join("clients").join(party.to_string());
        mkdir(&party_dir)?;
        let files = ClientFiles {
            party: *party,
            cert: party_dir.join("cert.pem"),
            key: party_dir.join("key.pem"),
        };
        write(&files.cert, cert.pem(), false)?;
        write(&files.key, key.serialize_pem(), true)?;
        clients.push(files);
    }
    let mut coordinators = Vec::new();
    for (name, _) in &coordinator_users {
        let (cert, key) = leaf(
            &format!("tessera-{}-coord-{name}", roster.cluster),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )?;
        let coordinator_dir = dir.join("clients").join(format!("coord-{name}"));
        mkdir(&coordinator_dir)?;
        let files = CoordinatorClientFiles {
            name: name.clone(),
            cert: coordinator_dir.join("cert.pem"),
            key: coordinator_dir.join("key.pem"),
        };
        write(&files.cert, cert.pem(), false)?;
        write(&files.key, key.serialize_pem(), true)?;
        coordinators.push(files);
    }

    let jetstream = dir.join("jetstream");
    mkdir(&jetstream)?;
    let config_text = server_config(
        roster,
        settings,
        &TlsPaths {
            ca: &ca_path,
            cert: &server_cert_path,
            key: &server_key_path,
        },
        &jetstream,
    )?;
    let config = dir.join("nats.conf");
    write(&config, config_text, false)?;
    Ok(Provisioned {
        config,
        ca_cert: ca_path,
        clients,
        coordinators,
        url: settings.url(),
    })
}

/// The server's TLS files.
pub struct TlsPaths<'a> {
    /// CA certificate.
    pub ca: &'a Path,
    /// Server certificate.
    pub cert: &'a Path,
    /// Server key.
    pub key: &'a Path,
}

/// The `nats-server` configuration text for `roster`.
pub fn server_config(
    roster: &Roster,
    settings: &ServerSettings,
    tls: &TlsPaths<'_>,
    jetstream_dir: &Path,
) -> Result<String, TransportError> {
    let c = &roster.cluster;
    let (parties, coordinators) = all_users(roster)?;
    let mut users = String::new();
    for (party, nkey) in parties {
        let [stream_info, stream_get] = subject::audit_stream_api(c);
        let publish = [
            subject::inbox_publish_pattern(c, party),
            subject::result_publish_pattern(c, party),
            subject::audit(c, party),
            stream_info,
            stream_get,
        ];
        let subscribe = [
            subject::inbox_wildcard(c, party),
            subject::ctrl(c),
            format!("{}.>", subject::reply_inbox_prefix(c, party)),
        ];
        // allow_responses: a party may answer requests it received (ctrl), and nothing more.
        users.push_str(&format!(
            "    # party {party}\n    {{ nkey: {}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}, allow_responses: true }} }}\n",
            quote(&nkey),
            quoted_list(&publish),
            quoted_list(&subscribe),
        ));
    }
    for (name, nkey) in coordinators {
        let [stream_info, stream_get] = subject::audit_stream_api(c);
        let publish = [
            subject::ctrl(c),
            subject::coordinator_audit(c, &name),
            subject::audit_stream_create(c),
            stream_info,
            stream_get,
        ];
        let subscribe = [
            subject::result_wildcard(c),
            format!("{}.>", subject::coordinator_reply_prefix(c, &name)),
        ];
        // No allow_responses: a coordinator answers nobody's requests.
        users.push_str(&format!(
            "    # coordinator {name}\n    {{ nkey: {}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }} }} }}\n",
            quote(&nkey),
            quoted_list(&publish),
            quoted_list(&subscribe),
        ));
    }
    Ok(format!(
        r#"# nats-server configuration for Tessera cluster "{c}" (roster version {version}).
# Generated by `tessera nats-config`; regenerate it when the roster changes.
listen: "{host}:{port}"
max_payload: 1048576

tls {{
  cert_file: {cert}
  key_file: {key}
  ca_file: {ca}
  # Every client must present a certificate signed by the cluster CA.
  verify: true
  timeout: 2
}}

authorization {{
  users = [
{users}  ]
}}

jetstream {{
  store_dir: {js}
}}
"#,
        version = roster.version,
        host = settings.host,
        port = settings.port,
        cert = quote_path(tls.cert),
        key = quote_path(tls.key),
        ca = quote_path(tls.ca),
        js = quote_path(jetstream_dir),
    ))
}

/// NKey users of the parties and of the coordinators, by party id and coordinator name.
type Users = (Vec<(PartyId, String)>, Vec<(String, String)>);

/// NKey users of the parties (every party needs one) and of the coordinators that have one.
/// Refuses an invalid roster, an invalid NKey and one NKey used by two entries.
fn all_users(roster: &Roster) -> Result<Users, TransportError> {
    // Names and keys end up in the configuration file: only a valid roster gets that far.
    roster
        .validate()
        .map_err(|e| TransportError::Setup(format!("the roster is not valid: {e}")))?;
    let mut seen = BTreeMap::new();
    let mut check = |who: String, nkey: &str| {
        if !nkey.starts_with('U') || nkeys::KeyPair::from_public_key(nkey).is_err() {
            return Err(TransportError::Setup(format!(
                "roster entry {who}: {nkey:?} is not an NKey user public key"
            )));
        }
        if let Some(first) = seen.insert(nkey.to_owned(), who.clone()) {
            return Err(TransportError::Setup(format!(
                "roster entries {first} and {who} have the same NATS user {nkey}; \
                 each needs its own"
            )));
        }
        Ok(())
    };
    let mut parties = Vec::new();
    for e in &roster.parties {
        let nkey = e.nats_user.clone().ok_or_else(|| {
            TransportError::Setup(format!(
                "roster entry {} has no NATS user; create its identity with a NATS key",
                e.party
            ))
        })?;
        check(e.party.to_string(), &nkey)?;
        parties.push((e.party, nkey));
    }
    let mut coordinators = Vec::new();
    for c in &roster.coordinators {
        if let Some(nkey) = &c.nats_user {
            check(format!("coordinator {}", c.name), nkey)?;
            coordinators.push((c.name.clone(), nkey.clone()));
        }
    }
    Ok((parties, coordinators))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn tls_error(e: rcgen::Error) -> TransportError {
    TransportError::Setup(format!("certificate generation failed: {e}"))
}

fn certificate_authority(
    roster: &Roster,
) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), TransportError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Tessera cluster {} CA", roster.cluster),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = params.self_signed(&key).map_err(tls_error)?;
    Ok((cert, Issuer::new(params, key)))
}

fn leaf(
    common_name: &str,
    names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    ca: &Issuer<'_, KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), TransportError> {
    let mut params = CertificateParams::new(names).map_err(tls_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = params.signed_by(&key, ca).map_err(tls_error)?;
    Ok((cert, key))
}

fn mkdir(dir: &Path) -> Result<(), TransportError> {
    fs::create_dir_all(dir)
        .map_err(|e| TransportError::io(format!("creating {}", dir.display()), e))
}

/// Writes a file; secret files get mode 0600 before any content is written.
fn write(path: &Path, content: String, secret: bool) -> Result<(), TransportError> {
    let context = || format!("writing {}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| TransportError::io(context(), e))?;
    if secret {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| TransportError::io(context(), e))?;
    }
    std::io::Write::write_all(&mut file, content.as_bytes())
        .map_err(|e| TransportError::io(context(), e))
}
