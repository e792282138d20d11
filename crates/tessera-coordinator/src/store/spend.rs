//! The `spend` table: amounts reserved per key and asset, for policy limits over time windows.
//!
//! A request's spend is reserved when it is admitted to signing, in the same transaction that
//! reads the window and moves it to `signing` ([`Admission`]), so coordinator replicas sharing
//! a database cannot together admit more than a window allows. A request whose signing fails
//! gives its reservation back ([`Store::fail_signing`]); the row stays, marked released.
//! Amounts are decimal text in base units (they may exceed `u64`); the store never adds them.

use std::collections::BTreeSet;

use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use tessera_wire::{KeyId, RequestId};

use super::error::is_foreign_key_violation;
use super::row::Cols;
use super::spend_chain::{insert_link, LinkRow};
use super::{InsertOutcome, RequestState, Store, StoreError};

/// An amount a request spends (reserved when it was admitted to signing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The request (one spend per request and asset).
    pub request_id: RequestId,
    /// The key that signed.
    pub key_id: KeyId,
    /// The asset, as the policy names it.
    pub asset: String,
    /// The amount in base units, decimal digits without sign or leading zeros.
    pub amount: String,
    /// When it was admitted to signing (Unix seconds): windows count it from then.
    pub signed_at: i64,
}

/// Longest amount accepted: 2^256 has 78 digits.
const MAX_AMOUNT_DIGITS: usize = 78;

fn validate_amount(amount: &str) -> Result<(), StoreError> {
    let ok = !amount.is_empty()
        && amount.len() <= MAX_AMOUNT_DIGITS
        && amount.bytes().all(|b| b.is_ascii_digit())
        && (amount == "0" || !amount.starts_with('0'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what: "amount",
            reason: format!(
                "{amount:?} is not a whole number of base units: use 1 to {MAX_AMOUNT_DIGITS} \
                 decimal digits without sign, separators or leading zeros"
            ),
        })
    }
}

fn spend_row(row: &AnyRow) -> Result<Spend, StoreError> {
    let c = Cols::new(row, "spend");
    Ok(Spend {
        request_id: c.parse("request_id")?,
        key_id: c.parse("key_id")?,
        asset: c.text("asset")?,
        amount: c.text("amount")?,
        signed_at: c.int("signed_at")?,
    })
}

