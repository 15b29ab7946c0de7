//! Advisory locks: the per-user `alock` file, one line a held lock,
//! `KEY user@host`, KEY being an option name or `BOOK"ENTRY`.
//!
//! Locks belong to sessions, not to users: after `user@host` imspd records
//! the session's process (pid and start time), so another session of the
//! same user is refused too, and a lock whose process is gone (killed,
//! crashed) is stale and ignored. cyrus-imspd 1.8 shows the whole value as
//! the holder; imspd shows only `user@host`. An entry without a process
//! (written by 1.8, whose sessions are gone) counts as stale.

use super::file::Order;
use super::{Store, StoreError};

/// The session that holds (or asks for) a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `user@host`, shown to others.
    pub who: String,
    pub pid: u32,
    /// The process start time (clock ticks since boot), against pid reuse.
    pub start: u64,
}

impl Holder {
    /// The current process as holder.
    pub fn this_process(who: String) -> Holder {
        let pid = std::process::id();
        Holder {
            who,
            pid,
            start: own_start().unwrap_or(0),
        }
    }

    fn encode(&self) -> Vec<u8> {
        format!("{}\t{}:{}", self.who, self.pid, self.start).into_bytes()
    }

    fn decode(v: &[u8]) -> Option<Holder> {
        let s = std::str::from_utf8(v).ok()?;
        let (who, proc_) = s.rsplit_once('\t')?;
        let (pid, start) = proc_.split_once(':')?;
        Some(Holder {
            who: who.to_string(),
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }

    fn alive(&self) -> bool {
        // This process: alive if it is the same one (a killed session's
        // pid may have been given to this one since).
        if self.pid == std::process::id() {
            return self.start == own_start().unwrap_or(0);
        }
        match process_start(self.pid) {
            Some(start) => start == self.start,
            // No /proc: fall back to whether the pid exists.
            None if !std::path::Path::new("/proc/self/stat").exists() => {
                // SAFETY: signal 0 only checks that the process exists.
                unsafe { libc::kill(self.pid as i32, 0) == 0 }
            }
            None => false,
        }
    }
}

/// Field 22 of /proc/PID/stat: when the process started; `None` for a
/// process that has ended, even one its parent has not reaped yet.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// This process's start time, read once (after fork: the child's).
fn own_start() -> Option<u64> {
    static OWN: std::sync::Mutex<Option<(u32, Option<u64>)>> = std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut g = OWN.lock().unwrap_or_else(|e| e.into_inner());
    match *g {
        Some((p, start)) if p == pid => start,
        _ => {
            let start = process_start(pid);
            *g = Some((pid, start));
            start
        }
    }
}

/// The `alock` key of an address book entry.
pub fn entry_key(book: &str, entry: &[u8]) -> Vec<u8> {
    let mut k = book.as_bytes().to_vec();
    k.push(b'"');
    k.extend_from_slice(entry);
    k
}

/// The outcome of a lock request.
#[derive(Debug, PartialEq, Eq)]
pub enum Locked {
    /// Taken (or already held by this session).
    Taken,
    /// Held by another live session: `user@host`.
    HeldBy(String),
}

const ORDER: Order = Order::CaseInsensitive;

impl Store {
    /// Take the lock `key` in `owner`'s alock file for `holder`.
    pub fn lock(&mut self, owner: &str, key: &[u8], holder: &Holder) -> Result<Locked, StoreError> {
        let p = self.user_path(owner, "alock");
        self.files.update(&p, ORDER, |recs| {
            if let Some(cur) = recs.get(key).and_then(Holder::decode)
                && cur.alive()
            {
                if cur.pid == holder.pid && cur.start == holder.start {
                    return Ok((Locked::Taken, false));
                }
                return Ok((Locked::HeldBy(cur.who), false));
            }
            recs.insert(key.to_vec(), holder.encode());
            Ok((Locked::Taken, true))
        })
    }

    /// Release `key` if `holder` holds it; false when it did not.
    pub fn unlock(&mut self, owner: &str, key: &[u8], holder: &Holder) -> Result<bool, StoreError> {
        let p = self.user_path(owner, "alock");
        self.files.update(&p, ORDER, |recs| {
            let mine = recs
                .get(key)
                .and_then(Holder::decode)
                .is_some_and(|h| h.pid == holder.pid && h.start == holder.start);
            if mine {
                recs.remove(key);
            }
            Ok((mine, mine))
        })
    }

    /// Release every lock of `holder` in `owner`'s file, and drop stale
    /// ones while at it. Returns how many of the holder's were released.
    pub fn unlock_all(&mut self, owner: &str, holder: &Holder) -> Result<usize, StoreError> {
        let p = self.user_path(owner, "alock");
        if !self.files.exists(&p) {
            return Ok(0);
        }
        self.files.update(&p, ORDER, |recs| {
            let mut mine = 0;
            let removed = recs.retain(|_, v| match Holder::decode(v) {
                Some(h) if h.pid == holder.pid && h.start == holder.start => {
                    mine += 1;
                    false
                }
                Some(h) => h.alive(),
                None => false,
            });
            Ok((mine, removed > 0))
        })
    }

    /// Remove the stale locks of `owner`'s file (their session is gone, or
    /// the line names no session, as 1.8 wrote them). Returns the removed
    /// keys with who held them.
    pub fn clear_stale(&mut self, owner: &str) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let p = self.user_path(owner, "alock");
        if !self.files.exists(&p) {
            return Ok(Vec::new());
        }
        self.files.update(&p, ORDER, |recs| {
            let mut gone = Vec::new();
            recs.retain(|k, v| match Holder::decode(v) {
                Some(h) if h.alive() => true,
                Some(h) => {
                    gone.push((k.to_vec(), h.who));
                    false
                }
                None => {
                    gone.push((k.to_vec(), String::from_utf8_lossy(v).into_owned()));
                    false
                }
            });
            let changed = !gone.is_empty();
            Ok((gone, changed))
        })
    }

    /// The live locks in `owner`'s file: key and holder.
    pub fn locks(&mut self, owner: &str) -> Result<Vec<(Vec<u8>, Holder, bool)>, StoreError> {
        let p = self.user_path(owner, "alock");
        let recs = self.files.read(&p, ORDER)?;
        Ok(recs
            .iter()
            .map(|(k, v)| match Holder::decode(v) {
                Some(h) => {
                    let alive = h.alive();
                    (k.to_vec(), h, alive)
                }
                None => (
                    k.to_vec(),
                    Holder {
                        who: String::from_utf8_lossy(v).into_owned(),
                        pid: 0,
                        start: 0,
                    },
                    false,
                ),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock left by a killed session whose pid this process now has is
    /// stale: only the same pid *and* start time is this session.
    #[test]
    fn a_reused_pid_is_not_the_holder() {
        let me = Holder::this_process("fred@localhost".into());
        assert!(me.alive());
        let before = Holder {
            start: me.start.wrapping_sub(1),
            ..me.clone()
        };
        assert!(!before.alive());
    }

    #[test]
    fn an_ended_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie still has /proc/PID/stat.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(process_start(pid), None);
        child.wait().unwrap();
        assert_eq!(process_start(pid), None);
        assert!(process_start(std::process::id()).is_some());
    }
}
