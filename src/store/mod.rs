//! The flat-file database under the data directory, in cyrus-imspd 1.8's
//! layout and formats. Knows nothing of the protocol.
//!
//! ```text
//! options  abooks  mailboxes  changed  deleted global files
//! user/NAME/{options,subs,abooks,abook.BOOK,alock}
//! ```
//! Every file is guarded by its lock file (`NAME.`); see [`file`].

pub mod abook;
pub mod alock;
pub mod codec;
pub mod file;
pub mod generation;
pub mod journal;
pub mod mailboxes;
pub mod names;
pub mod options;
pub mod quota;
pub mod subs;

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use file::{Files, Order, Records};
pub use options::{OptKind, OptionEntry};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("over quota: {usage_kb} KB used of {quota_kb} KB")]
    OverQuota { usage_kb: u64, quota_kb: u64 },
}

impl StoreError {
    pub fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The database of one data directory, as seen by one process.
pub struct Store {
    root: PathBuf,
    pub files: Files,
    /// Entry indexes of address books, with the bytes they index.
    indexes: file::HashMap<String, (std::sync::Arc<Vec<u8>>, std::sync::Arc<abook::EntryIndex>)>,
    /// The options files as last checked for damaged lines.
    options_seen: file::HashMap<std::ffi::OsString, std::sync::Arc<Records>>,
    /// `ROOT/options`, read at every command.
    global_options: PathBuf,
    /// `ROOT/abooks`, read at every command on a book.
    global_abooks: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
            files: Files::under(root),
            indexes: Default::default(),
            options_seen: Default::default(),
            global_options: root.join("options"),
            global_abooks: root.join("abooks"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Map the data directory's change counter now (the listener, before
    /// it forks: its sessions share the mapping). False when there is
    /// none to use: every command then looks at its files.
    pub fn share_change_counter(&self) -> bool {
        self.files.generation().is_some()
    }

    /// Whether writes are fsynced (the `imsp.db.fsync` option).
    pub fn set_fsync(&mut self, on: bool) {
        self.files.fsync = on;
    }

    /// Whether changes to per-user files are journaled (the
    /// `imsp.db.journal` option); see [`journal`].
    pub fn set_journal(&mut self, on: bool) {
        self.files.journaling = on;
    }

    /// Fold every journal under `user/` into its file (at the daemon's
    /// start, and for the admin tools): what sessions that were killed
    /// left. Returns how many there were.
    pub fn fold_journals(&mut self) -> Result<usize, StoreError> {
        let users = self.root.join("user");
        let dirs = match fs::read_dir(&users) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(&users, e)),
        };
        let mut n = 0;
        for d in dirs.flatten() {
            if !d.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                if let Some(main) = journal::main_path(&f.path())
                    && self.files.fold(&main)?
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// A global file (`options`, `abooks`, `mailboxes`, `changed`, `deleted`).
    pub fn global_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `user/NAME`, for a name already checked by [`names::check_user`].
    pub fn user_dir(&self, user: &str) -> PathBuf {
        self.user_path_of(user, None)
    }

    pub fn user_path(&self, user: &str, file: &str) -> PathBuf {
        self.user_path_of(user, Some(file))
    }

    /// `ROOT/user/NAME[/FILE]`, made in one allocation (paths are made at
    /// every step of every command).
    fn user_path_of(&self, user: &str, file: Option<&str>) -> PathBuf {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let root = self.root.as_os_str().as_bytes();
        let root = root.strip_suffix(b"/").unwrap_or(root);
        let file = file.unwrap_or("");
        let mut p = Vec::with_capacity(root.len() + user.len() + file.len() + 8);
        p.extend_from_slice(root);
        p.extend_from_slice(b"/user/");
        p.extend_from_slice(user.as_bytes());
        if !file.is_empty() {
            p.push(b'/');
            p.extend_from_slice(file.as_bytes());
        }
        PathBuf::from(std::ffi::OsString::from_vec(p))
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.files.is_dir(&self.user_dir(user))
    }

    /// Remove temp files left by killed writers: in a user's directory
    /// (at their login), or in the data directory itself (at start).
    pub fn sweep(&self, user: Option<&str>) {
        let age = std::time::Duration::from_secs(60);
        let n = match user {
            Some(u) => file::sweep_temp_files(&self.user_dir(u), age),
            None => file::sweep_temp_files(&self.root, age),
        };
        if n > 0 {
            crate::log_warn!("removed {n} temp file(s) left by interrupted writes");
        }
    }

    /// Make `user/NAME` (mode 0700).
    pub fn create_user(&self, user: &str) -> Result<(), StoreError> {
        let dir = self.user_dir(user);
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => {}
            Err(e) => return Err(StoreError::io(&dir, e)),
        }
        self.files.forget_dir(&dir);
        self.files.count_change();
        if self.files.fsync {
            file::sync_dir(dir.parent().unwrap_or(&self.root))?;
        }
        Ok(())
    }
}
