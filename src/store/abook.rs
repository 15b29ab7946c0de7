//! Address books, in cyrus-imspd 1.8's files:
//!
//! ```text
//! user/OWNER/abooks        one line a book of OWNER: `NAME ` (empty value)
//! user/OWNER/abook.NAME    the entries: `ENTRY"FIELD VALUE`, and a line
//!                          `ENTRY" ` (empty field) marking the entry
//! abooks                   books whose ACL is not the default:
//!                          `NAME id TAB rights TAB ...`
//! ```
//! A book `OWNER` or `OWNER.EXT` belongs to OWNER. The default book (named
//! as its owner) exists implicitly once the owner has a user directory.

use std::borrow::Cow;
use std::sync::Arc;

use super::codec;
use super::file::{Lock, Order, Records};
use super::journal::Op;
use super::quota;
use super::{Store, StoreError, names};
use crate::acl::Acl;

/// A disagreement between an owner's book files and book list (see
/// [`Store::book_mismatches`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookMismatch {
    /// `abook.NAME` (or its journal) exists; `abooks` does not list it.
    Unlisted(String),
    /// `abooks` lists it; it has no file (and is not the default book).
    Missing(String),
}

/// Entry names and field names are case-insensitive; like every file 1.8
/// writes, the books are sorted that way.
pub const ORDER: Order = Order::CaseInsensitive;
/// Book lists and the global ACL file: book names are case-insensitive.
pub const LIST_ORDER: Order = Order::CaseInsensitive;

/// The owner of a book: its name up to the first `.`.
pub fn owner_of(book: &str) -> &str {
    book.split('.').next().unwrap_or(book)
}

/// An entry and its fields (without the empty marker field), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub fields: Vec<(String, Vec<u8>)>,
}

fn split_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let q = key.iter().position(|&b| b == b'"')?;
    Some((&key[..q], &key[q + 1..]))
}

/// The key of one field of the entry whose prefix is `prefix`.
fn field_key(prefix: &[u8], field: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(field.as_bytes());
    key
}

fn entry_prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'"');
    p
}

/// Whether the records of one entry all spell its name alike.
fn spelled_as_one(part: &Records) -> bool {
    let mut names = part
        .iter()
        .filter_map(|(k, _)| split_key(k).map(|(n, _)| n));
    let first = names.next();
    names.all(|n| Some(n) == first)
}

/// Spell every record of an entry with `prefix` (its name as stored and
/// `"`): two sessions that made it at once in two cases each wrote their
/// own.
fn respell(recs: &mut Records, prefix: &[u8]) {
    let odd: Vec<(Vec<u8>, Vec<u8>)> = recs
        .with_prefix(prefix)
        .filter(|(k, _)| !k.starts_with(prefix))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    for (k, v) in odd {
        recs.remove(&k);
        let mut key = prefix.to_vec();
        key.extend_from_slice(&k[prefix.len()..]);
        recs.insert(key, v);
    }
}

/// The entry `name` of a book's records, if it exists.
pub fn entry(recs: &Records, name: &[u8]) -> Option<Entry> {
    let prefix = entry_prefix(name);
    let mut found: Option<Entry> = None;
    for (k, v) in recs.with_prefix(&prefix) {
        let (n, field) = split_key(k)?;
        let e = found.get_or_insert_with(|| Entry {
            name: n.to_vec(),
            fields: Vec::new(),
        });
        if !field.is_empty() {
            e.fields
                .push((String::from_utf8_lossy(field).into_owned(), v.to_vec()));
        }
    }
    found
}

