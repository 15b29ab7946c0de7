//! `imspd check [--repair]` and `imspd locks [--clear]`.
//!
//! `check` reads every database file of a data directory and reports, as
//! `FILE:LINE: ...`, each line that is no record of its file's format;
//! advisory locks whose session is gone; a recorded quota usage that is not
//! what the files hold; leftover temporary files; damaged journals.
//! `--repair` drops the damaged lines (rewriting the file atomically under
//! its lock), clears the stale locks, records the usage the files hold,
//! removes temporary files older than ten minutes, and folds journals into
//! their files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Result, user_dirs};
use crate::auth::Auth;
use crate::store::abook::BookMismatch;
use crate::store::file::{Lock, Order};
use crate::store::{Store, StoreError, codec, journal, quota};

/// What a database file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `options`, `user/*/options`: `NAME T VALUE`.
    Options,
    /// The global `abooks`: `BOOK id TAB rights TAB ...`.
    Acls,
    /// `user/*/abooks`: one book a line.
    BookList,
    /// `user/*/abook.*`: `ENTRY"FIELD VALUE`.
    Book,
    /// `user/*/alock`.
    Alock,
    /// `mailboxes`, `changed`, `subs`: key and value.
    Generic,
}

impl Kind {
    fn order(self) -> Order {
        match self {
            Kind::Acls | Kind::Generic => Order::Bytes,
            Kind::Options | Kind::BookList | Kind::Book | Kind::Alock => Order::CaseInsensitive,
        }
    }

    /// Why a parsed record is no record of this kind of file.
    fn problem(self, key: &[u8], value: &[u8]) -> Option<&'static str> {
        match self {
            Kind::Options => {
                let t = value.first().copied();
                if !matches!(t, Some(b'N' | b'R' | b'W' | b'n' | b'r' | b'w')) {
                    return Some("the type is not N, R or W");
                }
                if value.len() > 1 && value[1] != b' ' {
                    return Some("no space after the type");
                }
                None
            }
            Kind::Acls => {
                let items = value.split(|&b| b == b'\t').filter(|x| !x.is_empty());
                if items.count() % 2 != 0 {
                    return Some("the ACL is not identifier TAB rights pairs");
                }
                None
            }
            Kind::Book => match key.iter().position(|&b| b == b'"') {
                None => Some("no '\"' between entry name and field"),
                Some(0) => Some("empty entry name"),
                Some(_) => None,
            },
            Kind::BookList | Kind::Alock | Kind::Generic => None,
        }
    }
}

struct Checker<'a, W: Write> {
    root: PathBuf,
    store: Store,
    repair: bool,
    out: &'a mut W,
    found: usize,
    fixed: usize,
}

