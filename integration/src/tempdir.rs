//! A temporary directory for a test's files (an Envoy's bootstrap and log, certificates),
//! removed on drop unless `KEEP_TMP` is set.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh directory `$TMPDIR/mesh-<prefix>-<pid>-<n>`.
#[derive(Debug)]
pub struct Dir(PathBuf);

impl Dir {
    pub fn new(prefix: &str) -> std::io::Result<Dir> {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("mesh-{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
