//! NATS transport: mTLS to the broker, one NKey user per party, frames on
//! `tessera.<cluster>.node.<to>.inbox.<from>`.
//!
//! The broker's permissions (see [`provision`]) let a party publish only with itself as sender
//! and subscribe only to its own inbox, and let a coordinator ([`connect_coordinator`]) publish
//! only control messages and read only results; the channel layer on top makes the broker
//! unable to read or forge anything either way. Permission violations reported by the server
//! arrive through the client's event callback; they are logged, counted in [`NatsMetrics`] and
//! returned by [`NatsTransport::check_permissions`].

pub mod provision;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tessera_wire::{subject, ClusterId, PartyId};
use zeroize::Zeroizing;

use crate::{Inbound, Inbox, Transport, TransportError};

/// How long [`Transport::subscribe`] waits for the server to confirm the inbox subscription.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a party connects to the broker.
#[derive(Clone)]
pub struct NatsConfig {
    /// Server URL, e.g. `tls://127.0.0.1:4222`.
    pub url: String,
    /// The cluster.
    pub cluster: ClusterId,
    /// This party.
    pub party: PartyId,
    /// The party's NKey user seed (`SU...`). Secret.
    pub nkey_seed: Zeroizing<String>,
    /// PEM file of the private CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// PEM file of this party's client certificate.
    pub cert_file: PathBuf,
    /// PEM file of this party's client key. Secret.
    pub key_file: PathBuf,
    /// How long to wait for the first connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .field("party", &self.party)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// Connection events, counted.
#[derive(Debug, Default)]
pub struct NatsMetrics {
    /// Publishes or subscriptions the server refused for lack of permission.
    pub permission_violations: AtomicU64,
    /// Other errors the server reported.
    pub server_errors: AtomicU64,
    /// Times the connection was lost.
    pub disconnects: AtomicU64,
    /// Times the connection was (re-)established.
    pub connects: AtomicU64,
    /// Messages the client dropped because this party read too slowly.
    pub slow_consumer_drops: AtomicU64,
    /// Inbound messages on an inbox subject that names no valid sender.
    pub unparsable_subjects: AtomicU64,
    last_violation: Mutex<Option<String>>,
    /// Set by an orderly stop: the disconnects that follow are expected.
    closing: std::sync::atomic::AtomicBool,
}

impl NatsMetrics {
    /// Marks the connection as being stopped on purpose: disconnects from now on are counted
    /// but not reported as warnings (the server may go before the client does).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Counts and logs one connection event of the client named `client` (a party id or a
    /// coordinator's label).
    fn on_event(&self, client: &str, event: Event) {
        match event {
            Event::Connected => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client, "connected to NATS");
            }
            Event::Disconnected => {
                self.disconnects.fetch_add(1, Ordering::Relaxed);
                if self.closing.load(Ordering::Relaxed) {
                    tracing::debug!(client, "disconnected from NATS while stopping");
                } else {
                    tracing::warn!(client, "disconnected from NATS; reconnecting");
                }
            }
            Event::SlowConsumer(_) => {
                self.slow_consumer_drops.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client, "inbox overflowed; messages dropped");
            }
            Event::ServerError(ServerError::Other(text))
                if text.contains("Permissions Violation") =>
            {
                self.permission_violations.fetch_add(1, Ordering::Relaxed);
                tracing::error!(client, violation = %text, "NATS permission violation");
                *self
                    .last_violation
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(text);
            }
            Event::ServerError(e) => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(client, error = %e, "NATS server error");
            }
            other => tracing::debug!(client, event = %other, "NATS event"),
        }
    }
}

/// What differs between the clients [`connect_client`] and [`connect_coordinator`] make.
struct ClientSettings<'a> {
    url: &'a str,
    /// Shown in logs, e.g. `p1` or `coordinator main`.
    label: String,
    /// The connection name the server sees.
    connection_name: String,
    nkey_seed: &'a str,
    inbox_prefix: String,
    ca_file: &'a Path,
    cert_file: &'a Path,
    key_file: &'a Path,
    connect_timeout: Duration,
}

