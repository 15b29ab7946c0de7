//! The global `mailboxes` and `changed` files and mailbox name rules.
//!
//! ```text
//! mailboxes   NAME SP UID SP FLAGS SP (SERVER ...) SP ACL        LF
//! changed     OLD-NAME SP NEW-NAME                               LF
//! deleted     NAME SP UNIX-TIME                                  LF
//! ```
//! UID is the last UID reported by LAST, or `*` when none was; FLAGS begins
//! with the hierarchy separator; ACL is identifier TAB rights TAB pairs, with
//! a trailing tab (empty when unknown). `deleted` holds the mailboxes known
//! to be gone (deleted through IMSP, or vanished from a refresh that reached
//! their servers) and when that was learned: only a subscription to one of
//! those is removed. Mailbox names are keys of these files only, never parts
//! of paths.

use super::file::{Order, Records};
use super::{Store, StoreError};

/// The hierarchy separator of the netnews convention.
pub const SEP: u8 = b'.';
/// Longest mailbox name, in bytes.
pub const MAX_MAILBOX: usize = 255;

/// Mailbox names are case-sensitive.
pub const ORDER: Order = Order::Bytes;

/// One line of `mailboxes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxEntry {
    /// Last UID reported by LAST; `None` for `*` (never reported).
    pub uid: Option<u64>,
    /// The flags field; its first octet is the separator.
    pub flags: Vec<u8>,
    /// Where the mailbox lives, master first.
    pub servers: Vec<String>,
    /// Identifier / rights pairs, as last learned from the IMAP server.
    pub acl: Vec<(String, String)>,
}

impl MailboxEntry {
    pub fn new(servers: Vec<String>) -> MailboxEntry {
        MailboxEntry {
            uid: None,
            flags: vec![SEP],
            servers,
            acl: Vec::new(),
        }
    }

    pub fn separator(&self) -> Option<u8> {
        match self.flags.first() {
            Some(b'\r') | None => None,
            Some(&c) => Some(c),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = match self.uid {
            Some(u) => u.to_string().into_bytes(),
            None => b"*".to_vec(),
        };
        v.push(b' ');
        v.extend_from_slice(&self.flags);
        v.extend_from_slice(b" (");
        v.extend_from_slice(self.servers.join(" ").as_bytes());
        v.extend_from_slice(b") ");
        for (id, rights) in &self.acl {
            v.extend_from_slice(id.as_bytes());
            v.push(b'\t');
            v.extend_from_slice(rights.as_bytes());
            v.push(b'\t');
        }
        v
    }

    pub fn decode(v: &[u8]) -> Option<MailboxEntry> {
        let s = std::str::from_utf8(v).ok()?;
        let (uid, rest) = s.split_once(' ')?;
        let uid = if uid == "*" {
            None
        } else {
            Some(uid.parse().ok()?)
        };
        let (flags, rest) = rest.split_once(' ')?;
        let rest = rest.strip_prefix('(')?;
        let (servers, acl) = rest.split_once(')')?;
        let acl = acl.strip_prefix(' ').unwrap_or(acl);
        let parts: Vec<&str> = acl.split('\t').collect();
        let acl = parts
            .chunks(2)
            .filter(|c| c.len() == 2 && !c[0].is_empty())
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect();
        Some(MailboxEntry {
            uid,
            flags: flags.as_bytes().to_vec(),
            servers: servers.split_whitespace().map(str::to_string).collect(),
            acl,
        })
    }
}

/// The parsed `mailboxes` file, in name order.
pub fn entries(recs: &Records) -> Vec<(String, MailboxEntry)> {
    recs.iter()
        .filter_map(|(k, v)| {
            let name = String::from_utf8(k.to_vec()).ok()?;
            let e = MailboxEntry::decode(v)?;
            Some((name, e))
        })
        .collect()
}

pub fn get(recs: &Records, name: &str) -> Option<MailboxEntry> {
    recs.get(name.as_bytes()).and_then(MailboxEntry::decode)
}

pub fn put(recs: &mut Records, name: &str, e: &MailboxEntry) {
    recs.insert(name.as_bytes().to_vec(), e.encode());
}

/// Check a mailbox name by the netnews convention: 7-bit printable, no
/// leading, trailing or doubled `.`, no wildcards and no shell
/// metacharacters. `INBOX` is the caller's business.
pub fn check_name(raw: &[u8]) -> Result<String, StoreError> {
    let bad = |why: &str| Err(StoreError::Invalid(format!("Invalid mailbox name: {why}")));
    if raw.is_empty() {
        return bad("empty");
    }
    if raw.len() > MAX_MAILBOX {
        return bad("longer than 255 octets");
    }
    if raw.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return bad("only printable ASCII characters are allowed");
    }
    if raw.first() == Some(&SEP) || raw.last() == Some(&SEP) || raw.windows(2).any(|w| w == b"..") {
        return bad("a '.' may not start or end it or follow another '.'");
    }
    if let Some(c) = raw
        .iter()
        .find(|b| b"*%?\"\\`$&|;<>(){}[]!~'/#^".contains(b))
    {
        return bad(&format!("'{}' is not allowed", *c as char));
    }
    Ok(String::from_utf8(raw.to_vec()).expect("ASCII"))
}

