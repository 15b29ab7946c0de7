//! Option files: the global `options` and each user's `user/NAME/options`.
//! One line an option: `NAME TYPE VALUE`, TYPE being `N` (non-visible),
//! `R` (read-only) or `W` (read-write). Names are case-insensitive; the file
//! is sorted that way.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use super::file::{Files, HashMap, Order, Records};
use super::quota;
use super::{Store, StoreError};

pub const ORDER: Order = Order::CaseInsensitive;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    NonVisible,
    ReadOnly,
    ReadWrite,
}

impl OptKind {
    pub fn letter(self) -> u8 {
        match self {
            OptKind::NonVisible => b'N',
            OptKind::ReadOnly => b'R',
            OptKind::ReadWrite => b'W',
        }
    }

    pub fn from_letter(b: u8) -> Option<OptKind> {
        match b {
            b'N' | b'n' => Some(OptKind::NonVisible),
            b'R' | b'r' => Some(OptKind::ReadOnly),
            b'W' | b'w' => Some(OptKind::ReadWrite),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionEntry {
    /// The name as stored.
    pub name: String,
    pub kind: OptKind,
    pub value: Vec<u8>,
}

/// Split a stored value `T value` into its type and value (a lone `T` is
/// an empty value); `None` for a damaged one.
fn split(raw: &[u8]) -> Option<(OptKind, &[u8])> {
    let kind = OptKind::from_letter(*raw.first()?)?;
    match raw.get(1) {
        None => Some((kind, &[])),
        Some(b' ') => Some((kind, &raw[2..])),
        Some(_) => None,
    }
}

fn decode(name: &[u8], raw: &[u8]) -> Option<OptionEntry> {
    let (kind, value) = split(raw)?;
    Some(OptionEntry {
        name: String::from_utf8_lossy(name).into_owned(),
        kind,
        value: value.to_vec(),
    })
}

fn encode(kind: OptKind, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(value.len() + 2);
    v.push(kind.letter());
    v.push(b' ');
    v.extend_from_slice(value);
    v
}

/// A parsed option file.
#[derive(Clone)]
pub struct OptionTable(Arc<Records>);

/// The records of an option file, borrowed: what a change checks under
/// the file's lock.
#[derive(Clone, Copy)]
pub struct OptionsView<'a>(&'a Records);

impl<'a> OptionsView<'a> {
    /// The value of `name` as stored, whatever its type.
    pub fn value_ref(&self, name: &str) -> Option<&'a [u8]> {
        split(self.0.get(name.as_bytes())?).map(|(_, v)| v)
    }

    /// The type of `name`, if it is set.
    pub fn kind_of(&self, name: &[u8]) -> Option<OptKind> {
        split(self.0.get(name)?).map(|(k, _)| k)
    }

    /// An integer option.
    pub fn number(&self, name: &str) -> Option<i64> {
        std::str::from_utf8(self.value_ref(name)?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl OptionTable {
    pub fn get(&self, name: &str) -> Option<OptionEntry> {
        let key = self.0.key_of(name.as_bytes())?;
        decode(key, self.0.get(key)?)
    }

    /// The value of `name`, whatever its type.
    pub fn value(&self, name: &str) -> Option<Vec<u8>> {
        self.value_ref(name).map(<[u8]>::to_vec)
    }

    /// The value of `name` as stored (no copy), whatever its type.
    pub fn value_ref(&self, name: &str) -> Option<&[u8]> {
        OptionsView(&self.0).value_ref(name)
    }

    pub fn view(&self) -> OptionsView<'_> {
        OptionsView(&self.0)
    }

    /// Whether this is the same parse of the same file as `other` (a file
    /// unchanged since is not parsed again).
    pub fn same_as(&self, other: &OptionTable) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Every well-formed option, in file order.
    pub fn iter(&self) -> impl Iterator<Item = OptionEntry> + '_ {
        self.0.iter().filter_map(|(k, v)| decode(k, v))
    }

    /// Every well-formed option as stored, `(name, type, value)`, in file
    /// order, without copying.
    pub fn iter_raw(&self) -> impl Iterator<Item = (&[u8], OptKind, &[u8])> + '_ {
        self.0
            .iter()
            .filter_map(|(k, raw)| split(raw).map(|(kind, v)| (k, kind, v)))
    }

    /// The type of `name`, if it is set.
    pub fn kind_of(&self, name: &[u8]) -> Option<OptKind> {
        self.view().kind_of(name)
    }

    /// A boolean option: on when its value is `+` (or `1`, `yes`, `on`).
    pub fn flag(&self, name: &str) -> Option<bool> {
        let v = self.value_ref(name)?.trim_ascii();
        Some(
            ["+", "1", "yes", "on", "true"]
                .iter()
                .any(|w| v.eq_ignore_ascii_case(w.as_bytes())),
        )
    }

    /// `imsp.log.level`, 0 to 9 (2 when unset or not a number).
    pub fn log_level(&self) -> u8 {
        self.number("imsp.log.level").unwrap_or(2).clamp(0, 9) as u8
    }

    /// An integer option.
    pub fn number(&self, name: &str) -> Option<i64> {
        OptionsView(&self.0).number(name)
    }

    /// A list option `(a b c)`; a bare word is a list of one.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.value_ref(name).map(parse_list).unwrap_or_default()
    }
}

