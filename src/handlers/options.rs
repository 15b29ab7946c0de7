//! GET, SET, UNSET: options, as the implementation notes define them.
//!
//! A user sees the global options (non-visible ones only if a full
//! administrator, and then read-only) merged with their own, which shadow
//! global read-write ones. Magic options are computed: `common.date`,
//! `common.from`, `imsp.user.quota.usage` (in kilobytes).

use std::collections::BTreeMap;

use super::{Done, Handler, Output};
use crate::pattern::Pattern;
use crate::protocol::{Data, Response};
use crate::store::StoreError;
use crate::store::options::{OptKind, OptionsView};
use crate::store::quota::{self, USAGE_OPTION};

/// Options whose value the server computes.
const MAGIC: [&str; 3] = ["common.date", "common.from", USAGE_OPTION];

fn is_magic(name: &str) -> bool {
    MAGIC.iter().any(|m| m.eq_ignore_ascii_case(name))
}

/// The longest option name accepted.
const MAX_OPTION_NAME: usize = 255;

/// What SET / UNSET names: scope and type from the `*` / `%` / `%%` prefixes.
pub(super) struct Target<'n> {
    pub name: &'n str,
    pub global: bool,
    pub kind: OptKind,
}

fn target(raw: &str) -> Target<'_> {
    let (global, rest) = match raw.strip_prefix('*') {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let (kind, name) = if let Some(r) = rest.strip_prefix("%%") {
        (OptKind::NonVisible, r)
    } else if let Some(r) = rest.strip_prefix('%') {
        (OptKind::ReadOnly, r)
    } else {
        (OptKind::ReadWrite, rest)
    };
    Target { name, global, kind }
}

