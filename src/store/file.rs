//! One database file: a sorted list of records, guarded by its lock file
//! (the same name plus `.`), read through a cache that is reused while the
//! file is unchanged, and rewritten atomically (temp file, fsync, rename,
//! fsync of the directory) under the exclusive lock.

use std::cell::{Cell, OnceCell, RefCell};
use std::cmp::Ordering;
use std::collections::HashMap as StdHashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::unix::fs::{FileExt as _, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fs2::FileExt;

use super::StoreError;
use super::codec;
use super::generation::Generation;
use super::journal::{self, Base, Op, Overlay, journal_path};

/// A hasher for the path-keyed caches of one process: paths are hashed
/// at every step of every command, and SipHash (the default, which
/// resists keys chosen to collide) costs more there than the maps save.
/// These keys are the process's own file names. (The multiply-rotate of
/// rustc's FxHasher.)
#[derive(Default, Clone, Copy)]
pub struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write(&n.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by paths, hashed with [`PathHasher`].
pub type HashMap<K, V> = StdHashMap<K, V, BuildHasherDefault<PathHasher>>;

/// How a file's keys are ordered and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Octet by octet (case-sensitive).
    Bytes,
    /// ASCII case folded: `Foo` and `foo` are the same key.
    CaseInsensitive,
}

impl Order {
    pub fn cmp(self, a: &[u8], b: &[u8]) -> Ordering {
        match self {
            Order::Bytes => a.cmp(b),
            Order::CaseInsensitive => {
                for (x, y) in a.iter().zip(b) {
                    if x != y {
                        let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
                        if x != y {
                            return x.cmp(&y);
                        }
                    }
                }
                a.len().cmp(&b.len())
            }
        }
    }
}

/// Where one record lies in the arena: its key, then its value.
#[derive(Debug, Clone, Copy)]
struct Slot {
    at: usize,
    key: u32,
    value: u32,
}

/// The records of one file, kept sorted. Their bytes live in one arena,
/// so that parsing a large file (an address book of 100,000 entries is
/// 300,000 records) costs no allocation per record; replaced bytes are
/// garbage until the arena is compacted.
#[derive(Debug)]
pub struct Records {
    order: Order,
    arena: Vec<u8>,
    slots: Vec<Slot>,
    garbage: usize,
}

/// A copy holds the live records only: a file changed in place again and
/// again (an option SET at every command, each change copied from the last)
/// would otherwise copy every value it ever had.
impl Clone for Records {
    fn clone(&self) -> Records {
        let (arena, slots) = match self.garbage {
            0 => (self.arena.clone(), self.slots.clone()),
            _ => self.live(),
        };
        Records {
            order: self.order,
            arena,
            slots,
            garbage: 0,
        }
    }
}

fn key_in<'a>(arena: &'a [u8], s: &Slot) -> &'a [u8] {
    &arena[s.at..s.at + s.key as usize]
}

fn value_in<'a>(arena: &'a [u8], s: &Slot) -> &'a [u8] {
    let start = s.at + s.key as usize;
    &arena[start..start + s.value as usize]
}

impl Records {
    pub fn new(order: Order) -> Records {
        Records {
            order,
            arena: Vec::new(),
            slots: Vec::new(),
            garbage: 0,
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        key_in(&self.arena, &self.slots[i])
    }

    fn value(&self, i: usize) -> &[u8] {
        value_in(&self.arena, &self.slots[i])
    }

    fn find(&self, key: &[u8]) -> Result<usize, usize> {
        self.slots
            .binary_search_by(|s| self.order.cmp(key_in(&self.arena, s), key))
    }

    /// Put a record's bytes at the end of the arena.
    fn push(&mut self, key: &[u8], value: &[u8]) -> Slot {
        let at = self.arena.len();
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(value);
        Slot {
            at,
            key: key.len() as u32,
            value: value.len() as u32,
        }
    }

    /// Copy the live records to a fresh arena once garbage dominates.
    fn maybe_compact(&mut self) {
        if self.garbage < 64 * 1024 || self.garbage * 2 < self.arena.len() {
            return;
        }
        self.compact();
    }

    fn compact(&mut self) {
        (self.arena, self.slots) = self.live();
        self.garbage = 0;
    }

    /// The live records' bytes in a fresh arena, and their slots in it.
    fn live(&self) -> (Vec<u8>, Vec<Slot>) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        let slots = self
            .slots
            .iter()
            .map(|s| {
                let len = s.key as usize + s.value as usize;
                let at = arena.len();
                arena.extend_from_slice(&self.arena[s.at..s.at + len]);
                Slot { at, ..*s }
            })
            .collect();
        (arena, slots)
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).ok().map(|i| self.value(i))
    }

    /// The stored key that compares equal to `key` (its case on disk).
    pub fn key_of(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).ok().map(|i| self.key(i))
    }

    /// [`Records::insert`] of borrowed bytes, the old value not returned.
    pub fn set(&mut self, key: &[u8], value: &[u8]) {
        match self.find(key) {
            Ok(i) => {
                // The stored key, copied within the arena, then the value.
                let dead = self.slots[i];
                let at = self.arena.len();
                self.arena
                    .extend_from_within(dead.at..dead.at + dead.key as usize);
                self.arena.extend_from_slice(value);
                self.slots[i] = Slot {
                    at,
                    key: dead.key,
                    value: value.len() as u32,
                };
                self.garbage += dead.key as usize + dead.value as usize;
                self.maybe_compact();
            }
            Err(i) => {
                let slot = self.push(key, value);
                self.slots.insert(i, slot);
            }
        }
    }

    /// Insert or replace; returns the old value. A replaced record keeps
    /// the key it was stored with.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        let old = self.get(&key).map(<[u8]>::to_vec);
        self.set(&key, &value);
        old
    }

    /// Apply changes given in this order (each key at most once): `(key,
    /// removed, value)` removes the record first when `removed`, then sets
    /// `value`, a replaced record keeping its key. One merge of both
    /// sorted lists: inserting each new key alone would move every later
    /// record each time.
    pub fn apply_sorted<'a>(
        &mut self,
        changes: impl Iterator<Item = (&'a [u8], bool, Option<&'a [u8]>)>,
    ) {
        let old = std::mem::take(&mut self.slots);
        let mut slots = Vec::with_capacity(old.len());
        let mut rest = old.into_iter().peekable();
        for (key, removed, value) in changes {
            let mut stored = None;
            while let Some(s) = rest.peek() {
                match self.order.cmp(key_in(&self.arena, s), key) {
                    Ordering::Less => slots.push(rest.next().expect("peeked")),
                    Ordering::Equal => {
                        stored = rest.next();
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
            match (stored, value) {
                // Kept: nothing to remove, nothing to set.
                (Some(s), None) if !removed => slots.push(s),
                (Some(s), value) => {
                    self.garbage += s.key as usize + s.value as usize;
                    if let Some(v) = value {
                        let key = match removed {
                            true => key.to_vec(),
                            false => key_in(&self.arena, &s).to_vec(),
                        };
                        slots.push(self.push(&key, v));
                    }
                }
                (None, Some(v)) => slots.push(self.push(key, v)),
                (None, None) => {}
            }
        }
        slots.extend(rest);
        self.slots = slots;
        self.maybe_compact();
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let i = self.find(key).ok()?;
        let old = self.value(i).to_vec();
        let dead = self.slots.remove(i);
        self.garbage += dead.key as usize + dead.value as usize;
        self.maybe_compact();
        Some(old)
    }

    /// Remove every record for which `keep` is false; returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) -> usize {
        let before = self.slots.len();
        let arena = &self.arena;
        let mut freed = 0;
        self.slots.retain(|s| {
            let k = keep(key_in(arena, s), value_in(arena, s));
            if !k {
                freed += s.key as usize + s.value as usize;
            }
            k
        });
        self.garbage += freed;
        self.maybe_compact();
        before - self.slots.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.slots
            .iter()
            .map(|s| (key_in(&self.arena, s), value_in(&self.arena, s)))
    }

    /// The records whose key starts with `prefix` (compared in the file's
    /// order), in order.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let start = self
            .slots
            .partition_point(|s| self.order.cmp(key_in(&self.arena, s), prefix) == Ordering::Less);
        self.slots[start..]
            .iter()
            .map(|s| (key_in(&self.arena, s), value_in(&self.arena, s)))
            .take_while(move |(k, _)| {
                k.len() >= prefix.len()
                    && self.order.cmp(&k[..prefix.len()], prefix) == Ordering::Equal
            })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.arena.len() - self.garbage + self.slots.len() * 4);
        for (k, v) in self.iter() {
            codec::put_record(k, v, &mut out);
        }
        out
    }

    /// Parse a file's bytes. Damaged lines are skipped and reported by
    /// their line numbers; records out of order are put in order (the last
    /// of equal keys wins).
    pub fn parse(order: Order, bytes: &[u8]) -> (Records, Vec<usize>) {
        let mut recs = Records::new(order);
        recs.arena.reserve(bytes.len());
        let mut damaged = Vec::new();
        let mut sorted = true;
        let mut start = 0;
        let mut n = 0;
        while start < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |i| start + i);
            let line = &bytes[start..end];
            start = end + 1;
            n += 1;
            if line.is_empty() {
                continue;
            }
            let sp = match memchr::memchr(b' ', line) {
                Some(sp) if sp > 0 => sp,
                _ => {
                    damaged.push(n);
                    continue;
                }
            };
            let at = recs.arena.len();
            codec::unescape_into(&line[..sp], &mut recs.arena);
            let key = (recs.arena.len() - at) as u32;
            codec::unescape_into(&line[sp + 1..], &mut recs.arena);
            let slot = Slot {
                at,
                key,
                value: (recs.arena.len() - at) as u32 - key,
            };
            if let Some(prev) = recs.slots.last()
                && order.cmp(key_in(&recs.arena, prev), key_in(&recs.arena, &slot))
                    != Ordering::Less
            {
                sorted = false;
            }
            recs.slots.push(slot);
        }
        if !sorted {
            let arena = &recs.arena;
            // Stable: among equal keys the file order stays, and the last wins.
            recs.slots
                .sort_by(|a, b| order.cmp(key_in(arena, a), key_in(arena, b)));
            let mut kept: Vec<Slot> = Vec::with_capacity(recs.slots.len());
            for s in recs.slots.drain(..) {
                match kept.last_mut() {
                    Some(last)
                        if order.cmp(key_in(arena, last), key_in(arena, &s)) == Ordering::Equal =>
                    {
                        *last = s;
                    }
                    _ => kept.push(s),
                }
            }
            recs.slots = kept;
        }
        (recs, damaged)
    }
}

