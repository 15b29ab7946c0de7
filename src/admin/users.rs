//! `imspd users`: every user the site knows, from the password file and
//! the user directories.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Result, user_dirs};
use crate::auth::Auth;
use crate::store::{Store, quota};

#[derive(Debug, Default)]
struct Row {
    password: bool,
    dir: bool,
    books: usize,
    usage: Option<u64>,
}

/// Print one line a user: name, whether it has a password and a user
/// directory, its address books and its usage in bytes.
pub fn list(data_dir: &Path, out: &mut impl std::io::Write) -> Result<()> {
    super::require_data_dir(data_dir)?;
    let mut store = Store::open(data_dir);
    let global = store.global_options().map_err(|e| e.to_string())?;
    let pw = Auth::new(data_dir).password_file(&global);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let entries =
        crate::auth::file::read_entries(&pw).map_err(|e| format!("{}: {e}", pw.display()))?;
    for e in entries {
        rows.entry(e.user).or_default().password = true;
    }
    for (u, valid) in user_dirs(data_dir)? {
        let r = rows.entry(u.clone()).or_default();
        r.dir = true;
        if valid {
            r.books = store.books_of(&u).map_err(|e| e.to_string())?.len();
            let opts = store
                .files
                .read(
                    &store.user_path(&u, "options"),
                    crate::store::options::ORDER,
                )
                .map_err(|e| e.to_string())?;
            r.usage = Some(match quota::stored_usage(&opts) {
                Some(n) => n,
                None => quota::recompute(&mut store, &u).map_err(|e| e.to_string())?,
            });
        }
    }
    let w = rows.keys().map(String::len).max().unwrap_or(4).max(4);
    let yn = |b: bool| if b { "yes" } else { "no" };
    let io = |e: std::io::Error| e.to_string();
    writeln!(out, "{:w$}  PASSWORD  DIRECTORY  BOOKS  USAGE", "USER").map_err(io)?;
    for (u, r) in &rows {
        let usage = r.usage.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{u:w$}  {:8}  {:9}  {:5}  {usage}",
            yn(r.password),
            yn(r.dir),
            r.books
        )
        .map_err(io)?;
    }
    Ok(())
}