/// An RFC 822 date (as updated by RFC 1123), local time.
pub fn rfc822_now() -> String {
    // SAFETY: localtime_r/strftime with buffers we own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 64];
        let fmt = c"%a, %d %b %Y %H:%M:%S %z";
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// An option name, ordered and compared as the options files order their
/// names (`store::options::ORDER`: without regard to case).
struct Caseless(String);

impl Ord for Caseless {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::store::options::ORDER.cmp(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl PartialOrd for Caseless {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Caseless {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Caseless {}

/// An option as one user sees it.
#[derive(Debug, Clone)]
pub(super) struct Visible {
    pub name: String,
    pub value: Vec<u8>,
    pub read_write: bool,
}

impl Visible {
    fn new(name: String, value: Vec<u8>, read_write: bool) -> Visible {
        Visible {
            name,
            value,
            read_write,
        }
    }

    pub fn response(self) -> Response {
        Response::Untagged(Data::Option {
            name: self.name,
            value: self.value,
            read_write: self.read_write,
        })
    }
}

impl Handler<'_> {
    fn user_name(&self) -> &str {
        self.user.as_deref().expect("logged in")
    }

    /// The effective options the user sees whose names are `wanted`, in
    /// the order of their names (case-insensitive).
    pub(super) fn visible_options(
        &mut self,
        wanted: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<Visible>, Done> {
        let admin = self.is_admin();
        let global = self.global().clone();
        // (Fields, not methods: the user's name is borrowed beside the
        // store, not copied.)
        let user = self.user.as_deref().expect("logged in");
        let mine = self.store.user_options(user)?;
        // By name, each with its value and whether it is read-write.
        let mut all: BTreeMap<Caseless, (Vec<u8>, bool)> = BTreeMap::new();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (name, kind, value) in global.iter_raw() {
            let rw = match kind {
                OptKind::NonVisible if !admin => continue,
                OptKind::ReadWrite => true,
                _ => false,
            };
            if !wanted(name) {
                continue;
            }
            all.insert(Caseless(text(name)), (value.to_vec(), rw));
        }
        for (name, kind, value) in mine.iter_raw() {
            if !wanted(name) {
                continue;
            }
            let global_locked = global
                .kind_of(name)
                .is_some_and(|k| k != OptKind::ReadWrite);
            let rw = match kind {
                OptKind::ReadWrite if global_locked => continue,
                OptKind::ReadWrite => true,
                OptKind::NonVisible if !admin => continue,
                _ => false,
            };
            // The user's spelling of the name replaces the global one's.
            let key = Caseless(text(name));
            all.remove(&key);
            all.insert(key, (value.to_vec(), rw));
        }
        // Magic options.
        let set_magic =
            |all: &mut BTreeMap<Caseless, (Vec<u8>, bool)>, name: &str, value: Vec<u8>| {
                let e = all
                    .entry(Caseless(name.to_string()))
                    .or_insert_with(|| (Vec::new(), false));
                if e.0.is_empty() || name == USAGE_OPTION {
                    e.0 = value;
                }
                e.1 = false;
            };
        if wanted(b"common.date") {
            set_magic(&mut all, "common.date", rfc822_now().into_bytes());
        }
        if wanted(b"common.from") {
            let domain = global
                .value_ref("common.domain")
                .map(text)
                .unwrap_or_else(|| self.settings.hostname.clone());
            set_magic(
                &mut all,
                "common.from",
                format!("{user}@{domain}").into_bytes(),
            );
        }
        if wanted(USAGE_OPTION.as_bytes()) {
            let usage = match mine.number(USAGE_OPTION) {
                Some(n) => n.max(0) as u64,
                None => quota::recompute(&mut self.store, user)?,
            };
            set_magic(
                &mut all,
                USAGE_OPTION,
                quota::kilobytes(usage).to_string().into_bytes(),
            );
        }
        Ok(all
            .into_iter()
            .map(|(name, (value, read_write))| Visible::new(name.0, value, read_write))
            .collect())
    }

    pub(super) fn get(&mut self, pattern: &[u8], out: &mut dyn Output) -> Done {
        let pat = Pattern::new(pattern, true);
        let all = match self.visible_options(&|name| pat.matches(name)) {
            Ok(a) => a,
            Err(d) => return d,
        };
        // (Only the matching names were gathered.)
        for option in all {
            out.send(option.response());
        }
        Done::completed("get")
    }

    /// May the user change `raw` (SET, UNSET, LOCK OPTION)? Returns the
    /// plain option name.
    pub(super) fn may_set<'n>(&mut self, raw: &'n str) -> Result<Target<'n>, Done> {
        let t = self.may_set_name(raw)?;
        if !t.global {
            let user = self.user_name().to_string();
            let mine = self.store.user_options(&user)?;
            if let Some(e) = mine.get(t.name) {
                self.may_replace(raw, &t, e.kind)?;
            }
        }
        Ok(t)
    }

    /// What [`may_set`](Self::may_set) checks without the user's own file:
    /// the name, the right to the type asked for, and the global setting.
    fn may_set_name<'n>(&mut self, raw: &'n str) -> Result<Target<'n>, Done> {
        let t = target(raw);
        if t.name.is_empty() || t.name.len() > MAX_OPTION_NAME || t.name.contains(['*', '%']) {
            return Err(Done::bad(format!("Invalid option name '{raw}'")));
        }
        let admin = self.is_admin();
        if (t.global || t.kind != OptKind::ReadWrite) && !admin {
            return Err(self.refused(raw));
        }
        if is_magic(t.name) {
            return Err(self.refused(raw));
        }
        let global = self.global().kind_of(t.name.as_bytes());
        if !t.global {
            // A read-write global default may be overridden by anyone.
            if let Some(kind) = global.filter(|k| *k != OptKind::ReadWrite) {
                self.may_replace(raw, &t, kind)?;
            }
        } else if let Some(kind) = global {
            self.may_replace(raw, &t, kind)?;
        }
        Ok(t)
    }

    /// An option stored as `existing` is not made read-write again.
    fn may_replace(&self, raw: &str, t: &Target<'_>, existing: OptKind) -> Result<(), Done> {
        if reopens(existing, t.kind) {
            return Err(self.refused(raw));
        }
        Ok(())
    }

    fn refused(&self, raw: &str) -> Done {
        Done::no(refusal(self.user_name(), raw))
    }

    pub(super) fn set(&mut self, raw: &str, value: Option<&[u8]>) -> Done {
        let verb = if value.is_some() { "set" } else { "unset" };
        let t = match self.may_set_name(raw) {
            Ok(t) => t,
            Err(d) => return d,
        };
        let result = if t.global {
            crate::log_admin!(
                "{} {verb} global option {} from {}",
                self.user_name(),
                t.name,
                self.peer
            );
            self.store.write_global_option(t.name, t.kind, value)
        } else {
            // The user's own file is checked under its lock, as it is
            // written: the type of what is there, and the quota it sets.
            let user = self.user_name().to_string();
            let global_quota = self.global().number("imsp.user.quota");
            let kind = t.kind;
            self.store
                .write_user_option(&user, t.name, t.kind, value, &|mine| {
                    if mine
                        .kind_of(t.name.as_bytes())
                        .is_some_and(|k| reopens(k, kind))
                    {
                        return Err(StoreError::Invalid(refusal(&user, raw)));
                    }
                    Ok(quota_limit(mine, global_quota))
                })
        };
        match result {
            Ok(w) if value.is_none() && !w.existed => {
                Done::no(format!("option '{}' was already unset", t.name))
            }
            Ok(_) => Done::completed(verb),
            Err(e) => e.into(),
        }
    }
}

/// Why `user` may not change option `raw`.
fn refusal(user: &str, raw: &str) -> String {
    format!("User '{user}' not authorized to change option '{raw}'")
}

/// Whether setting an option of type `asked` over one stored as
/// `existing` would make a read-only (or non-visible) option read-write
/// again: refused.
fn reopens(existing: OptKind, asked: OptKind) -> bool {
    existing != OptKind::ReadWrite && asked == OptKind::ReadWrite
}

/// The quota of a user in kilobytes (0: none): their own read-only
/// setting, else the global one.
pub(super) fn quota_limit(mine: OptionsView<'_>, global: Option<i64>) -> u64 {
    let own = mine
        .kind_of(b"imsp.user.quota")
        .filter(|k| *k != OptKind::ReadWrite)
        .and_then(|_| mine.number("imsp.user.quota"));
    own.or(global).unwrap_or(0).max(0) as u64
}
