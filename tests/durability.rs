//! Crashes and concurrency: session processes killed with SIGKILL in the
//! middle of writing lose nothing that was acknowledged and leave every
//! file whole; sixteen processes mixing every kind of write end in the
//! state a serial replay of their acknowledged commands gives. Each runs
//! twice: with every change rewriting its file (the default), and with
//! changes appended to journals (`imsp.db.journal +`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{BIN, Client, Server, children_of, new_child};
use imspd::store::file::{Order, Records};
use imspd::store::journal;

/// A small deterministic pseudo-random sequence (no extra crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Every database file under `dir` parses with no damaged line, and every
/// journal with no change cut short; returns how many journals there are.
fn assert_all_files_whole(dir: &Path) -> usize {
    let mut journals = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            journals += assert_all_files_whole(&e.path());
        } else if name.starts_with(".journal.") {
            journals += 1;
            let bytes = std::fs::read(e.path()).unwrap();
            let (_, _, start) = journal::parse_header(&bytes)
                .unwrap_or_else(|| panic!("{}: no header", e.path().display()));
            let n = journal::parse_changes(&bytes[start..], |ops| assert!(!ops.is_empty()));
            assert_eq!(
                start + n,
                bytes.len(),
                "{}: a change cut short",
                e.path().display()
            );
        } else if !name.ends_with('.')
            && !name.starts_with(".tmp.")
            && name != "passwd"
            // The change counter: a number, not lines.
            && name != "imspd.generation"
        {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                bytes.is_empty() || bytes.ends_with(b"\n"),
                "{} ends mid-line",
                e.path().display()
            );
            let (_, damaged) = Records::parse(Order::CaseInsensitive, &bytes);
            assert!(
                damaged.is_empty(),
                "{}: damaged lines {damaged:?}",
                e.path().display()
            );
        }
    }
    journals
}

/// How the server under test writes.
#[derive(Clone, Copy, PartialEq)]
enum Writes {
    /// Every change rewrites its file (the default).
    Rewrite,
    /// Changes go to journals (with the default quota).
    Journal,
    /// Journals and no quota: stores into a book append beside each other
    /// under its shared lock.
    JournalNoQuota,
}

fn server(writes: Writes) -> Server {
    match writes {
        Writes::Rewrite => Server::builder().start(),
        Writes::Journal => Server::builder().option_line("imsp.db.journal N +").start(),
        Writes::JournalNoQuota => {
            let options =
                common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 0");
            assert_ne!(options, common::DEFAULT_OPTIONS);
            Server::builder()
                .options(&format!("{options}imsp.db.journal N +\n"))
                .start()
        }
    }
}

/// `imspd check --repair`: folds what killed sessions left in journals.
fn repair(dir: &Path) -> String {
    let o = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["check", "--repair"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Tags answered OK on a raw connection, until it breaks.
fn acknowledged(stream: TcpStream) -> BTreeSet<String> {
    let mut r = BufReader::new(stream);
    let mut ok = BTreeSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return ok,
            Ok(_) => {
                let l = String::from_utf8_lossy(&line);
                if let Some((tag, rest)) = l.split_once(' ')
                    && rest.starts_with("OK ")
                    && tag.starts_with('W')
                {
                    ok.insert(tag.to_string());
                }
            }
        }
    }
}

/// A logged-in session of `user`, and its process.
fn login_with_pid(s: &Server, user: &str) -> (Client, u32) {
    let before = children_of(s.pid());
    let c = s.login(user);
    (c, new_child(s.pid(), &before))
}

#[test]
fn sigkill_in_the_middle_of_writes_loses_nothing_acknowledged() {
    sigkill_in_the_middle_of_writes(Writes::Rewrite);
}

#[test]
fn sigkill_in_the_middle_of_journaled_writes_loses_nothing_acknowledged() {
    sigkill_in_the_middle_of_writes(Writes::Journal);
}

#[test]
fn sigkill_in_the_middle_of_shared_appends_loses_nothing_acknowledged() {
    sigkill_in_the_middle_of_writes(Writes::JournalNoQuota);
}

