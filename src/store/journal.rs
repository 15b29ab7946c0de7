//! The journal of a database file: the changes made since the file was
//! last rewritten, appended under the file's lock.
//!
//! A per-user file (`user/NAME/options`, `abook.BOOK`, ...) is not
//! rewritten for every change. The change is appended to
//! `user/NAME/.journal.FILE` (and fsynced, unless `imsp.db.fsync` is off)
//! before the command's OK, and folded into the file (temp file, fsync,
//! rename: the file stays in cyrus-imspd 1.8's format) when the session that
//! made its last change ends, or when the journal grows past half the file
//! (and past 256 KB). A journal left by a killed session is read by every
//! reader and folded by the next writer, `imspd check --repair`, or the
//! daemon at start.
//!
//! ```text
//! imspd-journal 1 ORDER BASE          header: the order of keys (i or b),
//!                                     and the file it applies to
//! +KEY VALUE                          set, escaped as in the file
//! -KEY                                remove
//! .HASH                               end of one change: FNV-1a 64 of its lines
//! CR, then an empty line               before a change appended under the
//!                                     shared lock (see below)
//! ```
//!
//! BASE is `DEV INO SIZE MTIME NSEC` of the file when the journal was
//! started, or `-` when there was none. A journal whose base is not the
//! file as it is now is obsolete: the file was rewritten since (a fold
//! that was cut short before the journal went, or a restore). A change
//! whose end line is missing or wrong was cut short by a crash and never
//! acknowledged: it is ignored, and so is what follows it up to the
//! next empty line.
//!
//! Changes are appended under the file's exclusive lock, except stores of
//! address book entries without a quota, which need no look at what is
//! there and are appended under the shared lock by writers that do not
//! wait for each other. Each append is one `O_APPEND` write: the kernel
//! keeps concurrent ones whole and in one order. Such a change starts with
//! a carriage return and two line ends, which close any change a writer
//! cut short before it (killed, or out of space) and then leave an empty
//! line, so it is read after such a one. The carriage return spoils the
//! end line of a change cut just before its last line end, which the line
//! end alone would complete: a change whose writer answered NO, its write
//! having been cut short, is never read as whole.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::codec;
use super::file::{Order, Records};

/// The journal of `path`: `.journal.` before its file name.
pub fn journal_path(path: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    // On the bytes: this is made at every look at a file.
    let bytes = path.as_os_str().as_bytes();
    let at = memchr::memrchr(b'/', bytes).map_or(0, |i| i + 1);
    let mut p = Vec::with_capacity(bytes.len() + 9);
    p.extend_from_slice(&bytes[..at]);
    p.extend_from_slice(b".journal.");
    p.extend_from_slice(&bytes[at..]);
    PathBuf::from(std::ffi::OsString::from_vec(p))
}

/// The file a journal belongs to.
pub fn main_path(journal: &Path) -> Option<PathBuf> {
    let name = journal.file_name()?.to_str()?;
    let main = name.strip_prefix(".journal.")?;
    (!main.is_empty()).then(|| journal.with_file_name(main))
}

/// What identifies the version of the file a journal applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// One change to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

const MAGIC: &[u8] = b"imspd-journal 1 ";

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The header line of a new journal.
pub fn header(order: Order, base: Option<Base>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(match order {
        Order::CaseInsensitive => b'i',
        Order::Bytes => b'b',
    });
    match base {
        Some(b) => out.extend_from_slice(
            format!(
                " {} {} {} {} {}\n",
                b.dev, b.ino, b.size, b.mtime, b.mtime_nsec
            )
            .as_bytes(),
        ),
        None => out.extend_from_slice(b" -\n"),
    }
    out
}

/// The header of a journal: its order, its base, and where the changes
/// start. `None` when it is not a journal header (or was cut short).
pub fn parse_header(bytes: &[u8]) -> Option<(Order, Option<Base>, usize)> {
    let end = memchr::memchr(b'\n', bytes)?;
    let line = std::str::from_utf8(bytes[..end].strip_prefix(MAGIC)?).ok()?;
    let mut words = line.split(' ');
    let order = match words.next()? {
        "i" => Order::CaseInsensitive,
        "b" => Order::Bytes,
        _ => return None,
    };
    let rest: Vec<&str> = words.collect();
    let base = match rest[..] {
        ["-"] => None,
        [dev, ino, size, mtime, nsec] => Some(Base {
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
            size: size.parse().ok()?,
            mtime: mtime.parse().ok()?,
            mtime_nsec: nsec.parse().ok()?,
        }),
        _ => return None,
    };
    Some((order, base, end + 1))
}

