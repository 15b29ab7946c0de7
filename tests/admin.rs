//! The admin tool (`imspd users | check | locks | export | import | backup |
//! restore`) and session telemetry, on real data directories, with the
//! real daemon serving them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{BIN, Client, Server};

/// Run `imspd --data-dir DIR ARGS...`.
fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run imspd")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// A data directory as cyrus-imspd 1.8 left it: the captured one in
/// `tests/fixtures/cyrus18/datadir` when the checkout has it, else one
/// made here from the formats it was seen to write.
fn cyrus18_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("imsp18");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cyrus18/datadir");
    if fixture.join("options").is_file() {
        copy_dir(&fixture, &dir);
        return dir;
    }
    let files: &[(&str, &[u8])] = &[
        (
            "options",
            b"common.date R \ncommon.domain R cyrus.andrew.cmu.edu\n\
imsp.admin.all N (root admin)\nimsp.create.new.users N +\nimsp.user.quota R 1000\n",
        ),
        ("abooks", b"fred.work fred\tlrswipcda\tbarney\tlrw\tanyone\tr\t\n"),
        (
            "user/fred/options",
            b"fred.test W hello world\nfred.v.crlf W line one\r\\nline two\nimsp.user.quota.usage R 999\n",
        ),
        ("user/fred/abooks", b"fred \nfred.work \n"),
        (
            "user/fred/abook.fred",
            "alice\" \nalice\"email alice@example.org\nBarney\\sRubble\" \n\
Barney\\sRubble\"email barney@bedrock\nBarney\\sRubble\"phone 555-9999\nBob\" \n\
Bob\"Email BOB@EXAMPLE.ORG\nPebbles\" \nWilma\\sFlintstone\" \n\
Wilma\\sFlintstone\"address 1 Cave Street\r\\nBedrock\nWilma\\sFlintstone\"email wilma@bedrock\n\
Zoë\\sMüller\" \nZoë\\sMüller\"email zoe@example.org\nZoë\\sMüller\"note Grüße aus Köln\n"
                .as_bytes(),
        ),
        (
            "user/fred/abook.fred.work",
            b"Joe\\sRockhead\" \nJoe\\sRockhead\"email joe@bedrock\n\
Joe\\sRockhead\"notes Lodge brother.\r\\nOwns a \"rock\" band\r\\n\n\
Mr.\\sSlate\" \nMr.\\sSlate\"email slate@quarry\nMr.\\sSlate\"phone 555 0000\n",
        ),
        ("user/fred/alock", b""),
        ("user/barney/options", b"barney.color W blue\nimsp.user.quota.usage R 81\n"),
        ("user/barney/abooks", b"barney \n"),
        (
            "user/barney/abook.barney",
            b"Betty\\sRubble\" \nBetty\\sRubble\"email betty@bedrock\n",
        ),
    ];
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    dir
}

/// Every entry of a book through a session: the FETCHADDRESS lines with
/// the book name taken out, sorted.
fn fetch_all(c: &mut Client, book: &str) -> Vec<Vec<u8>> {
    let names: Vec<String> = c
        .ok(&format!("SEARCHADDRESS {book}"))
        .into_iter()
        .map(|l| l.strip_prefix("* SEARCHADDRESS ").unwrap().to_string())
        .collect();
    assert!(!names.is_empty(), "{book} is empty");
    let mut out = Vec::new();
    for n in names {
        // A literal name is sent back non-synchronizing (LITERAL+).
        let n = match n.split_once("}\r\n") {
            Some((head, rest)) if n.starts_with('{') => format!("{head}+}}\r\n{rest}"),
            _ => n,
        };
        let r = c.cmd_bytes(format!("FETCHADDRESS {book} {n}").as_bytes());
        assert_eq!(r.status(), "OK", "{:?}", r.untagged());
        for l in r.untagged_bytes() {
            let prefix = format!("* FETCHADDRESS {book} ");
            let rest = l
                .strip_prefix(prefix.as_bytes())
                .unwrap_or_else(|| panic!("unexpected line {:?}", String::from_utf8_lossy(l)));
            out.push(rest.to_vec());
        }
    }
    out.sort();
    out
}