impl Store {
    /// Records what a signed request spent in one asset. Idempotent: the same record again
    /// returns [`InsertOutcome::Existing`]; a different record for the same request and asset
    /// is a
    /// [`StoreError::Conflict`]; an unknown request or key is [`StoreError::NotFound`].
    pub async fn record_spend(&self, spend: &Spend) -> Result<InsertOutcome<Spend>, StoreError> {
        validate_amount(&spend.amount)?;
        let result = sqlx::query(
            "INSERT INTO spend (request_id, key_id, asset, amount, signed_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(spend.request_id.to_string())
        .bind(spend.key_id.to_string())
        .bind(&spend.asset)
        .bind(&spend.amount)
        .bind(spend.signed_at)
        .execute(&self.pool)
        .await;
        let inserted = match result {
            Ok(done) => done.rows_affected(),
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(StoreError::NotFound(format!(
                    "no request {} or no key {}; store the request before its spend",
                    spend.request_id, spend.key_id
                )))
            }
            Err(e) => {
                return Err(StoreError::db(
                    format_args!("recording the spend of request {}", spend.request_id),
                    e,
                ))
            }
        };
        if inserted == 1 {
            tracing::debug!(request = %spend.request_id, key = %spend.key_id, asset = %spend.asset, amount = %spend.amount, "spend recorded");
            return Ok(InsertOutcome::Inserted);
        }
        let row = sqlx::query(
            "SELECT request_id, key_id, asset, amount, signed_at FROM spend \
             WHERE request_id = $1 AND asset = $2",
        )
        .bind(spend.request_id.to_string())
        .bind(&spend.asset)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            StoreError::db(
                format_args!("reading the spend of request {}", spend.request_id),
                e,
            )
        })?;
        let existing = spend_row(&row)?;
        if existing == *spend {
            Ok(InsertOutcome::Existing(existing))
        } else {
            Err(StoreError::Conflict(format!(
                "request {} already recorded a spend of {} {}; a request spends once per asset",
                spend.request_id, existing.amount, existing.asset
            )))
        }
    }

    /// The amounts reserved by `key_id` in `asset` at or after `since` and not released,
    /// oldest first, as decimal text (add them with big-integer arithmetic); `except` leaves
    /// out one request's own reservation.
    pub async fn spends_since(
        &self,
        key_id: KeyId,
        asset: &str,
        since: i64,
        except: Option<RequestId>,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| {
                StoreError::db(format_args!("reading the spend of key {key_id}"), e)
            })?;
        window_spends(&mut conn, key_id, asset, since, except).await
    }

    /// Starts admitting request `request` of key `key` to signing: a write transaction that
    /// first takes the admission lock of `key` and of the keys its windows are `shared_with`
    /// (held until [`Admission::admit`] commits or the admission is dropped), so admissions
    /// that count the same keys run one at a time across every coordinator on this database
    /// and each reads the reservations of those before it.
    ///
    /// Do not use the store otherwise while holding it: on `sqlite::memory:` the admission
    /// holds the only connection.
    pub async fn begin_admission(
        &self,
        request: RequestId,
        key: KeyId,
        shared_with: &BTreeSet<KeyId>,
    ) -> Result<Admission, StoreError> {
        let mut tx = self
            .begin_write(&format!("admitting request {request}"))
            .await?;
        // Every key whose spend the request counts, always in the same (sorted) order, so two
        // admissions that share keys never wait for each other in a cycle. A shared key this
        // database does not know has no row, and no spend here either.
        let mut keys = shared_with.clone();
        keys.insert(key);
        for locking in keys {
            let locked = sqlx::query("UPDATE keys SET admissions = admissions + 1 WHERE id = $1")
                .bind(locking.to_string())
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::db(format_args!("locking the spend of key {locking}"), e))?
                .rows_affected();
            if locked != 1 && locking == key {
                return Err(StoreError::NotFound(format!("no key {key}")));
            }
        }
        Ok(Admission {
            tx,
            request,
            key,
            updated_at: self.now(),
        })
    }

    /// Ends a request that is `signing` as `failed` with `error`, and releases its spend
    /// reservation in the same transaction (the reservation no longer counts toward any
    /// window). False, and nothing changed, if the request was not `signing`.
    pub async fn fail_signing(&self, id: RequestId, error: &str) -> Result<bool, StoreError> {
        let now = self.now();
        let mut tx = self
            .begin_write(&format!("ending the signing of request {id}"))
            .await?;
        let failed = sqlx::query(
            "UPDATE requests SET state = $1, error = $2, updated_at = $3 \
             WHERE id = $4 AND state = $5",
        )
        .bind(RequestState::Failed.as_str())
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .bind(RequestState::Signing.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(format_args!("ending the signing of request {id}"), e))?
        .rows_affected();
        if failed != 1 {
            return Ok(false);
        }
        let released = sqlx::query(
            "UPDATE spend SET released_at = $1 WHERE request_id = $2 AND released_at IS NULL",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::db(format_args!("releasing the spend of request {id}"), e))?
        .rows_affected();
        tx.commit()
            .await
            .map_err(|e| StoreError::db(format_args!("ending the signing of request {id}"), e))?;
        tracing::debug!(request = %id, released, "signing failed; spend released");
        Ok(true)
    }

    /// Every spend row of request `id` (reserved or released), by asset: what it reserved and
    /// whether it was given back.
    pub async fn spend_of(&self, id: RequestId) -> Result<Vec<(Spend, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT request_id, key_id, asset, amount, signed_at, released_at FROM spend \
             WHERE request_id = $1 ORDER BY asset",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend of request {id}"), e))?;
        rows.iter()
            .map(|row| {
                Ok((
                    spend_row(row)?,
                    Cols::new(row, "spend").opt_int("released_at")?,
                ))
            })
            .collect()
    }
}