/// One change as journal lines, with its end line.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    encode_after(b"", ops)
}

/// One change as [`encode`] makes it, after a carriage return and two line
/// ends: appended under the shared lock, it may follow a change cut short
/// (mid-line or not), which they close and spoil; readers skip that one
/// and read this.
pub fn encode_shared(ops: &[Op]) -> Vec<u8> {
    encode_after(b"\r\n\n", ops)
}

/// `lead`, then the change's lines and its end line (whose hash is of the
/// change's lines only).
fn encode_after(lead: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lead.len() + encoded_size(ops));
    out.extend_from_slice(lead);
    encode_into(ops, &mut out);
    out
}

/// About the bytes one change takes.
fn encoded_size(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Set(k, v) => k.len() + v.len() + 8,
            Op::Remove(k) => k.len() + 8,
        })
        .sum::<usize>()
        + 20
}

/// Append one change as [`encode`] makes it to `out`.
pub fn encode_into(ops: &[Op], out: &mut Vec<u8>) {
    out.reserve(encoded_size(ops));
    let start = out.len();
    for op in ops {
        match op {
            Op::Set(k, v) => {
                out.push(b'+');
                codec::put_record(k, v, out);
            }
            Op::Remove(k) => {
                out.push(b'-');
                codec::escape_key(k, out);
                out.push(b'\n');
            }
        }
    }
    let hash = fnv1a(&out[start..]);
    // As `format!(".{hash:016x}\n")`, without the formatting machinery
    // (this is at every change).
    out.push(b'.');
    out.extend(
        (0..16)
            .rev()
            .map(|i| b"0123456789abcdef"[(hash >> (i * 4)) as usize & 15]),
    );
    out.push(b'\n');
}

fn parse_op(line: &[u8]) -> Option<Op> {
    let key = op_key(line)?;
    Some(match line[0] {
        // `+KEY VALUE`
        b'+' => Op::Set(
            codec::unescape(key),
            codec::unescape(&line[key.len() + 2..]),
        ),
        _ => Op::Remove(codec::unescape(key)),
    })
}

/// Whether a journal line (without its line end) is one change of one
/// record (`+KEY VALUE` or `-KEY`), looked at without copying: its
/// (escaped) key.
fn op_key(line: &[u8]) -> Option<&[u8]> {
    match line.split_first()? {
        (b'+', rest) => match memchr::memchr(b' ', rest) {
            Some(sp) if sp > 0 => Some(&rest[..sp]),
            _ => None,
        },
        (b'-', rest) if !rest.is_empty() && !rest.contains(&b' ') => Some(rest),
        _ => None,
    }
}

/// The lines of a change as [`scan_changes`] gives it (each line ended).
fn lines_of(change: &[u8]) -> impl Iterator<Item = &[u8]> {
    change
        .strip_suffix(b"\n")
        .unwrap_or(change)
        .split(|&b| b == b'\n')
        .filter(|_| !change.is_empty())
}

/// The complete changes in `bytes` (journal lines after the header), in
/// order, each whole: `each` is given each one's lines (its end line
/// left out). Returns how many bytes they take (up to the end of the last
/// whole change). A change that is cut short or damaged is skipped when
/// an empty line follows it (changes appended under the shared lock start
/// with one: see [`encode_shared`]); else reading stops there.
pub fn scan_changes(bytes: &[u8], mut each: impl FnMut(&[u8])) -> usize {
    let mut done = 0;
    // Where the change being read starts; `None` while skipping a
    // damaged one, up to the next empty line.
    let mut start = Some(0);
    let mut at = 0;
    // Whether the change being read has a line yet.
    let mut any = false;
    while let Some(i) = memchr::memchr(b'\n', &bytes[at..]) {
        let line_at = at;
        let line = &bytes[at..at + i];
        let next = at + i + 1;
        at = next;
        if line.is_empty() {
            any = false;
            start = Some(next);
            continue;
        }
        let Some(from) = start else { continue };
        if let Some(hash) = line.strip_prefix(b".") {
            let ok = parse_hash(hash).is_some_and(|h| h == fnv1a(&bytes[from..line_at]));
            if ok && any {
                each(&bytes[from..line_at]);
                done = next;
                start = Some(next);
                any = false;
                continue;
            }
        } else if op_key(line).is_some() {
            any = true;
            continue;
        }
        any = false;
        start = None;
    }
    done
}

