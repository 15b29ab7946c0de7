//! Authentication: password backends behind one trait, tried in the order
//! of the global list option `imsp.auth.backends` (default `(file)`):
//!
//! - `file`: the password file (`imsp.auth.passwd.file`, or `passwd` in the
//!   data directory), which also holds the secrets of CRAM-MD5 and
//!   SCRAM-SHA-256;
//! - `unix`: system accounts through PAM (`imsp.auth.pam.service`, default
//!   `imsp`) or, with `imsp.auth.unix.method N shadow`, the shadow file
//!   (`imsp.auth.shadow.file`, default `/etc/shadow`);
//! - `saslauthd`: a running saslauthd (`imsp.auth.saslauthd.socket`,
//!   `imsp.auth.saslauthd.service` default `imsp`, `imsp.auth.saslauthd.realm`).
//!
//! The first backend that accepts wins; a backend that fails (file
//! unreadable, daemon down) is logged and the next one is tried.
//!
//! The auth cache ([`cache`]) vouches only for successes of the backends
//! that check nothing but the password (file, unix with method shadow):
//! PAM and saslauthd are asked every time, so PAM's account check
//! (expired, locked, access rules) is never skipped.

pub mod cache;
pub mod file;
pub mod hash;
pub mod saslauthd;
pub mod scram;
pub mod secrets;
pub mod unix;

use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Whether the auth cache may vouch for this backend's successes: not
    /// when the backend decides more than the password each time (PAM's
    /// account check: expired or locked accounts, access rules; saslauthd,
    /// whose mechanism may run one), which a cached success would skip.
    fn cacheable(&self) -> bool {
        true
    }
}

/// The backend names `imsp.auth.backends` may list.
pub const BACKENDS: [&str; 3] = ["file", "unix", "saslauthd"];

/// The authentication module of one session.
pub struct Auth {
    data_dir: PathBuf,
}

fn text_option(global: &OptionTable, name: &str) -> Option<String> {
    global
        .value(name)
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
        .filter(|v| !v.is_empty())
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
        match text_option(global, "imsp.auth.passwd.file") {
            Some(p) => PathBuf::from(p),
            None => self.data_dir.join("passwd"),
        }
    }

    /// The configured backend names, in order (unknown names dropped with
    /// a warning).
    pub fn backend_names(&self, global: &OptionTable) -> Vec<String> {
        let listed = global.list("imsp.auth.backends");
        if listed.is_empty() {
            return vec!["file".to_string()];
        }
        listed
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| {
                let known = BACKENDS.contains(&n.as_str());
                if !known {
                    crate::log_warn!("imsp.auth.backends: unknown backend '{n}' ignored");
                }
                known
            })
            .collect()
    }

    /// Whether the password file is one of the backends (the
    /// challenge-response mechanisms need it).
    pub fn uses_file(&self, global: &OptionTable) -> bool {
        self.backend_names(global).iter().any(|n| n == "file")
    }

    fn backend(&self, global: &OptionTable, name: &str) -> Box<dyn PasswordBackend> {
        match name {
            "unix" => {
                let method = text_option(global, "imsp.auth.unix.method")
                    .unwrap_or_else(|| "pam".into())
                    .to_ascii_lowercase();
                if method == "shadow" {
                    Box::new(unix::ShadowBackend {
                        path: text_option(global, "imsp.auth.shadow.file")
                            .map(PathBuf::from)
                            .unwrap_or_else(|| PathBuf::from("/etc/shadow")),
                    })
                } else {
                    if method != "pam" {
                        crate::log_warn!("imsp.auth.unix.method: unknown '{method}', using pam");
                    }
                    Box::new(unix::PamBackend {
                        service: text_option(global, "imsp.auth.pam.service")
                            .unwrap_or_else(|| "imsp".into()),
                    })
                }
            }
            "saslauthd" => Box::new(saslauthd::SaslauthdBackend {
                socket: text_option(global, "imsp.auth.saslauthd.socket")
                    .map(PathBuf::from)
                    .unwrap_or_else(saslauthd::SaslauthdBackend::default_socket),
                service: text_option(global, "imsp.auth.saslauthd.service")
                    .unwrap_or_else(|| "imsp".into()),
                realm: text_option(global, "imsp.auth.saslauthd.realm").unwrap_or_default(),
                timeout: Duration::from_secs(10),
            }),
            _ => Box::new(file::FileBackend::new(self.password_file(global))),
        }
    }

    /// Check a user name and password against the configured backends.
    pub fn check(&self, global: &OptionTable, user: &str, password: &[u8]) -> Verdict {
        let ttl =
            Duration::from_secs(global.number("imsp.auth.cache.ttl").unwrap_or(300).max(0) as u64);
        // The tag reads the password file: only when the cache is on.
        let tag = if ttl.is_zero() {
            Vec::new()
        } else {
            self.cache_tag(global, user)
        };
        if !ttl.is_zero() && cache::hit(user, &tag, password, ttl) {
            crate::log_debug!("{user} accepted by the auth cache");
            return Verdict::Accepted;
        }
        for name in self.backend_names(global) {
            let backend = self.backend(global, &name);
            match backend.check(user, password) {
                Ok(Verdict::Accepted) => {
                    crate::log_debug!("{user} accepted by the {name} backend");
                    if !ttl.is_zero() && backend.cacheable() {
                        cache::remember(user, &tag, password);
                    }
                    return Verdict::Accepted;
                }
                Ok(Verdict::Rejected) => {}
                Err(e) => crate::log_error!("auth backend {name}: {e}"),
            }
        }
        Verdict::Rejected
    }

    /// What the backends store for `user` now, for the auth cache: the
    /// password file line (so a new password misses the cache at once),
    /// and the backends in use (with the unix method: an entry made by
    /// the shadow method never serves PAM).
    fn cache_tag(&self, global: &OptionTable, user: &str) -> Vec<u8> {
        let mut tag = self.backend_names(global).join(" ").into_bytes();
        if let Some(m) = text_option(global, "imsp.auth.unix.method") {
            tag.push(0);
            tag.extend_from_slice(m.to_ascii_lowercase().as_bytes());
        }
        if let Some(e) = self.file_entry(global, user) {
            tag.push(0);
            tag.extend_from_slice(e.line().as_bytes());
        }
        tag
    }

    pub fn file_entry(&self, global: &OptionTable, user: &str) -> Option<file::Entry> {
        if !self.uses_file(global) {
            return None;
        }
        match file::lookup(&self.password_file(global), user) {
            Ok(e) => e,
            Err(e) => {
                crate::log_error!("auth backend file: {e}");
                None
            }
        }
    }

    /// A SCRAM secret for a user the file does not know (or has no SCRAM
    /// secret for), so that the exchange fails only at the proof, like a
    /// wrong password, and the salt stays the same from one try to the next.
    pub fn decoy_scram(&self, user: &str) -> secrets::ScramSecret {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"imspd decoy salt\0");
        h.update(self.data_dir.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(user.as_bytes());
        let salt = h.finalize()[..16].to_vec();
        secrets::ScramSecret {
            iterations: secrets::SCRAM_ITERATIONS,
            salt,
            stored_key: secrets::random_bytes(32),
            server_key: secrets::random_bytes(32),
        }
    }
}
