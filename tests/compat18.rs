//! A data directory written by cyrus-imspd 1.8 (captured from Debian's
//! package, tests/fixtures/cyrus18/) served as is, and imspd's rewrites of
//! its files byte for byte what 1.8 writes.

mod common;

use std::path::{Path, PathBuf};

use common::Server;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cyrus18/datadir"
);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the 1.8 directory, with passwords for its users.
fn serve_1_8() -> (Server, tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imsp");
    copy_dir(Path::new(FIXTURE), &dir);
    let s = Server::builder().data_dir(&dir).start();
    (s, tmp, dir)
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURE).join(rel)).unwrap()
}

fn lit(prefix: &str, value: &[u8], suffix: &str) -> Vec<u8> {
    let mut v = format!("{prefix}{{{}}}\r\n", value.len()).into_bytes();
    v.extend_from_slice(value);
    v.extend_from_slice(suffix.as_bytes());
    v
}

#[test]
fn options_written_by_1_8_are_served() {
    let (s, _tmp, _) = serve_1_8();
    let mut c = s.login("fred");
    let r = c.cmd("GET fred.*");
    assert_eq!(r.status(), "OK");
    let got = r.untagged_bytes();
    let want: Vec<Vec<u8>> = vec![
        b"* OPTION fred.alpha a [READ-WRITE]".to_vec(),
        b"* OPTION fred.Alpha2 a2 [READ-WRITE]".to_vec(),
        b"* OPTION fred.beta b [READ-WRITE]".to_vec(),
        b"* OPTION Fred.MixedCase UpperValue [READ-WRITE]".to_vec(),
        b"* OPTION fred.test \"hello world\" [READ-WRITE]".to_vec(),
        b"* OPTION fred.v.atom plain [READ-WRITE]".to_vec(),
        lit(
            "* OPTION fred.v.backslash ",
            b"C:\\dir\\file",
            " [READ-WRITE]",
        ),
        lit("* OPTION fred.v.cr ", b"a\rb", " [READ-WRITE]"),
        lit(
            "* OPTION fred.v.crlf ",
            b"line one\r\nline two",
            " [READ-WRITE]",
        ),
        lit("* OPTION fred.v.dquote ", b"say \"hi\"", " [READ-WRITE]"),
        b"* OPTION fred.v.empty \"\" [READ-WRITE]".to_vec(),
    ];
    assert_eq!(&got[..want.len()], &want[..]);
    let utf = "Zoë Müller — ünïcödé".as_bytes();
    assert!(got.contains(&lit("* OPTION fred.v.utf8 ", utf, " [READ-WRITE]")));
    assert!(got.contains(&b"* OPTION fred.v.lead \" x \" [READ-WRITE]".to_vec()));
    // The user's override of a global read-write option.
    assert_eq!(
        c.ok("GET common.test.global"),
        vec!["* OPTION common.test.global \"fred override\" [READ-WRITE]"]
    );
    // 1.8's recorded usage is what is shown (925 bytes: 1 KB).
    assert_eq!(
        c.ok("GET imsp.user.quota.usage"),
        vec!["* OPTION imsp.user.quota.usage 1 [READ-ONLY]"]
    );
    // 1.8's global options: its admin list is honoured.
    let mut a = s.connect();
    common::set_password(&s.dir, "root", "rootpw");
    a.ok("LOGIN root rootpw");
    assert_eq!(
        a.ok("GET imsp.test.hidden"),
        vec!["* OPTION imsp.test.hidden secret [READ-ONLY]"]
    );
}