/// The hash of an end line: 16 hex digits (either case).
fn parse_hash(hex: &[u8]) -> Option<u64> {
    if hex.len() != 16 {
        return None;
    }
    hex.iter().try_fold(0u64, |h, &c| {
        let d = (c as char).to_digit(16)?;
        Some(h << 4 | u64::from(d))
    })
}

/// [`scan_changes`], each change's lines parsed.
pub fn parse_changes(bytes: &[u8], mut each: impl FnMut(Vec<Op>)) -> usize {
    scan_changes(bytes, |change| {
        each(lines_of(change).filter_map(parse_op).collect());
    })
}

/// Whole changes read from a journal and not yet taken into an overlay:
/// a session that stores beside other writers need not take in theirs
/// until it reads the file (and most never do: the one that folds the
/// journal takes them all in then). They are kept as their lines, found
/// by the groups of their keys: a key's group is the key up to its first
/// `mark` byte, with it. The changes of the keys that start with a prefix
/// that ends in `mark`, and holds no other, are all in that prefix's
/// group.
#[derive(Debug, Clone)]
pub struct Pending {
    order: Order,
    mark: u8,
    /// The journal's offset where the last of these changes ends.
    pub upto: u64,
    lines: Vec<u8>,
    /// By the hash of a group: the last change with a key in it (an
    /// index into `links`).
    heads: super::file::HashMap<u64, u32>,
    /// A change in a group: where its lines start and end in `lines`, and
    /// the change before it in the group (`u32::MAX`: none).
    links: Vec<(usize, usize, u32)>,
}

/// The hash of a key's group, fed its bytes unescaped (and folded to
/// lower case for `CaseInsensitive`), a key in the journal and a prefix
/// asked about alike.
struct GroupHash {
    order: Order,
    buf: [u8; 64],
    len: usize,
    h: super::file::PathHasher,
}

impl GroupHash {
    fn new(order: Order) -> GroupHash {
        GroupHash {
            order,
            buf: [0; 64],
            len: 0,
            h: Default::default(),
        }
    }

    fn push(&mut self, b: u8) {
        use std::hash::Hasher;
        if self.len == self.buf.len() {
            self.h.write(&self.buf);
            self.len = 0;
        }
        self.buf[self.len] = match self.order {
            Order::Bytes => b,
            Order::CaseInsensitive => b.to_ascii_lowercase(),
        };
        self.len += 1;
    }

    fn finish(mut self) -> u64 {
        use std::hash::Hasher;
        self.h.write(&self.buf[..self.len]);
        self.h.finish()
    }

    /// Of the raw bytes `group`.
    fn of(order: Order, group: &[u8]) -> u64 {
        let mut g = GroupHash::new(order);
        group.iter().for_each(|&b| g.push(b));
        g.finish()
    }

    /// Of the group of the escaped key `key`; `None` when the key has no
    /// `mark`.
    fn of_escaped(order: Order, key: &[u8], mark: u8) -> Option<u64> {
        let mut g = GroupHash::new(order);
        for b in codec::unescaped(key) {
            g.push(b);
            if b == mark {
                return Some(g.finish());
            }
        }
        None
    }
}

impl Pending {
    /// None yet, at the journal offset `at`, for prefixes ending in `mark`.
    pub fn new(order: Order, mark: u8, at: u64) -> Pending {
        Pending {
            order,
            mark,
            upto: at,
            lines: Vec::new(),
            heads: Default::default(),
            links: Vec::new(),
        }
    }

    /// Whether [`Pending::apply_prefix`] finds every change of the keys
    /// that start with `prefix`.
    pub fn answers(&self, order: Order, prefix: &[u8]) -> bool {
        order == self.order
            && prefix
                .split_last()
                .is_some_and(|(&last, rest)| last == self.mark && !rest.contains(&self.mark))
    }