/// Items of a list option: `(a b "c d")`.
pub fn parse_list(v: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(v);
    let s = s.trim();
    let s = s.strip_prefix('(').unwrap_or(s);
    let s = s.strip_suffix(')').unwrap_or(s);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// An options file, parsed; each time it is parsed anew, the lines that
/// are not `name type value` are logged (they are skipped).
fn option_table(
    files: &mut Files,
    seen: &mut HashMap<OsString, Arc<Records>>,
    p: &Path,
) -> Result<OptionTable, StoreError> {
    let recs = files.read(p, ORDER)?;
    match seen.get_mut(p.as_os_str()) {
        Some(known) if Arc::ptr_eq(known, &recs) => {}
        known => {
            for (k, v) in recs.iter() {
                if split(v).is_none() {
                    crate::log_warn!(
                        "{}: option {:?} skipped: its type is not N, R or W",
                        p.display(),
                        String::from_utf8_lossy(k)
                    );
                }
            }
            // (Replaced in place: no new key at every change of the file.)
            match known {
                Some(known) => *known = recs.clone(),
                None => {
                    seen.insert(p.as_os_str().to_owned(), recs.clone());
                }
            }
        }
    }
    Ok(OptionTable(recs))
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The option existed before.
    pub existed: bool,
}

impl Store {
    pub fn global_options(&mut self) -> Result<OptionTable, StoreError> {
        option_table(
            &mut self.files,
            &mut self.options_seen,
            &self.global_options,
        )
    }

    pub fn user_options(&mut self, user: &str) -> Result<OptionTable, StoreError> {
        let p = self.user_path(user, "options");
        option_table(&mut self.files, &mut self.options_seen, &p)
    }

    /// Set (`Some`) or remove (`None`) an option in a user's file, keeping
    /// `imsp.user.quota.usage` up to date in the same write. `check` sees
    /// the file as it is under the lock: it refuses the change (nothing is
    /// written) or gives the quota in kilobytes (0: no limit). A change
    /// that would take the usage over the quota is refused.
    pub fn write_user_option(
        &mut self,
        user: &str,
        name: &str,
        kind: OptKind,
        value: Option<&[u8]>,
        check: &dyn Fn(OptionsView<'_>) -> Result<u64, StoreError>,
    ) -> Result<Written, StoreError> {
        // With no quota, a count not recorded is not made (see add_usage);
        // one that is recorded is kept up to date, in the same write.
        let counted = |recs: &Records| Ok(check(OptionsView(recs))? > 0);
        self.update_with_usage(user, &counted, |recs, usage| {
            let quota_kb = check(OptionsView(recs))?;
            // (The old value borrowed: it is only weighed.)
            let old = recs.get(name.as_bytes()).and_then(split);
            let existed = old.is_some();
            if value.is_none() && !existed {
                return Ok((Written { existed }, false));
            }
            let after = match usage {
                Some(usage) => {
                    let cost = |e: Option<(OptKind, &[u8])>| match e {
                        Some((OptKind::ReadWrite, v)) => quota::option_cost(name, v),
                        _ => 0,
                    };
                    let before = usage.bytes;
                    // A usage recorded lower than what it should count (an
                    // edited or restored file) floors at zero rather than
                    // wrapping.
                    let after = before.saturating_sub(cost(old)) + cost(value.map(|v| (kind, v)));
                    if after > before {
                        quota::check(after, quota_kb)?;
                    }
                    Some(after)
                }
                None => None,
            };
            match value {
                Some(v) => recs.set(name.as_bytes(), &encode(kind, v)),
                None => {
                    recs.remove(name.as_bytes());
                }
            }
            if let Some(after) = after {
                quota::store_usage(recs, after);
            }
            Ok((Written { existed }, true))
        })
    }

    /// Set or remove a global option (administrators).
    pub fn write_global_option(
        &mut self,
        name: &str,
        kind: OptKind,
        value: Option<&[u8]>,
    ) -> Result<Written, StoreError> {
        let p = self.global_options.clone();
        self.files.update(&p, ORDER, |recs| {
            let existed = recs.get(name.as_bytes()).is_some();
            match value {
                Some(v) => {
                    recs.insert(name.as_bytes().to_vec(), encode(kind, v));
                }
                None if existed => {
                    recs.remove(name.as_bytes());
                }
                None => return Ok((Written { existed }, false)),
            }
            Ok((Written { existed }, true))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list(b"(root admin)"), vec!["root", "admin"]);
        assert_eq!(parse_list(b"()"), Vec::<String>::new());
        assert_eq!(parse_list(b"single"), vec!["single"]);
        assert_eq!(parse_list(b"(a \"b c\" d)"), vec!["a", "b c", "d"]);
    }

    #[test]
    fn decodes_types() {
        let e = decode(b"common.date", b"R ").unwrap();
        assert_eq!((e.kind, e.value), (OptKind::ReadOnly, vec![]));
        let e = decode(b"x", b"W hello world").unwrap();
        assert_eq!(
            (e.kind, e.value),
            (OptKind::ReadWrite, b"hello world".to_vec())
        );
        assert!(decode(b"x", b"Qhello").is_none());
        assert!(decode(b"x", b"").is_none());
        assert_eq!(decode(b"x", b"N").unwrap().value, b"");
    }
}
