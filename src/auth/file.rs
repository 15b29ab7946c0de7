//! The `file` password backend: one line a user,
//! `user:HASH[:scram-sha-256=...][:cram-md5=...]`, with a crypt(3) hash
//! and, when the password was set by `imspd passwd`, what the
//! challenge-response mechanisms need (see [`super::secrets`]); never the
//! password itself. Lines with the hash alone serve PLAIN and LOGIN.
//! Guarded by its lock file (`passwd.`) and rewritten atomically, like
//! every database file.

use std::io;
use std::path::{Path, PathBuf};

use super::secrets::{CramSecret, SCRAM_ITERATIONS, ScramSecret, random_bytes};
use super::{PasswordBackend, Verdict, hash};
use crate::store::file::{Lock, write_atomic};

pub struct FileBackend {
    path: PathBuf,
}

/// One line of a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub hash: String,
    /// The fields after the hash, `name=value` (unknown ones are kept).
    pub extra: Vec<String>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&str> {
        self.extra.iter().find_map(|f| {
            f.split_once('=')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    pub fn scram_sha256(&self) -> Option<ScramSecret> {
        ScramSecret::decode(self.field("scram-sha-256")?)
    }

    pub fn cram_md5(&self) -> Option<CramSecret> {
        CramSecret::decode(self.field("cram-md5")?)
    }

    pub fn line(&self) -> String {
        let mut l = format!("{}:{}", self.user, self.hash);
        for f in &self.extra {
            l.push(':');
            l.push_str(f);
        }
        l.push('\n');
        l
    }
}

/// The entries of a password file, in file order.
pub fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let user = f.next()?.to_string();
            let hash = f.next()?.to_string();
            Some(Entry {
                user,
                hash,
                extra: f.filter(|x| !x.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect())
}

/// The entry of `user`, read under the file's lock.
pub fn lookup(path: &Path, user: &str) -> Result<Option<Entry>, String> {
    let _lock = Lock::take(path, false).map_err(|e| e.to_string())?;
    let entries = read_entries(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(entries.into_iter().find(|e| e.user == user))
}

/// Replace (or with `None` remove) a user's line.
fn set_entry(path: &Path, user: &str, entry: Option<Entry>) -> Result<(), String> {
    if user.is_empty() || user.contains([':', '\n']) {
        return Err(format!("invalid user name '{user}'"));
    }
    let _lock = Lock::take(path, true).map_err(|e| e.to_string())?;
    let mut entries = read_entries(path).map_err(|e| format!("{}: {e}", path.display()))?;
    entries.retain(|e| e.user != user);
    entries.extend(entry);
    entries.sort_by(|a, b| a.user.cmp(&b.user));
    let out: String = entries.iter().map(Entry::line).collect();
    write_atomic(path, out.as_bytes(), true).map_err(|e| e.to_string())?;
    Ok(())
}

/// Set (or with `None` remove) a user's password hash alone.
pub fn set_hash(path: &Path, user: &str, new_hash: Option<&str>) -> Result<(), String> {
    let entry = new_hash.map(|h| Entry {
        user: user.to_string(),
        hash: h.to_string(),
        extra: Vec::new(),
    });
    set_entry(path, user, entry)
}

/// Set a user's password: its crypt hash and the SCRAM-SHA-256 and
/// CRAM-MD5 secrets.
pub fn set_password(path: &Path, user: &str, password: &[u8]) -> Result<(), String> {
    if password.is_empty() {
        return Err("empty password".into());
    }
    let scram = ScramSecret::new(password, &random_bytes(16), SCRAM_ITERATIONS);
    let entry = Entry {
        user: user.to_string(),
        hash: hash::make(password)?,
        extra: vec![
            format!("scram-sha-256={}", scram.encode()),
            format!("cram-md5={}", CramSecret::new(password).encode()),
        ],
    };
    set_entry(path, user, Some(entry))
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
        let found = lookup(&self.path, user)?;
        let hash_of = found.as_ref().map(|e| e.hash.as_str());
        // Unknown users cost a hash check too: no timing difference.
        let ok = hash::verify(password, hash_of.unwrap_or(hash::DUMMY));
        Ok(if ok && found.is_some() && !password.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Rejected
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_secrets_and_old_lines_work() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(
            &p,
            "old:$5$7mU5iwltzH2XtoT2$QWvqgQOV7xDrC6taxYmH/A75wW9g.42ieVayVZSxWi.\n",
        )
        .unwrap();
        set_password(&p, "new", b"pw").unwrap();
        let b = FileBackend::new(p.clone());
        assert_eq!(b.check("old", b"secret"), Ok(Verdict::Accepted));
        assert_eq!(b.check("new", b"pw"), Ok(Verdict::Accepted));
        assert_eq!(b.check("new", b"pW"), Ok(Verdict::Rejected));
        assert_eq!(b.check("nobody", b"pw"), Ok(Verdict::Rejected));
        let old = lookup(&p, "old").unwrap().unwrap();
        assert!(old.scram_sha256().is_none() && old.cram_md5().is_none());
        let new = lookup(&p, "new").unwrap().unwrap();
        assert_eq!(new.cram_md5(), Some(CramSecret::new(b"pw")));
        let s = new.scram_sha256().unwrap();
        assert_eq!(s, ScramSecret::new(b"pw", &s.salt, s.iterations));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains(":pw"), "{text}");
        set_hash(&p, "new", None).unwrap();
        assert!(lookup(&p, "new").unwrap().is_none());
        assert!(lookup(&p, "old").unwrap().is_some());
    }
}