/// Every acknowledged SET and STOREADDRESS, read back by a new session.
fn assert_present(
    s: &Server,
    options: &BTreeMap<String, String>,
    entries: &BTreeMap<String, String>,
) {
    let mut c = s.login("fred");
    let got: BTreeSet<String> = c.ok("GET crash.*").into_iter().collect();
    for (name, value) in options {
        assert!(
            got.contains(&format!("* OPTION {name} {value} [READ-WRITE]")),
            "lost acknowledged SET {name}"
        );
    }
    for (name, value) in entries {
        let r = c.cmd(&format!("FETCHADDRESS fred \"{name}\""));
        assert_eq!(
            r.untagged(),
            vec![format!("* FETCHADDRESS fred \"{name}\" note {value}")],
            "lost acknowledged STOREADDRESS {name}"
        );
    }
}

fn sigkill_in_the_middle_of_writes(writes: Writes) {
    let journaled = writes != Writes::Rewrite;
    let s = server(writes);
    let mut rng = Lcg(0x1de5_u64 ^ u64::from(std::process::id()));
    let mut acked_options = BTreeMap::new();
    let mut acked_entries = BTreeMap::new();
    let rounds = 200;
    // Rounds where the kill fell in the middle of the batch.
    let mut partial = 0;
    // How long to let a batch run before the kill, adapted so that kills
    // keep landing inside batches however fast or loaded the machine is.
    let mut delay_us: u64 = 3000;
    for round in 0..rounds {
        let (mut c, pid) = login_with_pid(&s, "fred");
        // Pipeline a batch of writes of both kinds, large enough to take a
        // while, and kill the process at a random moment among them.
        let mut batch = Vec::new();
        let mut planned = Vec::new();
        for k in 0..30 {
            let tag = format!("W{round}x{k}");
            let value = format!("v{round}-{k}-{}", "x".repeat(rng.next(400) as usize));
            if k % 2 == 0 {
                let name = format!("crash.r{round}.k{k}");
                batch.extend(format!("{tag} SET {name} {value}\r\n").bytes());
                planned.push((tag, true, name, value));
            } else {
                let name = format!("R{round} K{k}");
                batch
                    .extend(format!("{tag} STOREADDRESS fred \"{name}\" note {value}\r\n").bytes());
                planned.push((tag, false, name, value));
            }
        }
        let reader = c.stream.try_clone().unwrap();
        let collector = std::thread::spawn(move || acknowledged(reader));
        c.stream.write_all(&batch).unwrap();
        std::thread::sleep(Duration::from_micros(rng.next(2 * delay_us)));
        // SAFETY: killing the session process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let ok = collector.join().unwrap();
        match ok.len() {
            0 => delay_us = (delay_us * 2).min(500_000),
            30 => delay_us = (delay_us / 2).max(200),
            _ => partial += 1,
        }
        for (tag, is_option, name, value) in planned {
            if ok.contains(&tag) {
                if is_option {
                    acked_options.insert(name, value);
                } else {
                    acked_entries.insert(name, value);
                }
            }
        }
    }
    eprintln!(
        "{partial} of {rounds} rounds killed mid-batch; {} options and {} entries acknowledged",
        acked_options.len(),
        acked_entries.len()
    );
    assert!(
        partial >= rounds / 4,
        "too few kills landed mid-batch: {partial}"
    );
    let journals = assert_all_files_whole(&s.dir);
    // Every acknowledged write is there.
    assert_present(&s, &acked_options, &acked_entries);
    if journaled {
        // The last session was killed: its changes are in journals, which
        // `check --repair` folds into the files.
        assert!(journals > 0, "no journal left by a killed session");
        let out = repair(&s.dir);
        assert!(out.contains("journal"), "{out}");
        assert_eq!(assert_all_files_whole(&s.dir), 0);
        assert_present(&s, &acked_options, &acked_entries);
    } else {
        assert_eq!(journals, 0);
    }
}

/// What one process did, as acknowledged, replayed into a model.
#[derive(Default)]
struct Model {
    options: BTreeMap<String, String>,
    entries: BTreeMap<String, String>,
    acl: BTreeMap<String, String>,
    books: BTreeSet<String>,
    /// Writes every worker makes to the same places: its last value of
    /// the option all of them set, and its own field of the one entry all
    /// of them store into (by worker).
    shared_last: BTreeMap<usize, String>,
    shared_fields: BTreeMap<String, String>,
}

