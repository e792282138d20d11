//! The `spend_links` and `spend_heads` tables: every key's spend chain, and where each holder's
//! copy of it stands (`docs/protocols/spend-chain.md`).
//!
//! A link is written in the transaction that admits its request to signing, under the key's
//! admission lock ([`Admission::chain_head`], [`Admission::admit`]), so replicas sharing a
//! database extend one chain, one place at a time. Links are never removed.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use tessera_wire::{KeyId, PartyId, RequestId};

use super::row::Cols;
use super::spend::Admission;
use super::{RequestState, Store, StoreError};

/// One signing's place in its key's spend chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRow {
    /// The key.
    pub key_id: KeyId,
    /// The place, from 1.
    pub seq: u64,
    /// The signing's request.
    pub request_id: RequestId,
    /// The hash of the record before (zeros for the first).
    pub prev: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
    /// Unix seconds when it was admitted.
    pub signed_at: u64,
    /// The signature (`r || s`), once the nodes produced it.
    pub signature: Option<Vec<u8>>,
}

/// A link with its request's stored body.
#[derive(Clone, Debug)]
pub struct LinkedRequest {
    /// The link.
    pub link: LinkRow,
    /// The request's body, as stored in `requests`.
    pub body: Vec<u8>,
}

const COLUMNS: &str = "l.key_id, l.seq, l.request_id, l.prev, l.hash, l.signed_at, l.signature";

fn hash32(c: &Cols<'_>, column: &str) -> Result<[u8; 32], StoreError> {
    c.hex(column)?
        .try_into()
        .map_err(|_| StoreError::corrupt("spend_links", column, "a record hash is 32 bytes"))
}

fn link_row(row: &AnyRow) -> Result<LinkRow, StoreError> {
    let c = Cols::new(row, "spend_links");
    Ok(LinkRow {
        key_id: c.parse("key_id")?,
        seq: c.small("seq")?,
        request_id: c.parse("request_id")?,
        prev: hash32(&c, "prev")?,
        hash: hash32(&c, "hash")?,
        signed_at: c.small("signed_at")?,
        signature: c.opt_hex("signature")?,
    })
}

pub(super) fn to_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid {
        what,
        reason: format!("{value} is out of range"),
    })
}

impl Store {
    /// The link of request `id`, if it was admitted with one.
    pub async fn spend_link(&self, id: RequestId) -> Result<Option<LinkRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM spend_links l WHERE l.request_id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend link of request {id}"), e))?;
        row.as_ref().map(link_row).transpose()
    }

    /// Up to `limit` links of `key` after place `after` and up to `upto`, oldest first, with
    /// their requests.
    pub async fn spend_links_after(
        &self,
        key: KeyId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<LinkedRequest>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, r.body FROM spend_links l JOIN requests r ON r.id = l.request_id \
             WHERE l.key_id = $1 AND l.seq > $2 AND l.seq <= $3 ORDER BY l.seq LIMIT $4"
        ))
        .bind(key.to_string())
        .bind(to_i64(after, "spend chain place")?)
        .bind(to_i64(upto, "spend chain place")?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend chain of key {key}"), e))?;
        rows.iter()
            .map(|row| {
                Ok(LinkedRequest {
                    link: link_row(row)?,
                    body: Cols::new(row, "requests").hex("body")?,
                })
            })
            .collect()
    }

    /// The last place of `key`'s spend chain up to which every signing has ended (signed or
    /// failed): the places before the first one still `signing` (0: none).
    pub async fn spend_chain_settled(&self, key: KeyId) -> Result<u64, StoreError> {
        let (last, first_open): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MAX(l.seq), MIN(CASE WHEN r.state = $2 THEN l.seq END) \
             FROM spend_links l JOIN requests r ON r.id = l.request_id WHERE l.key_id = $1",
        )
        .bind(key.to_string())
        .bind(RequestState::Signing.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend chain of key {key}"), e))?;
        let settled = match first_open {
            Some(open) => open - 1,
            None => last.unwrap_or(0),
        };
        u64::try_from(settled)
            .map_err(|_| StoreError::corrupt("spend_links", "seq", "a place is never negative"))
    }

    /// Records the signature of request `id`'s signing in its link.
    pub async fn set_link_signature(
        &self,
        id: RequestId,
        signature: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE spend_links SET signature = $1 WHERE request_id = $2")
            .bind(hex::encode(signature))
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| {
                StoreError::db(format_args!("recording the signature of request {id}"), e)
            })?;
        Ok(())
    }

    /// Where each holder's copy of `key`'s spend chain stands, as the holders last said.
    pub async fn spend_heads(&self, key: KeyId) -> Result<BTreeMap<PartyId, u64>, StoreError> {
        let rows = sqlx::query("SELECT party, head FROM spend_heads WHERE key_id = $1")
            .bind(key.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| {
                StoreError::db(
                    format_args!("reading the spend chain heads of key {key}"),
                    e,
                )
            })?;
        rows.iter()
            .map(|row| {
                let c = Cols::new(row, "spend_heads");
                Ok((PartyId(c.small("party")?), c.small("head")?))
            })
            .collect()
    }

    /// Records that `party` holds every record of `key`'s chain up to `head`.
    pub async fn set_spend_head(
        &self,
        key: KeyId,
        party: PartyId,
        head: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO spend_heads (key_id, party, head) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, party) DO UPDATE SET head = excluded.head",
        )
        .bind(key.to_string())
        .bind(i64::from(party.0))
        .bind(to_i64(head, "spend chain place")?)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::db(
                format_args!("recording where {party}'s spend chain of key {key} stands"),
                e,
            )
        })?;
        Ok(())
    }
}

impl Admission {
    /// The last link of the admitted key's chain: its place and hash ((0, zeros) for none).
    pub async fn chain_head(&mut self) -> Result<(u64, [u8; 32]), StoreError> {
        let key = self.key();
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM spend_links l WHERE l.key_id = $1 ORDER BY l.seq DESC LIMIT 1"
        ))
        .bind(key.to_string())
        .fetch_optional(self.connection())
        .await
        .map_err(|e| StoreError::db(format_args!("reading the spend chain of key {key}"), e))?;
        Ok(match row {
            Some(row) => {
                let link = link_row(&row)?;
                (link.seq, link.hash)
            }
            None => (0, [0; 32]),
        })
    }
}

/// Inserts `link` in the admission's transaction.
pub(super) async fn insert_link(
    conn: &mut sqlx::AnyConnection,
    link: &LinkRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO spend_links (key_id, seq, request_id, prev, hash, signed_at, signature) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(link.key_id.to_string())
    .bind(to_i64(link.seq, "spend chain place")?)
    .bind(link.request_id.to_string())
    .bind(hex::encode(link.prev))
    .bind(hex::encode(link.hash))
    .bind(to_i64(link.signed_at, "spend link time")?)
    .bind(link.signature.as_ref().map(hex::encode))
    .execute(conn)
    .await
    .map_err(|e| {
        StoreError::db(
            format_args!(
                "linking request {} at place {} of key {}'s spend chain",
                link.request_id, link.seq, link.key_id
            ),
            e,
        )
    })?;
    Ok(())
}
