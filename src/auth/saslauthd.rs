//! The `saslauthd` password backend: ask a running saslauthd (Cyrus SASL's
//! authentication daemon) over its UNIX socket.
//!
//! The request is four counted strings (login, password, service, realm),
//! each a 2-octet big-endian length and the octets; the answer is one
//! counted string that starts with `OK` or `NO`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::{PasswordBackend, Verdict};

/// Where saslauthd listens when no path is configured, first found wins.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/saslauthd/mux", "/var/run/saslauthd/mux"];

pub struct SaslauthdBackend {
    pub socket: PathBuf,
    pub service: String,
    pub realm: String,
    pub timeout: Duration,
}

fn counted(out: &mut Vec<u8>, field: &[u8]) -> Result<(), String> {
    let n = u16::try_from(field.len()).map_err(|_| "field too long for saslauthd".to_string())?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

impl SaslauthdBackend {
    /// The configured socket, or the first default that exists.
    pub fn default_socket() -> PathBuf {
        DEFAULT_SOCKETS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKETS[0]))
    }
}

impl PasswordBackend for SaslauthdBackend {
    fn name(&self) -> &'static str {
        "saslauthd"
    }

    /// saslauthd's mechanism (PAM's account check, say) decides each time;
    /// it has a cache of its own (saslauthd -c).
    fn cacheable(&self) -> bool {
        false
    }

    fn check(&self, user: &str, password: &[u8]) -> Result<Verdict, String> {
        if password.is_empty() {
            return Ok(Verdict::Rejected);
        }
        let at = |e: std::io::Error| format!("saslauthd at {}: {e}", self.socket.display());
        let mut req = Vec::new();
        counted(&mut req, user.as_bytes())?;
        counted(&mut req, password)?;
        counted(&mut req, self.service.as_bytes())?;
        counted(&mut req, self.realm.as_bytes())?;
        let mut s = UnixStream::connect(&self.socket).map_err(at)?;
        s.set_read_timeout(Some(self.timeout)).map_err(at)?;
        s.set_write_timeout(Some(self.timeout)).map_err(at)?;
        s.write_all(&req).map_err(at)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(at)?;
        let n = u16::from_be_bytes(len) as usize;
        let mut reply = vec![0u8; n.min(1024)];
        s.read_exact(&mut reply).map_err(at)?;
        if reply.starts_with(b"OK") {
            Ok(Verdict::Accepted)
        } else if reply.starts_with(b"NO") {
            crate::log_debug!(
                "saslauthd refused {user}: {}",
                String::from_utf8_lossy(&reply)
            );
            Ok(Verdict::Rejected)
        } else {
            Err(format!(
                "saslauthd at {}: unexpected answer {:?}",
                self.socket.display(),
                String::from_utf8_lossy(&reply)
            ))
        }
    }
}
