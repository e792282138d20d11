//! An incrementally verified index of one log file, to serve pages of it: each call reads and
//! verifies only what was appended since the last one, and a page reads only the records it
//! looks at (by their offsets), newest first, so neither grows with the log's history.
//!
//! The index keeps 20 bytes per record: its offset and length, and the first 8 bytes of its
//! verified hash, so a record edited on disk after it was verified is refused when read back,
//! not served. It stops at the first record that does not verify (or a file that shrank): what
//! comes after a break is never served.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::{AuditError, AuditRecord, Filter, TrustedKeys, Verifier};

/// Where one verified record is in the file.
#[derive(Clone, Copy, Debug)]
struct Line {
    offset: u64,
    len: u32,
    hash: [u8; 8],
}

/// Longest line accepted (an event is a few hundred bytes; details are short).
const MAX_LINE: u64 = 1 << 20;

/// The verified records of one log file ([`FileIndex::refresh`]) and pages of them
/// ([`FileIndex::page`]).
pub struct FileIndex {
    path: PathBuf,
    verifier: Verifier,
    /// Bytes read and verified: the end of the last complete line.
    consumed: u64,
    lines: Vec<Line>,
    broken: Option<String>,
}

/// One page of a [`FileIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The matching records, oldest first.
    pub events: Vec<AuditRecord>,
    /// When records older than those looked at remain: pass it as `before` for the next page.
    pub next_before: Option<u64>,
}

impl std::fmt::Debug for FileIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIndex")
            .field("path", &self.path)
            .field("records", &self.lines.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl FileIndex {
    /// An index of the log file at `path`, verified against `keys`; nothing is read until
    /// [`refresh`](Self::refresh).
    pub fn new(path: &Path, keys: TrustedKeys) -> Self {
        FileIndex {
            path: path.to_owned(),
            verifier: Verifier::new(keys),
            consumed: 0,
            lines: Vec::new(),
            broken: None,
        }
    }

    /// Records indexed (verified) so far.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no record is indexed.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Where and why the chain is broken, if it is.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Reads and verifies the complete lines appended since the last call (a line still
    /// being written waits for the next call). After a break it reads nothing more.
    pub fn refresh(&mut self) -> Result<(), AuditError> {
        if self.broken.is_some() {
            return Ok(());
        }
        let mut file = File::open(&self.path).map_err(|e| AuditError::io(&self.path, e))?;
        let size = file
            .metadata()
            .map_err(|e| AuditError::io(&self.path, e))?
            .len();
        if size < self.consumed {
            self.broken = Some(format!(
                "the log file shrank from {} to {size} bytes after record {}",
                self.consumed,
                self.lines.len()
            ));
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.consumed))
            .map_err(|e| AuditError::io(&self.path, e))?;
        let mut reader = BufReader::new(file).take(size - self.consumed);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| AuditError::io(&self.path, e))?;
            if read == 0 || line.last() != Some(&b'\n') {
                if read as u64 > MAX_LINE {
                    self.broken = Some(format!(
                        "record {} is longer than {MAX_LINE} bytes",
                        self.lines.len() + 1
                    ));
                }
                // The end, or a line not yet complete: read again next time.
                return Ok(());
            }
            let text = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| AuditError::Invalid("a line that is not UTF-8".into()));
            let item = text.and_then(|text| {
                if text.trim().is_empty() {
                    Err(AuditError::Invalid("an empty line".into()))
                } else {
                    AuditRecord::from_json(text)
                }
            });
            let hash = item.as_ref().ok().map(|record| record.hash.0);
            if let Err(broken) = self.verifier.push(item) {
                self.broken = Some(broken.to_string());
                return Ok(());
            }
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&hash.unwrap_or_default()[..8]);
            self.lines.push(Line {
                offset: self.consumed,
                len: read as u32,
                hash: prefix,
            });
            self.consumed += read as u64;
        }
    }

    /// The newest `limit` records matching `filter` among those before position `before`
    /// (1-based, as [`Page::next_before`] gives it; all when `None`), looking at no more than
    /// `max_scan` records, oldest first. Reads only the records it looks at.
    pub fn page(
        &self,
        filter: &Filter,
        before: Option<u64>,
        limit: usize,
        max_scan: usize,
    ) -> Result<Page, AuditError> {
        let end = before
            .map(|b| usize::try_from(b.saturating_sub(1)).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX)
            .min(self.lines.len());
        let mut file = File::open(&self.path).map_err(|e| AuditError::io(&self.path, e))?;
        let mut events = Vec::new();
        let mut position = end;
        let mut scanned = 0;
        let mut buffer = Vec::new();
        while position > 0 && events.len() < limit && scanned < max_scan {
            position -= 1;
            scanned += 1;
            let line = self.lines[position];
            buffer.resize(line.len as usize, 0);
            file.seek(SeekFrom::Start(line.offset))
                .and_then(|_| file.read_exact(&mut buffer))
                .map_err(|e| AuditError::io(&self.path, e))?;
            let changed = || {
                AuditError::Invalid(format!(
                    "record {} changed on disk after it was verified; run tessera audit verify",
                    position + 1
                ))
            };
            let text = std::str::from_utf8(&buffer[..buffer.len() - 1]).map_err(|_| changed())?;
            let record = AuditRecord::from_json(text).map_err(|_| changed())?;
            if record.compute_hash() != record.hash || record.hash.0[..8] != line.hash {
                return Err(changed());
            }
            if filter.matches(&record) {
                events.push(record);
            }
        }
        events.reverse();
        Ok(Page {
            events,
            next_before: (position > 0).then_some(position as u64 + 1),
        })
    }
}
