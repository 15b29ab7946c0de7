//! The journal of a database file: the changes made since the file was
//! last rewritten, appended under the file's lock.
//!
//! A per-user file (`user/NAME/options`, `abook.BOOK`, ...) is not
//! rewritten for every change. The change is appended to
//! `user/NAME/.journal.FILE` (and fsynced, unless `imsp.db.fsync` is off)
//! before the command's OK, and folded into the file (temp file, fsync,
//! rename: the file stays in cyrus-imspd 1.8's format) when the session that
//! wrote it ends, or when the journal grows past half the file (and past
//! 256 KB). A journal
//! left by a killed session is read by every reader and folded by the next
//! writer, `imspd check --repair`, or the daemon at start.
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
    let size: usize = ops
        .iter()
        .map(|op| match op {
            Op::Set(k, v) => k.len() + v.len() + 8,
            Op::Remove(k) => k.len() + 8,
        })
        .sum();
    let mut out = Vec::with_capacity(lead.len() + size + 20);
    out.extend_from_slice(lead);
    for op in ops {
        match op {
            Op::Set(k, v) => {
                out.push(b'+');
                codec::put_record(k, v, &mut out);
            }
            Op::Remove(k) => {
                out.push(b'-');
                codec::escape_key(k, &mut out);
                out.push(b'\n');
            }
        }
    }
    let hash = fnv1a(&out[lead.len()..]);
    out.extend_from_slice(format!(".{hash:016x}\n").as_bytes());
    out
}

fn parse_op(line: &[u8]) -> Option<Op> {
    match line.split_first()? {
        (b'+', rest) => {
            let (k, v) = codec::parse_line(rest)?;
            Some(Op::Set(k, v))
        }
        (b'-', rest) if !rest.is_empty() && !rest.contains(&b' ') => {
            Some(Op::Remove(codec::unescape(rest)))
        }
        _ => None,
    }
}

/// The complete changes in `bytes` (journal lines after the header), in
/// order, each whole; returns how many bytes they take (up to the end of
/// the last whole change). A change that is cut short or damaged is
/// skipped when an empty line follows it (changes appended under the
/// shared lock start with one: see [`encode_shared`]); else parsing stops
/// there.
pub fn parse_changes(bytes: &[u8], mut each: impl FnMut(Vec<Op>)) -> usize {
    let mut done = 0;
    // Where the change being read starts; `None` while skipping a
    // damaged one, up to the next empty line.
    let mut start = Some(0);
    let mut at = 0;
    let mut ops = Vec::new();
    while let Some(i) = memchr::memchr(b'\n', &bytes[at..]) {
        let line = &bytes[at..at + i];
        let next = at + i + 1;
        at = next;
        if line.is_empty() {
            ops.clear();
            start = Some(next);
            continue;
        }
        let Some(from) = start else { continue };
        if let Some(hash) = line.strip_prefix(b".") {
            let ok = hash.len() == 16
                && std::str::from_utf8(hash)
                    .ok()
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .is_some_and(|h| h == fnv1a(&bytes[from..next - line.len() - 1]));
            if ok && !ops.is_empty() {
                each(std::mem::take(&mut ops));
                done = next;
                start = Some(next);
                continue;
            }
        } else if let Some(op) = parse_op(line) {
            ops.push(op);
            continue;
        }
        ops.clear();
        start = None;
    }
    done
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
                let f = self.fold_key(&k);
                match self.map.get_mut(&f) {
                    Some(l) => {
                        // Replacing keeps the case the record has.
                        if l.value.is_none() {
                            l.key = k;
                        }
                        l.value = Some(v);
                    }
                    None => {
                        let l = Latest {
                            removed: false,
                            key: k,
                            value: Some(v),
                        };
                        self.map.insert(f, l);
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

    /// Many changes (applied by one merge) give what applying each in
    /// turn gives, in both orders.
    #[test]
    fn a_large_overlay_equals_applying_each_change() {
        for order in [Order::CaseInsensitive, Order::Bytes] {
            let mut seed: u64 = 99;
            let mut next = |n: u64| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) % n
            };
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