/// The unreleased amounts of `key_id` in `asset` since `since`, but for `except`'s.
async fn window_spends(
    conn: &mut AnyConnection,
    key_id: KeyId,
    asset: &str,
    since: i64,
    except: Option<RequestId>,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT amount FROM spend WHERE key_id = $1 AND asset = $2 AND signed_at >= $3 \
         AND released_at IS NULL AND request_id <> $4 ORDER BY signed_at, request_id",
    )
    .bind(key_id.to_string())
    .bind(asset)
    .bind(since)
    .bind(except.map(|id| id.to_string()).unwrap_or_default())
    .fetch_all(conn)
    .await
    .map_err(|e| StoreError::db(format_args!("reading the spend of key {key_id}"), e))?;
    rows.iter()
        .map(|row| Cols::new(row, "spend").text("amount"))
        .collect()
}

/// A request's admission to signing ([`Store::begin_admission`]): one transaction holding its
/// key's admission lock, in which the caller reads the windows, decides, and then either
/// [`admit`](Self::admit)s the request with its spend reserved or drops the admission (which
/// rolls back and changes nothing).
pub struct Admission {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    request: RequestId,
    key: KeyId,
    updated_at: i64,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("request", &self.request)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// The key admitted.
    pub(super) fn key(&self) -> KeyId {
        self.key
    }

    /// The admission's connection, inside its transaction.
    pub(super) fn connection(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Gives a request that is already `signing` but has no spend link (admitted before spend
    /// chains) its `link`, and commits. False, and nothing changed, if it has one already.
    pub async fn link_only(mut self, link: &LinkRow) -> Result<bool, StoreError> {
        let id = self.request;
        let linked: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM spend_links WHERE request_id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *self.tx)
                .await
                .map_err(|e| StoreError::db(format_args!("reading the link of request {id}"), e))?;
        if linked.is_some() {
            return Ok(false);
        }
        insert_link(&mut self.tx, link).await?;
        self.tx
            .commit()
            .await
            .map_err(|e| StoreError::db(format_args!("linking request {id}"), e))?;
        Ok(true)
    }

    /// The amounts reserved by `key` (this request's key, or one locked with it) in `asset`
    /// at or after `since` and not released, but for this request's own, as
    /// [`Store::spends_since`] reads them.
    pub async fn spends_since(
        &mut self,
        key: KeyId,
        asset: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        window_spends(&mut self.tx, key, asset, since, Some(self.request)).await
    }

    /// Moves the request from `approved` to `signing` with `spends` reserved for it (each
    /// `(asset, amount)` at `reserved_at`) and its place `link` in the key's spend chain (read
    /// the chain's head with [`chain_head`](Self::chain_head) first), and commits. False, and
    /// nothing changed, if the request was no longer `approved` (another coordinator took it,
    /// or it was cancelled).
    pub async fn admit(
        mut self,
        spends: &[(String, String)],
        reserved_at: i64,
        link: &LinkRow,
    ) -> Result<bool, StoreError> {
        let id = self.request;
        let moved = sqlx::query(
            "UPDATE requests SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(RequestState::Signing.as_str())
        .bind(self.updated_at)
        .bind(id.to_string())
        .bind(RequestState::Approved.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| StoreError::db(format_args!("admitting request {id}"), e))?
        .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
        for (asset, amount) in spends {
            validate_amount(amount)?;
            sqlx::query(
                "INSERT INTO spend (request_id, key_id, asset, amount, signed_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(self.key.to_string())
            .bind(asset)
            .bind(amount)
            .bind(reserved_at)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                StoreError::db(
                    format_args!("reserving the {asset} spend of request {id}"),
                    e,
                )
            })?;
        }
        insert_link(&mut self.tx, link).await?;
        self.tx
            .commit()
            .await
            .map_err(|e| StoreError::db(format_args!("admitting request {id}"), e))?;
        tracing::debug!(request = %id, key = %self.key, reserved = spends.len(), "request admitted to signing");
        Ok(true)
    }
}
