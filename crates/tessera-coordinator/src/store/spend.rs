//! The `spend` table: amounts signed per key and asset, for policy limits over time windows.
//! Amounts are decimal text in base units (they may exceed `u64`); the store never adds them.

use sqlx::any::AnyRow;
use tessera_wire::{KeyId, RequestId};

use super::error::is_foreign_key_violation;
use super::row::Cols;
use super::{InsertOutcome, Store, StoreError};

/// An amount signed by a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The signed request (one spend per request and asset).
    pub request_id: RequestId,
    /// The key that signed.
    pub key_id: KeyId,
    /// The asset, as the policy names it.
    pub asset: String,
    /// The amount in base units, decimal digits without sign or leading zeros.
    pub amount: String,
    /// When it was signed (Unix seconds).
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

    /// The amounts `key_id` signed in `asset` at or after `since`, oldest first, as decimal
    /// text: add them with big-integer arithmetic.
    pub async fn spends_since(
        &self,
        key_id: KeyId,
        asset: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT amount FROM spend WHERE key_id = $1 AND asset = $2 AND signed_at >= $3 \
             ORDER BY signed_at, request_id",
        )
        .bind(key_id.to_string())
        .bind(asset)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend of key {key_id}"), e))?;
        rows.iter()
            .map(|row| Cols::new(row, "spend").text("amount"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::validate_amount;

    #[test]
    fn amounts_must_be_plain_decimal() {
        assert!(validate_amount("0").is_ok());
        assert!(validate_amount(
            "115792089237316195423570985008687907853269984665640564039457584007913129639935"
        )
        .is_ok());
        for bad in ["", "01", "-1", "1.5", "1e3", " 1", "1_000", &"9".repeat(79)] {
            assert!(validate_amount(bad).is_err(), "{bad:?} accepted");
        }
    }
}
