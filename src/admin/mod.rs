//! The admin tool: `imspd users | check | locks | export | import | backup |
//! restore`, working on a data directory through the store (locked files,
//! atomic rewrites), safe to run while the daemon serves it.
//!
//! Run as root, the tool first becomes the owner of the data directory
//! (the `imsp` user of the package), so that every file it makes stays
//! readable by the daemon.

pub mod backup;
pub mod check;
pub mod contacts;
pub mod users;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::store::names;

/// What went wrong, for the user: one line, no panic.
pub type Result<T> = std::result::Result<T, String>;

/// When run as root on a data directory owned by someone else, become that
/// user (and group). A directory that does not exist yet is left alone.
pub fn become_owner(data_dir: &Path) -> Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    if !Uid::effective().is_root() {
        return Ok(());
    }
    let Ok(m) = std::fs::metadata(data_dir) else {
        return Ok(());
    };
    if m.uid() == 0 {
        return Ok(());
    }
    let gid = Gid::from_raw(m.gid());
    setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(Uid::from_raw(m.uid())).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}

/// The user directories under `user/`, sorted: (name, valid).
pub fn user_dirs(data_dir: &Path) -> Result<Vec<(String, bool)>> {
    let dir = data_dir.join("user");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let ok = names::check_user(name.as_bytes()).is_ok();
        out.push((name, ok));
    }
    out.sort();
    Ok(out)
}

/// The data directory must look like one (an `options` file or a `user`
/// directory) before the tool reads or changes it.
pub fn require_data_dir(data_dir: &Path) -> Result<()> {
    if data_dir.join("options").is_file() || data_dir.join("user").is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{} is not an IMSP data directory (no options file, no user directory)",
            data_dir.display()
        ))
    }
}

/// Run one admin subcommand; errors are printed as `imspd: ...`.
pub fn run(data_dir: &Path, cmd: &crate::cli::Cmd) -> std::process::ExitCode {
    use std::process::ExitCode;
    match dispatch(data_dir, cmd) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("imspd: {e}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(data_dir: &Path, cmd: &crate::cli::Cmd) -> Result<bool> {
    use crate::cli::Cmd;
    use std::io::{Read, Write};
    let mut stdout = std::io::stdout().lock();
    match cmd {
        Cmd::Passwd { .. } => Err("passwd is handled by main".into()),
        Cmd::Users => {
            become_owner(data_dir)?;
            users::list(data_dir, &mut stdout)?;
            Ok(true)
        }
        Cmd::Check { repair } => {
            become_owner(data_dir)?;
            check::check(data_dir, *repair, &mut stdout)
        }
        Cmd::Locks { clear } => {
            become_owner(data_dir)?;
            check::locks(data_dir, *clear, &mut stdout)?;
            Ok(true)
        }
        Cmd::Export { book, output } => {
            // The output file is opened with the caller's rights.
            let mut file = match output {
                Some(p) => {
                    Some(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)
                }
                None => None,
            };
            become_owner(data_dir)?;
            let (bytes, n) = contacts::export(data_dir, book)?;
            match &mut file {
                Some(f) => f.write_all(&bytes).and_then(|_| f.sync_all()),
                None => stdout.write_all(&bytes).and_then(|_| stdout.flush()),
            }
            .map_err(|e| format!("writing the vCards: {e}"))?;
            eprintln!("imspd: exported {n} entries of {book}");
            Ok(true)
        }
        Cmd::Import { book, file } => {
            let mut input = Vec::new();
            match file {
                Some(p) if p.as_os_str() != "-" => {
                    input = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?
                }
                _ => {
                    std::io::stdin()
                        .read_to_end(&mut input)
                        .map_err(|e| format!("reading standard input: {e}"))?;
                }
            }
            let cards = contacts::parse(&input)?;
            become_owner(data_dir)?;
            let n = contacts::import(data_dir, book, &cards)?;
            eprintln!("imspd: imported {n} entries into {book}");
            Ok(true)
        }
        Cmd::Backup { dest } => {
            backup::prepare_destination(data_dir, dest)?;
            become_owner(data_dir)?;
            let n = backup::backup(data_dir, dest)?;
            eprintln!("imspd: copied {n} files to {}", dest.display());
            Ok(true)
        }
        Cmd::Restore { source, force } => {
            let snap = backup::read_backup(source)?;
            backup::check_target(data_dir, *force)?;
            become_owner(data_dir)?;
            let (n, removed) = backup::restore(&snap, data_dir, *force)?;
            eprintln!(
                "imspd: restored {n} files into {}{}",
                data_dir.display(),
                if removed > 0 {
                    format!(", removed {removed} not in the backup")
                } else {
                    String::new()
                }
            );
            Ok(true)
        }
    }
}