fn worker(port: u16, i: usize) -> Model {
    let mut c = Client::connect(port);
    c.ok("LOGIN fred secret");
    let mut m = Model::default();
    let mut book = format!("fred.p{i}.g0");
    c.ok(&format!("CREATEADDRESSBOOK {book}"));
    m.books.insert(book.clone());
    for j in 0..30 {
        match j % 5 {
            0 => {
                c.ok(&format!("SET mix.p{i}.o{j} v{j}"));
                m.options.insert(format!("mix.p{i}.o{j}"), format!("v{j}"));
                // The same option, from every worker.
                c.ok(&format!("SET shared.opt w{i}.{j}"));
                m.shared_last.insert(i, format!("w{i}.{j}"));
            }
            1 => {
                c.ok(&format!("STOREADDRESS fred \"M{i} N{j}\" email e{j}@x"));
                m.entries.insert(format!("M{i} N{j}"), format!("e{j}@x"));
                // The same entry, each worker its own field.
                c.ok(&format!("STOREADDRESS fred Shared f{i:02} v{j}"));
                m.shared_fields.insert(format!("f{i:02}"), format!("v{j}"));
            }
            2 => {
                // Delete the entry stored one step before.
                c.ok(&format!("DELETEADDRESS fred \"M{i} N{}\"", j - 1));
                m.entries.remove(&format!("M{i} N{}", j - 1));
                c.ok(&format!("STOREADDRESS fred \"M{i} K{j}\" email k{j}@x"));
                m.entries.insert(format!("M{i} K{j}"), format!("k{j}@x"));
            }
            3 => {
                let rights = ["lr", "lrw", "l", "lrwd"][j % 4];
                c.ok(&format!("SETACL ADDRESSBOOK fred u{i} {rights}"));
                m.acl.insert(format!("u{i}"), rights.to_string());
            }
            _ => {
                let next = format!("fred.p{i}.g{j}");
                c.ok(&format!("RENAMEADDRESSBOOK {book} {next}"));
                m.books.remove(&book);
                m.books.insert(next.clone());
                book = next;
            }
        }
    }
    c.logout();
    m
}

#[test]
fn sixteen_processes_mixing_writes_equal_a_serial_replay() {
    sixteen_processes_mixing_writes(Writes::Rewrite);
}

#[test]
fn sixteen_processes_mixing_journaled_writes_equal_a_serial_replay() {
    sixteen_processes_mixing_writes(Writes::Journal);
}

#[test]
fn sixteen_processes_mixing_shared_appends_equal_a_serial_replay() {
    sixteen_processes_mixing_writes(Writes::JournalNoQuota);
}

fn sixteen_processes_mixing_writes(writes: Writes) {
    let s = server(writes);
    let port = s.port;
    let t0 = Instant::now();
    let mut model = Model::default();
    for m in common::concurrently(16, move |i| worker(port, i)) {
        model.options.extend(m.options);
        model.entries.extend(m.entries);
        model.acl.extend(m.acl);
        model.books.extend(m.books);
        model.shared_last.extend(m.shared_last);
        model.shared_fields.extend(m.shared_fields);
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "no deadlock");
    // Every session ended with LOGOUT or a close: their journals are
    // folded, the files are 1.8's.
    assert_eq!(assert_all_files_whole(&s.dir), 0);

    let mut c = s.login("fred");
    let want: Vec<String> = model
        .options
        .iter()
        .map(|(k, v)| format!("* OPTION {k} {v} [READ-WRITE]"))
        .collect();
    let mut got = c.ok("GET mix.*");
    got.sort_by_key(|l| l.to_lowercase());
    let mut want_sorted = want.clone();
    want_sorted.sort_by_key(|l| l.to_lowercase());
    assert_eq!(got, want_sorted);

    // The option all of them set ends as some worker's last write (in
    // any serial order of the acknowledged SETs, each worker's own are in
    // its order), and none of the fields of the shared entry is lost.
    let got = c.ok("GET shared.opt");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        model
            .shared_last
            .values()
            .any(|v| got[0] == format!("* OPTION shared.opt {v} [READ-WRITE]")),
        "{got:?} is no worker's last write: {:?}",
        model.shared_last
    );
    let fields: String = model
        .shared_fields
        .iter()
        .map(|(f, v)| format!(" {f} {v}"))
        .collect();
    assert_eq!(
        c.ok("FETCHADDRESS fred Shared"),
        vec![format!("* FETCHADDRESS fred Shared{fields}")]
    );

    let mut names: Vec<String> = model
        .entries
        .keys()
        .map(|n| format!("* SEARCHADDRESS \"{n}\""))
        .collect();
    names.push("* SEARCHADDRESS Shared".into());
    let mut got = c.ok("SEARCHADDRESS fred");
    got.sort();
    names.sort();
    let mut names_sorted = names;
    names_sorted.sort();
    assert_eq!(got, names_sorted);
    for (n, email) in &model.entries {
        assert_eq!(
            c.ok(&format!("FETCHADDRESS fred \"{n}\"")),
            vec![format!("* FETCHADDRESS fred \"{n}\" email {email}")]
        );
    }

    let mut want_acl: Vec<String> = model
        .acl
        .iter()
        .map(|(id, r)| format!("* ACL ADDRESSBOOK fred {id} {r}"))
        .collect();
    want_acl.push("* ACL ADDRESSBOOK fred fred lrswipcda".into());
    want_acl.sort();
    let mut got_acl = c.ok("GETACL ADDRESSBOOK fred");
    got_acl.sort();
    assert_eq!(got_acl, want_acl);

    let mut want_books: Vec<String> = model
        .books
        .iter()
        .map(|b| format!("* ADDRESSBOOK () \".\" {b}"))
        .collect();
    want_books.sort();
    let mut got_books = c.ok("ADDRESSBOOK fred.p*");
    got_books.sort();
    assert_eq!(got_books, want_books);
}

