//! The `file` password backend: one `user:hash` line a user, crypt(3)
//! hashes. Guarded by its lock file (`passwd.`) and rewritten atomically,
//! like every database file.

use std::io;
use std::path::{Path, PathBuf};

use super::{PasswordBackend, Verdict, hash};
use crate::store::file::{Lock, write_atomic};

pub struct FileBackend {
    path: PathBuf,
}

/// The users and hashes of a password file, in file order.
pub fn read_entries(path: &Path) -> io::Result<Vec<(String, String)>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (u, h) = l.split_once(':')?;
            // Tolerate shadow-style extra fields after the hash.
            let h = h.split(':').next().unwrap_or("");
            Some((u.to_string(), h.to_string()))
        })
        .collect())
}

/// Set (or with `None` remove) a user's password hash.
pub fn set_hash(path: &Path, user: &str, new_hash: Option<&str>) -> Result<(), String> {
    if user.is_empty() || user.contains([':', '\n']) {
        return Err(format!("invalid user name '{user}'"));
    }
    let _lock = Lock::take(path, true).map_err(|e| e.to_string())?;
    let mut entries = read_entries(path).map_err(|e| format!("{}: {e}", path.display()))?;
    entries.retain(|(u, _)| u != user);
    if let Some(h) = new_hash {
        entries.push((user.to_string(), h.to_string()));
    }
    entries.sort();
    let mut out = String::new();
    for (u, h) in &entries {
        out.push_str(&format!("{u}:{h}\n"));
    }
    write_atomic(path, out.as_bytes(), true).map_err(|e| e.to_string())?;
    Ok(())
}

impl FileBackend {
    pub fn new(path: PathBuf) -> FileBackend {
        FileBackend { path }
    }
}

impl PasswordBackend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn check(&self, user: &str, password: &[u8]) -> Result<Verdict, String> {
        let entries = {
            let _lock = Lock::take(&self.path, false).map_err(|e| e.to_string())?;
            read_entries(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?
        };
        let found = entries
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, h)| h.as_str());
        // Unknown users cost a hash check too: no timing difference.
        let ok = hash::verify(password, found.unwrap_or(hash::DUMMY));
        Ok(if ok && found.is_some() && !password.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Rejected
        })
    }
}
