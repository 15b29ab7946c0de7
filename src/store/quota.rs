//! Quota accounting, as the implementation notes define it: a user's usage
//! is the length of the names and values of their read-write options plus
//! the length of the field names and values of every entry of every one of
//! their address books, in bytes, kept in the read-only user option
//! `imsp.user.quota.usage`. `imsp.user.quota` is the limit in kilobytes
//! (0: none). Kilobytes are rounded up, as 1.8 shows them (1025 bytes are
//! 2 KB); a change may not take the usage over the limit.

use std::fs;

use super::file::{Order, Records};
use super::options::{ORDER as OPTION_ORDER, OptKind};
use super::{Store, StoreError};

pub const USAGE_OPTION: &str = "imsp.user.quota.usage";

pub fn option_cost(name: &str, value: &[u8]) -> u64 {
    (name.len() + value.len()) as u64
}

/// The cost of one address book record `entry"field value`.
pub fn field_cost(key: &[u8], value: &[u8]) -> u64 {
    let field = key
        .iter()
        .position(|&b| b == b'"')
        .map(|i| &key[i + 1..])
        .unwrap_or(b"");
    (field.len() + value.len()) as u64
}

/// The usage recorded in a user's option records.
pub fn stored_usage(recs: &Records) -> Option<u64> {
    let v = recs.get(USAGE_OPTION.as_bytes())?;
    std::str::from_utf8(v.strip_prefix(b"R ")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn store_usage(recs: &mut Records, usage: u64) {
    let key = recs
        .key_of(USAGE_OPTION.as_bytes())
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| USAGE_OPTION.as_bytes().to_vec());
    recs.insert(key, format!("R {usage}").into_bytes());
}

/// The usage of the read-write options in a user's option records.
pub fn options_usage(recs: &Records) -> u64 {
    recs.iter()
        .filter(|(_, v)| {
            v.first().copied().and_then(OptKind::from_letter) == Some(OptKind::ReadWrite)
        })
        .map(|(k, v)| (k.len() + v.len().saturating_sub(2)) as u64)
        .sum()
}

/// The usage of all of a user's address books (`abook.*` files).
pub fn books_usage(store: &mut Store, user: &str) -> Result<u64, StoreError> {
    let dir = store.user_dir(user);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    // Books, whether in their files or (new, with journals on) only in
    // their journals so far.
    let mut books = std::collections::BTreeSet::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let name = name.strip_prefix(".journal.").unwrap_or(&name);
        if name.starts_with("abook.") && !name.ends_with('.') {
            books.insert(dir.join(name));
        }
    }
    let mut total = 0;
    for p in books {
        let recs = store.files.read(&p, Order::CaseInsensitive)?;
        total += recs.iter().map(|(k, v)| field_cost(k, v)).sum::<u64>();
    }
    Ok(total)
}

/// The whole usage of a user, from the files.
pub fn recompute(store: &mut Store, user: &str) -> Result<u64, StoreError> {
    let p = store.user_path(user, "options");
    let recs = store.files.read(&p, OPTION_ORDER)?;
    Ok(options_usage(&recs) + books_usage(store, user)?)
}

/// Bytes in kilobytes, rounded up.
pub fn kilobytes(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// Refuse a usage over the quota.
pub fn check(usage: u64, quota_kb: u64) -> Result<(), StoreError> {
    if quota_kb > 0 && kilobytes(usage) > quota_kb {
        return Err(StoreError::OverQuota {
            usage_kb: kilobytes(usage),
            quota_kb,
        });
    }
    Ok(())
}

impl Store {
    /// A user's usage in bytes: the recorded value, or computed from the
    /// files when none is recorded yet.
    pub fn usage_of(&mut self, user: &str) -> Result<u64, StoreError> {
        let p = self.user_path(user, "options");
        let recs = self.files.read(&p, OPTION_ORDER)?;
        match stored_usage(&recs) {
            Some(u) => Ok(u),
            None => recompute(self, user),
        }
    }

    /// Record a change of `delta` bytes in a user's usage (after the change
    /// itself is written; without a recorded value, it is computed).
    ///
    /// With no quota (`quota_kb` 0) no running count is kept: nothing
    /// checks it, and keeping it would make every address book change of
    /// every session wait for the owner's options file. A count recorded
    /// before is dropped (it would go stale); the usage is then computed
    /// from the files when it is asked for, or when a quota applies again.
    pub fn add_usage(&mut self, user: &str, delta: i64, quota_kb: u64) -> Result<(), StoreError> {
        if delta == 0 || !self.user_exists(user) {
            return Ok(());
        }
        if quota_kb == 0 {
            return self.forget_usage(user);
        }
        self.update_with_usage(user, &|_| Ok(true), |recs, usage| {
            let Some(usage) = usage else {
                unreachable!("computed when not recorded")
            };
            // A computed usage counts the change already.
            let now = match usage.recorded {
                true => usage.bytes.saturating_add_signed(delta),
                false => usage.bytes,
            };
            store_usage(recs, now);
            Ok::<_, StoreError>(((), true))
        })
    }

    /// Without a quota no usage is counted: a count recorded while one
    /// applied is dropped at the next change of the user's books.
    pub fn forget_usage(&mut self, user: &str) -> Result<(), StoreError> {
        let p = self.user_path(user, "options");
        if stored_usage(&*self.files.read(&p, OPTION_ORDER)?).is_none() {
            return Ok(());
        }
        self.files.update(&p, OPTION_ORDER, |recs| {
            let had = recs.remove(USAGE_OPTION.as_bytes()).is_some();
            Ok::<_, StoreError>(((), had))
        })
    }

    /// Read-modify-write a user's options file, `change` given the usage
    /// as it is before: the recorded value, or computed from the files
    /// when `counted` says a count is kept (else `None`); both are given
    /// the file as it is under its lock. The books are read for a count
    /// outside that lock, which address book changes take while they hold
    /// a book's lock: a change that finds no recorded usage under the lock
    /// lets it go, reads the books, and runs again (`change` may be called
    /// twice).
    pub fn update_with_usage<T>(
        &mut self,
        user: &str,
        counted: &dyn Fn(&Records) -> Result<bool, StoreError>,
        mut change: impl FnMut(&mut Records, Option<Usage>) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let p = self.user_path(user, "options");
        let mut books = None;
        loop {
            let done = self.files.update(&p, OPTION_ORDER, |recs| {
                let usage = match (stored_usage(recs), books) {
                    (Some(bytes), _) => Some(Usage {
                        bytes,
                        recorded: true,
                    }),
                    (None, Some(b)) => Some(Usage {
                        bytes: options_usage(recs) + b,
                        recorded: false,
                    }),
                    (None, None) if !counted(recs)? => None,
                    (None, None) => return Ok((None, false)),
                };
                let (t, write) = change(recs, usage)?;
                Ok::<_, StoreError>((Some(t), write))
            })?;
            match done {
                Some(t) => return Ok(t),
                None => books = Some(books_usage(self, user)?),
            }
        }
    }
}

/// A user's usage before a change, as [`Store::update_with_usage`] found it.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub bytes: u64,
    /// Recorded in the options file (else computed from the files, and so
    /// counting a change already written to them).
    pub recorded: bool,
}
