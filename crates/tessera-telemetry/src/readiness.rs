//! What a service needs before it is ready.

/// A readiness check: what is not ready yet, one human-readable line per unmet condition
/// (e.g. `broker: disconnected`). Ready exactly when the list is empty.
///
/// It runs on a blocking thread for every `GET /readyz`, so it may read a disk store, but it
/// should answer quickly. Any `Fn() -> Vec<String>` closure is a check.
pub trait Readiness: Send + Sync + 'static {
    /// The unmet conditions; empty when ready.
    fn unmet(&self) -> Vec<String>;
}

impl<F> Readiness for F
where
    F: Fn() -> Vec<String> + Send + Sync + 'static,
{
    fn unmet(&self) -> Vec<String> {
        self()
    }
}

/// Ready whenever the process runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    fn unmet(&self) -> Vec<String> {
        Vec::new()
    }
}
