//! `imsp.db.journal +`: changes to a user's files go to journals before the
//! OK and are folded into the files at the end of the session. What the
//! files hold afterwards is byte for byte what rewriting every change
//! gives; other sessions see the changes at once; what a killed session
//! left is folded by the daemon at its next start.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{Server, children_of};

fn with_journal(on: bool) -> String {
    format!(
        "{}imsp.db.journal N {}\n",
        common::DEFAULT_OPTIONS,
        if on { "+" } else { "-" }
    )
}

/// The data files under `user/` (no lock files), with their bytes.
fn user_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let users = dir.join("user");
    for u in std::fs::read_dir(&users).unwrap().flatten() {
        for f in std::fs::read_dir(u.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.ends_with('.') {
                let rel = format!("{}/{name}", u.file_name().to_string_lossy());
                out.insert(rel, std::fs::read(f.path()).unwrap());
            }
        }
    }
    out
}

/// One session of every kind of change to a user's files.
const SCRIPT: &[&str] = &[
    "SET fred.color blue",
    "SET fred.note {5+}\r\na\nb c",
    "SET Fred.Color red",
    "SET fred.gone x",
    "UNSET fred.gone",
    "CREATEADDRESSBOOK fred.work",
    "STOREADDRESS fred \"Barney Rubble\" email barney@bedrock phone 555",
    "STOREADDRESS fred \"Wilma\" email wilma@bedrock",
    "STOREADDRESS fred \"barney rubble\" phone \"\" notes {3+}\r\nx\\y",
    "STOREADDRESS fred.work \"Mr Slate\" email slate@quarry",
    "DELETEADDRESS fred \"Wilma\"",
    "SETACL ADDRESSBOOK fred.work barney lr",
    "RENAMEADDRESSBOOK fred.work fred.quarry",
    "LOCK ADDRESSBOOK fred \"Barney Rubble\"",
    "UNLOCK ADDRESSBOOK fred \"Barney Rubble\"",
    "LOCK OPTION fred.color",
];

fn run_script(s: &Server) {
    let mut c = s.login("fred");
    for cmd in SCRIPT {
        c.ok(cmd);
    }
    c.logout();
}

#[test]
fn after_logout_the_files_are_what_rewrites_leave() {
    let rewrite = Server::builder().options(&with_journal(false)).start();
    let journal = Server::builder().options(&with_journal(true)).start();
    run_script(&rewrite);
    run_script(&journal);
    let a = user_files(&rewrite.dir);
    let b = user_files(&journal.dir);
    assert!(a.contains_key("fred/abook.fred") && a.contains_key("fred/options"));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "no journal is left after LOGOUT"
    );
    for (name, bytes) in &a {
        assert_eq!(
            String::from_utf8_lossy(&b[name]),
            String::from_utf8_lossy(bytes),
            "{name}"
        );
    }
}

#[test]
fn a_change_is_in_the_journal_before_ok_and_seen_by_other_sessions() {
    let s = Server::builder().options(&with_journal(true)).start();
    let mut a = s.login("fred");
    a.ok("STOREADDRESS fred \"Barney Rubble\" email barney@bedrock");
    a.ok("SET fred.color blue");
    let before = std::fs::read(s.path("user/fred/abook.fred")).unwrap_or_default();
    let options_before = std::fs::read(s.path("user/fred/options")).unwrap_or_default();
    // Folded at the end of... nothing yet: the session is still open.
    for _ in 0..5 {
        a.ok("STOREADDRESS fred \"Wilma\" email wilma@bedrock");
        a.ok("SET fred.color green");
    }
    assert_eq!(
        std::fs::read(s.path("user/fred/abook.fred")).unwrap_or_default(),
        before
    );
    assert_eq!(
        std::fs::read(s.path("user/fred/options")).unwrap_or_default(),
        options_before
    );
    let j = std::fs::read_to_string(s.path("user/fred/.journal.options")).unwrap();
    assert!(j.starts_with("imspd-journal 1 i "), "{j}");
    assert!(j.contains("+fred.color W green\n"), "{j}");
    // Another session (another process) reads file and journal.
    let mut b = s.login("fred");
    assert_eq!(
        b.ok("GET fred.color"),
        vec!["* OPTION fred.color green [READ-WRITE]"]
    );
    let mut found = b.ok("SEARCHADDRESS fred");
    found.sort();
    assert_eq!(
        found,
        vec!["* SEARCHADDRESS \"Barney Rubble\"", "* SEARCHADDRESS Wilma"]
    );
    // And its own changes go to the same journal.
    b.ok("DELETEADDRESS fred \"Wilma\"");
    // a sees b's delete.
    assert_eq!(a.cmd("FETCHADDRESS fred Wilma").status(), "NO");
    a.logout();
    b.logout();
    assert!(!s.path("user/fred/.journal.options").exists());
    assert!(!s.path("user/fred/.journal.abook.fred").exists());
    let book = s.read("user/fred/abook.fred");
    assert!(
        book.contains("Barney\\sRubble\"email barney@bedrock\n"),
        "{book}"
    );
    assert!(!book.contains("Wilma"), "{book}");
    assert!(s.read("user/fred/options").contains("fred.color W green\n"));
}

