//! Reading typed values out of result rows, with errors that name the table and column.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::StoreError;

/// One row of `table`.
pub(crate) struct Cols<'r> {
    row: &'r AnyRow,
    table: &'static str,
}

impl<'r> Cols<'r> {
    pub(crate) fn new(row: &'r AnyRow, table: &'static str) -> Self {
        Cols { row, table }
    }

    fn corrupt(&self, column: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::corrupt(self.table, column, reason)
    }

    pub(crate) fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.row
            .try_get::<Option<String>, _>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn text(&self, column: &str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    pub(crate) fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.row
            .try_get::<Option<i64>, _>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.opt_int(column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    /// An integer column that must fit `T` (a count, a threshold...).
    pub(crate) fn small<T: TryFrom<i64>>(&self, column: &str) -> Result<T, StoreError> {
        let v = self.int(column)?;
        T::try_from(v).map_err(|_| self.corrupt(column, format!("{v} is out of range")))
    }

    pub(crate) fn opt_hex(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.opt_text(column)?
            .map(|text| hex::decode(&text).map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    pub(crate) fn hex(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.opt_hex(column)?
            .ok_or_else(|| self.corrupt(column, "NULL where a value is required"))
    }

    /// A column holding the text form of `T` (an id, a state...).
    pub(crate) fn parse<T>(&self, column: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let text = self.text(column)?;
        text.parse().map_err(|e| self.corrupt(column, e))
    }

    /// A column holding a list parsed by `parse`.
    pub(crate) fn with<T>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, StoreError> {
        let text = self.text(column)?;
        parse(&text).map_err(|e| self.corrupt(column, e))
    }
}