/// The unescaped key of the line that starts at `at` (up to its first
/// space, or the whole line), into `key`; returns where the line ends.
fn line_key(bytes: &[u8], at: usize, key: &mut Vec<u8>) -> usize {
    let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
    let line = &bytes[at..end];
    let raw = memchr::memchr(b' ', line).map_or(line, |sp| &line[..sp]);
    key.clear();
    codec::unescape_into(raw, key);
    end
}

fn has_prefix(order: Order, key: &[u8], prefix: &[u8]) -> bool {
    key.len() >= prefix.len() && order.cmp(&key[..prefix.len()], prefix) == Ordering::Equal
}

/// Whether every non-empty line's key is after the one before.
fn lines_in_order(bytes: &[u8], order: Order) -> bool {
    let (mut prev, mut key) = (Vec::new(), Vec::new());
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let end = line_key(bytes, at, &mut key);
        if end > at {
            if !first && order.cmp(&prev, &key) != Ordering::Less {
                return false;
            }
            first = false;
            std::mem::swap(&mut prev, &mut key);
        }
        at = end + 1;
    }
    true
}

/// The byte range of the lines whose keys start with `prefix`, in a file
/// in order: found by binary search over line starts.
fn prefix_range(bytes: &[u8], order: Order, prefix: &[u8]) -> (usize, usize) {
    let mut key = Vec::new();
    let (mut lo, mut hi) = (0, bytes.len());
    // Lines starting before `lo` sort before the prefix; those from `hi` on
    // do not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let start = memchr::memrchr(b'\n', &bytes[lo..mid]).map_or(lo, |i| lo + i + 1);
        let end = line_key(bytes, start, &mut key);
        if order.cmp(&key, prefix) == Ordering::Less {
            lo = end + 1;
        } else {
            hi = start;
        }
    }
    let lo = lo.min(bytes.len());
    let mut hi = lo;
    while hi < bytes.len() {
        let end = line_key(bytes, hi, &mut key);
        if !has_prefix(order, &key, prefix) {
            break;
        }
        hi = (end + 1).min(bytes.len());
    }
    (lo, hi)
}

/// What identifies one version of a file on disk.
type Stamp = Base;

/// A file's version, its bytes, and whether its lines are in order.
type MainInOrder = (Option<Stamp>, Arc<Vec<u8>>, bool);

fn stamp_of(m: &fs::Metadata) -> Stamp {
    Base {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    }
}

/// A file and its journal as they are on disk: what the caches are keyed
/// on. The journal is known by (device, inode, size): it only grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    main: Option<Stamp>,
    journal: Option<(u64, u64, u64)>,
}

/// The lock file that guards `path`: the same name with `.` appended.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".");
    PathBuf::from(p)
}

/// What an open file is now: its device, inode, size and link count,
/// asked of the kernel and nothing more. `File::metadata` asks for
/// everything, the times with it, and on a file system with fine-grained
/// times (ext4, xfs, tmpfs since Linux 6.13) a file whose times were
/// asked for gets new ones at its next write, which dirties the inode:
/// a journal looked at after each append would pay for that at every
/// append. Not asked, the times move on coarse clock ticks as before.
#[derive(Debug, Clone, Copy)]
struct Ident {
    dev: u64,
    ino: u64,
    size: u64,
    nlink: u64,
}

fn ident(f: &File) -> io::Result<Ident> {
    use std::os::fd::AsRawFd;
    const WANT: u32 = libc::STATX_INO | libc::STATX_SIZE | libc::STATX_NLINK;
    let mut sx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a descriptor we hold, an empty NUL-terminated path with
    // AT_EMPTY_PATH (the descriptor itself), and a buffer statx fills.
    let r = unsafe {
        libc::statx(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            WANT,
            sx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed, then filled by statx above.
    let sx = unsafe { sx.assume_init() };
    if sx.stx_mask & WANT != WANT {
        // A file system that could not say: the whole stat.
        let m = f.metadata()?;
        return Ok(Ident {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            nlink: m.nlink(),
        });
    }
    Ok(Ident {
        dev: libc::makedev(sx.stx_dev_major, sx.stx_dev_minor),
        ino: sx.stx_ino,
        size: sx.stx_size,
        nlink: u64::from(sx.stx_nlink),
    })
}

/// An open lock file, held until dropped.
pub struct Lock(Rc<File>);

/// Lock files kept open between locks (by the path of the file each
/// guards), by this thread of this process:
/// a session locks the same few files at every command. Each thread has
/// its own open files (a lock is held by an open file, so two threads or
/// two processes sharing one would not exclude each other); a child of a
/// fork drops what it inherited.
struct LockFiles {
    /// [`FORKS`] when these were opened.
    forks: u64,
    open: HashMap<OsString, Rc<File>>,
}

/// Forks this process is the child of, counted by a handler run in the
/// child of every `fork` (registered at the first lock, before which
/// nothing is kept): a child's inherited lock files are another
/// process's. (Asked of an atomic, not of `getpid` at every lock.)
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_fork() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn forks() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: the handler only increments an atomic, which is safe
        // in the child of a fork.
        let r = unsafe { libc::pthread_atfork(None, None, Some(count_fork)) };
        assert_eq!(r, 0, "pthread_atfork");
    });
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Enough for the files of a session; an admin command walking the whole
/// data directory does not keep hundreds open.
const LOCK_FILES_KEPT: usize = 32;

thread_local! {
    static LOCK_FILES: RefCell<LockFiles> = RefCell::new(LockFiles {
        forks: 0,
        open: HashMap::default(),
    });
}

impl Lock {
    /// Lock the file that guards `path`, shared or exclusive.
    ///
    /// Removing or renaming a file removes its lock file too, so a waiter
    /// may wake holding the lock of a file no longer at that path while a
    /// newcomer locks a new one: the lock is only taken once the file
    /// locked is still linked. Lock files are only ever unlinked (never
    /// renamed, nor linked elsewhere), so one still linked is the one at
    /// the path; that is asked of the open file (no walk of the path).
    pub fn take(path: &Path, exclusive: bool) -> Result<Lock, StoreError> {
        loop {
            let f = Self::open(path)?;
            if exclusive {
                f.lock_exclusive()
            } else {
                f.lock_shared()
            }
            .map_err(|e| StoreError::io(&lock_path(path), e))?;
            match ident(&f) {
                Ok(now) if now.nlink > 0 => return Ok(Lock(f)),
                Ok(_) => {}
                Err(e) => return Err(StoreError::io(&lock_path(path), e)),
            }
            let _ = FileExt::unlock(&*f);
            LOCK_FILES.with(|c| c.borrow_mut().open.remove(path.as_os_str()));
        }
    }

    /// The lock file of `path`, open: kept from an earlier lock (by the
    /// path it guards: its own name is made only to open it), or opened
    /// (made if missing) and kept.
    fn open(path: &Path) -> Result<Rc<File>, StoreError> {
        let forks = forks();
        if let Some(kept) = LOCK_FILES.with(|c| {
            let mut c = c.borrow_mut();
            if c.forks != forks {
                c.forks = forks;
                c.open.clear();
            }
            c.open.get(path.as_os_str()).cloned()
        }) {
            return Ok(kept);
        }
        let lp = lock_path(path);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            .map_err(|e| StoreError::io(&lp, e))?;
        let kept = Rc::new(f);
        LOCK_FILES.with(|c| {
            let mut c = c.borrow_mut();
            if c.open.len() >= LOCK_FILES_KEPT {
                // Only files no lock holds now may be closed.
                c.open.retain(|_, f| Rc::strong_count(f) > 1);
            }
            if c.open.len() < LOCK_FILES_KEPT {
                c.open.insert(path.as_os_str().to_owned(), kept.clone());
            }
        });
        Ok(kept)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&*self.0);
    }
}

/// What this process has read of a file's journal.
struct JournalState {
    /// The journal file: device and inode.
    id: (u64, u64),
    /// Bytes read, and bytes of whole changes among them.
    seen: u64,
    valid: u64,
    /// The order and base its header names; `None`: no readable header.
    header: Option<(Order, Option<Stamp>)>,
    overlay: Arc<Overlay>,
    /// Open for appending, once this process has appended.
    writer: Option<File>,
    /// Open for reading, kept by a session between commands: what others
    /// append is read from it with one pread (the path was just looked
    /// at, and names this same inode).
    reader: Option<File>,
    /// Whole changes after `valid` (then equal to `seen`), read by a
    /// store beside other writers and not yet in `overlay`: the next read
    /// takes them in (see [`journal::Pending`]).
    pending: Option<journal::Pending>,
    /// Where this process's last change to it ends: the session whose
    /// change is the journal's last folds it as it ends.
    own_end: Option<u64>,
}

impl JournalState {
    /// Take in the whole changes of the journal (open as `f`) from `valid`
    /// up to `upto`, pending ones with them.
    fn take_in(&mut self, f: &File, upto: u64, jp: &Path) -> Result<(), StoreError> {
        let mut tail = vec![0; upto.saturating_sub(self.valid) as usize];
        f.read_exact_at(&mut tail, self.valid)
            .map_err(|e| StoreError::io(jp, e))?;
        let overlay = Arc::make_mut(&mut self.overlay);
        let n =
            journal::parse_changes(&tail, |ops| ops.into_iter().for_each(|op| overlay.push(op)));
        self.seen = self.valid + tail.len() as u64;
        self.valid += n as u64;
        self.pending = None;
        Ok(())
    }

    /// [`JournalState::take_in`] through the descriptor kept for reading.
    fn take_in_kept(&mut self, upto: u64, jp: &Path) -> Result<(), StoreError> {
        let r = self.reader.take().expect("a kept reader");
        let taken = self.take_in(&r, upto, jp);
        self.reader = Some(r);
        taken
    }

    /// Open the journal `jp` (this one, which exists) for appending, if
    /// not yet.
    fn open_writer(&mut self, jp: &Path) -> Result<(), StoreError> {
        if self.writer.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .open(jp)
                .map_err(|e| StoreError::io(jp, e))?;
            self.writer = Some(f);
        }
        Ok(())
    }

    /// The journal as it is now, through a descriptor this process keeps,
    /// while that is still the journal at its path: linked (journals are
    /// unlinked, never renamed).
    fn linked(&self) -> Option<Ident> {
        let f = self.reader.as_ref().or(self.writer.as_ref())?;
        let m = ident(f).ok()?;
        (m.nlink > 0 && (m.dev, m.ino) == self.id).then_some(m)
    }
}

