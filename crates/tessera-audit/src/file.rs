//! The append-only file sink: one JSON record per line, one file per emitter.
//!
//! The file is opened in append mode only; records are written whole, then flushed to disk
//! (`fdatasync`) by the log ([`AuditLog`](crate::AuditLog): after every record, or every `n`
//! records with [`FsyncPolicy::Batch`](crate::FsyncPolicy), many records per flush when
//! several callers record at once).
//! A crash can leave a partial last line: [`FileSink::open`] cuts it off (it was never
//! acknowledged) and reports how many bytes it dropped, which the log records as an event.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{AuditError, AuditRecord};

/// An open log file, positioned at its end.
pub struct FileSink {
    path: PathBuf,
    file: File,
}

/// What [`FileSink::open`] found in an existing file.
#[derive(Debug, Default)]
pub struct Tail {
    /// The last complete record, if any.
    pub last: Option<AuditRecord>,
    /// Bytes of a partial last line that were cut off.
    pub torn_bytes: u64,
}

impl FileSink {
    /// Opens (or creates, mode 0600) the log at `path` for appending and reads its last record.
    pub fn open(path: &Path) -> Result<(Self, Tail), AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| AuditError::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let (last_line, torn_at) = last_line(&mut file).map_err(io)?;
        let mut tail = Tail::default();
        if let Some(complete_len) = torn_at {
            let len = file.metadata().map_err(io)?.len();
            tail.torn_bytes = len - complete_len;
            file.set_len(complete_len).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::warn!(
                path = %path.display(),
                bytes = tail.torn_bytes,
                "cut off a partial last audit record (written during a crash, never acknowledged)"
            );
        }
        if let Some(line) = last_line {
            tail.last =
                Some(
                    AuditRecord::from_json(&line).map_err(|e| AuditError::CannotResume {
                        path: path.to_owned(),
                        reason: format!("its last line is not a record ({e})"),
                    })?,
                );
        }
        Ok((
            FileSink {
                path: path.to_owned(),
                file,
            },
            tail,
        ))
    }

    /// Writes one record (one `write` of the whole line), without flushing it to disk.
    pub fn write(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = record.to_json_line().into_bytes();
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| AuditError::io(&self.path, e))
    }

    /// Flushes every written record to disk.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.file
            .sync_data()
            .map_err(|e| AuditError::io(&self.path, e))
    }

    /// A second handle on the same file, to flush it while this one writes.
    pub fn handle(&self) -> Result<File, AuditError> {
        self.file
            .try_clone()
            .map_err(|e| AuditError::io(&self.path, e))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "cannot flush the audit log");
        }
    }
}

/// The last complete line, and the length up to the end of it if a partial line follows.
fn last_line(file: &mut File) -> std::io::Result<(Option<String>, Option<u64>)> {
    let len = file.metadata()?.len();
    let complete_end = rfind_newline(file, len)?.map_or(0, |p| p + 1);
    let torn_at = (complete_end != len).then_some(complete_end);
    if complete_end == 0 {
        return Ok((None, torn_at));
    }
    let line_start = rfind_newline(file, complete_end - 1)?.map_or(0, |p| p + 1);
    let mut line = vec![0u8; (complete_end - 1 - line_start) as usize];
    file.seek(SeekFrom::Start(line_start))?;
    file.read_exact(&mut line)?;
    Ok((Some(String::from_utf8_lossy(&line).into_owned()), torn_at))
}

/// The position of the last `\n` before `before`, reading backwards in chunks.
fn rfind_newline(file: &mut File, before: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 8192;
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// Reads every line of a log file as a record (or the reason it is not one), in order.
pub fn read(path: &Path) -> Result<Vec<Result<AuditRecord, AuditError>>, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| AuditError::io(path, e))?;
        if line.trim().is_empty() {
            out.push(Err(AuditError::Invalid("an empty line".into())));
            continue;
        }
        out.push(AuditRecord::from_json(&line));
    }
    Ok(out)
}