/// An external `{host}folder` name (for `imsp.external.subs`).
pub fn is_external(raw: &[u8]) -> bool {
    raw.first() == Some(&b'{')
        && raw.iter().position(|&b| b == b'}').is_some_and(|i| i > 1)
        && raw.iter().all(|&b| (0x20..0x7f).contains(&b))
        && raw.len() <= MAX_MAILBOX
}

/// `name` itself or below it in the hierarchy.
pub fn is_within(name: &str, top: &str) -> bool {
    name == top
        || (name.len() > top.len() && name.starts_with(top) && name.as_bytes()[top.len()] == SEP)
}

/// Record `old` -> `new` in `changed`, never chained: entries that led to
/// `old` now lead to `new`, and an entry for `new` (a name that exists
/// again) goes.
pub fn record_change(recs: &mut Records, old: &str, new: &str) {
    let pointing: Vec<Vec<u8>> = recs
        .iter()
        .filter(|(_, v)| *v == old.as_bytes())
        .map(|(k, _)| k.to_vec())
        .collect();
    for k in pointing {
        recs.insert(k, new.as_bytes().to_vec());
    }
    recs.remove(new.as_bytes());
    if old != new {
        recs.insert(old.as_bytes().to_vec(), new.as_bytes().to_vec());
    }
}

/// How long a mailbox's deletion is remembered by default, in days.
pub const DELETED_KEPT_DAYS: u64 = 180;

/// Drop the notes of `deleted` made more than `days` days before `now`
/// (seconds since the epoch); 0 days keeps them all. A note whose time
/// cannot be read is kept. Returns whether any was dropped.
fn drop_old_notes(r: &mut Records, now: u64, days: u64) -> bool {
    if days == 0 {
        return false;
    }
    let limit = now.saturating_sub(days.saturating_mul(86_400));
    let old: Vec<Vec<u8>> = r
        .iter()
        .filter(|(_, v)| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|t| t < limit)
        })
        .map(|(k, _)| k.to_vec())
        .collect();
    for k in &old {
        r.remove(k);
    }
    !old.is_empty()
}

impl Store {
    pub fn mailboxes_path(&self) -> std::path::PathBuf {
        self.global_path("mailboxes")
    }

    pub fn changed_path(&self) -> std::path::PathBuf {
        self.global_path("changed")
    }

    pub fn deleted_path(&self) -> std::path::PathBuf {
        self.global_path("deleted")
    }

    /// The mailboxes known to be deleted.
    pub fn deleted(&mut self) -> Result<std::sync::Arc<Records>, StoreError> {
        let p = self.deleted_path();
        self.files.read(&p, ORDER)
    }

