//! A cache of recent successful password checks, in the listener's memory,
//! as Dovecot's auth cache: a deliberately slow hash (yescrypt takes tens
//! of milliseconds) is checked once, and for `imsp.auth.cache.ttl` seconds
//! (default 300; 0 turns the cache off) later logins with the same
//! password are checked against an HMAC-SHA256 verifier instead.
//!
//! The listener holds the cache; each session process gets a snapshot of it
//! when it is forked, and reports a new success back over a pipe, so the
//! next session finds it. The HMAC key is random for each start of the
//! daemon; nothing of this reaches the disk. An entry also carries a digest
//! of what the backend stored for the user (the password file line), so a
//! changed password misses the cache at once.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Most entries kept; the oldest go first beyond it.
const MAX_ENTRIES: usize = 100_000;
/// Entries older than this are dropped whatever the TTL.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Entry {
    tag: [u8; 32],
    verifier: [u8; 32],
    at: Instant,
}

struct Cache {
    key: Vec<u8>,
    entries: HashMap<String, Entry>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);
/// Where a session process reports a success: the pipe to the listener.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

fn digest(tag: &[u8]) -> [u8; 32] {
    Sha256::digest(tag).into()
}

fn verifier(key: &[u8], user: &str, password: &[u8]) -> [u8; 32] {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(user.as_bytes());
    m.update(&[0]);
    m.update(password);
    m.finalize().into_bytes().into()
}

fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Turn the cache on in this process (the listener, or a lone inetd
/// session); returns the read end of the report pipe.
pub fn enable() -> std::io::Result<RawFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors; both are non-blocking and closed
    // on exec: a full pipe drops a report instead of stalling a session.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Ok(mut g) = CACHE.lock() {
        *g = Some(Cache {
            key: super::secrets::random_bytes(32),
            entries: HashMap::new(),
        });
    }
    REPORT_FD.store(fds[1], Ordering::SeqCst);
    Ok(fds[0])
}

/// Does the cache vouch for this password? `tag` is what the backend
/// stores for the user now; `ttl` the current lifetime of entries.
pub fn hit(user: &str, tag: &[u8], password: &[u8], ttl: Duration) -> bool {
    let Ok(g) = CACHE.lock() else { return false };
    let Some(c) = g.as_ref() else { return false };
    let Some(e) = c.entries.get(user) else {
        return false;
    };
    e.at.elapsed() < ttl
        && equal(&e.tag, &digest(tag))
        && equal(&e.verifier, &verifier(&c.key, user, password))
}

/// Record a success: in this process, and reported to the listener.
pub fn remember(user: &str, tag: &[u8], password: &[u8]) {
    let Ok(mut g) = CACHE.lock() else { return };
    let Some(c) = g.as_mut() else { return };
    let e = Entry {
        tag: digest(tag),
        verifier: verifier(&c.key, user, password),
        at: Instant::now(),
    };
    let msg = format!("{user}\t{}\t{}\n", hex(&e.tag), hex(&e.verifier));
    c.entries.insert(user.to_string(), e);
    let fd = REPORT_FD.load(Ordering::SeqCst);
    if fd >= 0 && msg.len() <= libc::PIPE_BUF {
        // SAFETY: one write of a short message to our pipe: atomic.
        unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
    }
}

/// In the listener: take in what sessions reported.
pub fn absorb(read_fd: RawFd) {
    // SAFETY: the fd is the pipe's read end, owned by the listener; the
    // File is forgotten, not closed.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(read_fd) };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    std::mem::forget(f);
    let Ok(mut g) = CACHE.lock() else { return };
    let Some(c) = g.as_mut() else { return };
    for line in buf.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split('\t');
        let (Some(user), Some(tag), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Some(tag), Some(verifier)) = (unhex(tag), unhex(v)) else {
            continue;
        };
        c.entries.insert(
            user.to_string(),
            Entry {
                tag,
                verifier,
                at: Instant::now(),
            },
        );
    }
    c.entries.retain(|_, e| e.at.elapsed() < MAX_AGE);
    if c.entries.len() > MAX_ENTRIES {
        let mut ages: Vec<Instant> = c.entries.values().map(|e| e.at).collect();
        ages.sort();
        let cut = ages[c.entries.len() - MAX_ENTRIES];
        c.entries.retain(|_, e| e.at >= cut);
    }
}

/// In a session process: the report pipe's read end is the listener's.
pub fn close_read_end(read_fd: RawFd) {
    // SAFETY: closing this process's copy of the listener's descriptor.
    unsafe { libc::close(read_fd) };
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_reports_and_vouches_only_for_the_same_password_and_tag() {
        let read_fd = enable().unwrap();
        let ttl = Duration::from_secs(60);
        assert!(!hit("fred", b"line1", b"secret", ttl));
        remember("fred", b"line1", b"secret");
        assert!(hit("fred", b"line1", b"secret", ttl));
        assert!(!hit("fred", b"line1", b"Secret", ttl));
        assert!(
            !hit("fred", b"line2", b"secret", ttl),
            "a changed password misses"
        );
        assert!(!hit("barney", b"line1", b"secret", ttl));
        assert!(!hit("fred", b"line1", b"secret", Duration::ZERO), "expired");
        // What a session reports reaches the listener's cache.
        CACHE.lock().unwrap().as_mut().unwrap().entries.clear();
        assert!(!hit("fred", b"line1", b"secret", ttl));
        absorb(read_fd);
        assert!(hit("fred", b"line1", b"secret", ttl));
    }
}