/// A file's journal, for the file as it is now.
enum JournalView {
    None,
    /// Not for this version of the file (or unreadable): to be removed.
    Obsolete,
    /// `torn`: a change was cut short at its end.
    Valid {
        overlay: Arc<Overlay>,
        torn: bool,
    },
}

/// This process's view of the database files: the parsed-file cache and
/// whether writes are fsynced and journaled.
pub struct Files {
    /// Parsed records, journal applied.
    cache: HashMap<OsString, (Version, Arc<Records>)>,
    /// File bytes, journal applied, for scans that need no parsed records.
    raw: HashMap<OsString, (Version, Arc<Vec<u8>>)>,
    /// The bytes of the file itself (no journal), for prefix updates.
    mains: HashMap<OsString, (Option<Stamp>, Arc<Vec<u8>>)>,
    /// Whether a version of a file is in order, for [`Files::update_prefix`].
    sorted: HashMap<OsString, (Option<Stamp>, bool)>,
    journals: HashMap<OsString, JournalState>,
    /// Files this process appended changes to, to fold at the session's end.
    appended: HashMap<OsString, Order>,
    /// Versions seen since [`Files::new_command`]: one command reads a
    /// file as it was when the command first looked (writes look again,
    /// under the lock). `None` until a first command (a process that
    /// serves no commands always looks).
    seen: Option<PerCommand<Version>>,
    /// Whether a directory exists, as this command first found it (as
    /// `seen`: kept only while commands are served).
    dirs: RefCell<PerCommand<bool>>,
    pub fsync: bool,
    /// Where journals may be (`None`: beside any file); no other file is
    /// looked at for one.
    pub journal_dir: Option<PathBuf>,
    /// Whether changes to files there are journaled (else every change
    /// rewrites its file).
    pub journaling: bool,
    /// The data directory, whose change counter this process bumps and
    /// reads (`None`: no counter; every command looks at its files).
    root: Option<PathBuf>,
    /// The change counter, mapped at first use (see [`generation`](super::generation)).
    generation: OnceCell<Option<Rc<Generation>>>,
    /// The counter when this process last looked at every file it reads,
    /// as its own changes since have moved it, with when it looked
    /// (`None`: another process changed something since).
    quiet: Rc<Cell<Option<(u64, Instant)>>>,
}

/// However still the change counter, a session looks at its files again
/// this often: what changes without it (a hand edit, a change whose
/// process was killed before it counted it) is seen within this.
pub const QUIET_FOR: Duration = Duration::from_secs(1);

/// Counts the change a write may have made when dropped (when the write
/// is done, or given up part way), before its caller answers.
struct Counted {
    generation: Rc<Generation>,
    quiet: Rc<Cell<Option<(u64, Instant)>>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        count(&self.generation, &self.quiet);
    }
}

/// Count a change of this process: the counter moves on, and this
/// process's mark with it if nothing else moved it meanwhile.
fn count(generation: &Generation, quiet: &Cell<Option<(u64, Instant)>>) {
    let before = generation.bump();
    quiet.set(match quiet.get() {
        Some((mark, since)) if mark == before => Some((before + 1, since)),
        _ => None,
    });
}

impl Default for Files {
    fn default() -> Self {
        Files {
            cache: HashMap::default(),
            raw: HashMap::default(),
            mains: HashMap::default(),
            sorted: HashMap::default(),
            journals: HashMap::default(),
            appended: HashMap::default(),
            seen: None,
            dirs: RefCell::new(PerCommand::default()),
            fsync: true,
            journal_dir: None,
            journaling: false,
            root: None,
            generation: OnceCell::new(),
            quiet: Rc::default(),
        }
    }
}

/// What a command found of files, by path: kept from one command to the
/// next, marked with the command (a session looks at the same few files at
/// every command, and would otherwise make their keys anew each time).
struct PerCommand<V> {
    found: HashMap<OsString, (u64, V)>,
    /// The current command's mark; entries with another are stale.
    now: u64,
}

impl<V> Default for PerCommand<V> {
    fn default() -> Self {
        PerCommand {
            found: HashMap::default(),
            now: 1,
        }
    }
}

/// Files a session's command may look at; an admin command walking the
/// whole data directory does not keep them all.
const PER_COMMAND_KEPT: usize = 256;

impl<V> PerCommand<V> {
    fn get(&self, path: &std::ffi::OsStr) -> Option<&V> {
        self.found
            .get(path)
            .filter(|(mark, _)| *mark == self.now)
            .map(|(_, v)| v)
    }

    fn put(&mut self, path: &std::ffi::OsStr, v: V) {
        match self.found.get_mut(path) {
            Some(slot) => *slot = (self.now, v),
            None => {
                self.found.insert(path.to_owned(), (self.now, v));
            }
        }
    }

    fn remove(&mut self, path: &std::ffi::OsStr) {
        if let Some(slot) = self.found.get_mut(path) {
            slot.0 = 0;
        }
    }

    /// Forget everything found: a new command.
    fn clear(&mut self) {
        self.now += 1;
        if self.is_over_kept() {
            self.found.clear();
        }
    }

    /// Whether more files are kept than a session's commands look at.
    fn is_over_kept(&self) -> bool {
        self.found.len() > PER_COMMAND_KEPT
    }

    /// Forget what `keep` is false for.
    fn retain(&mut self, mut keep: impl FnMut(&std::ffi::OsStr, &V) -> bool) {
        let now = self.now;
        for (p, slot) in self.found.iter_mut() {
            if slot.0 == now && !keep(p, &slot.1) {
                slot.0 = 0;
            }
        }
    }
}

