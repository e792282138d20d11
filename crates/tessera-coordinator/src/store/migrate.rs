//! Schema migrations embedded in the binary, applied with sqlx's migrator (which records them
//! in `_sqlx_migrations`, checks their checksums and, on PostgreSQL, holds an advisory lock so
//! replicas starting together migrate once).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::AnyPool;

use super::StoreError;

/// Every migration, oldest first: (version, description, SQL). Append only; never edit one that
/// was released.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "service",
        include_str!("../../migrations/0002_service.sql"),
    ),
    (
        3,
        "key changes",
        include_str!("../../migrations/0003_key_changes.sql"),
    ),
    (
        4,
        "key epochs",
        include_str!("../../migrations/0004_key_epochs.sql"),
    ),
    (
        5,
        "policy previous",
        include_str!("../../migrations/0005_policy_previous.sql"),
    ),
    (
        6,
        "spend per asset",
        include_str!("../../migrations/0006_spend_per_asset.sql"),
    ),
    (
        7,
        "rotation lease",
        include_str!("../../migrations/0007_rotation_lease.sql"),
    ),
    (
        8,
        "spend reservations",
        include_str!("../../migrations/0008_spend_reservations.sql"),
    ),
    (
        9,
        "spend chain",
        include_str!("../../migrations/0009_spend_chain.sql"),
    ),
    (
        10,
        "key kinds",
        include_str!("../../migrations/0010_key_kinds.sql"),
    ),
];

/// The schema version this code creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The migrations compiled into the binary.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Applies the migrations the database lacks, each in its own transaction.
pub(crate) async fn run(pool: &AnyPool) -> Result<(), StoreError> {
    let migrator = Migrator::new(Embedded)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    let mut outcome = migrator.run(pool).await;
    // Two coordinators opening one new SQLite file (which has no migration lock) can both try
    // to apply a migration; the loser's transaction rolled back, and another run sees the
    // winner's work. A loser may lose once per migration, so retry up to that many times; a
    // persistent failure fails every time.
    let mut retries = 0;
    while let Err(e @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))) = &outcome {
        if retries > MIGRATIONS.len() {
            break;
        }
        retries += 1;
        tracing::warn!(error = %e, retries, "migration failed; retrying");
        tokio::time::sleep(std::time::Duration::from_millis(20 * retries as u64)).await;
        outcome = migrator.run(pool).await;
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) if found > SCHEMA_VERSION => {
            Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            })
        }
        Err(MigrateError::VersionMismatch(version)) => Err(StoreError::Migrate(format!(
            "migration {version} applied to this database differs from the one in this \
             coordinator: the database was set up by a different build; use that build or a \
             fresh database"
        ))),
        Err(MigrateError::Dirty(version)) => Err(StoreError::Migrate(format!(
            "migration {version} failed part-way on this database earlier; restore the \
             database from a backup"
        ))),
        Err(e) => Err(StoreError::Migrate(format!(
            "{e}; check that the database user may create tables"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
        }
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }
}