/// Connects with mutual TLS (required), an NKey, a private reply-inbox prefix and an event
/// callback feeding `metrics`. Reconnects with exponential backoff (100 ms doubling to 5 s).
async fn connect_with(
    settings: ClientSettings<'_>,
    metrics: Arc<NatsMetrics>,
) -> Result<async_nats::Client, TransportError> {
    let label: Arc<str> = settings.label.into();
    let options = ConnectOptions::with_nkey(settings.nkey_seed.to_owned())
        .name(settings.connection_name)
        .require_tls(true)
        .custom_inbox_prefix(settings.inbox_prefix)
        .add_root_certificates(settings.ca_file.to_path_buf())
        .add_client_certificate(
            settings.cert_file.to_path_buf(),
            settings.key_file.to_path_buf(),
        )
        .connection_timeout(settings.connect_timeout)
        .reconnect_delay_callback(|attempts| {
            let shift = attempts.min(6) as u32;
            Duration::from_millis(100u64 << shift).min(Duration::from_secs(5))
        })
        .event_callback(move |event| {
            let (metrics, label) = (metrics.clone(), label.clone());
            async move { metrics.on_event(&label, event) }
        });
    options
        .connect(settings.url)
        .await
        .map_err(|e| TransportError::Connect {
            url: settings.url.to_owned(),
            reason: e.to_string(),
        })
}

/// DEVELOPMENT ONLY: connects to a broker that asks for no TLS and no credentials (for example
/// a bare `nats-server -p 4222`), with `inbox_prefix` for replies. Frames stay sealed and
/// authenticated end to end, but such a broker enforces nothing: any client may publish in any
/// party's name or read any inbox (ciphertext only). `tessera demo --nats URL` uses it;
/// `tessera-node` never does.
pub async fn connect_unauthenticated(
    url: &str,
    label: &str,
    inbox_prefix: String,
    metrics: Arc<NatsMetrics>,
) -> Result<async_nats::Client, TransportError> {
    let label: Arc<str> = label.into();
    ConnectOptions::new()
        .name(format!("tessera-dev-{label}"))
        .custom_inbox_prefix(inbox_prefix)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let (metrics, label) = (metrics.clone(), label.clone());
            async move { metrics.on_event(&label, event) }
        })
        .connect(url)
        .await
        .map_err(|e| TransportError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        })
}

/// Connects a raw NATS client with this party's credentials and an event callback feeding
/// `metrics`. Reconnects with exponential backoff (100 ms doubling to 5 s).
pub async fn connect_client(
    config: &NatsConfig,
    metrics: Arc<NatsMetrics>,
) -> Result<async_nats::Client, TransportError> {
    let party = config.party;
    connect_with(
        ClientSettings {
            url: &config.url,
            label: party.to_string(),
            connection_name: format!("tessera-{}-{party}", config.cluster),
            nkey_seed: &config.nkey_seed,
            inbox_prefix: subject::reply_inbox_prefix(&config.cluster, party),
            ca_file: &config.ca_file,
            cert_file: &config.cert_file,
            key_file: &config.key_file,
            connect_timeout: config.connect_timeout,
        },
        metrics,
    )
    .await
}

/// How a coordinator connects to the broker. Its NKey user may publish only on
/// `tessera.<c>.ctrl` and subscribe only to `tessera.<c>.result.*` and its own reply inboxes
/// (see [`provision`]).
#[derive(Clone)]
pub struct CoordinatorNatsConfig {
    /// Server URL, e.g. `tls://127.0.0.1:4222`.
    pub url: String,
    /// The cluster.
    pub cluster: ClusterId,
    /// The coordinator's name in the roster.
    pub name: String,
    /// The coordinator's NKey user seed (`SU...`). Secret.
    pub nkey_seed: Zeroizing<String>,
    /// PEM file of the private CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// PEM file of the coordinator's client certificate.
    pub cert_file: PathBuf,
    /// PEM file of the coordinator's client key. Secret.
    pub key_file: PathBuf,
    /// How long to wait for the first connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for CoordinatorNatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorNatsConfig")
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .field("name", &self.name)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// Connects a raw NATS client with a coordinator's credentials and an event callback feeding
/// `metrics`. Requests it makes get their replies under
/// [`subject::coordinator_reply_prefix`]. Reconnects as [`connect_client`] does.
pub async fn connect_coordinator(
    config: &CoordinatorNatsConfig,
    metrics: Arc<NatsMetrics>,
) -> Result<async_nats::Client, TransportError> {
    connect_with(
        ClientSettings {
            url: &config.url,
            label: format!("coordinator {}", config.name),
            connection_name: format!("tessera-{}-coord-{}", config.cluster, config.name),
            nkey_seed: &config.nkey_seed,
            inbox_prefix: subject::coordinator_reply_prefix(&config.cluster, &config.name),
            ca_file: &config.ca_file,
            cert_file: &config.cert_file,
            key_file: &config.key_file,
            connect_timeout: config.connect_timeout,
        },
        metrics,
    )
    .await
}

/// A party's NATS transport.
pub struct NatsTransport {
    client: async_nats::Client,
    cluster: ClusterId,
    party: PartyId,
    metrics: Arc<NatsMetrics>,
}

impl NatsTransport {
    /// Connects to the broker.
    pub async fn connect(config: &NatsConfig) -> Result<Self, TransportError> {
        let metrics = Arc::new(NatsMetrics::default());
        let client = connect_client(config, metrics.clone()).await?;
        Ok(NatsTransport {
            client,
            cluster: config.cluster.clone(),
            party: config.party,
            metrics,
        })
    }

