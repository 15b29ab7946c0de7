//! Logging through syslog (facility mail), and to stderr with `-d`.
//!
//! Levels follow `imsp.log.level` of the implementation notes: 0 fatal
//! errors, 1 warnings, 2 mailbox administration, 3 logins and logouts,
//! 9 debugging. Each level includes the ones below it.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

static LEVEL: AtomicU8 = AtomicU8::new(2);
static STDERR: AtomicBool = AtomicBool::new(false);
static SYSLOG: Mutex<Option<Logger<LoggerBackend, Formatter3164>>> = Mutex::new(None);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Level 0: fatal and serious errors (LOG_ERR).
    Error,
    /// Level 1: warnings (LOG_WARNING).
    Warning,
    /// Level 2: administrative actions (LOG_NOTICE).
    Admin,
    /// Level 3: logins and logouts (LOG_NOTICE).
    Login,
    /// Level 9: debugging (LOG_DEBUG).
    Debug,
}

impl Kind {
    fn level(self) -> u8 {
        match self {
            Kind::Error => 0,
            Kind::Warning => 1,
            Kind::Admin => 2,
            Kind::Login => 3,
            Kind::Debug => 9,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Admin | Kind::Login => "notice",
            Kind::Debug => "debug",
        }
    }
}

/// Open the syslog connection (if there is a syslog daemon) and choose
/// whether to copy messages to stderr.
pub fn init(to_stderr: bool) {
    STDERR.store(to_stderr, Ordering::Relaxed);
    reopen();
}

/// After fork: the child logs under its own pid.
/// After fork: the child keeps the inherited syslog socket and logs under
/// its own pid (no reconnect).
pub fn after_fork() {
    if let Ok(mut g) = SYSLOG.lock()
        && let Some(l) = g.as_mut()
    {
        l.formatter.pid = std::process::id();
    }
}

/// Connect to syslog afresh (at start).
pub fn reopen() {
    let formatter = Formatter3164 {
        facility: Facility::LOG_MAIL,
        hostname: None,
        process: "imspd".into(),
        pid: std::process::id(),
    };
    let logger = syslog::unix(formatter).ok();
    if let Ok(mut g) = SYSLOG.lock() {
        *g = logger;
    }
}

thread_local! {
    /// Inside [`catch_expected`]: a panic there is a library's way of
    /// failing on bad input, handled by the caller.
    static EXPECTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, turning a panic into `Err`: for a library that panics on
/// input it cannot take apart (the caller reports the failure its own
/// way). Such a panic is logged at debug level only, not as an internal
/// error.
pub fn catch_expected<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let was = EXPECTED.with(|e| e.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    EXPECTED.with(|e| e.set(was));
    r
}

/// Report panics through the log (syslog, and stderr with `-d`) rather
/// than only on a stderr that a daemon has closed. The session that hit
/// one ends; see `daemon::spawn_session`.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        if EXPECTED.with(|e| e.get()) {
            crate::log_debug!("caught a library's panic: {info}");
            return;
        }
        let msg = format!("internal error: {info}");
        if STDERR.load(Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "imspd[{}]: error: {msg}",
                std::process::id()
            );
        }
        // try_lock: a panic inside `log` itself must not deadlock here.
        if let Ok(mut g) = SYSLOG.try_lock()
            && let Some(l) = g.as_mut()
        {
            let _ = l.err(&msg);
        }
    }));
}

pub fn stderr_enabled() -> bool {
    STDERR.load(Ordering::Relaxed)
}

pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

pub fn enabled(kind: Kind) -> bool {
    kind.level() <= level()
}

pub fn log(kind: Kind, msg: &str) {
    if !enabled(kind) {
        return;
    }
    if STDERR.load(Ordering::Relaxed) {
        let _ = writeln!(
            std::io::stderr(),
            "imspd[{}]: {}: {}",
            std::process::id(),
            kind.label(),
            msg
        );
    }
    if let Ok(mut g) = SYSLOG.lock()
        && let Some(l) = g.as_mut()
    {
        let _ = match kind {
            Kind::Error => l.err(msg),
            Kind::Warning => l.warning(msg),
            Kind::Admin | Kind::Login => l.notice(msg),
            Kind::Debug => l.debug(msg),
        };
    }
}

#[macro_export]
macro_rules! log_error { ($($a:tt)*) => { $crate::log::log($crate::log::Kind::Error, &format!($($a)*)) } }
#[macro_export]
macro_rules! log_warn { ($($a:tt)*) => { $crate::log::log($crate::log::Kind::Warning, &format!($($a)*)) } }
#[macro_export]
macro_rules! log_admin { ($($a:tt)*) => { $crate::log::log($crate::log::Kind::Admin, &format!($($a)*)) } }
#[macro_export]
macro_rules! log_login { ($($a:tt)*) => { $crate::log::log($crate::log::Kind::Login, &format!($($a)*)) } }
#[macro_export]
macro_rules! log_debug { ($($a:tt)*) => { if $crate::log::enabled($crate::log::Kind::Debug) { $crate::log::log($crate::log::Kind::Debug, &format!($($a)*)) } } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_marked_expected_while_it_runs_and_only_then() {
        assert!(!EXPECTED.with(|e| e.get()));
        let inside = catch_expected(|| EXPECTED.with(|e| e.get()));
        assert_eq!(inside.ok(), Some(true));
        // A panic is an Err, and the mark is cleared after it.
        let r = catch_expected(|| -> u8 { panic!("bad input") });
        assert!(r.is_err());
        assert!(!EXPECTED.with(|e| e.get()));
        // Nested: the outer mark stays until the outer call ends.
        let outer = catch_expected(|| {
            let _ = catch_expected(|| panic!("inner"));
            EXPECTED.with(|e| e.get())
        });
        assert_eq!(outer.ok(), Some(true));
        assert!(!EXPECTED.with(|e| e.get()));
    }
}