/// Whether `path` is `dir` or in it, compared as bytes (the paths of a
/// store are all made from its root the same way, and this is asked at
/// every look at a file).
fn under(path: &Path, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (p, d) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    let d = d.strip_suffix(b"/").unwrap_or(d);
    p.strip_prefix(d)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

/// Directories kept open (`O_PATH`) by this thread, to stat the files in
/// them by name: a session stats the same few files at every command,
/// and each stat of a full path walks every directory above it again.
/// imspd never renames a directory of the data directory; one removed
/// (by a restore) is noticed by its link count and let go.
const DIRS_KEPT: usize = 32;

thread_local! {
    /// Each with the look (see `LOOK`) that last found it still linked.
    static DIRS: RefCell<HashMap<OsString, (std::os::fd::OwnedFd, u64)>> =
        RefCell::new(HashMap::default());
    /// Counts this thread's commands ([`Files::new_command`]): a kept
    /// directory is asked whether it is still linked once a command at
    /// most (when a file in it is missing), not at every missing file.
    static LOOK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What identifies the version of `path` on disk (`None`: it does not
/// exist), following symlinks as `fs::metadata` does.
fn stat(path: &Path) -> Result<Option<Stamp>, StoreError> {
    Ok(look(path)?.map(|(stamp, _)| stamp))
}

/// [`stat`], and whether it is a directory.
fn look(path: &Path) -> Result<Option<(Stamp, bool)>, StoreError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let split = memchr::memrchr(b'/', bytes).filter(|&i| i > 0 && i + 1 < bytes.len());
    let Some(i) = split else {
        return stat_path(path);
    };
    let (dir, name) = (&bytes[..i], &bytes[i + 1..]);
    // The name NUL-terminated on the stack (names in the data directory
    // are short; a longer one is looked up by its whole path).
    let mut cname = [0u8; 256];
    if name.len() >= cname.len() || name.contains(&0) {
        return stat_path(path);
    }
    cname[..name.len()].copy_from_slice(name);
    let at = |fd: i32| -> io::Result<(Stamp, bool)> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: a directory descriptor we hold, a NUL-terminated name
        // (the buffer is zeroed past it), and a stat buffer the call
        // fills when it returns 0.
        if unsafe { libc::fstatat(fd, cname.as_ptr().cast(), st.as_mut_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: filled by fstatat above.
        let st = unsafe { st.assume_init() };
        let stamp = Base {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        };
        Ok((stamp, st.st_mode & libc::S_IFMT == libc::S_IFDIR))
    };
    let done = DIRS.with(|c| {
        let mut c = c.borrow_mut();
        let key = std::ffi::OsStr::from_bytes(dir);
        if let Some((fd, linked)) = c.get_mut(key) {
            match at(fd.as_raw_fd()) {
                // A directory removed since (`restore --force` makes user
                // directories anew) has no link left: let it go, and look
                // by path.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let look = LOOK.get();
                    // (A process serving no commands always asks.)
                    if look != 0 && *linked == look {
                        return Some(Err(e));
                    }
                    if nix::sys::stat::fstat(&*fd).is_ok_and(|d| d.st_nlink == 0) {
                        c.remove(key);
                        return None;
                    }
                    *linked = look;
                    return Some(Err(e));
                }
                r => return Some(r),
            }
        }
        if c.len() >= DIRS_KEPT {
            return None;
        }
        let cdir = std::ffi::CString::new(dir).ok()?;
        // SAFETY: opening a NUL-terminated path; the descriptor is owned
        // below.
        let fd = unsafe {
            libc::open(
                cdir.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            // Missing now (a user directory not made yet): not kept.
            return None;
        }
        // SAFETY: a descriptor just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let r = at(fd.as_raw_fd());
        c.insert(key.to_owned(), (fd, LOOK.get()));
        Some(r)
    });
    match done {
        None => stat_path(path),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Some(Err(e)) => Err(StoreError::io(path, e)),
    }
}

/// [`stat`] by the whole path.
fn stat_path(path: &Path) -> Result<Option<(Stamp, bool)>, StoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((stamp_of(&m), m.is_dir()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// A journal longer than this is folded into its file: half the file,
/// within bounds. Each fold has every session that reads the file read
/// and check it again, so the least is well above a small book's size:
/// with 32 KB, eight sessions storing 3,200 entries into one book
/// folded it five times and stored 15% to 23% fewer entries a second.
fn fold_threshold(main_size: u64) -> u64 {
    (main_size / 2).clamp(256 * 1024, 8 * 1024 * 1024)
}

impl Files {
    /// The files of the data directory `root`: journals are only in its
    /// `user/` directory.
    pub fn under(root: &Path) -> Files {
        Files {
            journal_dir: Some(root.join("user")),
            root: Some(root.to_path_buf()),
            ..Files::default()
        }
    }

    /// The data directory's change counter, mapped the first time (by the
    /// listener before it forks, so that sessions share its mapping).
    pub(super) fn generation(&self) -> Option<&Rc<Generation>> {
        self.generation
            .get_or_init(|| Some(Rc::new(Generation::open(self.root.as_deref()?)?)))
            .as_ref()
    }

    /// For a write: counts the change when dropped.
    fn counting(&self) -> Option<Counted> {
        Some(Counted {
            generation: self.generation()?.clone(),
            quiet: self.quiet.clone(),
        })
    }

    /// Count a change made outside the writes of this type (a directory
    /// made).
    pub fn count_change(&self) {
        if let Some(g) = self.generation() {
            count(g, &self.quiet);
        }
    }

    /// A new command begins: files are looked at again, unless no process
    /// has changed one since this one last looked (and that was less than
    /// [`QUIET_FOR`] ago; what it found then stands).
    pub fn new_command(&mut self) {
        LOOK.set(LOOK.get() + 1);
        if self.still() {
            // (A directory found missing is looked for again: one made by
            // hand, for a new user, is seen at once.)
            self.forget_missing_dirs();
            return;
        }
        self.seen.get_or_insert_default().clear();
        self.dirs.get_mut().clear();
    }

    /// Whether what this process last found of its files stands: the
    /// change counter is where its last look (and its own changes since)
    /// left it. If not, the counter is noted before this command looks.
    fn still(&self) -> bool {
        let Some(g) = self.generation() else {
            return false;
        };
        let now = g.load();
        if let Some((mark, since)) = self.quiet.get()
            && mark == now
            && since.elapsed() < QUIET_FOR
            && self.seen.as_ref().is_some_and(|s| !s.is_over_kept())
        {
            return true;
        }
        self.quiet.set(Some((now, Instant::now())));
        false
    }

    /// A write of this process left `path` at version `now`: while the
    /// counter shows no other change, that is what is there.
    fn saw(&mut self, path: &Path, now: Version) {
        if self.quiet.get().is_some()
            && let Some(m) = self.seen.as_mut()
        {
            m.put(path.as_os_str(), now);
        }
    }

    /// Within a command, after taking a lock that excludes the writers of
    /// what it read: files are looked at again. (Directories found are
    /// not: imspd makes user directories but never removes them.)
    /// `keep`: files the lock does not cover, whose versions stand.
    pub fn look_again(&mut self, keep: &[&Path]) {
        let seen = self.seen.get_or_insert_default();
        seen.retain(|p, _| keep.iter().any(|k| k.as_os_str() == p));
        self.forget_missing_dirs();
    }

    /// Directories found missing are looked for again (those found stay:
    /// imspd makes user directories but never removes them).
    fn forget_missing_dirs(&mut self) {
        self.dirs.get_mut().retain(|_, found| *found);
    }

    /// Whether `path` is a directory: looked at once a command (a command
    /// asks about its user's directory at every step).
    pub fn is_dir(&self, path: &Path) -> bool {
        if self.seen.is_none() {
            return path.is_dir();
        }
        if let Some(&known) = self.dirs.borrow().get(path.as_os_str()) {
            return known;
        }
        let now = matches!(look(path), Ok(Some((_, true))));
        self.dirs.borrow_mut().put(path.as_os_str(), now);
        now
    }

    /// A directory was made (or removed): look at it again.
    pub fn forget_dir(&self, path: &Path) {
        self.dirs.borrow_mut().remove(path.as_os_str());
    }

    fn unsee(&mut self, path: &Path) {
        if let Some(m) = self.seen.as_mut() {
            m.remove(path.as_os_str());
        }
    }

    /// The version of `path` this command sees (see `seen`).
    fn seen_version(&mut self, path: &Path) -> Result<Version, StoreError> {
        if let Some(v) = self.seen.as_ref().and_then(|m| m.get(path.as_os_str())) {
            return Ok(*v);
        }
        let v = self.version(path)?;
        if let Some(m) = self.seen.as_mut() {
            m.put(path.as_os_str(), v);
        }
        Ok(v)
    }

    fn version(&self, path: &Path) -> Result<Version, StoreError> {
        // A journal this process has open and still linked is the one at
        // its path (journals are unlinked, never renamed), and the file is
        // the version it applies to: the file changes only by a fold, which
        // unlinks the journal after it. (A fold cut short between the two
        // left a file of the same content.) One fstat, not two stats.
        if let Some(st) = self.journals.get(path.as_os_str())
            && let Some((_, base)) = st.header
            && let Some(m) = st.linked()
        {
            return Ok(Version {
                main: base,
                journal: Some((m.dev, m.ino, m.size)),
            });
        }
        let main = stat(path)?;
        let journal = match self.may_have_journal(path) {
            true => stat(&journal_path(path))?.map(|m| (m.dev, m.ino, m.size)),
            false => None,
        };
        Ok(Version { main, journal })
    }

    /// The version of `path` from what was just read of it (the caller
    /// holds its lock and has loaded its journal), with no further stat.
    fn version_known(&self, path: &Path, main: Option<Stamp>) -> Version {
        Version {
            main,
            journal: self
                .journals
                .get(path.as_os_str())
                .map(|st| (st.id.0, st.id.1, st.seen)),
        }
    }

    fn may_have_journal(&self, path: &Path) -> bool {
        match &self.journal_dir {
            Some(dir) => under(path, dir),
            None => true,
        }
    }

    /// Whether `path` exists, or has a journal (its changes since it was
    /// last written may all be there).
    pub fn exists(&self, path: &Path) -> bool {
        let there = |p: &Path| matches!(stat(p), Ok(Some(_)));
        there(path) || there(&journal_path(path))
    }

    fn journaled(&self, path: &Path) -> bool {
        self.journaling && self.journal_dir.as_deref().is_some_and(|d| under(path, d))
    }

    /// The records of `path` (empty when the file does not exist), from the
    /// cache when neither it nor its journal changed since it was parsed.
    pub fn read(&mut self, path: &Path, order: Order) -> Result<Arc<Records>, StoreError> {
        let now = self.seen_version(path)?;
        if let Some((v, recs)) = self.cache.get(path.as_os_str())
            && *v == now
            && recs.order == order
        {
            return Ok(recs.clone());
        }
        if now.main.is_none() && now.journal.is_none() {
            let recs = Arc::new(Records::new(order));
            self.cache_put(path, now, recs.clone());
            return Ok(recs);
        }
        let _lock = Lock::take(path, false)?;
        self.load(path, order)
    }

    /// The bytes of `path` as the file would be with its journal folded in
    /// (empty when it does not exist), from the cache while unchanged: for
    /// a scan of every record (a search) without building parsed records.
    pub fn read_raw(&mut self, path: &Path, order: Order) -> Result<Arc<Vec<u8>>, StoreError> {
        let now = self.seen_version(path)?;
        if let Some((v, bytes)) = self.raw.get(path.as_os_str())
            && *v == now
        {
            return Ok(bytes.clone());
        }
        let _lock = Lock::take(path, false)?;
        let now = self.version(path)?;
        let (main, bytes) = self.load_main(path)?;
        let bytes = match self.load_journal(path, main)? {
            JournalView::Valid { overlay, .. } if !overlay.is_empty() => {
                Arc::new(self.load(path, order)?.encode())
            }
            _ => bytes,
        };
        self.raw
            .insert(path.as_os_str().to_owned(), (now, bytes.clone()));
        Ok(bytes)
    }

    /// The bytes of the file itself (the caller holds its lock).
    fn load_main(&mut self, path: &Path) -> Result<(Option<Stamp>, Arc<Vec<u8>>), StoreError> {
        let (stamp, bytes) = match File::open(path) {
            Ok(mut f) => {
                let m = f.metadata().map_err(|e| StoreError::io(path, e))?;
                let stamp = Some(stamp_of(&m));
                if let Some((s, bytes)) = self.mains.get(path.as_os_str())
                    && *s == stamp
                {
                    return Ok((stamp, bytes.clone()));
                }
                let mut bytes = Vec::with_capacity(m.len() as usize);
                f.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(path, e))?;
                (stamp, bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Vec::new()),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        let bytes = Arc::new(bytes);
        self.mains
            .insert(path.as_os_str().to_owned(), (stamp, bytes.clone()));
        Ok((stamp, bytes))
    }

    /// The journal of `path` for the file version `main` (the caller holds
    /// the file's lock): read whole the first time, then only what was
    /// appended since.
    fn load_journal(
        &mut self,
        path: &Path,
        main: Option<Stamp>,
    ) -> Result<JournalView, StoreError> {
        if !self.may_have_journal(path) {
            return Ok(JournalView::None);
        }
        let jp = journal_path(path);
        let linked = self
            .journals
            .get(path.as_os_str())
            .and_then(|st| st.linked())
            .map(|m| (m.dev, m.ino, m.size));
        let look = match linked {
            Some(m) => Some(m),
            None => stat(&jp)?.map(|m| (m.dev, m.ino, m.size)),
        };
        let Some((dev, ino, size)) = look else {
            self.journals.remove(path.as_os_str());
            return Ok(JournalView::None);
        };
        let id = (dev, ino);
        if let Some(st) = self.journals.get(path.as_os_str())
            && st.id == id
            && st.seen == size
            && st.header.is_some_and(|h| h.1 == main)
        {
            // Unchanged since it was read.
            return Ok(JournalView::Valid {
                overlay: st.overlay.clone(),
                torn: st.valid < st.seen,
            });
        }
        // Only what was appended since, through the descriptor kept open.
        if let Some(st) = self.journals.get_mut(path.as_os_str())
            && st.id == id
            && size > st.seen
            && st.header.is_some_and(|h| h.1 == main)
            && st.reader.is_some()
        {
            st.take_in_kept(size, &jp)?;
            return Ok(JournalView::Valid {
                overlay: st.overlay.clone(),
                torn: st.valid < st.seen,
            });
        }
        let mut f = match File::open(&jp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.journals.remove(path.as_os_str());
                return Ok(JournalView::None);
            }
            Err(e) => return Err(StoreError::io(&jp, e)),
        };
        let m = f.metadata().map_err(|e| StoreError::io(&jp, e))?;
        let id = (m.dev(), m.ino());
        // What was read is reused while the journal only grew: the same
        // inode, at least as long, and for the same version of the file
        // (an inode of a removed journal may be reused by a new one, which
        // is for another version: the one the removal's fold wrote).
        let st = match self.journals.remove(path.as_os_str()) {
            Some(mut st)
                if st.id == id && m.size() >= st.seen && st.header.is_some_and(|h| h.1 == main) =>
            {
                if m.size() > st.seen && st.header.is_some() {
                    st.take_in(&f, m.size(), &jp)?;
                }
                st
            }
            _ => {
                let mut bytes = Vec::with_capacity(m.len() as usize);
                f.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(&jp, e))?;
                let header = journal::parse_header(&bytes);
                let mut overlay = Overlay::new(header.map_or(Order::Bytes, |h| h.0));
                let mut valid = 0;
                if let Some((_, _, start)) = header {
                    let n = journal::parse_changes(&bytes[start..], |ops| {
                        ops.into_iter().for_each(|op| overlay.push(op))
                    });
                    valid = (start + n) as u64;
                }
                JournalState {
                    id,
                    seen: bytes.len() as u64,
                    valid,
                    header: header.map(|(o, b, _)| (o, b)),
                    overlay: Arc::new(overlay),
                    writer: None,
                    reader: None,
                    pending: None,
                    own_end: None,
                }
            }
        };
        let mut st = st;
        // Sessions keep it (a process walking every file does not).
        if self.seen.is_some() && st.reader.is_none() {
            st.reader = Some(f);
        }
        let view = match st.header {
            Some((_, base)) if base == main => JournalView::Valid {
                overlay: st.overlay.clone(),
                torn: st.valid < st.seen,
            },
            _ => JournalView::Obsolete,
        };
        self.journals.insert(path.as_os_str().to_owned(), st);
        Ok(view)
    }

    /// Read and parse `path`, its journal applied (the caller holds its
    /// lock).
    fn load(&mut self, path: &Path, order: Order) -> Result<Arc<Records>, StoreError> {
        let now = self.version(path)?;
        self.load_with(path, order, now)
    }

    /// [`Files::load`] of the version `now` of `path`, known to the caller.
    fn load_with(
        &mut self,
        path: &Path,
        order: Order,
        now: Version,
    ) -> Result<Arc<Records>, StoreError> {
        if let Some((v, recs)) = self.cache.get(path.as_os_str())
            && *v == now
            && recs.order == order
        {
            return Ok(recs.clone());
        }
        let (main, bytes) = self.load_main(path)?;
        let (mut recs, damaged) = Records::parse(order, &bytes);
        for n in damaged {
            crate::log_warn!("{}: line {n} is damaged; skipped", path.display());
        }
        if let JournalView::Valid { overlay, .. } = self.load_journal(path, main)? {
            overlay.apply(&mut recs);
        }
        let recs = Arc::new(recs);
        self.cache_put(path, now, recs.clone());
        Ok(recs)
    }

    /// Before a write (the caller holds the exclusive lock): remove an
    /// obsolete journal, and fold one that ends in a change cut short (so
    /// appends follow whole changes) or that this write will not extend.
    /// Returns the version of the file now; its journal's state is then
    /// what this process knows of it.
    fn settle(
        &mut self,
        path: &Path,
        order: Order,
        journaling: bool,
    ) -> Result<Option<Stamp>, StoreError> {
        let main = stat(path)?;
        match self.load_journal(path, main)? {
            JournalView::None => Ok(main),
            JournalView::Obsolete => {
                remove_if_there(&journal_path(path))?;
                self.journals.remove(path.as_os_str());
                Ok(main)
            }
            JournalView::Valid { torn, .. } if torn || !journaling => {
                self.fold_locked(path, order).map(Some)
            }
            JournalView::Valid { .. } => Ok(main),
        }
    }

    /// The changes in the journal of `path` for the file version `main`,
    /// as [`Files::settle`] just read them.
    fn overlay_known(&self, path: &Path, main: Option<Stamp>) -> Option<Arc<Overlay>> {
        self.journals
            .get(path.as_os_str())
            .filter(|st| st.header.is_some_and(|h| h.1 == main))
            .map(|st| st.overlay.clone())
    }

    /// Write the file with its journal applied, then remove the journal
    /// (the caller holds the exclusive lock). Should the removal be lost,
    /// the journal names the file it applied to, not this new one, and is
    /// ignored.
    fn fold_locked(&mut self, path: &Path, order: Order) -> Result<Stamp, StoreError> {
        self.unsee(path);
        let recs = self.load(path, order)?;
        let bytes = recs.encode();
        let m = write_atomic(path, &bytes, self.fsync)?;
        remove_if_there(&journal_path(path))?;
        self.journals.remove(path.as_os_str());
        self.appended.remove(path.as_os_str());
        let stamp = Some(stamp_of(&m));
        let now = Version {
            main: stamp,
            journal: None,
        };
        let bytes = Arc::new(bytes);
        self.cache_put(path, now, recs);
        self.saw(path, now);
        self.raw
            .insert(path.as_os_str().to_owned(), (now, bytes.clone()));
        self.mains
            .insert(path.as_os_str().to_owned(), (stamp, bytes));
        self.sorted
            .insert(path.as_os_str().to_owned(), (stamp, true));
        Ok(stamp_of(&m))
    }

    /// Append one change to the journal of `path` (the caller holds the
    /// exclusive lock and has settled the journal), starting the journal
    /// if there is none; it is on disk (fsynced, unless fsync is off)
    /// before this returns. A journal grown past its bound is folded.
    /// Returns the version of the file and journal now, `None` if folded.
    fn append(
        &mut self,
        path: &Path,
        order: Order,
        main: Option<Stamp>,
        ops: Vec<Op>,
    ) -> Result<Option<Version>, StoreError> {
        // The journal as settle() left it: whole, for this version of the
        // file, `seen` bytes long (nobody else appends while we hold the
        // lock); or none. Its state is changed in place (no new key at
        // every change).
        let key = path.as_os_str();
        let existing = self
            .journals
            .get(key)
            .is_some_and(|st| st.header.is_some_and(|h| h.1 == main) && st.valid == st.seen);
        // (Reading it took in any pending changes.)
        debug_assert!(
            !existing
                || self
                    .journals
                    .get(key)
                    .is_some_and(|st| st.pending.is_none())
        );
        let mut bytes = match existing {
            true => Vec::new(),
            false => journal::header(order, main),
        };
        journal::encode_into(&ops, &mut bytes);
        if !existing {
            let jp = journal_path(path);
            // O_APPEND: this descriptor is kept for later appends, and
            // other processes append to the file meanwhile; writes at its
            // own offset would overwrite theirs.
            self.journals.remove(key);
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&jp)
                .map_err(|e| StoreError::io(&jp, e))?;
            // Nothing of a journal settle() found unusable is kept.
            f.set_len(0).map_err(|e| StoreError::io(&jp, e))?;
            let m = f.metadata().map_err(|e| StoreError::io(&jp, e))?;
            let st = JournalState {
                id: (m.dev(), m.ino()),
                seen: 0,
                valid: 0,
                header: Some((order, main)),
                overlay: Arc::new(Overlay::new(order)),
                writer: Some(f),
                reader: None,
                pending: None,
                own_end: None,
            };
            self.journals.insert(key.to_owned(), st);
        }
        let fsync = self.fsync;
        let st = self.journals.get_mut(key).expect("kept or made above");
        let written = (|| {
            if st.writer.is_none() {
                st.open_writer(&journal_path(path))?;
            }
            let created = st.seen == 0;
            let f = st.writer.as_mut().expect("opened above");
            let io = |e| StoreError::io(&journal_path(path), e);
            f.write_all(&bytes).map_err(io)?;
            if fsync {
                f.sync_data().map_err(io)?;
                if created {
                    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
                }
            }
            Ok::<_, StoreError>(())
        })();
        if let Err(e) = written {
            // What this process knows of it is read again from the disk.
            self.journals.remove(key);
            return Err(e);
        }
        let overlay = Arc::make_mut(&mut st.overlay);
        ops.into_iter().for_each(|op| overlay.push(op));
        st.seen += bytes.len() as u64;
        st.valid = st.seen;
        st.own_end = Some(st.seen);
        let (id, size) = (st.id, st.seen);
        if !self.appended.contains_key(key) {
            self.appended.insert(key.to_owned(), order);
        }
        self.raw.remove(key);
        if size > fold_threshold(main.map_or(0, |s| s.size)) {
            self.fold_locked(path, order)?;
            return Ok(None);
        }
        Ok(Some(Version {
            main,
            journal: Some((id.0, id.1, size)),
        }))
    }

    /// Fold the journals this process appended to into their files: at
    /// the end of a session, so that the files it leaves are 1.8's. A
    /// journal another process appended to after this one's last change is
    /// left to that one (the session that made a journal's last change
    /// folds it as it ends): a fold takes the file's lock exclusive, and
    /// would stop the writers still at work to fold what they will add
    /// to. One already folded since (unlinked) holds nothing of this
    /// process's.
    pub fn fold_appended(&mut self) {
        for (path, order) in std::mem::take(&mut self.appended) {
            if let Some(st) = self.journals.get(&path)
                && let Some(end) = st.own_end
            {
                match st.linked() {
                    None => continue,
                    Some(m) if m.size > end => continue,
                    Some(_) => {}
                }
            }
            let path = PathBuf::from(path);
            let _counted = self.counting();
            let done = Lock::take(&path, true).and_then(|_lock| self.settle(&path, order, false));
            if let Err(e) = done {
                crate::log_error!("folding the journal of {}: {e}", path.display());
            }
        }
    }

    /// Fold the journal of `path` into it, if it has one (in the order its
    /// header names); an obsolete journal is removed. Returns whether there
    /// was a journal.
    pub fn fold(&mut self, path: &Path) -> Result<bool, StoreError> {
        let _lock = Lock::take(path, true)?;
        let _counted = self.counting();
        self.fold_locked_any(path)
    }

    /// [`Files::fold`] for a caller that holds the exclusive lock.
    fn fold_locked_any(&mut self, path: &Path) -> Result<bool, StoreError> {
        let jp = journal_path(path);
        let head = match File::open(&jp) {
            Ok(f) => {
                let mut line = Vec::new();
                io::BufReader::new(f)
                    .take(4096)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| StoreError::io(&jp, e))?;
                journal::parse_header(&line)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(&jp, e)),
        };
        match head {
            Some((order, ..)) => {
                self.settle(path, order, false)?;
            }
            None => {
                remove_if_there(&jp)?;
                self.journals.remove(path.as_os_str());
            }
        }
        Ok(true)
    }

    /// The bytes of the file itself (its version `main` as just looked at,
    /// from the cache when that is it) and whether its lines are in order
    /// (the caller holds its lock).
    fn main_in_order(
        &mut self,
        path: &Path,
        order: Order,
        main: Option<Stamp>,
    ) -> Result<MainInOrder, StoreError> {
        let (stamp, bytes) = match self.mains.get(path.as_os_str()) {
            Some((s, bytes)) if *s == main => (main, bytes.clone()),
            _ => self.load_main(path)?,
        };
        let sorted = match self.sorted.get(path.as_os_str()) {
            Some((s, sorted)) if *s == stamp => *sorted,
            _ => {
                let sorted = lines_in_order(&bytes, order);
                self.sorted
                    .insert(path.as_os_str().to_owned(), (stamp, sorted));
                sorted
            }
        };
        Ok((stamp, bytes, sorted))
    }

    /// Read-modify-write of the records whose keys start with `prefix` (in
    /// the file's order), without parsing or re-encoding the rest of the
    /// file: their lines are found by binary search, `change` gets them as
    /// records (with the journal's changes applied). A journaled file gets
    /// the change appended to its journal; another has the new lines
    /// spliced between the untouched bytes, written as [`Files::update`]
    /// writes (temp file, fsync, rename). `change` must keep every key
    /// within the prefix. A file not in order (edited by hand) takes the
    /// full path, which sorts it.
    pub fn update_prefix<T, E: From<StoreError>>(
        &mut self,
        path: &Path,
        order: Order,
        prefix: &[u8],
        change: impl FnOnce(&mut Records) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let lock = Lock::take(path, true)?;
        let _counted = self.counting();
        self.unsee(path);
        let journaling = self.journaled(path);
        let main = self.settle(path, order, journaling)?;
        let (stamp, bytes, sorted) = self.main_in_order(path, order, main)?;
        if !sorted {
            drop(lock);
            return self.update(path, order, change);
        }
        let (lo, hi) = prefix_range(&bytes, order, prefix);
        let (mut part, _) = Records::parse(order, &bytes[lo..hi]);
        if let Some(overlay) = self.overlay_known(path, stamp) {
            overlay.apply_prefix(prefix, &mut part);
        }
        let before = journaling.then(|| part.clone());
        let (result, write) = change(&mut part)?;
        if !write {
            return Ok(result);
        }
        if part.iter().any(|(k, _)| !has_prefix(order, k, prefix)) {
            return Err(StoreError::Invalid("a change went outside its records".into()).into());
        }
        self.cache.remove(path.as_os_str());
        if let Some(before) = before {
            let ops = journal::diff(order, &before, &part);
            if !ops.is_empty() {
                self.append(path, order, stamp, ops)?;
            }
            return Ok(result);
        }
        let mut new = Vec::with_capacity(bytes.len() + 256);
        new.extend_from_slice(&bytes[..lo]);
        if lo == bytes.len() && lo > 0 && bytes[lo - 1] != b'\n' {
            new.push(b'\n');
        }
        new.extend_from_slice(&part.encode());
        new.extend_from_slice(&bytes[hi..]);
        let m = write_atomic(path, &new, self.fsync)?;
        let stamp = Some(stamp_of(&m));
        let new = Arc::new(new);
        let now = Version {
            main: stamp,
            journal: None,
        };
        self.raw
            .insert(path.as_os_str().to_owned(), (now, new.clone()));
        self.mains.insert(path.as_os_str().to_owned(), (stamp, new));
        self.sorted
            .insert(path.as_os_str().to_owned(), (stamp, true));
        Ok(result)
    }

    /// Append a change that does not depend on what the file holds (sets
    /// and removals of whole records, all starting with `prefix`, which
    /// `change` makes from the records with `prefix` as they are: to spell
    /// keys as stored) to the journal of `path` under the file's shared
    /// lock: writers of one file do not wait for each other. Each append
    /// is one `O_APPEND` write, which the kernel keeps whole and in one
    /// order for every reader; the change starts with a carriage return
    /// and two line ends, so that one cut short before it (its writer
    /// killed, or out of space) is skipped ([`journal::encode_shared`]).
    /// The change is on disk (fsynced, unless fsync is off) before this
    /// returns the records with `prefix` as they are after it (the changes
    /// appended before it applied). Others' changes read meanwhile are
    /// checked whole but kept aside, found by their keys' prefix, until
    /// this process reads the file ([`journal::Pending`]).
    ///
    /// `None` (nothing written) when this does not apply: the file is not
    /// journaled, has no journal for its version yet, ends in a change cut
    /// short, or is not in order; or `prefix` is empty. The caller then takes the exclusive way
    /// ([`Files::update_prefix`]), which starts, mends or folds journals.
    pub fn append_shared(
        &mut self,
        path: &Path,
        order: Order,
        prefix: &[u8],
        change: impl FnOnce(&Records) -> Vec<Op>,
    ) -> Result<Option<Records>, StoreError> {
        if !self.journaled(path) {
            return Ok(None);
        }
        let Some(&mark) = prefix.last() else {
            return Ok(None);
        };
        let lock = Lock::take(path, false)?;
        let _counted = self.counting();
        self.unsee(path);
        let main = stat(path)?;
        // A journal read before, still linked and for this version of the
        // file, is not read again here: what others appended since is read
        // after this change, with it (the view before only spells keys as
        // stored; a spelling missed then shows in the view after).
        let known = self.journals.get(path.as_os_str()).is_some_and(|st| {
            st.valid == st.seen
                && st.header.is_some_and(|h| h.1 == main)
                && st.pending.as_ref().is_none_or(|p| p.answers(order, prefix))
                && st.linked().is_some()
        });
        if !known {
            match self.load_journal(path, main)? {
                JournalView::Valid { torn: false, .. } => {}
                _ => return Ok(None),
            }
        }
        let (stamp, bytes, sorted) = self.main_in_order(path, order, main)?;
        let jp = journal_path(path);
        let Some(st) = self.journals.get_mut(path.as_os_str()) else {
            return Ok(None);
        };
        if !sorted || stamp != main || st.header.is_none_or(|h| h.0 != order) {
            return Ok(None);
        }
        // The journal cannot be replaced while the shared lock is held (a
        // fold takes it exclusive): the path names the inode read.
        st.open_writer(&jp)?;
        if st.reader.is_none() {
            st.reader = Some(File::open(&jp).map_err(|e| StoreError::io(&jp, e))?);
        }
        // The entry as it is: the file's lines for the prefix (the same
        // before and after), what this process took in of the journal,
        // then the changes read since and not taken in.
        let (lo, hi) = prefix_range(&bytes, order, prefix);
        let part = |st: &JournalState| {
            let (mut part, _) = Records::parse(order, &bytes[lo..hi]);
            st.overlay.apply_prefix(prefix, &mut part);
            if let Some(p) = &st.pending {
                p.apply_prefix(prefix, &mut part);
            }
            part
        };
        let ops = change(&part(st));
        if ops.is_empty() {
            return Ok(None);
        }
        let change = journal::encode_shared(&ops);
        let w = st.writer.as_mut().expect("opened above");
        // One write: a short write (which a regular file gives only when
        // out of space) would let another writer's change in between, and
        // is checked for below.
        let n = w.write(&change).map_err(|e| StoreError::io(&jp, e))?;
        if self.fsync {
            w.sync_data().map_err(|e| StoreError::io(&jp, e))?;
        }
        // With O_APPEND the offset is now the end of this change.
        let end = w.stream_position().map_err(|e| StoreError::io(&jp, e))?;
        // What others appended before it, and it: checked whole and kept
        // aside, not taken in (the next read of the file does that).
        let valid = st.valid;
        let pending = st
            .pending
            .get_or_insert_with(|| journal::Pending::new(order, mark, valid));
        // When nothing was appended since the last read, the tail is this
        // change, as written: not read back.
        let own = n == change.len() && end.checked_sub(n as u64) == Some(pending.upto);
        let read_back;
        let tail: &[u8] = match own {
            true => &change,
            false => {
                let mut buf = vec![0; (end - pending.upto) as usize];
                let r = st.reader.as_ref().expect("opened above");
                r.read_exact_at(&mut buf, pending.upto)
                    .map_err(|e| StoreError::io(&jp, e))?;
                read_back = buf;
                &read_back
            }
        };
        let read = pending.take(tail);
        if n != change.len() || pending.upto != end {
            // Not whole: not acknowledged. All is taken in, so that the
            // cut is seen, and the exclusive way mends it.
            st.take_in_kept(end, &jp)?;
            return Err(StoreError::Invalid(format!(
                "{}: a change was not written whole ({read} of {} bytes read)",
                jp.display(),
                tail.len()
            )));
        }
        let part = part(st);
        st.own_end = Some(end);
        if !self.appended.contains_key(path.as_os_str()) {
            self.appended.insert(path.as_os_str().to_owned(), order);
        }
        self.cache.remove(path.as_os_str());
        self.raw.remove(path.as_os_str());
        if end > fold_threshold(main.map_or(0, |s| s.size)) {
            drop(lock);
            let _lock = Lock::take(path, true)?;
            self.settle(path, order, false)?;
        }
        Ok(Some(part))
    }

    /// Read-modify-write `path` under its exclusive lock. `change` returns
    /// `Ok((result, true))` to have the new records written; nothing is
    /// written when it returns an error or `false`. On success the change
    /// is on disk (fsynced, unless fsync is off) before this returns:
    /// appended to the file's journal when it is journaled, else the file
    /// is rewritten.
    pub fn update<T, E: From<StoreError>>(
        &mut self,
        path: &Path,
        order: Order,
        change: impl FnOnce(&mut Records) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let _lock = Lock::take(path, true)?;
        let _counted = self.counting();
        self.unsee(path);
        let journaling = self.journaled(path);
        let main = self.settle(path, order, journaling)?;
        let now = self.version_known(path, main);
        let current = self.load_with(path, order, now)?;
        if journaling {
            let mut recs = (*current).clone();
            let (result, write) = change(&mut recs)?;
            let ops = journal::diff(order, &current, &recs);
            if write && ops.is_empty() && !self.exists(path) {
                // Nothing to journal, but the file is to be: as a rewrite
                // would, make it.
                write_atomic(path, &recs.encode(), self.fsync)?;
                return Ok(result);
            }
            if write && !ops.is_empty() {
                // Folded (`None`): the cache already holds the new file.
                if let Some(now) = self.append(path, order, main, ops)? {
                    self.cache_put(path, now, Arc::new(recs));
                    self.saw(path, now);
                }
            }
            return Ok(result);
        }
        // The cache's reference let go: the records are changed in place
        // when nothing else holds them.
        self.cache.remove(path.as_os_str());
        let mut recs = Arc::try_unwrap(current).unwrap_or_else(|a| (*a).clone());
        let (result, write) = change(&mut recs)?;
        if write {
            let m = write_atomic(path, &recs.encode(), self.fsync)?;
            let now = Version {
                main: Some(stamp_of(&m)),
                journal: None,
            };
            self.cache_put(path, now, Arc::new(recs));
            self.saw(path, now);
        }
        Ok(result)
    }

    /// Cache the records of version `now` of `path` (replacing in place:
    /// no new key at every change).
    fn cache_put(&mut self, path: &Path, now: Version, recs: Arc<Records>) {
        match self.cache.get_mut(path.as_os_str()) {
            Some(slot) => *slot = (now, recs),
            None => {
                self.cache.insert(path.as_os_str().to_owned(), (now, recs));
            }
        }
    }

    /// Remove `path` (with its journal and lock file) under its exclusive
    /// lock.
    pub fn remove(&mut self, path: &Path) -> Result<(), StoreError> {
        {
            let _lock = Lock::take(path, true)?;
            let _counted = self.counting();
            // The journal is folded and unlinked first: cut short after,
            // the file is still whole; and a session holding the journal
            // open takes its file as unchanged only while it is linked.
            self.fold_locked_any(path)?;
            remove_if_there(path)?;
            remove_if_there(&journal_path(path))?;
            self.forget(path);
            // Unlinked while held: a waiter then finds the path no longer
            // names what it locked, and locks afresh (see Lock::take).
            let _ = fs::remove_file(lock_path(path));
        }
        if self.fsync {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }

    fn forget(&mut self, path: &Path) {
        self.unsee(path);
        self.cache.remove(path.as_os_str());
        self.raw.remove(path.as_os_str());
        self.mains.remove(path.as_os_str());
        self.journals.remove(path.as_os_str());
        self.appended.remove(path.as_os_str());
    }

    /// Rename `from` to `to` (both under their exclusive locks), the
    /// journal of `from` folded in first. Never replaces: a `to` that
    /// exists (or has a journal) is refused, whoever made it meanwhile.
    pub fn rename(&mut self, from: &Path, to: &Path, order: Order) -> Result<(), StoreError> {
        {
            let _a = Lock::take(from, true)?;
            let _b = Lock::take(to, true)?;
            let _counted = self.counting();
            if self.exists(to) {
                return Err(StoreError::Invalid(format!(
                    "{} already exists",
                    to.file_name().unwrap_or_default().to_string_lossy()
                )));
            }
            self.settle(from, order, false)?;
            match fs::rename(from, to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(from, e)),
            }
            self.forget(from);
            self.forget(to);
            let _ = fs::remove_file(lock_path(from));
        }
        if self.fsync {
            sync_dir(to.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    }
}

/// Replace `path` with `bytes`: a temp file in the same directory (mode
/// 0600), fsynced, renamed over `path`, and the directory fsynced; with
/// `fsync` off only the rename is kept. The caller holds the lock.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<fs::Metadata, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp.")
        .tempfile_in(dir)
        .map_err(|e| StoreError::io(dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    // File times come from a coarse clock (a tick of milliseconds) and
    // renames let inode numbers be reused, so two same-sized writes in one
    // tick could look alike to the cache: stamp the file with the precise
    // time instead.
    tmp.as_file()
        .set_modified(std::time::SystemTime::now())
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    if fsync {
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io(tmp.path(), e))?;
    }
    let file = tmp
        .persist(path)
        .map_err(|e| StoreError::io(path, e.error))?;
    if fsync {
        sync_dir(dir)?;
    }
    file.metadata().map_err(|e| StoreError::io(path, e))
}

/// Remove temp files (`.tmp.*`) older than `age` from `dir`: what a
/// process killed in the middle of a write leaves behind. A fresh one may
/// belong to a write under way and is kept. Returns how many went.
pub fn sweep_temp_files(dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut n = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".tmp.") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d >= age));
        if old && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file removed (its lock file with it) while another waits for its
    /// lock: the waiter and a newcomer, which locks a new lock file, must
    /// still exclude each other.
    #[test]
    fn a_lock_file_removed_while_waited_for_still_excludes() {
        use std::sync::atomic::{AtomicUsize, Ordering as AO};
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(dir.path().join("abook.fred.x"));
        let inside = Arc::new(AtomicUsize::new(0));
        let critical = |inside: &AtomicUsize| {
            assert_eq!(inside.fetch_add(1, AO::SeqCst), 0, "two holders at once");
            std::thread::sleep(std::time::Duration::from_millis(100));
            inside.fetch_sub(1, AO::SeqCst);
        };
        let mut files = Files {
            fsync: false,
            ..Default::default()
        };
        fs::write(p.as_ref(), b"").unwrap();
        let first = Lock::take(&p, true).unwrap();
        let waiter = {
            let (p, inside) = (p.clone(), inside.clone());
            std::thread::spawn(move || {
                let _l = Lock::take(&p, true).unwrap();
                critical(&inside);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
        // What Files::remove does, the waiter already blocked on the old
        // lock file (it may also win the lock first: then remove waits).
        files.remove(&p).unwrap();
        let _l = Lock::take(&p, true).unwrap();
        critical(&inside);
        drop(_l);
        waiter.join().unwrap();
    }

    #[test]
    fn ident_agrees_with_the_whole_stat() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"twelve bytes").unwrap();
        fs::hard_link(&p, dir.path().join("g")).unwrap();
        let f = File::open(&p).unwrap();
        let (i, m) = (ident(&f).unwrap(), fs::metadata(&p).unwrap());
        assert_eq!((i.dev, i.ino, i.size, i.nlink), (m.dev(), m.ino(), 12, 2));
        fs::remove_file(&p).unwrap();
        fs::remove_file(dir.path().join("g")).unwrap();
        assert_eq!(ident(&f).unwrap().nlink, 0);
    }

    #[test]
    fn a_forked_child_does_not_lock_through_its_parents_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("options");
        // Kept open by this thread, and held.
        let held = Lock::take(&p, true).unwrap();
        // SAFETY: the child only opens the lock file, tries it and exits.
        match unsafe { libc::fork() } {
            0 => {
                // The parent's open file would be granted the lock it holds.
                let ok = Lock::open(&p).is_ok_and(|f| f.try_lock_exclusive().is_err());
                // SAFETY: ending the child without running the parent's
                // destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            -1 => panic!("fork: {}", io::Error::last_os_error()),
            pid => {
                let mut status = 0;
                // SAFETY: waiting for the child just forked.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the child locked a file its parent holds"
                );
            }
        }
        drop(held);
        // This process still keeps its own.
        assert!(Lock::take(&p, false).is_ok());
    }

    #[test]
    fn update_writes_atomically_and_cache_follows_disk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("options");
        let mut files = Files::default();
        assert!(files.read(&p, Order::CaseInsensitive).unwrap().is_empty());
        files
            .update::<_, StoreError>(&p, Order::CaseInsensitive, |r| {
                r.insert(b"b.opt".to_vec(), b"W two".to_vec());
                r.insert(b"A.opt".to_vec(), b"W one".to_vec());
                Ok(((), true))
            })
            .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"A.opt W one\nb.opt W two\n");
        assert!(lock_path(&p).exists());
        // An edit by hand is seen on the next read.
        fs::write(&p, b"a.opt W edited\n").unwrap();
        let r = files.read(&p, Order::CaseInsensitive).unwrap();
        assert_eq!(r.get(b"A.OPT"), Some(&b"W edited"[..]));
        // An error in the change writes nothing.
        let e = files.update::<(), StoreError>(&p, Order::CaseInsensitive, |r| {
            r.insert(b"z".to_vec(), b"W z".to_vec());
            Err(StoreError::Invalid("no".into()))
        });
        assert!(e.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"a.opt W edited\n");
    }

    /// The change counter (`imspd.generation`): a process that finds it
    /// where it left it reads what it found before, without looking; a
    /// change another process counted is seen by its next command,
    /// journaled or not; one made behind the counter's back (by hand) once
    /// [`QUIET_FOR`] has passed.
    #[test]
    fn a_still_counter_spares_the_looks_and_a_counted_change_ends_it() {
        let order = Order::CaseInsensitive;
        for journaling in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("user")).unwrap();
            let p = dir.path().join("user/options");
            let (mut a, mut b) = (Files::under(dir.path()), Files::under(dir.path()));
            for f in [&mut a, &mut b] {
                f.journaling = journaling;
                f.fsync = false;
            }
            let set = |f: &mut Files, v: &[u8]| {
                f.new_command();
                f.update::<_, StoreError>(&p, order, |r| {
                    r.set(b"x", v);
                    Ok(((), true))
                })
                .unwrap()
            };
            let get = |f: &mut Files| {
                f.new_command();
                f.read(&p, order).unwrap().get(b"x").map(<[u8]>::to_vec)
            };
            set(&mut a, b"W 1");
            assert_eq!(get(&mut a), Some(b"W 1".to_vec()));
            set(&mut b, b"W 2");
            assert_eq!(get(&mut a), Some(b"W 2".to_vec()), "journal {journaling}");
            // Its own change leaves a still: it reads it without a look.
            set(&mut a, b"W 3");
            assert_eq!(get(&mut b), Some(b"W 3".to_vec()), "journal {journaling}");
            assert_eq!(get(&mut a), Some(b"W 3".to_vec()));
            // By hand (the global options, never journaled): a, still,
            // does not look, until a second has passed.
            let global = dir.path().join("options");
            let get_global = |f: &mut Files| {
                f.new_command();
                f.read(&global, order)
                    .unwrap()
                    .get(b"x")
                    .map(<[u8]>::to_vec)
            };
            fs::write(&global, b"x R before\n").unwrap();
            set(&mut b, b"W 4");
            assert_eq!(get_global(&mut a), Some(b"R before".to_vec()));
            assert_eq!(get(&mut a), Some(b"W 4".to_vec()));
            fs::write(dir.path().join("new"), b"x R by hand\n").unwrap();
            fs::rename(dir.path().join("new"), &global).unwrap();
            assert_eq!(get_global(&mut a), Some(b"R before".to_vec()));
            std::thread::sleep(QUIET_FOR + std::time::Duration::from_millis(50));
            assert_eq!(get_global(&mut a), Some(b"R by hand".to_vec()));
        }
    }

    /// Two processes' caches: each same-sized rewrite by one must be seen
    /// by the other at once, however quickly they follow each other.
    #[test]
    fn same_sized_rewrites_in_quick_succession_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abooks");
        let (mut a, mut b) = (Files::default(), Files::default());
        a.fsync = false;
        b.fsync = false;
        for i in 0..2000u32 {
            // Two writes between reads: renames hand the first inode back.
            for half in 0..2 {
                let v = format!("{i:04}{half}").into_bytes();
                b.update::<_, StoreError>(&p, Order::Bytes, |r| {
                    r.insert(b"k".to_vec(), v);
                    Ok(((), true))
                })
                .unwrap();
            }
            let want = format!("{i:04}1").into_bytes();
            assert_eq!(
                a.read(&p, Order::Bytes).unwrap().get(b"k"),
                Some(&want[..]),
                "write {i}"
            );
        }
    }

    #[test]
    fn stale_temp_files_are_swept_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(".tmp.old");
        let fresh = dir.path().join(".tmp.fresh");
        let data = dir.path().join("options");
        for p in [&old, &fresh, &data] {
            fs::write(p, b"x").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        assert_eq!(
            sweep_temp_files(dir.path(), std::time::Duration::from_secs(60)),
            1
        );
        assert!(!old.exists() && fresh.exists() && data.exists());
    }

    /// A copy of records changed again and again holds only what they
    /// hold now, and the same records.
    #[test]
    fn a_copy_leaves_replaced_values_behind() {
        let mut r = Records::new(Order::CaseInsensitive);
        r.insert(b"other".to_vec(), b"x".to_vec());
        for i in 0..2000 {
            r.insert(b"Key".to_vec(), format!("value {i}").into_bytes());
        }
        assert!(r.arena.len() > 20_000);
        let copy = r.clone();
        assert!(copy.arena.len() < 64, "{}", copy.arena.len());
        assert_eq!(copy.garbage, 0);
        assert_eq!(
            copy.iter().collect::<Vec<_>>(),
            r.iter().collect::<Vec<_>>()
        );
        assert_eq!(copy.get(b"key"), Some(&b"value 1999"[..]));
    }

    /// The arena against a plain map, through enough churn to be compacted.
    #[test]
    fn records_behave_as_a_sorted_map() {
        let mut model = std::collections::BTreeMap::new();
        let mut r = Records::new(Order::Bytes);
        let mut x: u64 = 7;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = format!("key{}", (x >> 40) % 300).into_bytes();
            let v = vec![b'v'; ((x >> 20) % 600) as usize];
            match (x >> 60) % 4 {
                0 | 1 => assert_eq!(r.insert(k.clone(), v.clone()), model.insert(k, v)),
                2 => assert_eq!(r.remove(&k), model.remove(&k)),
                _ if step % 500 == 0 => {
                    let n = r.retain(|k, _| k.ends_with(b"7"));
                    let before = model.len();
                    model.retain(|k: &Vec<u8>, _| k.ends_with(b"7"));
                    assert_eq!(n, before - model.len());
                }
                _ => assert_eq!(r.get(&k), model.get(&k).map(|v| &v[..])),
            }
        }
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            r.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
        assert_eq!(got, want);
        assert!(r.garbage * 2 <= r.arena.len() || r.garbage < 64 * 1024);
        // What it encodes parses back the same.
        let (again, damaged) = Records::parse(Order::Bytes, &r.encode());
        assert!(damaged.is_empty());
        assert!(again.iter().eq(r.iter()));
    }

    /// Entry updates by splicing agree with full rewrites, byte for byte.
    #[test]
    fn prefix_updates_splice_what_a_full_rewrite_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut files = Files {
            fsync: false,
            ..Files::default()
        };
        let mut x: u64 = 11;
        for _ in 0..1500 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let name = format!(
                "{} {}",
                ["ann", "Bob", "bob b", "Zed", "a-b", "a b", "é"][(x >> 33) as usize % 7],
                (x >> 40) % 5
            );
            let mut prefix = name.clone().into_bytes();
            prefix.push(b'"');
            let field = ["", "email", "Phone", "notes"][(x >> 50) as usize % 4];
            let remove = (x >> 60).is_multiple_of(3);
            let value = format!("v{}\nline \\ {}", x % 97, x % 13).into_bytes();
            let change = |r: &mut Records| -> Result<((), bool), StoreError> {
                let mut key = prefix.clone();
                key.extend_from_slice(field.as_bytes());
                if remove {
                    r.retain(|k, _| !has_prefix(Order::CaseInsensitive, k, &prefix));
                } else {
                    r.insert(key, value.clone());
                }
                Ok(((), true))
            };
            files.update(&a, Order::CaseInsensitive, change).unwrap();
            files
                .update_prefix(&b, Order::CaseInsensitive, &prefix, change)
                .unwrap();
            assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        }
        // A file out of order (edited by hand) is sorted by the full path.
        fs::write(&b, b"z\" \na\" \n").unwrap();
        files
            .update_prefix::<_, StoreError>(&b, Order::CaseInsensitive, b"m\"", |r| {
                r.insert(b"m\"".to_vec(), Vec::new());
                Ok(((), true))
            })
            .unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"a\" \nm\" \nz\" \n");
    }

    #[test]
    fn damaged_lines_are_skipped_and_order_restored() {
        let (r, bad) = Records::parse(Order::Bytes, b"b 2\ngarbage\na 1\n\nb 3\n");
        assert_eq!(bad, vec![2]);
        let all: Vec<_> = r.iter().collect();
        assert_eq!(all, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"3"[..])]);
    }

    #[test]
    fn prefix_ranges() {
        let (r, _) = Records::parse(
            Order::CaseInsensitive,
            b"Barney\\sRubble\" \nBarney\\sRubble\"email b@b\nbetty\" \nbetty\"email x\n",
        );
        let keys: Vec<_> = r
            .with_prefix(b"barney rubble\"")
            .map(|(k, _)| k.to_vec())
            .collect();
        assert_eq!(
            keys,
            vec![
                b"Barney Rubble\"".to_vec(),
                b"Barney Rubble\"email".to_vec()
            ]
        );
    }

    /// Several processes' views (here: `Files` values) of one journaled
    /// file, interleaving changes, prefix changes, folds and reads: every
    /// read agrees with a model of the changes, and what is on disk after
    /// the last fold is the model.
    #[test]
    fn journaled_views_agree_with_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("user").join("abook.x");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let order = Order::CaseInsensitive;
        let mut views: Vec<Files> = (0..3)
            .map(|_| Files {
                fsync: false,
                journaling: true,
                ..Files::under(dir.path())
            })
            .collect();
        let mut model: std::collections::BTreeMap<String, String> = Default::default();
        let mut rng: u64 = 7;
        let mut next = |n: u64| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            (rng >> 33) % n
        };
        for step in 0..3000 {
            let v = next(3) as usize;
            let key = format!("e{}\"f{}", next(20), next(3));
            let value = format!("v{step}{}", "x".repeat(next(3000) as usize));
            match next(8) {
                0 | 1 => {
                    let (k, val) = (key.clone(), value.clone());
                    views[v]
                        .update::<_, StoreError>(&p, order, |r| {
                            r.insert(k.into_bytes(), val.into_bytes());
                            Ok(((), true))
                        })
                        .unwrap();
                    model.insert(key, value);
                }
                2 => {
                    let prefix = key.split('"').next().unwrap().to_string() + "\"";
                    views[v]
                        .update_prefix::<_, StoreError>(&p, order, prefix.as_bytes(), |r| {
                            let n = r.len();
                            r.retain(|_, _| false);
                            Ok(((), n > 0))
                        })
                        .unwrap();
                    model.retain(|k, _| !k.starts_with(&prefix));
                }
                3 => {
                    let (k, val) = (key.clone(), value.clone());
                    let prefix = key.split('"').next().unwrap().to_string() + "\"";
                    views[v]
                        .update_prefix::<_, StoreError>(&p, order, prefix.as_bytes(), |r| {
                            r.insert(k.into_bytes(), val.into_bytes());
                            Ok(((), true))
                        })
                        .unwrap();
                    model.insert(key, value);
                }
                4 => views[v].fold_appended(),
                5 | 6 => {
                    // Beside the others, under the shared lock: one field
                    // set, another removed; the entry is answered as it is.
                    let prefix = key.split('"').next().unwrap().to_string() + "\"";
                    let gone = format!("{prefix}f{}", next(3));
                    let ops = match gone == key {
                        true => vec![Op::Set(
                            key.clone().into_bytes(),
                            value.clone().into_bytes(),
                        )],
                        false => vec![
                            Op::Set(key.clone().into_bytes(), value.clone().into_bytes()),
                            Op::Remove(gone.clone().into_bytes()),
                        ],
                    };
                    let part = views[v]
                        .append_shared(&p, order, prefix.as_bytes(), |_| ops)
                        .unwrap();
                    if let Some(part) = &part {
                        if gone != key {
                            model.remove(&gone);
                        }
                        model.insert(key, value);
                        let got: Vec<(&[u8], &[u8])> = part.iter().collect();
                        let want: Vec<(&[u8], &[u8])> = model
                            .iter()
                            .filter(|(k, _)| k.starts_with(&prefix))
                            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                            .collect();
                        assert_eq!(got, want, "step {step}");
                    }
                }
                _ => {}
            }
            if next(4) > 0 {
                // Reads now and then: changes pend between them.
                continue;
            }
            let got: Vec<(String, String)> = views[next(3) as usize]
                .read(&p, order)
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> =
                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(got, want, "step {step}");
        }
        for v in &mut views {
            v.fold_appended();
        }
        assert!(!journal_path(&p).exists());
        let (recs, damaged) = Records::parse(order, &fs::read(&p).unwrap());
        assert!(damaged.is_empty());
        assert_eq!(recs.len(), model.len());
        for (k, v) in &model {
            assert_eq!(recs.get(k.as_bytes()), Some(v.as_bytes()));
        }
    }
}