#[test]
fn address_books_written_by_1_8_are_served() {
    let (s, _tmp, _) = serve_1_8();
    let mut f = s.login("fred");
    assert_eq!(
        f.ok("ADDRESSBOOK *"),
        vec![
            "* ADDRESSBOOK () \".\" fred",
            "* ADDRESSBOOK () \".\" fred.private",
            "* ADDRESSBOOK () \".\" fred.upper",
            "* ADDRESSBOOK () \".\" fred.work",
        ]
    );
    let r = f.cmd("SEARCHADDRESS fred");
    assert_eq!(
        r.untagged_bytes(),
        &[
            b"* SEARCHADDRESS alice".to_vec(),
            b"* SEARCHADDRESS \"Barney Rubble\"".to_vec(),
            b"* SEARCHADDRESS Bob".to_vec(),
            b"* SEARCHADDRESS Pebbles".to_vec(),
            b"* SEARCHADDRESS \"Quote Test\"".to_vec(),
            b"* SEARCHADDRESS \"Wilma Flintstone\"".to_vec(),
            lit("* SEARCHADDRESS ", "Zoë Müller".as_bytes(), ""),
        ]
    );
    let r = f.cmd("FETCHADDRESS fred \"Wilma Flintstone\"");
    assert_eq!(
        r.untagged_bytes(),
        &[lit(
            "* FETCHADDRESS fred \"Wilma Flintstone\" address ",
            b"1 Cave Street\r\nBedrock",
            " email wilma@bedrock"
        )]
    );
    assert_eq!(
        f.ok("FETCHADDRESS fred bob"),
        vec!["* FETCHADDRESS fred Bob Email BOB@EXAMPLE.ORG"]
    );
    assert_eq!(
        f.ok("FETCHADDRESS fred pebbles"),
        vec!["* FETCHADDRESS fred Pebbles"]
    );
    // 1.8's ACLs: barney has lr on fred and lrw on fred.work, anyone r there.
    let mut b = s.login("barney");
    assert_eq!(
        b.ok("MYRIGHTS ADDRESSBOOK fred"),
        vec!["* MYRIGHTS ADDRESSBOOK fred lr"]
    );
    assert_eq!(
        b.ok("SEARCHADDRESS fred name *rubble"),
        vec!["* SEARCHADDRESS \"Barney Rubble\""]
    );
    b.fails("STOREADDRESS fred x email y", "NO");
    b.ok("STOREADDRESS fred.work \"Mr. Slate\" note \"by barney again\"");
    let mut w = s.login("admin");
    assert_eq!(w.ok("SEARCHADDRESS fred.work").len(), 2);
    b.fails("SEARCHADDRESS fred.private", "NO");
}

#[test]
fn rewrites_are_byte_for_byte_what_1_8_wrote() {
    let (s, _tmp, dir) = serve_1_8();
    let mut f = s.login("fred");
    // Change each file and change it back: imspd rewrites it whole, and the
    // result must be the bytes 1.8 wrote.
    f.ok("SET fred.tmp x");
    f.ok("UNSET fred.tmp");
    f.ok("STOREADDRESS fred.work \"Joe Rockhead\" extra 1");
    f.ok("STOREADDRESS fred.work \"Joe Rockhead\" extra \"\"");
    f.ok("STOREADDRESS fred Zed email z");
    f.ok("DELETEADDRESS fred Zed");
    f.ok("CREATEADDRESSBOOK fred.tmp");
    f.ok("DELETEADDRESSBOOK fred.tmp");
    f.ok("SETACL ADDRESSBOOK fred wilma lr");
    f.ok("DELETEACL ADDRESSBOOK fred wilma");
    let mut a = s.connect();
    common::set_password(&dir, "root", "rootpw");
    a.ok("LOGIN root rootpw");
    a.ok("SET *x.tmp y");
    a.ok("UNSET *x.tmp");
    for rel in [
        "options",
        "abooks",
        "user/fred/options",
        "user/fred/abooks",
        "user/fred/abook.fred",
        "user/fred/abook.fred.work",
    ] {
        let now = std::fs::read(dir.join(rel)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&now),
            String::from_utf8_lossy(&fixture(rel)),
            "{rel}"
        );
        assert_eq!(now, fixture(rel), "{rel}");
    }
}