#[test]
fn users_lists_passwords_directories_and_usage() {
    let s = Server::start();
    let mut c = s.login("fred");
    c.ok("SET fred.color blue");
    c.ok("CREATEADDRESSBOOK fred.work");
    drop(c);
    let o = tool(&s.dir, &["users"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["USER", "PASSWORD", "DIRECTORY", "BOOKS", "USAGE"]
    );
    assert!(
        lines.contains(&vec!["fred", "yes", "yes", "2", "14"]),
        "{out}"
    );
    assert!(
        lines.contains(&vec!["barney", "yes", "no", "0", "-"]),
        "{out}"
    );
    let o = tool(Path::new("/nonexistent/imsp"), &["users"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not an IMSP data directory"));
}

#[test]
fn check_reports_damage_and_repair_fixes_a_1_8_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cyrus18_dir(tmp.path());
    // 1.8's own usage accounting drifts; damage some lines too, and leave
    // a lock of a session that is gone.
    let mut opts = std::fs::read(dir.join("user/fred/options")).unwrap();
    opts.extend_from_slice(b"not-a-record\nfred.bad Q oops\n");
    std::fs::write(dir.join("user/fred/options"), &opts).unwrap();
    // The last line (the file ends with LF).
    let damaged_line = opts.split(|&b| b == b'\n').count() - 1;
    let mut book = std::fs::read(dir.join("user/fred/abook.fred.work")).unwrap();
    book.extend_from_slice(b"noquote value\n");
    std::fs::write(dir.join("user/fred/abook.fred.work"), &book).unwrap();
    std::fs::write(
        dir.join("user/fred/alock"),
        b"fred.test fred@gone.example\t4000000:1\n",
    )
    .unwrap();

    let o = tool(&dir, &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "user/fred/options:{}: damaged line (not KEY SP VALUE)",
            damaged_line - 1
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "user/fred/options:{damaged_line}: damaged line (the type is not N, R or W)"
        )),
        "{out}"
    );
    assert!(out.contains("user/fred/abook.fred.work:"), "{out}");
    assert!(
        out.contains("user/fred/alock: stale lock on OPTION fred.test held by fred@gone.example"),
        "{out}"
    );
    assert!(
        out.contains("user/fred/options: imsp.user.quota.usage is"),
        "{out}"
    );
    // Nothing was changed by looking.
    assert_eq!(std::fs::read(dir.join("user/fred/options")).unwrap(), opts);

    let o = tool(&dir, &["check", "--repair"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("repaired"));
    let o = tool(&dir, &["check"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert_eq!(stdout(&o), "no problems found\n");
    let text = std::fs::read_to_string(dir.join("user/fred/options")).unwrap();
    assert!(!text.contains("not-a-record") && !text.contains("fred.bad"));
    assert!(text.contains("fred.test W hello world\n"));
    assert_eq!(std::fs::read(dir.join("user/fred/alock")).unwrap(), b"");

    // The daemon serves the repaired directory, the usage is what it sums.
    let s = Server::builder().data_dir(&dir).start();
    let mut c = s.login("fred");
    let joe = c.ok("FETCHADDRESS fred.work \"Joe Rockhead\"");
    assert!(joe[0].contains("email joe@bedrock"), "{joe:?}");
    c.ok("LOCK OPTION fred.test");
}

/// Book names match case-insensitively, and `check` keeps their spelling:
/// for an owner `Fred` the default book is not "missing", and a repaired
/// list names the book as its file does.
#[test]
fn check_keeps_the_spelling_of_an_owner_s_books() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imsp");
    std::fs::create_dir_all(dir.join("user/Fred")).unwrap();
    std::fs::write(dir.join("options"), common::DEFAULT_OPTIONS).unwrap();
    std::fs::write(dir.join("user/Fred/abooks"), "Fred \n").unwrap();
    std::fs::write(dir.join("user/Fred/abook.Fred"), "").unwrap();
    std::fs::write(dir.join("user/Fred/abook.Fred.Work"), "Wilma\" \n").unwrap();

    let o = tool(&dir, &["check"]);
    let out = stdout(&o);
    assert!(
        out.contains("user/Fred/abook.Fred.Work: a book that user/Fred/abooks does not list"),
        "{out}"
    );
    assert!(!out.contains("which has no file"), "{out}");
    let o = tool(&dir, &["check", "--repair"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        std::fs::read_to_string(dir.join("user/Fred/abooks")).unwrap(),
        "Fred \nFred.Work \n"
    );
    let o = tool(&dir, &["check"]);
    assert_eq!(stdout(&o), "no problems found\n");
}

/// What a crash between the files of DELETEADDRESSBOOK or
/// RENAMEADDRESSBOOK leaves: a book file its owner's list does not name
/// (a rename's new name), a listed book with no file (its old name).
/// `check` reports both; `--repair` makes the list match the files, so
/// the entries are served again and nothing is lost.
#[test]
fn check_repairs_book_lists_a_crash_left_out_of_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cyrus18_dir(tmp.path());
    let list = std::fs::read_to_string(dir.join("user/fred/abooks")).unwrap();
    assert!(list.contains("fred.work \n"), "{list}");
    std::fs::rename(
        dir.join("user/fred/abook.fred.work"),
        dir.join("user/fred/abook.fred.job"),
    )
    .unwrap();
    // And an ACL left for a book deleted since: it would grant barney
    // rights on any later fred.gone.
    let mut acls = std::fs::read_to_string(dir.join("abooks")).unwrap();
    acls.push_str("fred.gone fred\tlrswipcda\tbarney\tlrwd\t\n");
    std::fs::write(dir.join("abooks"), &acls).unwrap();

    let o = tool(&dir, &["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("user/fred/abook.fred.job: a book that user/fred/abooks does not list"),
        "{out}"
    );
    assert!(
        out.contains("user/fred/abooks: lists fred.work, which has no file"),
        "{out}"
    );
    assert!(
        out.contains("abooks: an ACL for fred.gone, which does not exist"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("user/fred/abooks")).unwrap(),
        list
    );

    let o = tool(&dir, &["check", "--repair"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = tool(&dir, &["check"]);
    assert_eq!(stdout(&o), "no problems found\n");
    let s = Server::builder().data_dir(&dir).start();
    let mut c = s.login("fred");
    let books = c.ok("ADDRESSBOOK fred*");
    assert!(books.iter().any(|b| b.ends_with(" fred.job")), "{books:?}");
    assert!(
        !books.iter().any(|b| b.ends_with(" fred.work")),
        "{books:?}"
    );
    let joe = c.ok("FETCHADDRESS fred.job \"Joe Rockhead\"");
    assert!(joe[0].contains("email joe@bedrock"), "{joe:?}");
    // The ACL left for fred.gone is removed; that of the book that exists
    // is kept. The renamed book has its owner's default rights: barney
    // has none there.
    assert_eq!(s.read("abooks"), "fred fred\tlrswipcda\tbarney\tlr\t\n");
    let mut barney = s.login("barney");
    barney.fails("FETCHADDRESS fred.job \"Joe Rockhead\"", "NO");
}

#[test]
fn locks_shows_live_ones_and_clears_only_stale_ones() {
    let s = Server::start();
    let mut fred = s.login("fred");
    fred.ok("SET fred.test x");
    fred.ok("LOCK OPTION fred.test");
    fred.ok("STOREADDRESS fred Barney email b@b");
    fred.ok("LOCK ADDRESSBOOK fred Barney");
    // A lock 1.8 style (no session): stale.
    let alock = s.path("user/fred/alock");
    let mut text = std::fs::read(&alock).unwrap();
    text.extend_from_slice(b"fred.old fred@oldhost\n");
    std::fs::write(&alock, &text).unwrap();

    let o = tool(&s.dir, &["locks"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("fred: OPTION fred.test: held by fred@127.0.0.1 (process"),
        "{out}"
    );
    assert!(
        out.contains("fred: ADDRESSBOOK fred \"Barney\": held by fred@127.0.0.1"),
        "{out}"
    );
    assert!(out.contains("fred: OPTION fred.old: stale"), "{out}");

    let o = tool(&s.dir, &["locks", "--clear"]);
    assert!(stdout(&o).contains("fred: OPTION fred.old: cleared"));
    let o = tool(&s.dir, &["locks"]);
    let out = stdout(&o);
    assert!(!out.contains("fred.old"), "{out}");
    assert!(out.contains("OPTION fred.test: held by"), "{out}");
    // The live lock still holds against another session.
    let mut other = s.login("fred");
    let r = other.cmd("LOCK OPTION fred.test");
    assert_eq!(r.status(), "NO", "{:?}", r.lines);
    drop(fred);
    drop(other);
}

#[test]
fn vcard_export_and_import_round_trip_1_8_books() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = cyrus18_dir(tmp.path());
    // Start from usage that matches the files (1.8's drifts).
    assert!(tool(&dir, &["check", "--repair"]).status.success());
    let s = Server::builder().data_dir(&dir).start();
    let mut c = s.login("fred");
    for book in ["fred", "fred.work"] {
        let out = tmp.path().join(format!("{book}.vcf"));
        let o = tool(&dir, &["export", book, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let vcf = std::fs::read(&out).unwrap();
        let text = String::from_utf8(vcf.clone()).expect("vCards are UTF-8");
        assert!(text.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\n"), "{text}");
        for line in vcf.split(|&b| b == b'\n') {
            assert!(line.len() <= 76, "unfolded line {line:?}");
        }
        let copy = format!("{book}.copy");
        // Import while the daemon serves the directory.
        let o = Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(["import", &copy])
            .stdin(std::fs::File::open(&out).unwrap())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(fetch_all(&mut c, book), fetch_all(&mut c, &copy), "{book}");
    }
    let vcf = std::fs::read_to_string(tmp.path().join("fred.vcf")).unwrap();
    assert!(vcf.contains(
        "FN:Barney Rubble\r\nN:Rubble;Barney;;;\r\nEMAIL:barney@bedrock\r\nTEL:555-9999\r\n"
    ));
    assert!(
        vcf.contains("ADR:;;1 Cave Street\\nBedrock;;;;\r\n"),
        "{vcf}"
    );
    assert!(vcf.contains("FN:Zoë Müller\r\n"));
    assert!(vcf.contains("EMAIL;X-IMSP-FIELD=Email:BOB@EXAMPLE.ORG\r\n"));
    let work = std::fs::read_to_string(tmp.path().join("fred.work.vcf")).unwrap();
    assert!(
        work.contains("NOTE:Lodge brother.\\nOwns a \"rock\" band\\n\r\n"),
        "{work}"
    );
    // Multi-line values come back as CRLF-separated lines, byte for byte.
    let joe = c.cmd("FETCHADDRESS fred.work.copy \"Joe Rockhead\"");
    assert!(
        joe.untagged_bytes()[0]
            .windows(30)
            .any(|w| w == b"Lodge brother.\r\nOwns a \"rock\" "),
        "{:?}",
        joe.lines
    );
    // The copies are listed and count against fred's usage.
    let books = c.ok("ADDRESSBOOK fred*");
    assert!(books.contains(&"* ADDRESSBOOK () \".\" fred.work.copy".to_string()));
    // The imports kept the usage right and every file whole.
    let o = tool(&dir, &["check"]);
    assert_eq!(stdout(&o), "no problems found\n");
}

#[test]
fn vcard_import_maps_fields_and_refuses_bad_input_whole() {
    let s = Server::start();
    let card = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Betty Rubble\r\nN:Rubble;Betty;;;\r\n\
EMAIL:betty@bedrock\r\nEMAIL:b@rock\r\nTEL:555\r\nTEL;TYPE=work:556\r\nNICKNAME:bets\r\n\
NOTE:likes\\, rocks\\nand pebbles\r\nADR:;;;Bedrock;;;Stone Age\r\nX-IMSP-HAIR:black\r\n\
ORG:Quarry\r\nEND:VCARD\r\n";
    let path = s.dir.join("../betty.vcf");
    std::fs::write(&path, card).unwrap();
    let o = tool(
        &s.dir,
        &["import", "barney.friends", path.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = s.login("barney");
    let r = c.cmd("FETCHADDRESS barney.friends \"Betty Rubble\"");
    assert_eq!(
        r.untagged_bytes()[0],
        b"* FETCHADDRESS barney.friends \"Betty Rubble\" address {18}\r\nBedrock\r\nStone Age \
alias bets company Quarry email {21}\r\nbetty@bedrock\r\nb@rock hair black \
notes {25}\r\nlikes, rocks\r\nand pebbles phone 555 phone-work 556"
            .to_vec(),
        "{}",
        String::from_utf8_lossy(&r.untagged_bytes()[0])
    );
    // A card without END, or with a name IMSP cannot key: nothing written.
    std::fs::write(
        &path,
        "BEGIN:VCARD\r\nFN:Ok\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:x\r\n",
    )
    .unwrap();
    let o = tool(&s.dir, &["import", "barney.bad", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 4: vCard not ended"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&path, "BEGIN:VCARD\r\nFN:say \"hi\"\r\nEND:VCARD\r\n").unwrap();
    let o = tool(&s.dir, &["import", "barney.bad", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("may not contain"), "{}", stderr(&o));
    assert!(!s.path("user/barney/abook.barney.bad").exists());
    let o = tool(&s.dir, &["import", "../etc", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = tool(&s.dir, &["export", "barney.none"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no address book barney.none"));
}

#[test]
fn backup_while_serving_and_restore() {
    let s = Server::start();
    let mut c = s.login("fred");
    c.ok("SET fred.color blue");
    c.ok("STOREADDRESS fred \"Barney Rubble\" email barney@bedrock");
    // A writer keeps changing the book while the backup runs.
    let mut w = s.login("barney");
    w.ok("STOREADDRESS barney First email f@x");
    let writer = std::thread::spawn(move || {
        for i in 0..150 {
            w.ok(&format!(
                "STOREADDRESS barney \"Entry {i}\" email e{i}@x phone {i}"
            ));
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let bk = tmp.path().join("backup");
    let o = tool(&s.dir, &["backup", bk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    writer.join().unwrap();
    assert!(!bk.join("options.").exists(), "lock files are not copied");
    assert!(s.dir.join("imspd.generation").exists());
    assert!(
        !bk.join("imspd.generation").exists(),
        "the change counter is not copied"
    );
    // Every file of the backup is whole: no damaged line. (Usage is
    // per file: it may lag the book copied before it; see the docs.)
    let o = tool(&bk, &["check"]);
    assert!(!stdout(&o).contains("damaged"), "{}", stdout(&o));
    assert!(bk.join("user/barney/abook.barney").is_file());
    assert!(bk.join("passwd").is_file());
    // Never into a non-empty directory; restore over data only with --force.
    let o = tool(&bk, &["backup", bk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = tool(&s.dir, &["restore", bk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));

    let fresh = tmp.path().join("restored");
    let o = tool(&fresh, &["restore", bk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s2 = Server::builder().data_dir(&fresh).start();
    let mut c2 = s2.login("fred");
    assert_eq!(
        c2.ok("GET fred.color"),
        vec!["* OPTION fred.color blue [READ-WRITE]"]
    );
    assert_eq!(fetch_all(&mut c2, "fred"), fetch_all(&mut c, "fred"));

    // --force over a directory in use: it becomes the backup again.
    c.ok("SET fred.color red");
    c.ok("STOREADDRESS fred \"Later\" email l@x");
    c.ok("CREATEADDRESSBOOK fred.later");
    let o = tool(&s.dir, &["restore", "--force", bk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        c.ok("GET fred.color"),
        vec!["* OPTION fred.color blue [READ-WRITE]"]
    );
    c.fails("FETCHADDRESS fred.later x", "NO");
    assert_eq!(fetch_all(&mut c, "fred"), fetch_all(&mut c2, "fred"));
}

#[test]
fn telemetry_records_a_users_sessions_with_secrets_masked() {
    let s = Server::start();
    std::fs::create_dir_all(s.path("log/fred")).unwrap();
    let mut c = s.connect();
    c.ok("CAPABILITY");
    c.fails("LOGIN fred wrongpass", "NO");
    c.ok("LOGIN fred secret");
    c.ok("SET fred.note \"hello there\"");
    let r = c.cmd_sync(&[b"SET fred.lit {5}", b"abcde"]);
    assert_eq!(r.status(), "OK");
    c.logout();
    // barney has no log directory: not recorded.
    let mut b = s.login("barney");
    b.ok("NOOP");
    b.logout();
    // A password sent as a literal is masked too.
    let mut c2 = s.connect();
    let r = c2.cmd_sync(&[b"LOGIN fred {6}", b"secret"]);
    assert_eq!(r.status(), "OK");
    c2.logout();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let files = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(s.path("log/fred"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if files.len() == 2 || std::time::Instant::now() > deadline {
            break files;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(!s.path("log/barney").exists());
    let logs: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let first = logs.iter().find(|l| l.contains("CAPABILITY")).unwrap();
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines[0].starts_with("# imspd session"), "{first}");
    assert!(lines[0].ends_with(" user fred"), "{first}");
    assert!(lines[1].starts_with("S: * OK "), "{first}");
    for want in [
        "C: T1 CAPABILITY",
        "C: T2 LOGIN fred ***",
        "S: T2 NO Login incorrect",
        "C: T3 LOGIN fred ***",
        "S: T3 OK User `fred' Logged in",
        "C: T4 SET fred.note \"hello there\"",
        "S: T4 OK set completed",
        "C: T5 SET fred.lit {5}",
        "S: + go ahead",
        "abcde",
        "C: T6 LOGOUT",
    ] {
        assert!(lines.contains(&want), "{want:?} not in\n{first}");
    }
    for l in &logs {
        assert!(!l.contains("secret") && !l.contains("wrongpass"), "{l}");
    }
    let second = logs.iter().find(|l| !l.contains("CAPABILITY")).unwrap();
    assert!(
        second.contains("C: T1 LOGIN fred ***\nS: + go ahead\n***\n"),
        "{second}"
    );
}

#[test]
fn telemetry_never_records_part_of_an_over_long_login_or_authenticate() {
    let s = Server::builder()
        .option_line("imsp.sasl.allowplaintext N +")
        .start();
    std::fs::create_dir_all(s.path("log/fred")).unwrap();
    // Longer than the tap keeps whole (64 KiB), sent in pieces.
    let secret = "TOPSECRET".repeat(9000);
    let mut c = s.connect();
    for line in [
        format!("a LOGIN fred {secret}\r\n"),
        format!("b AUTHENTICATE PLAIN {secret}\r\n"),
        format!("c LOGIN {secret}\r\n"),
    ] {
        for piece in line.as_bytes().chunks(5000) {
            c.send(piece);
        }
        let tag = &line[..1];
        let r = c.read_reply(tag);
        assert_ne!(r.status(), "OK", "{:?}", r.lines);
    }
    c.ok("LOGIN fred secret");
    c.logout();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(s.path("log/fred"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        let text = files
            .first()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .unwrap_or_default();
        if text.contains("LOGOUT") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(log.contains("C: T2 LOGOUT"), "{log}");
    assert!(log.contains("C: a LOGIN fred ***\n"), "{log}");
    if let Some(i) = log.find("TOPSECRET") {
        panic!("{}", &log[i.saturating_sub(300)..(i + 100).min(log.len())]);
    }
    assert!(!log.contains("secret"));
}

/// Every option name the server's code reads, from its source.
fn options_the_code_reads() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut names = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for quoted in text.split('"').skip(1).step_by(2) {
            let ok = quoted
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if ok && (quoted.starts_with("imsp.") || quoted.starts_with("common.")) {
                names.insert(quoted.to_string());
            }
        }
    }
    names
}

#[test]
fn the_sample_options_describe_every_predefined_option_and_serve() {
    let sample =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/options.sample"))
            .unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    for line in sample.lines() {
        let mut parts = line.splitn(3, ' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        assert!(
            ["N", "R", "W"].contains(&kind),
            "not an option line: {line:?}"
        );
        kinds.insert(name.to_ascii_lowercase(), kind.to_string());
    }
    let code = options_the_code_reads();
    assert!(code.len() > 40, "{code:?}");
    // And 1.8's predefined options (implementation notes) it does not read.
    let notes = [
        "imsp.login.realms",
        "imsp.login.srvtab",
        "imsp.share.mailboxes",
        "imsp.proxy.authlevel",
        "imsp.proxy.authtype",
        "imsp.create.policy",
        "imsp.sasl.maximum_ssf",
    ];
    for name in code.iter().map(String::as_str).chain(notes) {
        let desc = kinds.get(&format!("desc.{name}"));
        assert!(
            desc.is_some(),
            "etc/options.sample does not describe {name}"
        );
        // A non-visible option's description is for administrators only.
        if kinds.get(name).is_some_and(|k| k == "N") {
            assert_eq!(desc.unwrap(), "N", "desc.{name}");
        }
    }

    // `imspd --dev` serves a data directory made from it, and check finds
    // nothing wrong with it.
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let mut child = Command::new(BIN)
        .args(["--dev", "-p", "0"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("listening on 127.0.0.1:").nth(1) {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            break digits.parse::<u16>().unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "imspd --dev exited:\n{text}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "imspd --dev did not start:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut c = Client::connect(port);
    c.ok("LOGIN test test");
    assert_eq!(
        c.ok("GET desc.common.from"),
        vec![
            "* OPTION desc.common.from \"The address that should be used in the From: header when sending email.\" [READ-ONLY]"
        ]
    );
    // Users do not see the descriptions of non-visible options.
    assert_eq!(c.ok("GET desc.imsp.proxy.*"), Vec::<String>::new());
    assert_eq!(
        c.ok("GET imsp.user.quota"),
        vec!["* OPTION imsp.user.quota 1000 [READ-ONLY]"]
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let o = tool(&tmp.path().join("dev-data"), &["check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("no problems found"), "{}", stdout(&o));
}
