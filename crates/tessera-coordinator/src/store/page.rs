//! Lists that page newest first: `ORDER BY created_at DESC, id DESC`, filtered by column
//! values, and continued after the last row of the previous page (keyset paging: a page costs
//! the same however deep it is, and rows added meanwhile do not shift it).

use sqlx::any::AnyRow;
use sqlx::AnyPool;

use super::StoreError;

/// A value bound to a built query.
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// A newest-first page of one table, being built.
#[derive(Default)]
pub(super) struct Page {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Page {
    /// Only rows whose `column` is `value`.
    pub(super) fn filter(&mut self, column: &str, value: Arg) {
        self.args.push(value);
        self.conditions
            .push(format!("{column} = ${}", self.args.len()));
    }

    /// Only rows listed after the row created at `created_at` with id `id`.
    pub(super) fn after(&mut self, created_at: i64, id: String) {
        self.args.push(Arg::Int(created_at));
        let t = self.args.len();
        self.args.push(Arg::Text(id));
        let i = self.args.len();
        self.conditions.push(format!(
            "(created_at < ${t} OR (created_at = ${t} AND id < ${i}))"
        ));
    }

    /// Reads at most `limit` rows of `columns` from `table`; `what` names the list in errors.
    pub(super) async fn fetch(
        mut self,
        pool: &AnyPool,
        columns: &str,
        table: &str,
        limit: u32,
        what: &str,
    ) -> Result<Vec<AnyRow>, StoreError> {
        self.args.push(Arg::Int(i64::from(limit)));
        let limit = self.args.len();
        let where_clause = if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {columns} FROM {table} {where_clause} \
             ORDER BY created_at DESC, id DESC LIMIT ${limit}"
        );
        let mut query = sqlx::query(&sql);
        for arg in self.args {
            query = match arg {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        query
            .fetch_all(pool)
            .await
            .map_err(|e| StoreError::db(format_args!("listing {what}"), e))
    }
}