    /// Note that `gone` were deleted and that `back` exist (again). Notes
    /// older than `imsp.mailbox.deleted.days` (default
    /// [`DELETED_KEPT_DAYS`]; 0: kept for ever) are dropped as the file is
    /// written: a subscription to a mailbox deleted that long ago (whose
    /// user has not listed their subscriptions since) is merely kept.
    pub fn note_deleted(&mut self, gone: &[String], back: &[String]) -> Result<(), StoreError> {
        let p = self.deleted_path();
        if back.is_empty() && gone.is_empty() {
            return Ok(());
        }
        if gone.is_empty() && !self.files.exists(&p) {
            return Ok(());
        }
        let days = self
            .global_options()?
            .number("imsp.mailbox.deleted.days")
            .map_or(DELETED_KEPT_DAYS, |d| d.max(0) as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.files.update(&p, ORDER, |r| {
            let mut changed = false;
            for b in back {
                changed |= r.remove(b.as_bytes()).is_some();
            }
            for g in gone {
                r.insert(g.as_bytes().to_vec(), now.to_string().into_bytes());
                changed = true;
            }
            changed |= drop_old_notes(r, now, days);
            Ok(((), changed))
        })
    }

    pub fn mailboxes(&mut self) -> Result<std::sync::Arc<Records>, StoreError> {
        let p = self.mailboxes_path();
        self.files.read(&p, ORDER)
    }

    pub fn changed(&mut self) -> Result<std::sync::Arc<Records>, StoreError> {
        let p = self.changed_path();
        self.files.read(&p, ORDER)
    }

    /// Read-modify-write `mailboxes`; written when `change` returns true.
    pub fn update_mailboxes<T>(
        &mut self,
        change: impl FnOnce(&mut Records) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let p = self.mailboxes_path();
        self.files.update(&p, ORDER, change)
    }

    /// Add `old` -> `new` pairs to `changed`.
    pub fn record_changes(&mut self, pairs: &[(String, String)]) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let p = self.changed_path();
        self.files.update(&p, ORDER, |r| {
            for (old, new) in pairs {
                record_change(r, old, new);
            }
            Ok(((), true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips() {
        let e = MailboxEntry {
            uid: Some(42),
            flags: b".".to_vec(),
            servers: vec!["imap1".into(), "imap2:1143".into()],
            acl: vec![
                ("fred".into(), "lrswipcda".into()),
                ("anyone".into(), "lr".into()),
            ],
        };
        let v = e.encode();
        assert_eq!(v, b"42 . (imap1 imap2:1143) fred\tlrswipcda\tanyone\tlr\t");
        assert_eq!(MailboxEntry::decode(&v), Some(e));
        let n = MailboxEntry::new(vec!["a".into()]);
        assert_eq!(n.encode(), b"* . (a) ");
        assert_eq!(MailboxEntry::decode(&n.encode()), Some(n));
        assert_eq!(MailboxEntry::decode(b"x . (a) "), None);
    }

    #[test]
    fn names_follow_netnews_rules() {
        for bad in [
            &b""[..],
            b".a",
            b"a.",
            b"a..b",
            b"a*",
            b"a%b",
            b"../../etc",
            b"a/b",
            b"caf\xc3\xa9",
            b"a\nb",
            b"a;rm",
            b"$HOME",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name(b"user.fred.Sent Items").unwrap(),
            "user.fred.Sent Items"
        );
        assert!(is_external(b"{mail.example.org}INBOX"));
        assert!(!is_external(b"{}x"));
        assert!(is_within("user.fred.work", "user.fred"));
        assert!(!is_within("user.fredx", "user.fred"));
    }

    #[test]
    fn old_deletion_notes_are_dropped_when_the_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            dir.path().join("deleted"),
            format!(
                "ancient {}\nrecent {}\nunreadable soon\n",
                now - 200 * day,
                now - 10 * day
            ),
        )
        .unwrap();
        let mut store = Store::open(dir.path());
        store.files.fsync = false;
        // The default: 180 days.
        store.note_deleted(&["fresh".into()], &[]).unwrap();
        let kept = store.deleted().unwrap();
        let names: Vec<&[u8]> = kept.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec![&b"fresh"[..], b"recent", b"unreadable"]);
        // A shorter time set by the admin.
        std::fs::write(
            dir.path().join("options"),
            "imsp.mailbox.deleted.days N 5\n",
        )
        .unwrap();
        store.note_deleted(&[], &["fresh".into()]).unwrap();
        let kept = store.deleted().unwrap();
        let names: Vec<&[u8]> = kept.iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec![&b"unreadable"[..]]);
        // 0: kept for ever.
        let mut r = Records::new(ORDER);
        r.insert(b"x".to_vec(), b"1".to_vec());
        assert!(!drop_old_notes(&mut r, now, 0));
        assert!(drop_old_notes(&mut r, now, 1));
        assert!(r.is_empty());
    }

    #[test]
    fn changes_never_chain() {
        let mut r = Records::new(ORDER);
        record_change(&mut r, "a", "b");
        record_change(&mut r, "b", "c");
        assert_eq!(r.get(b"a"), Some(&b"c"[..]));
        assert_eq!(r.get(b"b"), Some(&b"c"[..]));
        // Renaming back: "c" exists again under its old name "a".
        record_change(&mut r, "c", "a");
        assert_eq!(r.get(b"a"), None);
        assert_eq!(r.get(b"b"), Some(&b"a"[..]));
        assert_eq!(r.get(b"c"), Some(&b"a"[..]));
    }
}