    /// DEVELOPMENT ONLY: this party's transport over a broker without TLS or credentials; see
    /// [`connect_unauthenticated`].
    pub async fn connect_unauthenticated(
        url: &str,
        cluster: ClusterId,
        party: PartyId,
    ) -> Result<Self, TransportError> {
        let metrics = Arc::new(NatsMetrics::default());
        let prefix = subject::reply_inbox_prefix(&cluster, party);
        let client =
            connect_unauthenticated(url, &party.to_string(), prefix, metrics.clone()).await?;
        Ok(NatsTransport {
            client,
            cluster,
            party,
            metrics,
        })
    }

    /// Connection and permission counters.
    pub fn metrics(&self) -> &Arc<NatsMetrics> {
        &self.metrics
    }

    /// Flushes what this client has buffered, then reports the most recent permission violation
    /// the server sent since the last call, if any. The server reports violations
    /// asynchronously, so a violation caused just now may show up on a later call.
    pub async fn check_permissions(&self) -> Result<(), TransportError> {
        self.client
            .flush()
            .await
            .map_err(|e| TransportError::Subscribe(e.to_string()))?;
        let last = self
            .metrics
            .last_violation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match last {
            Some(text) => Err(TransportError::PermissionViolation(text)),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Transport for NatsTransport {
    fn party(&self) -> PartyId {
        self.party
    }

    async fn send(&self, to: PartyId, bytes: Bytes) -> Result<(), TransportError> {
        let subject = subject::inbox(&self.cluster, to, self.party);
        self.client
            .publish(subject, bytes)
            .await
            .map_err(|e| TransportError::Send {
                to,
                reason: e.to_string(),
            })
    }

    async fn subscribe(&self) -> Result<Inbox, TransportError> {
        let wildcard = subject::inbox_wildcard(&self.cluster, self.party);
        let mut subscriber = self
            .client
            .subscribe(wildcard)
            .await
            .map_err(|e| TransportError::Subscribe(e.to_string()))?;
        let early = self.await_registration(&mut subscriber).await?;
        let (cluster, me, metrics) = (self.cluster.clone(), self.party, self.metrics.clone());
        let messages = futures::stream::iter(early).chain(subscriber);
        Ok(Box::pin(messages.filter_map(move |message| {
            let sender = subject::parse_inbox_sender(&cluster, me, message.subject.as_str());
            if sender.is_none() {
                metrics.unparsable_subjects.fetch_add(1, Ordering::Relaxed);
            }
            // A party never sends to itself; late registration probes are dropped here.
            let sender = sender.filter(|from| *from != me);
            futures::future::ready(sender.map(|from| Inbound {
                from,
                bytes: message.payload,
            }))
        })))
    }
}

impl NatsTransport {
    /// Proves the server registered the inbox subscription before anyone relies on it: sends a
    /// random probe to this party's own inbox and waits for it to come back. Messages from
    /// peers that arrive first are kept and returned.
    async fn await_registration(
        &self,
        subscriber: &mut async_nats::Subscriber,
    ) -> Result<Vec<async_nats::Message>, TransportError> {
        let mut token = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        let own = subject::inbox(&self.cluster, self.party, self.party);
        self.client
            .publish(own.clone(), Bytes::copy_from_slice(&token))
            .await
            .map_err(|e| TransportError::Subscribe(e.to_string()))?;
        let mut early = Vec::new();
        let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, subscriber.next()).await;
            match next {
                Ok(Some(m)) if m.subject.as_str() == own && m.payload.as_ref() == token => {
                    return Ok(early)
                }
                Ok(Some(m)) => early.push(m),
                Ok(None) => return Err(TransportError::Subscribe("subscription closed".into())),
                Err(_) => {
                    self.check_permissions().await?;
                    return Err(TransportError::Subscribe(format!(
                        "the server did not confirm the inbox subscription within \
                         {SUBSCRIBE_TIMEOUT:?}; check the party's NATS permissions"
                    )));
                }
            }
        }
    }
}
