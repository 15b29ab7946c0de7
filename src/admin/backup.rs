//! `imspd backup DEST` and `imspd restore SRC`: a copy of a data directory
//! taken while the daemon runs, each file read under its lock so that no
//! copy is ever a half-written file; and back, each file replaced
//! atomically under its lock.
//!
//! Lock files (`NAME.`), temporary files (`.tmp.*`) and the telemetry logs
//! (`log/`) are not data and are not copied. Nor are journals
//! (`.journal.*`): a file's journal is folded into it before it is read. Symbolic links and special
//! files are skipped, so nothing outside the two directories is touched.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Result;
use crate::store::file::{Files, Lock, lock_path, sync_dir, write_atomic};
use crate::store::journal::journal_path;

/// Whether a directory entry is data to copy.
fn is_data(rel: &Path, name: &str) -> bool {
    !(name.ends_with('.')
        || name.starts_with(".tmp.")
        || name.starts_with(".journal.")
        || rel == Path::new("log")
        || rel == Path::new(crate::store::generation::FILE))
}

/// The data files and directories under `root`, relative, sorted; with
/// their modes.
/// Relative paths with their modes.
type Listing = Vec<(PathBuf, u32)>;

fn walk(root: &Path) -> Result<(Listing, Listing)> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        let rd = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = rel.join(&name);
            if let Some(main) = name.strip_prefix(".journal.") {
                // A file whose changes are all in its journal so far: it
                // is folded, then copied.
                if !main.is_empty() && !dir.join(main).exists() {
                    files.push((rel.join(main), 0o600));
                }
                continue;
            }
            if !is_data(&r, &name) {
                continue;
            }
            let m = fs::symlink_metadata(e.path()).map_err(|e| format!("{name}: {e}"))?;
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                dirs.push((r.clone(), mode));
                todo.push(r);
            } else if m.is_file() {
                files.push((r, mode));
            } else {
                eprintln!(
                    "imspd: skipping {} (not a regular file)",
                    root.join(&r).display()
                );
            }
        }
    }
    dirs.sort();
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    Ok((dirs, files))
}

/// Whether `dir` is missing or empty.
fn empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Make the backup directory (it must not exist or be empty), owned like
/// the data directory. Called before the tool becomes the data owner.
pub fn prepare_destination(data_dir: &Path, dest: &Path) -> Result<()> {
    super::require_data_dir(data_dir)?;
    if !empty_or_missing(dest)? {
        return Err(format!("{} exists and is not empty", dest.display()));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dest)
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    if let Ok(m) = fs::metadata(data_dir) {
        use std::os::unix::fs::MetadataExt;
        if nix::unistd::Uid::effective().is_root() {
            std::os::unix::fs::chown(dest, Some(m.uid()), Some(m.gid()))
                .map_err(|e| format!("{}: {e}", dest.display()))?;
        }
    }
    Ok(())
}

/// Copy the data of `data_dir` into `dest` (made by
/// [`prepare_destination`]). Returns how many files were copied.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<usize> {
    let (dirs, files) = walk(data_dir)?;
    for (d, mode) in &dirs {
        let p = dest.join(d);
        fs::DirBuilder::new()
            .mode(*mode)
            .create(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut store = Files::default();
    for (f, mode) in &files {
        let src = data_dir.join(f);
        store.fold(&src).map_err(|e| e.to_string())?;
        let bytes = {
            let _lock = Lock::take(&src, false).map_err(|e| e.to_string())?;
            match fs::read(&src) {
                Ok(b) => b,
                // Removed since the walk (a deleted address book).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", src.display())),
            }
        };
        let to = dest.join(f);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&to)
            .map_err(|e| format!("{}: {e}", to.display()))?;
        out.write_all(&bytes)
            .and_then(|_| out.sync_all())
            .map_err(|e| format!("{}: {e}", to.display()))?;
    }
    for (d, _) in dirs.iter().rev() {
        sync_dir(&dest.join(d)).map_err(|e| e.to_string())?;
    }
    sync_dir(dest).map_err(|e| e.to_string())?;
    Ok(files.len())
}

