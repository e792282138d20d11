//! The control channel over a real, permissioned `nats-server`.

mod nats;