/// One field of an entry as a scan finds it.
pub type ScannedField<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Walk every entry of a book straight from its file's bytes, in order:
/// `f(name, fields)`, the empty marker field excluded. Lines are unescaped
/// only when they hold a backslash; damaged lines are skipped. The lines of
/// one entry carry the same name bytes, which is how they are grouped.
pub fn scan_entries<'a>(bytes: &'a [u8], mut f: impl FnMut(&[u8], &[ScannedField<'a>])) {
    let mut current: Option<&'a [u8]> = None;
    let mut fields: Vec<ScannedField<'a>> = Vec::new();
    let mut name_buf = Vec::new();
    let mut flush = |name: &[u8], fields: &mut Vec<ScannedField<'a>>| {
        if name.contains(&b'\\') {
            name_buf.clear();
            codec::unescape_into(name, &mut name_buf);
            f(&name_buf, fields);
        } else {
            f(name, fields);
        }
        fields.clear();
    };
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        let line = &bytes[start..end];
        start = end + 1;
        let Some(sp) = memchr::memchr(b' ', line) else {
            continue;
        };
        let (key, value) = (&line[..sp], &line[sp + 1..]);
        let Some(q) = memchr::memchr(b'"', key) else {
            continue;
        };
        let (name, field) = (&key[..q], &key[q + 1..]);
        if let Some(cur) = current
            && cur != name
        {
            flush(cur, &mut fields);
        }
        current = Some(name);
        if !field.is_empty() {
            fields.push((codec::unescape_cow(field), codec::unescape_cow(value)));
        }
    }
    if let Some(cur) = current {
        flush(cur, &mut fields);
    }
}

/// Where each entry of a book's file lies: its name (unescaped) and the
/// bytes of its lines. Built by one pass over the file and kept with its
/// bytes, so that a repeated search tests names without reading lines,
/// and reads the lines of an entry only when its name matched.
#[derive(Debug, Default)]
pub struct EntryIndex {
    names: Vec<u8>,
    entries: Vec<(u32, u32, usize, usize)>,
}

impl EntryIndex {
    /// Index a book file's bytes.
    pub fn build(bytes: &[u8]) -> EntryIndex {
        let mut ix = EntryIndex::default();
        let mut current: Option<(&[u8], usize)> = None;
        let mut last_end = 0;
        let mut start = 0;
        let close = |ix: &mut EntryIndex, name: &[u8], from: usize, to: usize| {
            let at = ix.names.len();
            codec::unescape_into(name, &mut ix.names);
            ix.entries
                .push((at as u32, (ix.names.len() - at) as u32, from, to));
        };
        while start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            let line = &bytes[start..end];
            let Some(name) = memchr::memchr(b' ', line)
                .and_then(|sp| memchr::memchr(b'"', &line[..sp]))
                .map(|q| &line[..q])
            else {
                start = end + 1;
                continue;
            };
            match current {
                Some((cur, _)) if cur == name => {}
                Some((cur, from)) => {
                    close(&mut ix, cur, from, last_end);
                    current = Some((name, start));
                }
                None => current = Some((name, start)),
            }
            last_end = end;
            start = end + 1;
        }
        if let Some((cur, from)) = current {
            close(&mut ix, cur, from, last_end);
        }
        ix
    }

    /// Each entry: its name, and the byte range of its lines.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], std::ops::Range<usize>)> {
        self.entries
            .iter()
            .map(|&(at, len, from, to)| (&self.names[at as usize..(at + len) as usize], from..to))
    }
}

/// Check an entry name from the wire: not empty, no `"`.
pub fn check_entry_name(name: &[u8]) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid("entry name is empty".into()));
    }
    if name.contains(&b'"') {
        return Err(StoreError::Invalid(
            "entry names may not contain '\"'".into(),
        ));
    }
    Ok(())
}

impl Store {
    fn book_path(&self, book: &str) -> std::path::PathBuf {
        self.user_path(owner_of(book), &format!("abook.{book}"))
    }

    fn books_list_path(&self, owner: &str) -> std::path::PathBuf {
        self.user_path(owner, "abooks")
    }

    /// The books listed for `owner`, and the default book when the owner
    /// has a user directory.
    pub fn books_of(&mut self, owner: &str) -> Result<Vec<String>, StoreError> {
        let p = self.books_list_path(owner);
        let recs = self.files.read(&p, LIST_ORDER)?;
        let mut out: Vec<String> = recs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .filter(|b| owner_of(b) == owner)
            .collect();
        if self.user_exists(owner) && !out.iter().any(|b| b == owner) {
            out.push(owner.to_string());
        }
        out.sort();
        Ok(out)
    }