    /// Take the whole changes at the start of `bytes`, the journal from
    /// `upto` on; returns how many bytes they take.
    pub fn take(&mut self, bytes: &[u8]) -> usize {
        let mut groups: Vec<u64> = Vec::new();
        let (order, mark) = (self.order, self.mark);
        let n = scan_changes(bytes, |change| {
            // Each group the change has a key in, once.
            groups.clear();
            for line in lines_of(change) {
                let key = op_key(line).expect("checked by the scan");
                if let Some(hash) = GroupHash::of_escaped(order, key, mark)
                    && !groups.contains(&hash)
                {
                    groups.push(hash);
                }
            }
            if groups.is_empty() {
                return;
            }
            let (start, end) = (self.lines.len(), self.lines.len() + change.len());
            self.lines.extend_from_slice(change);
            for &hash in &groups {
                let link =
                    u32::try_from(self.links.len()).expect("fewer changes than a journal's bytes");
                let before = self.heads.insert(hash, link).unwrap_or(u32::MAX);
                self.links.push((start, end, before));
            }
        });
        self.upto += n as u64;
        n
    }

    /// Apply the changes of the keys that start with `prefix`, in the
    /// order they were made (see [`Pending::answers`]).
    pub fn apply_prefix(&self, prefix: &[u8], recs: &mut Records) {
        debug_assert!(self.answers(self.order, prefix));
        let mut changes = Vec::new();
        let mut at = self.heads.get(&GroupHash::of(self.order, prefix)).copied();
        while let Some(i) = at.filter(|&i| i != u32::MAX) {
            let (start, end, before) = self.links[i as usize];
            changes.push(&self.lines[start..end]);
            at = Some(before);
        }
        let of_prefix = |k: &[u8]| {
            k.len() >= prefix.len() && self.order.cmp(&k[..prefix.len()], prefix) == Ordering::Equal
        };
        for change in changes.into_iter().rev() {
            for line in lines_of(change) {
                match parse_op(line) {
                    Some(Op::Set(k, v)) if of_prefix(&k) => recs.set(&k, &v),
                    Some(Op::Remove(k)) if of_prefix(&k) => {
                        recs.remove(&k);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What the changes of a journal did to one key.
#[derive(Debug, Clone)]
struct Latest {
    /// The record was removed (before it was set again, if it was).
    removed: bool,
    /// The key to insert with.
    key: Vec<u8>,
    /// The value now (`None`: removed).
    value: Option<Vec<u8>>,
}

/// The latest change of each key in a journal, in the file's order.
#[derive(Debug, Clone)]
pub struct Overlay {
    order: Order,
    /// By the key as the order compares it (ASCII lower case for
    /// `CaseInsensitive`).
    map: BTreeMap<Vec<u8>, Latest>,
}

impl Overlay {
    pub fn new(order: Order) -> Overlay {
        Overlay {
            order,
            map: BTreeMap::new(),
        }
    }

    pub fn order(&self) -> Order {
        self.order
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn fold_key(&self, key: &[u8]) -> Vec<u8> {
        match self.order {
            Order::Bytes => key.to_vec(),
            Order::CaseInsensitive => key.to_ascii_lowercase(),
        }
    }

    /// Add one change; applying the overlay then gives what applying every
    /// change in turn would, to the keys' case.
    pub fn push(&mut self, op: Op) {
        match op {
            Op::Set(k, v) => {
                use std::collections::btree_map::Entry;
                // One search of the map, whether the key is there or not.
                match self.map.entry(self.fold_key(&k)) {
                    Entry::Occupied(mut e) => {
                        let l = e.get_mut();
                        // Replacing keeps the case the record has.
                        if l.value.is_none() {
                            l.key = k;
                        }
                        l.value = Some(v);
                    }
                    Entry::Vacant(e) => {
                        e.insert(Latest {
                            removed: false,
                            key: k,
                            value: Some(v),
                        });
                    }
                }
            }
            Op::Remove(k) => {
                let f = self.fold_key(&k);
                let l = Latest {
                    removed: true,
                    key: k,
                    value: None,
                };
                self.map.insert(f, l);
            }
        }
    }

    fn apply_one(recs: &mut Records, l: &Latest) {
        if l.removed {
            recs.remove(&l.key);
        }
        if let Some(v) = &l.value {
            recs.set(&l.key, v);
        }
    }

    /// Apply every change to `recs`: one at a time when they are few, else
    /// merged in one pass (the map's order is the file's: case folded for
    /// `CaseInsensitive`).
    pub fn apply(&self, recs: &mut Records) {
        if self.map.len() < 32 {
            for l in self.map.values() {
                Overlay::apply_one(recs, l);
            }
            return;
        }
        recs.apply_sorted(
            self.map
                .values()
                .map(|l| (&l.key[..], l.removed, l.value.as_deref())),
        );
    }

    /// Apply the changes of keys that start with `prefix`.
    pub fn apply_prefix(&self, prefix: &[u8], recs: &mut Records) {
        let f = self.fold_key(prefix);
        for (k, l) in self.map.range(f.clone()..) {
            if !k.starts_with(&f) {
                break;
            }
            Overlay::apply_one(recs, l);
        }
    }
}

/// The changes that turn `before` into `after` (both in one order).
pub fn diff(order: Order, before: &Records, after: &Records) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut a = before.iter().peekable();
    let mut b = after.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                ops.push(Op::Remove(k.to_vec()));
                a.next();
            }
            (None, Some((k, v))) => {
                ops.push(Op::Set(k.to_vec(), v.to_vec()));
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match order.cmp(ka, kb) {
                Ordering::Less => {
                    ops.push(Op::Remove(ka.to_vec()));
                    a.next();
                }
                Ordering::Greater => {
                    ops.push(Op::Set(kb.to_vec(), vb.to_vec()));
                    b.next();
                }
                Ordering::Equal => {
                    if ka != kb {
                        // The same key in another case: as it is now.
                        ops.push(Op::Remove(ka.to_vec()));
                        ops.push(Op::Set(kb.to_vec(), vb.to_vec()));
                    } else if va != vb {
                        ops.push(Op::Set(kb.to_vec(), vb.to_vec()));
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(order: Order, pairs: &[(&str, &str)]) -> Records {
        let mut r = Records::new(order);
        for (k, v) in pairs {
            r.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        r
    }

    fn pairs(r: &Records) -> Vec<(String, String)> {
        r.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect()
    }

    #[test]
    fn paths() {
        let p = Path::new("/d/user/fred/abook.fred");
        let j = journal_path(p);
        assert_eq!(j, Path::new("/d/user/fred/.journal.abook.fred"));
        assert_eq!(main_path(&j).unwrap(), p);
        assert_eq!(main_path(Path::new("/d/.journal.")), None);
    }

    /// The format on disk, pinned: a journal written by one version of
    /// imspd is read by the next.
    #[test]
    fn format_is_fixed() {
        let ops = [
            Op::Set(b"x".to_vec(), b"y".to_vec()),
            Op::Remove(b"a b".to_vec()),
        ];
        assert_eq!(encode(&ops), b"+x y\n-a\\sb\n.7132a2f3a1a1e2aa\n");
        let seed = include_bytes!("../../fuzz/seeds/codec/journal");
        let (order, base, start) = parse_header(seed).unwrap();
        assert_eq!(order, Order::CaseInsensitive);
        assert_eq!(base.unwrap().ino, 1234);
        let mut n = 0;
        assert_eq!(
            parse_changes(&seed[start..], |_| n += 1),
            seed.len() - start
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn header_round_trips() {
        let b = Base {
            dev: 2049,
            ino: 77,
            size: 10,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
        };
        let h = header(Order::CaseInsensitive, Some(b));
        assert_eq!(
            parse_header(&h),
            Some((Order::CaseInsensitive, Some(b), h.len()))
        );
        let h = header(Order::Bytes, None);
        assert_eq!(parse_header(&h), Some((Order::Bytes, None, h.len())));
        assert_eq!(parse_header(&h[..h.len() - 1]), None);
        assert_eq!(parse_header(b"imspd-journal 1 i 1 2\n"), None);
    }

    #[test]
    fn changes_round_trip_and_a_cut_one_is_ignored() {
        let one = vec![
            Op::Set(b"a key".to_vec(), b"line\nwith \\ and space".to_vec()),
            Op::Remove(b"b\nc".to_vec()),
        ];
        let two = vec![Op::Set(b"x".to_vec(), Vec::new())];
        let mut bytes = encode(&one);
        let first = bytes.len();
        bytes.extend_from_slice(&encode(&two));
        let mut got = Vec::new();
        assert_eq!(parse_changes(&bytes, |c| got.push(c)), bytes.len());
        assert_eq!(got, vec![one.clone(), two.clone()]);
        // Every cut inside the second change keeps only the first.
        for cut in first..bytes.len() {
            let mut got = Vec::new();
            assert_eq!(parse_changes(&bytes[..cut], |c| got.push(c)), first);
            assert_eq!(got, vec![one.clone()]);
        }
        // A damaged byte in the second change: its hash fails.
        let mut bad = bytes.clone();
        bad[first + 1] = b'y';
        let mut got = Vec::new();
        assert_eq!(parse_changes(&bad, |c| got.push(c)), first);
        // An end line with no change before it is not a change.
        assert_eq!(parse_changes(&encode(&[]), |_| panic!()), 0);
    }

    /// A change appended under the shared lock after one a killed process
    /// cut short (anywhere) is read; the cut one is not.
    #[test]
    fn a_shared_change_after_a_cut_one_is_read() {
        let one = vec![Op::Set(b"a\"email".to_vec(), b"x@y".to_vec())];
        let two = vec![Op::Set(b"b\"email".to_vec(), b"z@y".to_vec())];
        let cut = encode_shared(&one);
        // Cut anywhere, even just before its last line end (a write the
        // disk had no room for, answered NO), it is never read.
        for at in 0..cut.len() {
            let mut bytes = cut[..at].to_vec();
            bytes.extend_from_slice(&encode_shared(&two));
            let mut got = Vec::new();
            assert_eq!(
                parse_changes(&bytes, |c| got.push(c)),
                bytes.len(),
                "cut at {at}"
            );
            assert_eq!(got, vec![two.clone()], "cut at {at}");
        }
        // Whole, both are read; cut short at the end, the first only.
        let mut bytes = cut.clone();
        bytes.extend_from_slice(&encode_shared(&two));
        let mut got = Vec::new();
        assert_eq!(parse_changes(&bytes, |c| got.push(c)), bytes.len());
        assert_eq!(got, vec![one.clone(), two.clone()]);
        for at in cut.len()..bytes.len() {
            let mut got = Vec::new();
            assert_eq!(parse_changes(&bytes[..at], |c| got.push(c)), cut.len());
            assert_eq!(got, vec![one.clone()]);
        }
    }

    /// A fixed sequence of pseudo-random numbers: `next(n)` is below `n`.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        }
    }

    /// Many changes (applied by one merge) give what applying each in
    /// turn gives, in both orders.
    #[test]
    fn a_large_overlay_equals_applying_each_change() {
        for order in [Order::CaseInsensitive, Order::Bytes] {
            let mut next = numbers(99);
            let spell = |k: u64, up: bool| match up {
                true => format!("Key{k}"),
                false => format!("key{k}"),
            };
            let mut base = Records::new(order);
            for k in (0..300).step_by(2) {
                base.insert(spell(k, next(2) == 0).into_bytes(), b"base".to_vec());
            }
            let mut serial = base.clone();
            let mut overlay = Overlay::new(order);
            for i in 0..600 {
                let key = spell(next(300), next(2) == 0).into_bytes();
                let op = match next(3) {
                    0 => Op::Remove(key),
                    _ => Op::Set(key, format!("v{i}").into_bytes()),
                };
                match &op {
                    Op::Set(k, v) => {
                        serial.insert(k.clone(), v.clone());
                    }
                    Op::Remove(k) => {
                        serial.remove(k);
                    }
                }
                overlay.push(op);
            }
            assert!(overlay.map.len() >= 32);
            let mut applied = base.clone();
            overlay.apply(&mut applied);
            assert_eq!(pairs(&applied), pairs(&serial), "{order:?}");
        }
    }

    #[test]
    fn overlay_equals_applying_each_change() {
        let order = Order::CaseInsensitive;
        let base = recs(order, &[("FOO", "1"), ("bar", "2"), ("keep", "3")]);
        let changes = vec![
            Op::Set(b"foo".to_vec(), b"10".to_vec()),
            Op::Remove(b"BAR".to_vec()),
            Op::Set(b"Bar".to_vec(), b"20".to_vec()),
            Op::Set(b"bAR".to_vec(), b"21".to_vec()),
            Op::Set(b"new".to_vec(), b"4".to_vec()),
            Op::Remove(b"gone".to_vec()),
        ];
        let mut serial = base.clone();
        let mut overlay = Overlay::new(order);
        for op in &changes {
            match op {
                Op::Set(k, v) => {
                    serial.insert(k.clone(), v.clone());
                }
                Op::Remove(k) => {
                    serial.remove(k);
                }
            }
            overlay.push(op.clone());
        }
        let mut applied = base.clone();
        overlay.apply(&mut applied);
        assert_eq!(pairs(&applied), pairs(&serial));
        assert_eq!(
            pairs(&applied),
            vec![
                ("Bar".into(), "21".into()),
                ("FOO".into(), "10".into()),
                ("keep".into(), "3".into()),
                ("new".into(), "4".into())
            ]
        );
        let mut part = recs(order, &[("bar", "2")]);
        overlay.apply_prefix(b"BA", &mut part);
        assert_eq!(pairs(&part), vec![("Bar".into(), "21".into())]);
    }

    /// Changes kept aside give, for any entry's prefix, what applying
    /// every change in turn gives; whatever the case of the keys, however
    /// the journal is read in pieces, with keys of no entry among them.
    #[test]
    fn pending_changes_of_a_prefix_equal_applying_each_change() {
        let order = Order::CaseInsensitive;
        let mut next = numbers(5);
        let mut serial = recs(order, &[("e1\"f0", "base"), ("E2\"", "")]);
        let base = serial.clone();
        let mut journal = Vec::new();
        for i in 0..400 {
            let e = next(12);
            let name = match next(2) {
                0 => format!("e{e}"),
                _ => format!("E{e}"),
            };
            let key = match next(5) {
                // No entry's key: never asked for by prefix.
                0 => format!("{name}.plain"),
                1 => format!("{name}\"f{}\"x", next(3)),
                _ => format!("{name}\"f{}", next(3)),
            };
            let op = match next(4) {
                0 => Op::Remove(key.into_bytes()),
                _ => Op::Set(key.into_bytes(), format!("v{i} \\ x").into_bytes()),
            };
            match &op {
                Op::Set(k, v) => serial.set(k, v),
                Op::Remove(k) => {
                    serial.remove(k);
                }
            }
            journal.extend_from_slice(&encode_shared(&[op]));
        }
        let mut pending = Pending::new(order, b'"', 100);
        // Read in two pieces, the first ending inside a change: only whole
        // changes are taken.
        let cut = journal.len() / 2;
        let first = pending.take(&journal[..cut]);
        assert!(first < cut && first > 0);
        assert_eq!(pending.take(&journal[first..]), journal.len() - first);
        assert_eq!(
            (pending.upto - journal.len() as u64, pending.upto),
            (100, 100 + journal.len() as u64)
        );
        for e in 0..12 {
            for prefix in [format!("e{e}\""), format!("E{e}\"")] {
                assert!(pending.answers(order, prefix.as_bytes()));
                let mut part = Records::new(order);
                for (k, v) in base.with_prefix(prefix.as_bytes()) {
                    part.set(k, v);
                }
                pending.apply_prefix(prefix.as_bytes(), &mut part);
                let want: Vec<_> = serial.with_prefix(prefix.as_bytes()).collect();
                assert_eq!(part.iter().collect::<Vec<_>>(), want, "{prefix}");
            }
        }
        // Prefixes it cannot answer for: the caller takes all in first.
        assert!(!pending.answers(order, b"e1"));
        assert!(!pending.answers(order, b"e1\"f0\""));
        assert!(!pending.answers(Order::Bytes, b"e1\""));
    }

    #[test]
    fn diff_then_apply_gives_after() {
        let order = Order::CaseInsensitive;
        let before = recs(order, &[("a", "1"), ("B", "2"), ("c", "3"), ("d", "4")]);
        let after = recs(order, &[("b", "2"), ("c", "30"), ("d", "4"), ("e", "5")]);
        let ops = diff(order, &before, &after);
        assert_eq!(
            ops,
            vec![
                Op::Remove(b"a".to_vec()),
                Op::Remove(b"B".to_vec()),
                Op::Set(b"b".to_vec(), b"2".to_vec()),
                Op::Set(b"c".to_vec(), b"30".to_vec()),
                Op::Set(b"e".to_vec(), b"5".to_vec()),
            ]
        );
        let mut overlay = Overlay::new(order);
        for op in ops {
            overlay.push(op);
        }
        let mut got = before.clone();
        overlay.apply(&mut got);
        assert_eq!(pairs(&got), pairs(&after));
        assert!(diff(order, &after, &after).is_empty());
    }
}
