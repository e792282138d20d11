use tessera_wire::PartyId;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not connect to the broker.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// What the client reported.
        reason: String,
    },
    /// The broker refused a publish or subscribe for lack of permission.
    #[error("the broker refused an operation: {0}; check the party's NATS permissions")]
    PermissionViolation(String),
    /// Publishing failed.
    #[error("cannot send to {to}: {reason}")]
    Send {
        /// Recipient.
        to: PartyId,
        /// What went wrong.
        reason: String,
    },
    /// Subscribing failed.
    #[error("cannot subscribe to the inbox: {0}")]
    Subscribe(String),
    /// The recipient is not reachable on this transport.
    #[error("party {0} is not connected to this transport")]
    PeerUnavailable(PartyId),
    /// Provisioning files could not be written or read.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Provisioning input is incomplete or invalid.
    #[error("invalid NATS set-up: {0}")]
    Setup(String),
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }
}
