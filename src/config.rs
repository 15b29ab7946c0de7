//! Settings fixed at start from the command line. Site configuration that
//! admins change at run time lives in the global `options` file instead
//! (see `store::options`), read afresh whenever it changes.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::Limits;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The database directory (`/var/imsp` by default).
    pub data_dir: PathBuf,
    /// This host's name, for the greeting and `user@host` of locks.
    pub hostname: String,
    pub limits: Limits,
    /// A session that sends no complete command for this long is closed.
    pub idle_timeout: Duration,
    /// Before a login: how long a session may go without logging in (the
    /// shorter of this and `idle_timeout`), so that connections that never
    /// log in cannot hold the connection limit for long.
    pub login_timeout: Duration,
    /// A write the client does not take within this time ends the session.
    pub write_timeout: Duration,
}

impl Settings {
    pub fn new(data_dir: PathBuf) -> Settings {
        Settings {
            data_dir,
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            login_timeout: Duration::from_secs(2 * 60),
            write_timeout: Duration::from_secs(5 * 60),
        }
    }
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