/// A session killed at random moments among pipelined RENAMEADDRESSBOOKs
/// of a shared book: after `check --repair` there is one book, at a name
/// no earlier than the last rename acknowledged, and it keeps its ACL
/// (barney's rights), with no line left for another name.
#[test]
fn sigkill_in_the_middle_of_renames_keeps_the_books_acl() {
    let s = server(Writes::Rewrite);
    let mut rng = Lcg(0xac1_u64 ^ u64::from(std::process::id()));
    let mut f = s.login("fred");
    f.ok("CREATEADDRESSBOOK fred.b0");
    f.ok("STOREADDRESS fred.b0 Boss email boss@slate");
    f.ok("SETACL ADDRESSBOOK fred.b0 barney lr");
    f.logout();
    let (rounds, per_round) = (60, 6);
    let mut at = 0;
    let mut partial = 0;
    let mut delay_us: u64 = 3000;
    for round in 0..rounds {
        let (c, pid) = login_with_pid(&s, "fred");
        let mut batch = Vec::new();
        for k in 0..per_round {
            let (from, to) = (at + k, at + k + 1);
            batch.extend(
                format!("W{round}x{k} RENAMEADDRESSBOOK fred.b{from} fred.b{to}\r\n").bytes(),
            );
        }
        let reader = c.stream.try_clone().unwrap();
        let collector = std::thread::spawn(move || acknowledged(reader));
        let mut stream = c.stream.try_clone().unwrap();
        stream.write_all(&batch).unwrap();
        std::thread::sleep(Duration::from_micros(rng.next(2 * delay_us)));
        // SAFETY: killing the session process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let ok = collector.join().unwrap();
        match ok.len() {
            0 => delay_us = (delay_us * 2).min(500_000),
            n if n == per_round => delay_us = (delay_us / 2).max(200),
            _ => partial += 1,
        }
        repair(&s.dir);
        let acked = (0..per_round)
            .filter(|k| ok.contains(&format!("W{round}x{k}")))
            .max()
            .map_or(at, |k| at + k + 1);
        let mut f = s.login("fred");
        let books: Vec<String> = f
            .ok("ADDRESSBOOK fred.b*")
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(books.len(), 1, "round {round}: {books:?}");
        let name = &books[0];
        let now: usize = name.strip_prefix("fred.b").unwrap().parse().unwrap();
        assert!(
            (acked..=at + per_round).contains(&now),
            "round {round}: {name}, {acked} acknowledged"
        );
        assert_eq!(
            f.ok(&format!("GETACL ADDRESSBOOK {name}")),
            vec![
                format!("* ACL ADDRESSBOOK {name} fred lrswipcda"),
                format!("* ACL ADDRESSBOOK {name} barney lr"),
            ],
            "round {round}"
        );
        assert_eq!(
            s.read("abooks"),
            format!("{name} fred\tlrswipcda\tbarney\tlr\t\n"),
            "round {round}"
        );
        assert_eq!(
            f.ok(&format!("FETCHADDRESS {name} Boss")),
            vec![format!("* FETCHADDRESS {name} Boss email boss@slate")]
        );
        at = now;
    }
    eprintln!("{partial} of {rounds} rounds killed mid-batch");
    assert!(
        partial >= rounds / 4,
        "too few kills landed mid-batch: {partial}"
    );
    assert_all_files_whole(&s.dir);
}
