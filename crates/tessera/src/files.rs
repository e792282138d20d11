//! File helpers: secret files are created with mode 0600 and written atomically.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Writes `content` to `path` atomically (temporary file, fsync, rename). Secret files get mode
/// 0600 from creation. Refuses to overwrite an existing file unless `overwrite`.
pub fn write_file(path: &Path, content: &[u8], secret: bool, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        bail!(
            "{} already exists; move it away first (this command never overwrites keys)",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tessera-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mode = if secret { 0o600 } else { 0o644 };
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .context("setting file permissions")?;
    tmp.write_all(content).context("writing")?;
    tmp.as_file().sync_all().context("syncing")?;
    tmp.persist(path)
        .with_context(|| format!("moving the new file to {}", path.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a text file with a clear error.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Opens a secret file, warning if others can read it.
pub fn read_secret(path: &Path, what: &str) -> Result<zeroize::Zeroizing<String>> {
    let meta = fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "{what} is readable by other users; run `chmod 600` on it"
        );
    }
    Ok(zeroize::Zeroizing::new(read_text(path, what)?))
}
