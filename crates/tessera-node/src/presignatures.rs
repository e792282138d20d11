//! Presignatures at this node beyond making and using them: what a refusal to use one says,
//! and erasing those past their lifetime (`tessera_mpc::PresignatureStore`).

use tessera_audit::NewEvent;
use tessera_control::now_unix;
use tessera_mpc::PresignatureError;
use tessera_policy::SignRequest;
use tessera_store::SecretStore;

use crate::node::{Node, NodeError};

impl<S: SecretStore + Send + Sync + 'static> Node<S> {
    /// Records why the presignature an online signing asked for could not be used. One that
    /// was consumed here before is a warning sign: a co-signer that still offers it may be
    /// running from a restored snapshot of its store, or the coordinator reuses session ids.
    pub(crate) fn note_unusable_presignature(&self, request: &SignRequest, e: &PresignatureError) {
        let (reason, suspicious) = match e {
            PresignatureError::Consumed { .. } => ("consumed", true),
            PresignatureError::Expired { .. } => ("expired", false),
            PresignatureError::NotAvailable { .. } => ("not_available", false),
            PresignatureError::Store(_) | PresignatureError::Format(..) => ("unreadable", false),
        };
        if suspicious {
            tracing::warn!(request = %request.id, key = %request.key, error = %e, "asked to use a presignature consumed here before");
        } else {
            tracing::info!(request = %request.id, key = %request.key, error = %e, "presignature unusable");
        }
        self.metrics().policy_refusal(match reason {
            "consumed" => "presignature_consumed",
            "expired" => "presignature_expired",
            _ => "presignature_unavailable",
        });
        self.audit().note(
            NewEvent::new(
                "system",
                "presignature.refused",
                format!("key:{}", request.key),
            )
            .detail("key", request.key)
            .detail("request", request.id)
            .detail("reason", reason)
            .detail("error", e),
        );
    }

    /// Erases every held key's presignatures past their lifetime, and forgets consumed ids
    /// that no copy could use any more; each erasure is audited. Returns how many
    /// presignatures were erased.
    pub fn sweep_presignatures(&self) -> Result<usize, NodeError> {
        let (now, lifetime) = (now_unix(), self.settings.presignature_lifetime.as_secs());
        let mut expired = 0;
        for key in self.state().keys()? {
            // Sweeping reads only the items' times: the Ed25519 store sweeps both schemes'.
            let ecdsa = self.state().presignatures(key).sweep(now, lifetime)?;
            let frost = self
                .state()
                .frost_nonces::<tessera_mpc::frost::Ed25519>(key)
                .sweep(now, lifetime)?;
            let swept = tessera_mpc::Swept {
                expired: ecdsa.expired + frost.expired,
                forgotten: ecdsa.forgotten + frost.forgotten,
            };
            if swept.expired > 0 {
                tracing::info!(%key, expired = swept.expired, "expired presignatures erased unused");
                self.audit().note(
                    NewEvent::new("system", "presignature.expired", format!("key:{key}"))
                        .detail("key", key)
                        .detail("erased", swept.expired),
                );
            }
            expired += swept.expired;
        }
        Ok(expired)
    }
}
