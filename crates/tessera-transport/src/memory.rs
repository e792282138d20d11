//! An in-process transport: every party of one process shares a [`MemoryNetwork`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tessera_wire::PartyId;
use tokio::sync::mpsc;

use crate::{Inbound, Inbox, Transport, TransportError};

/// Messages that may wait in one party's inbox before senders are slowed down.
pub const INBOX_CAPACITY: usize = 4096;

/// The shared medium of in-memory transports.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inboxes: Arc<Mutex<HashMap<PartyId, mpsc::Sender<Inbound>>>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for `party` on this network.
    pub fn connect(&self, party: PartyId) -> MemoryTransport {
        MemoryTransport {
            party,
            network: self.clone(),
        }
    }

    /// Takes `party` off the network, as if its process stopped: its inbox closes and sends
    /// to it fail.
    pub fn disconnect(&self, party: PartyId) {
        self.lock().remove(&party);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartyId, mpsc::Sender<Inbound>>> {
        // The map holds no invariant a panicking holder could break.
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One party's end of a [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryTransport {
    party: PartyId,
    network: MemoryNetwork,
}

#[async_trait]
impl Transport for MemoryTransport {
    fn party(&self) -> PartyId {
        self.party
    }

    async fn send(&self, to: PartyId, bytes: Bytes) -> Result<(), TransportError> {
        let inbox = self.network.lock().get(&to).cloned();
        let inbox = inbox.ok_or(TransportError::PeerUnavailable(to))?;
        inbox
            .send(Inbound {
                from: self.party,
                bytes,
            })
            .await
            .map_err(|_| TransportError::PeerUnavailable(to))
    }

    async fn subscribe(&self) -> Result<Inbox, TransportError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.network.lock().insert(self.party, tx);
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        })))
    }
}