#[test]
fn the_daemon_folds_what_a_killed_session_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imsp");
    std::fs::create_dir_all(dir.join("user")).unwrap();
    std::fs::write(dir.join("options"), with_journal(true)).unwrap();
    {
        let s = Server::builder().data_dir(&dir).start();
        let before = children_of(s.pid());
        let mut c = s.login("fred");
        c.ok("SET fred.kept yes");
        c.ok("STOREADDRESS fred \"Pebbles\" email pebbles@bedrock");
        let session = children_of(s.pid())
            .into_iter()
            .find(|p| !before.contains(p))
            .expect("session process")
            .0;
        // SAFETY: killing the session process this test started.
        unsafe { libc::kill(session as i32, libc::SIGKILL) };
        assert!(c.closed_within(Duration::from_secs(5)));
    }
    assert!(dir.join("user/fred/.journal.options").exists());
    assert!(dir.join("user/fred/.journal.abook.fred").exists());
    assert!(
        !std::fs::read_to_string(dir.join("user/fred/options"))
            .unwrap_or_default()
            .contains("fred.kept")
    );
    let s = Server::builder().data_dir(&dir).start();
    assert!(!dir.join("user/fred/.journal.options").exists());
    assert!(!dir.join("user/fred/.journal.abook.fred").exists());
    assert!(s.read("user/fred/options").contains("fred.kept W yes\n"));
    assert!(
        s.read("user/fred/abook.fred")
            .contains("Pebbles\"email pebbles@bedrock\n")
    );
    let mut c = s.login("fred");
    assert_eq!(
        c.ok("GET fred.kept"),
        vec!["* OPTION fred.kept yes [READ-WRITE]"]
    );
}

/// Processes (forked, each with its own view of the files) storing
/// entries into one journaled book, and folding now and then as a session
/// ending does, lose nothing.
#[test]
fn forked_writers_folding_at_random_lose_nothing() {
    forked_writers(false);
}

/// The same, appending beside each other under the shared lock (falling
/// back to the exclusive way when that does not apply).
#[test]
fn forked_shared_writers_lose_nothing() {
    forked_writers(true);
}