impl<W: Write> Checker<'_, W> {
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    fn say(&mut self, line: String, fixed: bool) -> Result<()> {
        self.found += 1;
        if fixed {
            self.fixed += 1;
        }
        let tail = if fixed { " (repaired)" } else { "" };
        writeln!(self.out, "{line}{tail}").map_err(|e| e.to_string())
    }

    /// Check one file's lines; with repair, rewrite it without the damaged
    /// ones.
    fn file(&mut self, path: &Path, kind: Kind) -> Result<()> {
        let bytes = {
            let _lock = Lock::take(path, false).map_err(|e| e.to_string())?;
            match fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        };
        let mut bad = Vec::new();
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let why = match codec::parse_line(line) {
                None => Some("not KEY SP VALUE"),
                Some((k, v)) => kind.problem(&k, &v),
            };
            if let Some(why) = why {
                bad.push((n + 1, why, String::from_utf8_lossy(line).into_owned()));
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        if self.repair {
            self.store
                .files
                .update(path, kind.order(), |recs| {
                    recs.retain(|k, v| kind.problem(k, v).is_none());
                    Ok::<_, StoreError>(((), true))
                })
                .map_err(|e| e.to_string())?;
        }
        let rel = self.rel(path);
        for (n, why, text) in bad {
            let mut shown: String = text.chars().take(60).collect();
            if shown.len() < text.len() {
                shown.push_str("...");
            }
            self.say(
                format!("{rel}:{n}: damaged line ({why}): {shown:?}"),
                self.repair,
            )?;
        }
        Ok(())
    }

    fn temp_file(&mut self, path: &Path) -> Result<()> {
        let old = fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        let fixed = self.repair && old && fs::remove_file(path).is_ok();
        let rel = self.rel(path);
        let note = if old { "" } else { " of a write in progress?" };
        self.say(format!("{rel}: leftover temporary file{note}"), fixed)
    }

    fn locks(&mut self, user: &str) -> Result<()> {
        let rel = format!("user/{user}/alock");
        if self.repair {
            let gone = self.store.clear_stale(user).map_err(|e| e.to_string())?;
            for (k, who) in gone {
                self.say(
                    format!("{rel}: stale lock on {} held by {who}", describe(&k)),
                    true,
                )?;
            }
        } else {
            let all = self.store.locks(user).map_err(|e| e.to_string())?;
            for (k, h, alive) in all {
                if !alive {
                    self.say(
                        format!("{rel}: stale lock on {} held by {}", describe(&k), h.who),
                        false,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn usage(&mut self, user: &str) -> Result<()> {
        let p = self.store.user_path(user, "options");
        let recs = self
            .store
            .files
            .read(&p, Kind::Options.order())
            .map_err(|e| e.to_string())?;
        let Some(recorded) = quota::stored_usage(&recs) else {
            return Ok(());
        };
        let books = quota::books_usage(&mut self.store, user).map_err(|e| e.to_string())?;
        let actual = quota::options_usage(&recs) + books;
        if actual == recorded {
            return Ok(());
        }
        if self.repair {
            self.store
                .files
                .update(&p, Kind::Options.order(), |recs| {
                    let now = quota::options_usage(recs) + books;
                    quota::store_usage(recs, now);
                    Ok::<_, StoreError>(((), true))
                })
                .map_err(|e| e.to_string())?;
        }
        self.say(
            format!(
                "user/{user}/options: {} is {recorded} but the files use {actual} bytes",
                quota::USAGE_OPTION
            ),
            self.repair,
        )
    }

    fn user(&mut self, user: &str) -> Result<()> {
        let dir = self.store.user_dir(user);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            if name.starts_with(".tmp.") {
                self.temp_file(&p)?;
                continue;
            }
            if let Some(main) = name.strip_prefix(".journal.") {
                self.journal(&dir.join(main))?;
                continue;
            }
            if name.ends_with('.') {
                continue; // a lock file
            }
            let kind = match name.as_str() {
                "options" => Kind::Options,
                "abooks" => Kind::BookList,
                "alock" => Kind::Alock,
                "subs" => Kind::Generic,
                n if n.starts_with("abook.") => Kind::Book,
                _ => continue,
            };
            self.file(&p, kind)?;
        }
        self.books(user)?;
        self.locks(user)?;
        self.usage(user)
    }

    /// The user's book files against the user's book list.
    fn books(&mut self, user: &str) -> Result<()> {
        let found = self
            .store
            .book_mismatches(user, self.repair)
            .map_err(|e| e.to_string())?;
        for m in found {
            let line = match m {
                BookMismatch::Unlisted(b) => {
                    format!("user/{user}/abook.{b}: a book that user/{user}/abooks does not list")
                }
                BookMismatch::Missing(b) => {
                    format!("user/{user}/abooks: lists {b}, which has no file")
                }
            };
            self.say(line, self.repair)?;
        }
        Ok(())
    }

    /// A journal of changes not yet folded into its file (with
    /// `imsp.db.journal` on: a session is writing, or one was killed).
    /// It is part of the database, read by every session: a problem only
    /// when it is damaged. `--repair` folds it, so that the file is 1.8's.
    fn journal(&mut self, main: &Path) -> Result<()> {
        let jp = journal::journal_path(main);
        let bytes = match fs::read(&jp) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", jp.display())),
        };
        let damage = match journal::parse_header(&bytes) {
            None => Some("no journal header"),
            Some((_, _, start)) => {
                let n = journal::parse_changes(&bytes[start..], |_| {});
                (start + n < bytes.len()).then_some("ends in a change cut short (not acknowledged)")
            }
        };
        if self.repair {
            self.store.files.fold(main).map_err(|e| e.to_string())?;
        }
        let rel = self.rel(&jp);
        match damage {
            Some(why) => self.say(format!("{rel}: {why}"), self.repair),
            None if self.repair => writeln!(self.out, "{}: journal folded into it", self.rel(main))
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn passwd(&mut self, path: &Path) -> Result<()> {
        let text = match fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#') && !l.contains(':'))
            .map(|(n, _)| n + 1)
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        if self.repair {
            // Rewrite from the entries that parse, under the file's lock.
            let _lock = Lock::take(path, true).map_err(|e| e.to_string())?;
            let entries = crate::auth::file::read_entries(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut out = String::new();
            for e in entries {
                out.push_str(&e.line());
            }
            crate::store::file::write_atomic(path, out.as_bytes(), true)
                .map_err(|e| e.to_string())?;
        }
        let rel = self.rel(path);
        for n in bad {
            self.say(
                format!("{rel}:{n}: damaged line (not USER:HASH)"),
                self.repair,
            )?;
        }
        Ok(())
    }
}

/// An `alock` key as the protocol names the object.
pub fn describe(key: &[u8]) -> String {
    let s = String::from_utf8_lossy(key);
    match s.split_once('"') {
        Some((book, entry)) => format!("ADDRESSBOOK {book} \"{entry}\""),
        None => format!("OPTION {s}"),
    }
}

/// Check (and with `repair`, fix) a data directory. Returns whether it is
/// sound now.
pub fn check(data_dir: &Path, repair: bool, out: &mut impl Write) -> Result<bool> {
    super::require_data_dir(data_dir)?;
    let mut c = Checker {
        root: data_dir.to_path_buf(),
        store: Store::open(data_dir),
        repair,
        out,
        found: 0,
        fixed: 0,
    };
    for (name, kind) in [
        ("options", Kind::Options),
        ("abooks", Kind::Acls),
        ("mailboxes", Kind::Generic),
        ("changed", Kind::Generic),
    ] {
        c.file(&data_dir.join(name), kind)?;
    }
    let global = c.store.global_options().map_err(|e| e.to_string())?;
    let pw = Auth::new(data_dir).password_file(&global);
    c.passwd(&pw)?;
    for (user, valid) in user_dirs(data_dir)? {
        if !valid {
            c.say(
                format!("user/{user}: not a valid user name; left alone"),
                false,
            )?;
            continue;
        }
        c.user(&user)?;
    }
    for book in c.store.stale_acls(repair).map_err(|e| e.to_string())? {
        c.say(
            format!("abooks: an ACL for {book}, which does not exist"),
            repair,
        )?;
    }
    let (found, fixed) = (c.found, c.fixed);
    let summary = match (found, repair) {
        (0, _) => "no problems found".to_string(),
        (n, true) => format!("{n} problem(s) found, {fixed} repaired"),
        (n, false) => format!("{n} problem(s) found; run with --repair to fix them"),
    };
    writeln!(out, "{summary}").map_err(|e| e.to_string())?;
    Ok(found == fixed)
}

/// `imspd locks [--clear]`: every advisory lock, live or stale; with
/// `clear`, the stale ones are removed.
pub fn locks(data_dir: &Path, clear: bool, out: &mut impl Write) -> Result<()> {
    super::require_data_dir(data_dir)?;
    let mut store = Store::open(data_dir);
    let io = |e: std::io::Error| e.to_string();
    let mut any = false;
    for (user, valid) in user_dirs(data_dir)? {
        if !valid {
            continue;
        }
        for (k, h, alive) in store.locks(&user).map_err(|e| e.to_string())? {
            any = true;
            let state = if alive {
                format!("held by {} (process {})", h.who, h.pid)
            } else {
                format!("stale, was held by {}", h.who)
            };
            writeln!(out, "{user}: {}: {state}", describe(&k)).map_err(io)?;
        }
        if clear {
            let gone = store.clear_stale(&user).map_err(|e| e.to_string())?;
            for (k, _) in gone {
                writeln!(out, "{user}: {}: cleared", describe(&k)).map_err(io)?;
            }
        }
    }
    if !any {
        writeln!(out, "no advisory locks").map_err(io)?;
    }
    Ok(())
}