/// A backup read into memory: directories and files with their modes.
pub struct Snapshot {
    dirs: Vec<(PathBuf, u32)>,
    files: Vec<(PathBuf, u32, Vec<u8>)>,
}

/// Read a backup whole (before the tool becomes the data owner, who may
/// not be able to read it).
pub fn read_backup(src: &Path) -> Result<Snapshot> {
    super::require_data_dir(src).map_err(|_| {
        format!(
            "{} is not an imspd backup (no options file, no user directory)",
            src.display()
        )
    })?;
    let (dirs, names) = walk(src)?;
    let mut files = Vec::new();
    for (f, mode) in names {
        let p = src.join(&f);
        let b = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        files.push((f, mode, b));
    }
    Ok(Snapshot { dirs, files })
}

/// Check that a restore may go into `data_dir`: empty or missing, or
/// `force`.
pub fn check_target(data_dir: &Path, force: bool) -> Result<()> {
    if !force && !empty_or_missing(data_dir)? {
        return Err(format!(
            "{} is not empty; restore into an empty directory, or use --force to \
             replace its data with the backup",
            data_dir.display()
        ));
    }
    Ok(())
}

/// Write a backup into `data_dir`: every file replaced atomically under
/// its lock, with the backup's mode; with `force`, data files the backup
/// does not have are removed. Returns (written, removed).
pub fn restore(snap: &Snapshot, data_dir: &Path, force: bool) -> Result<(usize, usize)> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    for (d, mode) in &snap.dirs {
        let p = data_dir.join(d);
        if !p.is_dir() {
            fs::DirBuilder::new()
                .mode(*mode)
                .create(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    for (f, mode, bytes) in &snap.files {
        let p = data_dir.join(f);
        let _lock = Lock::take(&p, true).map_err(|e| e.to_string())?;
        // Changes journaled for the file replaced are not the backup's.
        // The journal goes first: a session holding it open takes the
        // file as unchanged while it is linked.
        match fs::remove_file(journal_path(&p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", journal_path(&p).display())),
        }
        write_atomic(&p, bytes, true).map_err(|e| e.to_string())?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut removed = 0;
    if force {
        let keep: BTreeSet<&PathBuf> = snap.files.iter().map(|(f, ..)| f).collect();
        let (_, now) = walk(data_dir)?;
        for (f, _) in now {
            if keep.contains(&f) {
                continue;
            }
            let p = data_dir.join(&f);
            {
                let _lock = Lock::take(&p, true).map_err(|e| e.to_string())?;
                // The file, or only its journal (a file not folded yet).
                for q in [p.clone(), journal_path(&p)] {
                    match fs::remove_file(&q) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(format!("{}: {e}", q.display()));
                        }
                        _ => {}
                    }
                }
                // Unlinked while held (see Lock::take).
                let _ = fs::remove_file(lock_path(&p));
            }
            removed += 1;
        }
        // Directories the backup lacks (a user that did not exist), once
        // empty of data: their lock files go with them.
        let dirs: BTreeSet<&PathBuf> = snap.dirs.iter().map(|(d, _)| d).collect();
        let (now_dirs, _) = walk(data_dir)?;
        for (d, _) in now_dirs.iter().rev() {
            if dirs.contains(d) {
                continue;
            }
            let p = data_dir.join(d);
            let only_locks = fs::read_dir(&p)
                .map(|rd| {
                    rd.flatten()
                        .all(|e| e.file_name().to_string_lossy().ends_with('.'))
                })
                .unwrap_or(false);
            if only_locks {
                for e in fs::read_dir(&p).into_iter().flatten().flatten() {
                    let _ = fs::remove_file(e.path());
                }
                let _ = fs::remove_dir(&p);
            }
        }
    }
    sync_dir(data_dir).map_err(|e| e.to_string())?;
    // Sessions running meanwhile (`--force`) look at their files again.
    crate::store::Store::open(data_dir).files.count_change();
    Ok((snap.files.len(), removed))
}
