//! Per-user `subs`: the mailboxes a user has touched.
//!
//! ```text
//! user/NAME/subs   MAILBOX SP 0|1 SP SEEN-UID LF
//! ```
//! `1` is subscribed, `0` not; SEEN-UID is the last UID the user has seen
//! (`0`: none).

use std::sync::Arc;

use super::file::{Order, Records};
use super::{Store, StoreError};

pub const ORDER: Order = Order::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub subscribed: bool,
    pub seen: u64,
}

impl Sub {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", u8::from(self.subscribed), self.seen).into_bytes()
    }

    pub fn decode(v: &[u8]) -> Option<Sub> {
        let s = std::str::from_utf8(v).ok()?;
        let (flag, uid) = s.split_once(' ').unwrap_or((s, "0"));
        let subscribed = match flag {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        Some(Sub {
            subscribed,
            seen: uid.trim().parse().unwrap_or(0),
        })
    }
}

pub fn get(recs: &Records, name: &str) -> Option<Sub> {
    recs.get(name.as_bytes()).and_then(Sub::decode)
}

pub fn put(recs: &mut Records, name: &str, s: Sub) {
    recs.insert(name.as_bytes().to_vec(), s.encode());
}

/// The parsed file, in name order.
pub fn entries(recs: &Records) -> Vec<(String, Sub)> {
    recs.iter()
        .filter_map(|(k, v)| Some((String::from_utf8(k.to_vec()).ok()?, Sub::decode(v)?)))
        .collect()
}

/// Subscribe to each of `names`, nothing seen yet: what a new user's
/// file starts with (`imsp.default.subs`).
fn subscribe_all(r: &mut Records, names: &[String]) {
    for d in names {
        put(
            r,
            d,
            Sub {
                subscribed: true,
                seen: 0,
            },
        );
    }
}

impl Store {
    pub fn subs_path(&self, user: &str) -> std::path::PathBuf {
        self.user_path(user, "subs")
    }

    /// The user's subscriptions. A user without a subs file gets one with
    /// a subscription to each of `defaults` (written to disk first).
    pub fn subs(&mut self, user: &str, defaults: &[String]) -> Result<Arc<Records>, StoreError> {
        let p = self.subs_path(user);
        if !self.files.exists(&p) && self.user_exists(user) {
            self.files.update(&p, ORDER, |r| {
                if r.is_empty() {
                    subscribe_all(r, defaults);
                }
                Ok(((), true))
            })?;
        }
        self.files.read(&p, ORDER)
    }

    /// The user's subscriptions, or what a new file would hold, without
    /// writing anything (for a session that may only look).
    pub fn subs_peek(
        &mut self,
        user: &str,
        defaults: &[String],
    ) -> Result<Arc<Records>, StoreError> {
        let p = self.subs_path(user);
        if self.files.exists(&p) {
            return self.files.read(&p, ORDER);
        }
        let mut r = Records::new(ORDER);
        subscribe_all(&mut r, defaults);
        Ok(Arc::new(r))
    }

    /// Read-modify-write the user's subs; written when `change` says so.
    pub fn update_subs<T>(
        &mut self,
        user: &str,
        change: impl FnOnce(&mut Records) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let p = self.subs_path(user);
        self.files.update(&p, ORDER, change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_lines() {
        let s = Sub {
            subscribed: true,
            seen: 17,
        };
        assert_eq!(s.encode(), b"1 17");
        assert_eq!(Sub::decode(b"1 17"), Some(s));
        assert_eq!(
            Sub::decode(b"0"),
            Some(Sub {
                subscribed: false,
                seen: 0
            })
        );
        assert_eq!(Sub::decode(b"x 1"), None);
    }

    #[test]
    fn new_subs_file_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path());
        st.create_user("fred").unwrap();
        let r = st.subs("fred", &["bboard.news".into()]).unwrap();
        assert!(get(&r, "bboard.news").unwrap().subscribed);
        assert_eq!(
            std::fs::read(dir.path().join("user/fred/subs")).unwrap(),
            b"bboard.news 1 0\n"
        );
        // An existing (even emptied) file is left alone.
        st.update_subs("fred", |r| {
            r.remove(b"bboard.news");
            Ok(((), true))
        })
        .unwrap();
        let r = st.subs("fred", &["bboard.news".into()]).unwrap();
        assert!(r.is_empty());
    }
}
