//! Authentication: password backends behind one trait, tried in order.
//! The `file` backend (a password file in the data directory) is the
//! default.

pub mod file;
pub mod hash;

use std::path::{Path, PathBuf};

use crate::store::options::OptionTable;

/// What a backend says of a user name and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Wrong password, or the backend knows no such user.
    Rejected,
}

/// A password backend.
pub trait PasswordBackend {
    fn name(&self) -> &'static str;
    /// Check `password` for `user`. An error is a backend failure (file
    /// unreadable, service down), not a refusal.
    fn check(&self, user: &str, password: &[u8]) -> Result<Verdict, String>;
}

/// The authentication module of one session.
pub struct Auth {
    data_dir: PathBuf,
}

impl Auth {
    pub fn new(data_dir: &Path) -> Auth {
        Auth {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The password file: `imsp.auth.passwd.file`, or `passwd` in the data
    /// directory.
    pub fn password_file(&self, global: &OptionTable) -> PathBuf {
        match global.value("imsp.auth.passwd.file") {
            Some(p) if !p.is_empty() => PathBuf::from(String::from_utf8_lossy(&p).into_owned()),
            _ => self.data_dir.join("passwd"),
        }
    }

    /// Check a user name and password against the configured backends.
    pub fn check(&self, global: &OptionTable, user: &str, password: &[u8]) -> Verdict {
        let backend = file::FileBackend::new(self.password_file(global));
        match backend.check(user, password) {
            Ok(v) => v,
            Err(e) => {
                crate::log_error!("auth backend {}: {e}", backend.name());
                Verdict::Rejected
            }
        }
    }
}
