//! The change counter of a data directory: one number in a small file
//! (`imspd.generation`) that every process serving the directory maps,
//! and bumps after each change it makes to a file there, before the
//! change is acknowledged.
//!
//! A session that finds the counter where it left it knows no other
//! process has changed a file since it last looked at its files, and
//! need not look again (a stat of each file a command reads): see
//! [`Files::new_command`](super::Files::new_command). What the counter
//! cannot see (a hand edit, a process killed between its change and its
//! bump, a process that could not map the file) is seen at the next
//! look, and sessions look at least once a second however quiet the
//! counter is. Writes never rely on it: under a file's lock the file is
//! always looked at again.
//!
//! Not used where the directory is on a network or cluster file system
//! (other hosts' processes map their own copy), nor where the file cannot
//! be made or mapped: sessions then look at every command, as without it.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counter's file, in the data directory (1.8 has no file of that
/// name and ignores it).
pub const FILE: &str = "imspd.generation";

/// The size of the file and of its mapping (the counter is at 8).
const SIZE: usize = 4096;

/// The first word of the file once set up: the layout in use.
const MAGIC: u64 = u64::from_le_bytes(*b"imspdgn1");

/// File systems whose files other hosts may change: `statfs` types.
const SHARED_FS: [i64; 10] = [
    0x6969,      // NFS
    0x517B,      // SMB
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE (sshfs and the like)
    0x00C3_6400, // Ceph
    0x0116_1970, // GFS2
    0x7461_636F, // OCFS2
    0x5346_414F, // AFS
    0x0102_1997, // 9P
];

/// The counter, mapped.
pub struct Generation {
    map: *mut libc::c_void,
}

impl Generation {
    /// Map the counter of the data directory `root`, making its file if
    /// missing; `None` where it is not to be used (see the module).
    pub fn open(root: &Path) -> Option<Generation> {
        use std::os::unix::fs::OpenOptionsExt;
        if on_shared_fs(root) {
            return None;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(root.join(FILE))
            .ok()?;
        // Only ever made longer (two processes making it at once both
        // set the same length), never shorter: a mapping is never left
        // past the end of its file.
        if f.metadata().ok()?.len() < SIZE as u64 {
            f.set_len(SIZE as u64).ok()?;
        }
        // SAFETY: a shared mapping of the first SIZE bytes of a file that
        // is at least that long, owned by the returned value and unmapped
        // when it is dropped; the file may be closed once mapped.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return None;
        }
        let g = Generation { map };
        match g
            .word(0)
            .compare_exchange(0, MAGIC, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Some(g),
            Err(m) if m == MAGIC => Some(g),
            // Another layout (or another file of that name): not used.
            Err(_) => None,
        }
    }

    /// The word at byte `at` of the mapping.
    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at + 8 <= SIZE && at.is_multiple_of(8));
        // SAFETY: the mapping is SIZE bytes, page-aligned, and lives as
        // long as `self`; an aligned u64 in it is only ever used through
        // atomic operations, by this and every other process mapping it.
        unsafe { &*self.map.cast::<u8>().add(at).cast::<AtomicU64>() }
    }

    /// The counter now.
    pub fn load(&self) -> u64 {
        self.word(8).load(Ordering::SeqCst)
    }

    /// Count a change; returns the counter as it was just before.
    pub fn bump(&self) -> u64 {
        self.word(8).fetch_add(1, Ordering::SeqCst)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, not used after this.
        unsafe {
            libc::munmap(self.map, SIZE);
        }
    }
}

/// Whether `root` is on a file system other hosts may change.
fn on_shared_fs(root: &Path) -> bool {
    match nix::sys::statfs::statfs(root) {
        Ok(s) => {
            // (`__fsword_t`: i64 here, narrower on other targets.)
            #[allow(clippy::unnecessary_cast)]
            let t = s.filesystem_type().0 as i64;
            SHARED_FS.contains(&t)
        }
        // Not known to be local: not used.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_share_one_counter() {
        let dir = tempfile::tempdir().unwrap();
        let a = Generation::open(dir.path()).unwrap();
        let b = Generation::open(dir.path()).unwrap();
        let start = a.load();
        assert_eq!(b.bump(), start);
        assert_eq!(a.load(), start + 1);
        assert_eq!(a.bump(), start + 1);
        assert_eq!(b.load(), start + 2);
        let len = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert_eq!(len, SIZE as u64);
    }

    #[test]
    fn a_file_of_another_layout_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![7u8; SIZE]).unwrap();
        assert!(Generation::open(dir.path()).is_none());
    }
}