    /// The owner `owner` names, spelled as their user directory is: the
    /// name itself when it has a directory (or is no valid name), else
    /// the one directory whose name differs from it only in case (book
    /// names are case-insensitive, as 1.8's; user names are not, so two
    /// users whose names differ only in case are told apart by case).
    pub fn owner_spelled(&self, owner: &str) -> String {
        self.owner_spelled_otherwise(owner)
            .unwrap_or_else(|| owner.to_string())
    }

    /// [`Store::owner_spelled`] when it differs from `owner`.
    fn owner_spelled_otherwise(&self, owner: &str) -> Option<String> {
        if self.user_exists(owner) || names::check_user(owner.as_bytes()).is_err() {
            return None;
        }
        let users = self.user_dir(owner);
        let Some(Ok(dir)) = users.parent().map(std::fs::read_dir) else {
            return None;
        };
        // Names first: only a match is stat'ed (a symlinked user directory
        // counts).
        let mut found = dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(owner))
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        match (found.next(), found.next()) {
            (Some(n), None) if n != owner => Some(n),
            _ => None,
        }
    }

    /// `book` with its owner spelled as [`Store::owner_spelled`] does
    /// (borrowed when it already is).
    fn owner_folded<'b>(&self, book: &'b str) -> Cow<'b, str> {
        let owner = owner_of(book);
        match self.owner_spelled_otherwise(owner) {
            Some(spelled) => Cow::Owned(format!("{spelled}{}", &book[owner.len()..])),
            None => Cow::Borrowed(book),
        }
    }

    /// The name a new book is stored under: its owner as spelled by their
    /// directory, the rest in lower case (as 1.8 folds book names:
    /// `CREATEADDRESSBOOK Fred.Upper` makes `fred.upper`).
    pub fn new_book_name(&self, book: &str) -> String {
        let book = self.owner_folded(book);
        match book.split_once('.') {
            Some((owner, rest)) => format!("{owner}.{}", rest.to_ascii_lowercase()),
            None => book.into_owned(),
        }
    }

    /// The stored name of a book, matched case-insensitively; `None` when
    /// there is no such book.
    pub fn resolve_book(&mut self, book: &str) -> Result<Option<String>, StoreError> {
        let book = &self.owner_folded(book)[..];
        let owner = owner_of(book);
        if book == owner && self.user_exists(owner) {
            return Ok(Some(book.to_string()));
        }
        let p = self.books_list_path(owner);
        let recs = self.files.read(&p, LIST_ORDER)?;
        Ok(recs
            .key_of(book.as_bytes())
            .map(|k| String::from_utf8_lossy(k).into_owned()))
    }

    /// Whether `book` is a book's stored name ([`Store::resolve_book`]
    /// gives it back), found without copying it.
    fn is_stored_name(&mut self, book: &str) -> Result<bool, StoreError> {
        let owner = owner_of(book);
        if !self.user_exists(owner) {
            // Not spelled as the owner's directory (or no such owner).
            return Ok(false);
        }
        if book == owner {
            return Ok(true);
        }
        let p = self.books_list_path(owner);
        let recs = self.files.read(&p, LIST_ORDER)?;
        Ok(recs.key_of(book.as_bytes()) == Some(book.as_bytes()))
    }

    pub fn book_exists(&mut self, book: &str) -> Result<bool, StoreError> {
        Ok(self.resolve_book(book)?.is_some())
    }

    /// Where an owner's book files and book list disagree, as a crash
    /// between the files of a delete or a rename leaves them (1.8's
    /// crashes too): a book file the list does not name (its entries are
    /// invisible), a listed book with no file. With `repair`, the list is
    /// made to match the files: no entry is dropped. Checked and mended
    /// under the owner's guard.
    pub fn book_mismatches(
        &mut self,
        owner: &str,
        repair: bool,
    ) -> Result<Vec<BookMismatch>, StoreError> {
        let Some(_guard) = self.books_guard(owner, true)? else {
            return Ok(Vec::new());
        };
        let dir = self.user_dir(owner);
        let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        // Book names match case-insensitively: compared folded, reported
        // and listed as spelled.
        let mut files = std::collections::BTreeMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let book = name
                .strip_prefix(".journal.abook.")
                .or_else(|| name.strip_prefix("abook."));
            if let Some(b) = book
                && !b.ends_with('.')
                && owner_of(b) == owner
                && names::check_book(b.as_bytes()).is_ok()
            {
                files.insert(b.to_lowercase(), b.to_string());
            }
        }
        let p = self.books_list_path(owner);
        let listed: std::collections::BTreeMap<String, String> = self
            .files
            .read(&p, LIST_ORDER)?
            .iter()
            .map(|(k, _)| {
                let b = String::from_utf8_lossy(k).into_owned();
                (b.to_lowercase(), b)
            })
            .collect();
        let default = owner.to_lowercase();
        let only_in = |a: &std::collections::BTreeMap<String, String>,
                       b: &std::collections::BTreeMap<String, String>| {
            a.iter()
                .filter(|(k, _)| !b.contains_key(*k) && **k != default)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let mut found: Vec<BookMismatch> = only_in(&files, &listed)
            .into_iter()
            .map(BookMismatch::Unlisted)
            .collect();
        found.extend(
            only_in(&listed, &files)
                .into_iter()
                .map(BookMismatch::Missing),
        );
        if repair && !found.is_empty() {
            self.files.update(&p, LIST_ORDER, |recs| {
                for m in &found {
                    match m {
                        BookMismatch::Unlisted(b) => {
                            recs.insert(b.as_bytes().to_vec(), Vec::new());
                        }
                        BookMismatch::Missing(b) => {
                            recs.remove(b.as_bytes());
                        }
                    }
                }
                Ok::<_, StoreError>(((), true))
            })?;
        }
        Ok(found)
    }

    /// Books with a line in the global `abooks` (an ACL) that no longer
    /// exist: a crash between the files of a delete or rename leaves one,
    /// and it would grant its rights on a later book of that name. With
    /// `repair` the lines are removed. Each is checked under its owner's
    /// guard.
    pub fn stale_acls(&mut self, repair: bool) -> Result<Vec<String>, StoreError> {
        let p = self.global_path("abooks");
        let listed: Vec<String> = self
            .files
            .read(&p, LIST_ORDER)?
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        let mut stale = Vec::new();
        for book in listed {
            let _guard = self.books_guard(owner_of(&book), true)?;
            if self.resolve_book(&book)?.is_some() {
                continue;
            }
            if repair {
                self.drop_acl_line(&book)?;
            }
            stale.push(book);
        }
        Ok(stale)
    }

    /// Add `books` to their owner's list (all of one owner).
    fn list_books(&mut self, owner: &str, books: &[&str]) -> Result<(), StoreError> {
        let p = self.books_list_path(owner);
        self.files.update(&p, LIST_ORDER, |recs| {
            let mut changed = false;
            for b in books {
                if recs.get(b.as_bytes()).is_none() {
                    recs.insert(b.as_bytes().to_vec(), Vec::new());
                    changed = true;
                }
            }
            Ok(((), changed))
        })
    }

    /// The lock that orders the changes of an owner's books, taken
    /// (exclusive) before any of their files' locks: creating, deleting and
    /// renaming a book, storing and deleting entries, changing a book's ACL.
    /// Under it the existence of a book is checked again, so that a change
    /// raced by a delete or a rename is refused instead of writing an
    /// orphan file, and a rename never replaces another book. Its file
    /// `user/OWNER/abooks.guard.` ends in `.`, as lock files do, and is
    /// locked by nothing else (so no lock of [`Files`](super::file::Files)
    /// is ever taken twice by one process). `None` when the owner has no
    /// user directory (and so no book).
    ///
    /// Changes of entries take it shared where no quota applies (books
    /// cannot vanish under them, and they exclude each other by the book
    /// file's own lock), exclusive where a quota must be checked against
    /// the other stores of the owner.
    fn books_guard(&mut self, owner: &str, exclusive: bool) -> Result<Option<Lock>, StoreError> {
        if !self.user_exists(owner) {
            return Ok(None);
        }
        let lock = Lock::take(&self.user_path(owner, "abooks.guard"), exclusive)?;
        // What this command read before the lock is looked at again. Held
        // shared, but for the owner's options file, which the guard does
        // not cover (SET takes no guard); held exclusive, a quota is spent
        // under it, and the usage too is read again.
        let options = self.user_path(owner, "options");
        let keep: &[&std::path::Path] = if exclusive { &[] } else { &[&options] };
        self.files.look_again(keep);
        Ok(Some(lock))
    }

    /// Take the guard of `book`'s owner and check, under it, that the book
    /// exists (the default book exists with its owner's directory).
    fn guard_existing(&mut self, book: &str, exclusive: bool) -> Result<Lock, StoreError> {
        let missing = || StoreError::Invalid(format!("ADDRESSBOOK '{book}' does not exist"));
        let lock = self
            .books_guard(owner_of(book), exclusive)?
            .ok_or_else(missing)?;
        if self.resolve_book(book)?.is_none() {
            return Err(missing());
        }
        Ok(lock)
    }

    /// Create a book (its owner's directory too, if needed); refused when
    /// it exists.
    pub fn create_book(&mut self, book: &str) -> Result<(), StoreError> {
        let book = names::check_book(book.as_bytes())?;
        let owner = owner_of(&book).to_string();
        names::check_book(owner.as_bytes())?;
        if !self.user_exists(&owner) {
            self.create_user(&owner)?;
        }
        let _guard = self.books_guard(&owner, true)?;
        let p = self.book_path(&book);
        // (A file left unlisted by 1.8 after a crash is taken over.)
        if self.resolve_book(&book)?.is_some() {
            return Err(StoreError::Invalid(format!(
                "address book '{book}' already exists"
            )));
        }
        // An ACL line for a book with no file was left by a delete that
        // was killed: the new book starts with its owner's default ACL,
        // not with rights given on the old one. (A file left unlisted, by
        // a rename that was killed, keeps the line written for it.)
        if !self.files.exists(&p) {
            self.drop_acl_line(&book)?;
        }
        // Touch the (empty) entries file, as 1.8 does.
        self.files
            .update(&p, ORDER, |_| Ok::<_, StoreError>(((), true)))?;
        if book == owner {
            self.list_books(&owner, &[&owner])
        } else {
            self.list_books(&owner, &[&owner, &book])
        }
    }

    /// Delete a book: its entries file, its line, its ACL, and the usage it
    /// held; refused when it no longer exists.
    /// (`quota_kb`: the owner's quota, see [`Store::add_usage`].)
    pub fn delete_book(&mut self, book: &str, quota_kb: u64) -> Result<(), StoreError> {
        let owner = owner_of(book).to_string();
        let _guard = self.guard_existing(book, true)?;
        let p = self.book_path(book);
        let recs = self.files.read(&p, ORDER)?;
        let freed: u64 = recs.iter().map(|(k, v)| quota::field_cost(k, v)).sum();
        self.files.remove(&p)?;
        let lp = self.books_list_path(&owner);
        self.files.update(&lp, LIST_ORDER, |recs| {
            let had = recs.remove(book.as_bytes()).is_some();
            Ok::<_, StoreError>(((), had))
        })?;
        self.change_book_acl(book, |acl| {
            *acl = Acl::default_for(&owner);
            Ok(())
        })?;
        self.add_usage(&owner, -(freed as i64), quota_kb)?;
        Ok(())
    }

    /// Rename a book of one owner to another name of the same owner,
    /// keeping its entries and its ACL. Refused when the book no longer
    /// exists or the new name is taken (listed, or with a file or journal).
    pub fn rename_book(&mut self, old: &str, new: &str) -> Result<(), StoreError> {
        let owner = owner_of(old).to_string();
        if owner_of(new) != owner {
            return Err(StoreError::Invalid(
                "an address book keeps its owner".into(),
            ));
        }
        let _guard = self.guard_existing(old, true)?;
        let (from, to) = (self.book_path(old), self.book_path(new));
        if self.resolve_book(new)?.is_some() || self.files.exists(&to) {
            return Err(StoreError::Invalid(format!(
                "address book '{new}' already exists"
            )));
        }
        // The ACL is written for the new name first and removed from the
        // old one last: killed at any step, the book keeps its ACL under
        // the name it ends with (`check --repair` lists a renamed file and
        // removes the line of the name left without a book; a book made
        // later under a name with no file drops its line, see
        // `create_book`).
        let p = self.global_path("abooks");
        let shared = self.files.update(&p, LIST_ORDER, |recs| {
            match recs.get(old.as_bytes()).map(<[u8]>::to_vec) {
                Some(v) => {
                    recs.insert(new.as_bytes().to_vec(), v);
                    Ok::<_, StoreError>((true, true))
                }
                None => Ok((false, false)),
            }
        })?;
        self.files.rename(&from, &to, ORDER)?;
        let lp = self.books_list_path(&owner);
        self.files.update(&lp, LIST_ORDER, |recs| {
            recs.remove(old.as_bytes());
            recs.insert(new.as_bytes().to_vec(), Vec::new());
            Ok::<_, StoreError>(((), true))
        })?;
        // (Names equal but for case are one book: refused above.)
        if shared {
            self.drop_acl_line(old)?;
        }
        Ok(())
    }

    /// Remove `book`'s line from the global `abooks` (written only if
    /// there was one).
    fn drop_acl_line(&mut self, book: &str) -> Result<(), StoreError> {
        let p = self.global_path("abooks");
        self.files.update(&p, LIST_ORDER, |recs| {
            let gone = recs.remove(book.as_bytes()).is_some();
            Ok::<_, StoreError>(((), gone))
        })
    }

    /// A book's ACL: the global `abooks` line, or the default.
    pub fn book_acl(&mut self, book: &str) -> Result<Acl, StoreError> {
        let recs = self.files.read(&self.global_abooks, LIST_ORDER)?;
        let mut acl = match recs.get(book.as_bytes()) {
            Some(v) => Acl::decode(v),
            None => Acl::default_for(owner_of(book)),
        };
        // As it applies: on an LDAP-backed book only lookup and read (the
        // line keeps the rights, which come back when USER1 goes).
        acl.restrict_ldap(owner_of(book));
        Ok(acl)
    }

    /// The books that have an ACL line, with it.
    pub fn books_with_acl(&mut self) -> Result<Vec<(String, Acl)>, StoreError> {
        let p = self.global_path("abooks");
        let recs = self.files.read(&p, LIST_ORDER)?;
        Ok(recs
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), Acl::decode(v)))
            .collect())
    }

    /// Change a book's ACL under the lock of the global `abooks` file, so
    /// that concurrent changes of other identifiers are not lost, and under
    /// the owner's guard: refused when the book no longer exists (a line
    /// left for a deleted book would grant rights on a future one of the
    /// same name). The default ACL is stored as no line.
    pub fn modify_book_acl<T>(
        &mut self,
        book: &str,
        change: impl FnOnce(&mut Acl) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _guard = self.guard_existing(book, true)?;
        self.change_book_acl(book, change)
    }

    /// [`Store::modify_book_acl`], the guard held by the caller.
    fn change_book_acl<T>(
        &mut self,
        book: &str,
        change: impl FnOnce(&mut Acl) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let p = self.global_path("abooks");
        let owner = owner_of(book);
        self.files.update(&p, LIST_ORDER, |recs| {
            let before = recs.get(book.as_bytes()).map(<[u8]>::to_vec);
            let mut acl = match &before {
                Some(v) => Acl::decode(v),
                None => Acl::default_for(owner),
            };
            let result = change(&mut acl)?;
            let after = (!acl.is_default_for(owner)).then(|| acl.encode());
            if after == before {
                return Ok((result, false));
            }
            match after {
                Some(v) => recs.insert(book.as_bytes().to_vec(), v),
                None => recs.remove(book.as_bytes()),
            };
            Ok((result, true))
        })
    }

    /// The bytes of a book's file, for a scan of all its entries.
    pub fn book_bytes(&mut self, book: &str) -> Result<Arc<Vec<u8>>, StoreError> {
        let p = self.book_path(book);
        self.files.read_raw(&p, ORDER)
    }

    /// A book's bytes with the index of its entries, both reused while the
    /// file is unchanged.
    pub fn book_index(
        &mut self,
        book: &str,
    ) -> Result<(Arc<Vec<u8>>, Arc<EntryIndex>), StoreError> {
        let bytes = self.book_bytes(book)?;
        if let Some((b, ix)) = self.indexes.get(book)
            && Arc::ptr_eq(b, &bytes)
        {
            return Ok((bytes, ix.clone()));
        }
        let ix = Arc::new(EntryIndex::build(&bytes));
        self.indexes
            .insert(book.to_string(), (bytes.clone(), ix.clone()));
        Ok((bytes, ix))
    }

    /// The records of a book.
    pub fn book_records(&mut self, book: &str) -> Result<Arc<Records>, StoreError> {
        let p = self.book_path(book);
        self.files.read(&p, ORDER)
    }

    /// Create or change an entry: each field is set, or removed when its
    /// value is empty. Charged to the book owner's quota (`quota_kb`, 0:
    /// none). Returns the entry as it now is.
    pub fn store_entry(
        &mut self,
        book: &str,
        name: &[u8],
        fields: &[(String, Vec<u8>)],
        quota_kb: u64,
    ) -> Result<Entry, StoreError> {
        check_entry_name(name)?;
        let owner = owner_of(book).to_string();
        let p = self.book_path(book);
        if quota_kb == 0 && self.is_stored_name(book)? {
            // Without a quota nothing checked depends on what the entry
            // holds: the change is appended beside other writers', under
            // the book's shared lock only. (No guard is needed: a book
            // deleted or renamed since it was found above has no journal,
            // and append_shared then leaves it to the exclusive way below,
            // which looks again under the guard.)
            let ops = |now: &Records| {
                // Keep the case the entry was created with.
                let stored = entry(now, name).map_or_else(|| name.to_vec(), |e| e.name);
                let prefix = entry_prefix(&stored);
                let mut ops = vec![Op::Set(prefix.clone(), Vec::new())];
                for (field, value) in fields {
                    let key = field_key(&prefix, field);
                    ops.push(match value.is_empty() {
                        true => Op::Remove(key),
                        false => Op::Set(key, value.clone()),
                    });
                }
                ops
            };
            if let Some(part) = self
                .files
                .append_shared(&p, ORDER, &entry_prefix(name), ops)?
            {
                self.forget_usage(&owner)?;
                if spelled_as_one(&part)
                    && let Some(e) = entry(&part, name)
                {
                    return Ok(e);
                }
                // Made at once in two cases by two sessions: the exclusive
                // way below spells every line of it as its first.
            }
        }
        // With a quota the usage is read under the guard, held exclusive:
        // no other store can spend it meanwhile.
        let _guard = self.guard_existing(book, quota_kb > 0)?;
        // (With no quota, nothing is checked against it.)
        let usage = match quota_kb {
            0 => 0,
            _ => self.usage_of(&owner)?,
        };
        // Only the entry's lines are read and rewritten in the file.
        let (entry, delta) = self
            .files
            .update_prefix(&p, ORDER, &entry_prefix(name), |recs| {
                // Keep the case the entry was created with.
                let stored = entry(recs, name)
                    .map(|e| e.name)
                    .unwrap_or_else(|| name.to_vec());
                let prefix = entry_prefix(&stored);
                respell(recs, &prefix);
                let mut delta: i64 = 0;
                if recs.get(&prefix).is_none() {
                    recs.insert(prefix.clone(), Vec::new());
                }
                for (field, value) in fields {
                    let key = field_key(&prefix, field);
                    let old = if value.is_empty() {
                        recs.remove(&key)
                    } else {
                        recs.insert(key.clone(), value.clone())
                    };
                    if let Some(o) = &old {
                        delta -= quota::field_cost(&key, o) as i64;
                    }
                    if !value.is_empty() {
                        delta += quota::field_cost(&key, value) as i64;
                    }
                }
                if delta > 0 {
                    quota::check(usage.saturating_add(delta as u64), quota_kb)?;
                }
                let e = entry(recs, &stored).expect("just stored");
                Ok::<_, StoreError>(((e, delta), true))
            })?;
        self.add_usage(&owner, delta, quota_kb)?;
        Ok(entry)
    }

    /// Remove an entry; false when there was none. (`quota_kb`: the
    /// owner's quota, see [`Store::add_usage`].)
    pub fn delete_entry(
        &mut self,
        book: &str,
        name: &[u8],
        quota_kb: u64,
    ) -> Result<bool, StoreError> {
        let owner = owner_of(book).to_string();
        // Freeing needs no quota check: the guard only keeps the book.
        let _guard = self.guard_existing(book, false)?;
        let p = self.book_path(book);
        let prefix = entry_prefix(name);
        let freed = self.files.update_prefix(&p, ORDER, &prefix, |recs| {
            let keys: Vec<(Vec<u8>, u64)> = recs
                .with_prefix(&prefix)
                .map(|(k, v)| (k.to_vec(), quota::field_cost(k, v)))
                .collect();
            for (k, _) in &keys {
                recs.remove(k);
            }
            let freed: u64 = keys.iter().map(|k| k.1).sum();
            Ok::<_, StoreError>(((!keys.is_empty(), freed), !keys.is_empty()))
        })?;
        if freed.0 {
            self.add_usage(&owner, -(freed.1 as i64), quota_kb)?;
        }
        Ok(freed.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_entries_by_name_and_lines() {
        let file = b"A\\sB\" \nA\\sB\"email x\ngarbage\nC\" \nC\"f 1\nC\"g 2";
        let ix = EntryIndex::build(file);
        let got: Vec<(Vec<u8>, &[u8])> = ix.iter().map(|(n, r)| (n.to_vec(), &file[r])).collect();
        assert_eq!(
            got,
            vec![
                (b"A B".to_vec(), &b"A\\sB\" \nA\\sB\"email x"[..]),
                (b"C".to_vec(), &b"C\" \nC\"f 1\nC\"g 2"[..]),
            ]
        );
    }

    #[test]
    fn scans_entries_from_file_bytes() {
        let file = b"Barney\\sRubble\" \nBarney\\sRubble\"email b@b\nBarney\\sRubble\"notes a\\nb \\\\ c\ngarbage\nPebbles\" \nZo\xc3\xab\" \nZo\xc3\xab\"x y\n";
        let mut seen = Vec::new();
        scan_entries(file, |name, fields| {
            let f: Vec<(Vec<u8>, Vec<u8>)> = fields
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            seen.push((name.to_vec(), f));
        });
        assert_eq!(
            seen,
            vec![
                (
                    b"Barney Rubble".to_vec(),
                    vec![
                        (b"email".to_vec(), b"b@b".to_vec()),
                        (b"notes".to_vec(), b"a\nb \\ c".to_vec())
                    ]
                ),
                (b"Pebbles".to_vec(), vec![]),
                (
                    "Zo\u{eb}".as_bytes().to_vec(),
                    vec![(b"x".to_vec(), b"y".to_vec())]
                ),
            ]
        );
    }
}