fn forked_writers(shared: bool) {
    use imspd::store::journal::Op;
    use imspd::store::{Files, Order, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("user").join("fred").join("abook.fred");
    std::fs::create_dir_all(book.parent().unwrap()).unwrap();
    let (writers, per) = (6, 250);
    let mut pids = Vec::new();
    for w in 0..writers {
        // SAFETY: the child only runs the loop below and exits.
        match unsafe { libc::fork() } {
            0 => {
                let mut files = Files::under(dir.path());
                files.fsync = false;
                files.journaling = true;
                let mut seed: u64 = 12345 + w;
                let mut went_shared = 0;
                for i in 0..per {
                    let name = format!("W{w} E{i}\"");
                    let email = format!("{name}email");
                    let ops = vec![
                        Op::Set(name.clone().into_bytes(), Vec::new()),
                        Op::Set(email.clone().into_bytes(), b"x@y".to_vec()),
                    ];
                    let got = match shared {
                        true => files
                            .append_shared(&book, Order::CaseInsensitive, name.as_bytes(), |_| ops)
                            .unwrap(),
                        false => None,
                    };
                    match got {
                        Some(part) => {
                            went_shared += 1;
                            assert_eq!(part.get(email.as_bytes()), Some(&b"x@y"[..]));
                        }
                        None => files
                            .update_prefix::<_, StoreError>(
                                &book,
                                Order::CaseInsensitive,
                                name.as_bytes(),
                                |r| {
                                    r.insert(name.clone().into_bytes(), Vec::new());
                                    r.insert(email.clone().into_bytes(), b"x@y".to_vec());
                                    Ok(((), true))
                                },
                            )
                            .unwrap(),
                    }
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    if (seed >> 33).is_multiple_of(20) {
                        files.fold_appended();
                    }
                }
                files.fold_appended();
                // Asked to, most went the shared way.
                let fine = !shared || went_shared > per / 2;
                std::process::exit(if fine { 0 } else { 3 });
            }
            pid => pids.push(pid),
        }
    }
    // Every child is waited for before anything is asserted (the
    // directory must outlive them).
    let statuses: Vec<i32> = pids
        .into_iter()
        .map(|pid| {
            let mut status = 0;
            // SAFETY: waiting for a child forked above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            status
        })
        .collect();
    assert!(statuses.iter().all(|&s| s == 0), "{statuses:?}");
    let bytes = std::fs::read(&book).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let entries = text.lines().filter(|l| l.ends_with("\" ")).count();
    let emails = text.lines().filter(|l| l.ends_with("\"email x@y")).count();
    assert!(!imspd::store::journal::journal_path(&book).exists());
    assert_eq!(entries, (writers * per) as usize);
    assert_eq!(emails, (writers * per) as usize);
}

/// The session that made a journal's last change folds it as it ends. One
/// whose change another session's followed leaves the journal to that
/// one (a fold would stop the writers still at work), and every session
/// reads what it holds meanwhile. Both with a quota (stores take the
/// book's lock exclusive) and without (they append beside each other).
#[test]
fn the_session_with_the_journals_last_change_folds_it() {
    for quota in ["1000", "0"] {
        let options = with_journal(true).replace(
            "imsp.user.quota R 1000",
            &format!("imsp.user.quota R {quota}"),
        );
        assert!(options.contains(&format!("imsp.user.quota R {quota}")));
        let s = Server::builder().options(&options).start();
        let journal = s.path("user/fred/.journal.abook.fred");
        let book = s.path("user/fred/abook.fred");
        let mut a = s.login("fred");
        let mut b = s.login("fred");
        a.ok("STOREADDRESS fred \"A1\" email a1@x");
        b.ok("STOREADDRESS fred \"B1\" email b1@x");
        a.logout();
        assert!(journal.exists(), "quota {quota}: B's change came last");
        let mut c = s.login("fred");
        assert_eq!(c.ok("SEARCHADDRESS fred").len(), 2, "quota {quota}");
        // A session that wrote nothing folds nothing.
        c.logout();
        assert!(journal.exists(), "quota {quota}");
        b.logout();
        assert!(!journal.exists(), "quota {quota}");
        let text = String::from_utf8(std::fs::read(&book).unwrap()).unwrap();
        assert!(text.contains("A1\"email a1@x\n") && text.contains("B1\"email b1@x\n"));
        // The last writer ends first: folded, though another is still in.
        let mut a = s.login("fred");
        let mut b = s.login("fred");
        a.ok("STOREADDRESS fred \"A2\" email a2@x");
        b.ok("STOREADDRESS fred \"B2\" email b2@x");
        b.logout();
        assert!(!journal.exists(), "quota {quota}");
        let text = String::from_utf8(std::fs::read(&book).unwrap()).unwrap();
        assert!(text.contains("A2\"email a2@x\n") && text.contains("B2\"email b2@x\n"));
        a.logout();
        assert!(!journal.exists(), "quota {quota}");
        assert_eq!(
            std::fs::read_to_string(&book).unwrap(),
            text,
            "quota {quota}"
        );
    }
}

/// Two sessions that make one new entry at once in two cases (each
/// appending before seeing the other's change) leave its lines spelled two
/// ways; the next store of it spells every line as the entry's first.
#[test]
fn an_entry_made_at_once_in_two_cases_is_spelled_one_way() {
    use imspd::store::journal::{Op, encode_shared};
    // No quota: stores append under the shared lock.
    let options = with_journal(true).replace("imsp.user.quota R 1000", "imsp.user.quota R 0");
    assert!(options.contains("imsp.user.quota R 0"));
    let s = Server::builder().options(&options).start();
    let mut c = s.login("fred");
    c.ok("STOREADDRESS fred \"Warm\" email w@x");
    c.ok("STOREADDRESS fred \"Same\" f0 v0");
    // What the other session appended, not having seen "Same".
    let journal = s.path("user/fred/.journal.abook.fred");
    let other = encode_shared(&[
        Op::Set(b"SAME\"".to_vec(), Vec::new()),
        Op::Set(b"SAME\"f1".to_vec(), b"v1".to_vec()),
    ]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(&other)
        .unwrap();
    assert_eq!(
        c.ok("STOREADDRESS fred \"same\" f2 v2"),
        vec!["* FETCHADDRESS fred Same f0 v0 f1 v1 f2 v2"]
    );
    c.logout();
    let book = std::fs::read_to_string(s.path("user/fred/abook.fred")).unwrap();
    let lines: Vec<&str> = book
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("same\""))
        .collect();
    assert_eq!(
        lines,
        ["Same\" ", "Same\"f0 v0", "Same\"f1 v1", "Same\"f2 v2"],
        "{book}"
    );
}
