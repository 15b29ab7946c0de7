//! Address books, their ACLs and entry locks, through the real daemon.

mod common;

use common::{Client, Server};

fn barney(c: &mut Client) {
    let r = c.cmd("STOREADDRESS fred \"Barney Rubble\" email \"barney@bedrock\" phone \"555\"");
    assert_eq!(
        r.untagged(),
        vec!["* FETCHADDRESS fred \"Barney Rubble\" email barney@bedrock phone 555"]
    );
    assert_eq!(
        r.tagged().split_once(' ').unwrap().1,
        "OK storeaddress completed"
    );
}

#[test]
fn a_new_user_has_a_default_book_at_once() {
    let s = Server::start();
    let mut c = s.login("fred");
    assert_eq!(c.ok("ADDRESSBOOK *"), vec!["* ADDRESSBOOK () \".\" fred"]);
    // 1.8 refused this until the default book had an entry.
    c.ok("CREATEADDRESSBOOK fred.work");
    assert_eq!(
        c.ok("ADDRESSBOOK *"),
        vec![
            "* ADDRESSBOOK () \".\" fred",
            "* ADDRESSBOOK () \".\" fred.work"
        ]
    );
    assert_eq!(
        c.ok("ADDRESSBOOK fred.%"),
        vec!["* ADDRESSBOOK () \".\" fred.work"]
    );
    assert_eq!(s.read("user/fred/abooks"), "fred \nfred.work \n");
    assert_eq!(s.read("user/fred/abook.fred.work"), "");
    assert!(
        c.fails("CREATEADDRESSBOOK fred.work", "NO")
            .contains("already exists")
    );
    assert!(
        c.fails("CREATEADDRESSBOOK fred", "NO")
            .contains("already exists")
    );
    // Another user's namespace needs the create right there.
    assert!(
        c.fails("CREATEADDRESSBOOK barney.stolen", "NO")
            .ends_with("NO User 'fred' not permitted to create address book 'barney.stolen'")
    );
    // Book names are case-insensitive; new ones are stored in lower case, as 1.8 does.
    c.ok("CREATEADDRESSBOOK fred.Upper");
    assert!(
        c.fails("CREATEADDRESSBOOK fred.UPPER", "NO")
            .contains("already exists")
    );
    c.ok("STOREADDRESS fred.UPPER x email y");
    assert!(s.path("user/fred/abook.fred.upper").exists());
    c.ok("DELETEADDRESSBOOK fred.UPPER");
    c.fails("CREATEADDRESSBOOK \"../etc\"", "NO");
    c.fails("CREATEADDRESSBOOK \"a/b\"", "NO");
    assert!(!s.path("user/barney").exists());
}

#[test]
fn store_fetch_search_delete_as_1_8_answers() {
    let s = Server::start();
    let mut c = s.login("fred");
    barney(&mut c);
    c.ok("STOREADDRESS fred \"Betty Rubble\" email betty@bedrock");
    c.ok("STOREADDRESS fred \"Fred Flintstone\" email fred@bedrock phone 555-1234");
    assert_eq!(
        s.read("user/fred/abook.fred"),
        "Barney\\sRubble\" \nBarney\\sRubble\"email barney@bedrock\nBarney\\sRubble\"phone 555\n\
Betty\\sRubble\" \nBetty\\sRubble\"email betty@bedrock\n\
Fred\\sFlintstone\" \nFred\\sFlintstone\"email fred@bedrock\nFred\\sFlintstone\"phone 555-1234\n"
    );
    assert_eq!(
        c.ok("SEARCHADDRESS fred name \"*Rubble\""),
        vec![
            "* SEARCHADDRESS \"Barney Rubble\"",
            "* SEARCHADDRESS \"Betty Rubble\""
        ]
    );
    // Criteria intersect; patterns are case-insensitive; no criteria: all.
    assert_eq!(
        c.ok("SEARCHADDRESS fred name \"* rubble\" email \"B*@BEDROCK\" phone *"),
        vec!["* SEARCHADDRESS \"Barney Rubble\""]
    );
    assert_eq!(c.ok("SEARCHADDRESS fred phone 555*").len(), 2);
    assert_eq!(c.ok("SEARCHADDRESS fred").len(), 3);
    assert!(c.ok("SEARCHADDRESS fred nosuchfield *").is_empty());
    // Entry names are case-insensitive.
    assert_eq!(
        c.ok("FETCHADDRESS fred \"barney rubble\" \"BETTY RUBBLE\""),
        vec![
            "* FETCHADDRESS fred \"Barney Rubble\" email barney@bedrock phone 555",
            "* FETCHADDRESS fred \"Betty Rubble\" email betty@bedrock",
        ]
    );
    // A missing name: the others are sent, then NO names it (as 1.8).
    let r = c.cmd("FETCHADDRESS fred \"Betty Rubble\" Nobody");
    assert_eq!(
        r.untagged(),
        vec!["* FETCHADDRESS fred \"Betty Rubble\" email betty@bedrock"]
    );
    assert!(
        r.tagged().ends_with("NO entry 'Nobody' not found"),
        "{}",
        r.tagged()
    );
    // Merge: unspecified fields kept, an empty value removes a field.
    assert_eq!(
        c.ok("STOREADDRESS fred \"BARNEY RUBBLE\" hair blond email \"\""),
        vec!["* FETCHADDRESS fred \"Barney Rubble\" hair blond phone 555"]
    );
    c.ok("DELETEADDRESS fred \"betty rubble\"");
    assert!(
        c.fails("DELETEADDRESS fred \"betty rubble\"", "NO")
            .ends_with("NO entry 'betty rubble' not found")
    );
    assert_eq!(c.ok("SEARCHADDRESS fred").len(), 2);
    assert!(!s.read("user/fred/abook.fred").contains("Betty"));
    // Names with `"` and the reserved field `name` are refused.
    c.fails("STOREADDRESS fred {3+}\r\na\"b email x", "NO");
    c.fails("STOREADDRESS fred x name y", "BAD");
    c.fails("STOREADDRESS fred x", "BAD");
    assert!(
        c.fails("FETCHADDRESS nosuch x", "NO")
            .contains("does not exist")
    );
}

#[test]
fn multi_line_and_8_bit_values_round_trip_exactly() {
    let s = Server::start();
    let mut c = s.login("fred");
    let value = "12 Main St.\r\nBedrock \\ \"Stone Age\"\r\nZoë Müller".as_bytes();
    let name = "Zoë Müller".as_bytes();
    let mut cmd = format!("STOREADDRESS fred {{{}+}}\r\n", name.len()).into_bytes();
    cmd.extend_from_slice(name);
    cmd.extend_from_slice(format!(" address {{{}+}}\r\n", value.len()).as_bytes());
    cmd.extend_from_slice(value);
    let r = c.cmd_bytes(&cmd);
    assert_eq!(r.status(), "OK", "{:?}", r.lines);
    let mut want = format!("* FETCHADDRESS fred {{{}}}\r\n", name.len()).into_bytes();
    want.extend_from_slice(name);
    want.extend_from_slice(format!(" address {{{}}}\r\n", value.len()).as_bytes());
    want.extend_from_slice(value);
    assert_eq!(r.untagged_bytes(), &[want.clone()]);
    let mut fetch = format!("FETCHADDRESS fred {{{}+}}\r\n", name.len()).into_bytes();
    fetch.extend_from_slice(name);
    assert_eq!(c.cmd_bytes(&fetch).untagged_bytes(), &[want]);
    let file = std::fs::read(s.path("user/fred/abook.fred")).unwrap();
    assert_eq!(
        file.iter().filter(|&&b| b == b'\n').count(),
        2,
        "one line per record"
    );
}

#[test]
fn acls_grant_and_refuse_every_right() {
    let s = Server::start();
    let mut f = s.login("fred");
    let mut b = s.login("barney");
    barney(&mut f);
    // Without rights, barney is told the book does not exist, as for a
    // book that does not.
    let hidden = b.fails("FETCHADDRESS fred \"Barney Rubble\"", "NO");
    let missing = b.fails("FETCHADDRESS nosuch \"Barney Rubble\"", "NO");
    let text = |t: &str| t.split_once(' ').unwrap().1.to_string();
    assert_eq!(
        text(&hidden).replace("fred", "X"),
        text(&missing).replace("nosuch", "X")
    );
    b.fails("MYRIGHTS ADDRESSBOOK fred", "NO");
    assert_eq!(b.ok("ADDRESSBOOK *"), vec!["* ADDRESSBOOK () \".\" barney"]);

    assert_eq!(
        f.ok("GETACL ADDRESSBOOK fred"),
        vec!["* ACL ADDRESSBOOK fred fred lrswipcda"]
    );
    assert_eq!(
        f.ok("MYRIGHTS ADDRESSBOOK fred"),
        vec!["* MYRIGHTS ADDRESSBOOK fred lrswipcda"]
    );
    f.ok("SETACL ADDRESSBOOK fred barney lr");
    assert_eq!(s.read("abooks"), "fred fred\tlrswipcda\tbarney\tlr\t\n");
    assert_eq!(
        f.ok("GETACL ADDRESSBOOK fred"),
        vec![
            "* ACL ADDRESSBOOK fred fred lrswipcda",
            "* ACL ADDRESSBOOK fred barney lr"
        ]
    );
    // l: listed; r: search and fetch; no w: no store, delete or lock.
    assert_eq!(
        b.ok("MYRIGHTS ADDRESSBOOK fred"),
        vec!["* MYRIGHTS ADDRESSBOOK fred lr"]
    );
    assert_eq!(
        b.ok("ADDRESSBOOK *"),
        vec![
            "* ADDRESSBOOK () \".\" barney",
            "* ADDRESSBOOK () \".\" fred"
        ]
    );
    assert_eq!(b.ok("SEARCHADDRESS fred").len(), 1);
    assert_eq!(b.ok("FETCHADDRESS fred \"Barney Rubble\"").len(), 1);
    for cmd in [
        "STOREADDRESS fred x email y",
        "DELETEADDRESS fred \"Barney Rubble\"",
        "LOCK ADDRESSBOOK fred \"Barney Rubble\"",
        "SETACL ADDRESSBOOK fred barney lrwa",
        "GETACL ADDRESSBOOK fred",
    ] {
        assert!(b.fails(cmd, "NO").contains("Permission denied"), "{cmd}");
    }
    assert!(
        b.fails("CREATEADDRESSBOOK fred.barneys", "NO")
            .contains("not permitted to create")
    );
    // r without l: not listed, still readable by name.
    f.ok("SETACL ADDRESSBOOK fred barney r");
    assert_eq!(b.ok("ADDRESSBOOK fred*"), Vec::<String>::new());
    assert_eq!(b.ok("SEARCHADDRESS fred").len(), 1);
    // w: store and delete; c on the default book: create books there.
    f.ok("SETACL ADDRESSBOOK fred barney lrwc");
    b.ok("STOREADDRESS fred \"Wilma\" email wilma@bedrock");
    b.ok("DELETEADDRESS fred Wilma");
    b.ok("CREATEADDRESSBOOK fred.shared");
    // The new book is fred's, with the default ACL: barney has no right on it.
    assert!(
        b.fails("DELETEADDRESSBOOK fred.shared", "NO")
            .contains("does not exist")
    );
    // d: delete the book; a: change its ACL.
    f.ok("SETACL ADDRESSBOOK fred.shared barney lrwda");
    b.ok("SETACL ADDRESSBOOK fred.shared anyone l");
    let mut w = s.login("admin");
    assert!(
        w.ok("ADDRESSBOOK fred.*")
            .contains(&"* ADDRESSBOOK () \".\" fred.shared".to_string())
    );
    b.ok("DELETEADDRESSBOOK fred.shared");
    assert!(!s.path("user/fred/abook.fred.shared").exists());
    assert!(!s.read("abooks").contains("fred.shared"));
    // anyone; DELETEACL; back to the default ACL removes the line.
    f.ok("SETACL ADDRESSBOOK fred anyone lr");
    let mut admin_view = s.login("admin");
    assert_eq!(admin_view.ok("SEARCHADDRESS fred").len(), 1);
    f.ok("DELETEACL ADDRESSBOOK fred anyone");
    f.ok("DELETEACL ADDRESSBOOK fred barney");
    assert_eq!(s.read("abooks"), "");
    b.fails("SEARCHADDRESS fred", "NO");
    // The owner always keeps the administer right.
    f.ok("SETACL ADDRESSBOOK fred fred lr");
    assert_eq!(
        f.ok("MYRIGHTS ADDRESSBOOK fred"),
        vec!["* MYRIGHTS ADDRESSBOOK fred lra"]
    );
    f.ok("SETACL ADDRESSBOOK fred fred lrswipcda");
    assert_eq!(s.read("abooks"), "");
    // Bad rights and identifiers are refused.
    f.fails("SETACL ADDRESSBOOK fred barney lrx", "BAD");
    f.fails("SETACL ADDRESSBOOK fred \"bar ney\" lr", "BAD");
}

#[test]
fn rename_keeps_entries_and_acls() {
    let s = Server::start();
    let mut f = s.login("fred");
    f.ok("CREATEADDRESSBOOK fred.work");
    f.ok("STOREADDRESS fred.work Boss email boss@slate");
    f.ok("SETACL ADDRESSBOOK fred.work barney lr");
    f.ok("RENAMEADDRESSBOOK fred.work fred.job");
    assert_eq!(
        f.ok("FETCHADDRESS fred.job Boss"),
        vec!["* FETCHADDRESS fred.job Boss email boss@slate"]
    );
    f.fails("FETCHADDRESS fred.work Boss", "NO");
    assert_eq!(s.read("abooks"), "fred.job fred\tlrswipcda\tbarney\tlr\t\n");
    assert_eq!(s.read("user/fred/abooks"), "fred \nfred.job \n");
    let mut b = s.login("barney");
    assert_eq!(b.ok("SEARCHADDRESS fred.job").len(), 1);
    f.fails("RENAMEADDRESSBOOK fred.job barney.job", "NO");
    f.fails("RENAMEADDRESSBOOK fred fred.other", "NO");
    f.ok("CREATEADDRESSBOOK fred.other");
    assert!(
        f.fails("RENAMEADDRESSBOOK fred.job fred.other", "NO")
            .contains("already exists")
    );
}

/// An ACL line left for a book with no file (a DELETEADDRESSBOOK killed
/// after removing the file) gives nothing on a new book of that name; one
/// left for an unlisted file (a RENAMEADDRESSBOOK killed after renaming
/// it) stays with that book.
#[test]
fn a_new_book_does_not_take_a_stale_acl_line() {
    let s = Server::start();
    let mut f = s.login("fred");
    std::fs::write(
        s.path("abooks"),
        "fred.gone fred\tlrswipcda\tbarney\tlr\t\nfred.moved fred\tlrswipcda\tbarney\tlr\t\n",
    )
    .unwrap();
    std::fs::write(
        s.path("user/fred/abook.fred.moved"),
        "Boss\" \nBoss\"email b@s\n",
    )
    .unwrap();
    f.ok("CREATEADDRESSBOOK fred.gone");
    f.ok("CREATEADDRESSBOOK fred.moved");
    assert_eq!(
        f.ok("GETACL ADDRESSBOOK fred.gone"),
        vec!["* ACL ADDRESSBOOK fred.gone fred lrswipcda"]
    );
    assert_eq!(
        s.read("abooks"),
        "fred.moved fred\tlrswipcda\tbarney\tlr\t\n"
    );
    let mut b = s.login("barney");
    b.fails("SEARCHADDRESS fred.gone", "NO");
    assert_eq!(
        b.ok("SEARCHADDRESS fred.moved"),
        vec!["* SEARCHADDRESS Boss"]
    );
}

#[test]
fn entry_locks_across_sessions() {
    let s = Server::start();
    let mut a = s.login("fred");
    barney(&mut a);
    let r = a.cmd("LOCK ADDRESSBOOK fred \"Barney Rubble\"");
    assert_eq!(
        r.untagged(),
        vec!["* FETCHADDRESS fred \"Barney Rubble\" email barney@bedrock phone 555"]
    );
    assert_eq!(r.status(), "OK");
    let mut b = s.login("fred");
    let t = b.fails("LOCK ADDRESSBOOK fred \"barney rubble\"", "NO");
    assert_eq!(
        t.split_once(' ').unwrap().1,
        "NO [LOCKED] addressbook entry 'barney rubble' already locked by fred@127.0.0.1"
    );
    // A lock on an entry that does not exist yet: no data.
    assert!(b.ok("LOCK ADDRESSBOOK fred \"New Person\"").is_empty());
    // A lock does not stop STOREADDRESS.
    b.ok("STOREADDRESS fred \"Barney Rubble\" phone 556");
    b.fails("UNLOCK ADDRESSBOOK fred \"Barney Rubble\"", "NO");
    b.fails("LOCK ADDRESSBOOK nosuch x", "NO");
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while b.cmd("LOCK ADDRESSBOOK fred \"Barney Rubble\"").status() != "OK" {
        assert!(
            std::time::Instant::now() < deadline,
            "lock not released on disconnect"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    b.ok("UNLOCK ADDRESSBOOK fred \"Barney Rubble\"");
    assert!(!s.read("user/fred/alock").contains("Barney"));
}

#[test]
fn quota_counts_address_book_fields() {
    let s = Server::builder()
        .options(&common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 1"))
        .start();
    let mut c = s.login("fred");
    c.ok("SET fred.test \"hello world\"");
    barney(&mut c);
    // 9 + 11 for the option, 5 + 14 and 5 + 3 for the fields: 1.8's 47.
    assert!(
        s.read("user/fred/options")
            .contains("imsp.user.quota.usage R 47\n")
    );
    let before = s.read("user/fred/abook.fred");
    let t = c.fails(
        &format!("STOREADDRESS fred Big notes {}", "x".repeat(2500)),
        "NO",
    );
    assert!(t.contains("quota"), "{t}");
    assert_eq!(s.read("user/fred/abook.fred"), before);
    c.ok("DELETEADDRESS fred \"Barney Rubble\"");
    assert!(
        s.read("user/fred/options")
            .contains("imsp.user.quota.usage R 20\n")
    );
}

/// With no quota no running count is kept (every address book change would
/// wait for the owner's options file): a count recorded before is dropped
/// at the first change, GET computes the usage from the files, and a quota
/// set later is checked against the real usage.
#[test]
fn without_a_quota_the_usage_is_computed_when_asked() {
    let s = Server::builder()
        .options(&common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 0"))
        .start();
    std::fs::create_dir_all(s.dir.join("user/fred")).unwrap();
    std::fs::write(
        s.dir.join("user/fred/options"),
        "fred.test W hello world\nimsp.user.quota.usage R 20\n",
    )
    .unwrap();
    let mut c = s.login("fred");
    barney(&mut c);
    // The recorded count went with the first change; the option stayed.
    assert_eq!(s.read("user/fred/options"), "fred.test W hello world\n");
    c.ok("STOREADDRESS fred Wilma email wilma@bedrock");
    c.ok("DELETEADDRESS fred Wilma");
    c.ok("SET fred.more x");
    // Neither the store nor the delete wrote a count; the SET made none.
    assert_eq!(
        s.read("user/fred/options"),
        "fred.more W x\nfred.test W hello world\n"
    );
    // 9 + 11 and 9 + 1 for the options, 5 + 14 and 5 + 3 for the fields.
    assert_eq!(
        c.ok("GET imsp.user.quota.usage"),
        vec!["* OPTION imsp.user.quota.usage 1 [READ-ONLY]"]
    );
    // A quota of 1 KB: the 57 bytes in use are counted, so 1,000 more fit
    // and 1,000 after them do not.
    let options = s
        .read("options")
        .replace("imsp.user.quota R 0", "imsp.user.quota R 1");
    std::fs::write(s.dir.join("options"), options).unwrap();
    common::until_a_hand_edit_is_seen();
    c.ok(&format!("STOREADDRESS fred Big notes {}", "x".repeat(950)));
    assert!(
        s.read("user/fred/options")
            .contains(&format!("imsp.user.quota.usage R {}\n", 57 + 5 + 950))
    );
    let t = c.fails(
        &format!("STOREADDRESS fred Bigger notes {}", "x".repeat(100)),
        "NO",
    );
    assert!(t.contains("quota"), "{t}");
}

#[test]
fn sixteen_processes_storing_into_one_book_lose_nothing() {
    let s = Server::start();
    let port = s.port;
    common::concurrently(16, move |i| {
        let mut c = Client::connect(port);
        c.ok("LOGIN fred secret");
        for j in 0..25 {
            c.ok(&format!("STOREADDRESS fred \"P{i} N{j}\" email p{i}n{j}@x"));
        }
    });
    let mut c = s.login("fred");
    assert_eq!(c.ok("SEARCHADDRESS fred").len(), 400);
    let file = s.read("user/fred/abook.fred");
    assert_eq!(file.lines().count(), 800);
}

#[test]
fn a_repeated_search_sees_what_another_session_stored() {
    let s = Server::start();
    let mut a = s.login("fred");
    let mut b = s.login("fred");
    barney(&mut a);
    assert_eq!(a.ok("SEARCHADDRESS fred name *rubble").len(), 1);
    b.ok("STOREADDRESS fred \"Betty Rubble\" email betty@bedrock");
    assert_eq!(
        a.ok("SEARCHADDRESS fred name *rubble email b*"),
        vec![
            "* SEARCHADDRESS \"Barney Rubble\"",
            "* SEARCHADDRESS \"Betty Rubble\""
        ]
    );
    b.ok("DELETEADDRESS fred \"Barney Rubble\"");
    assert_eq!(
        a.ok("SEARCHADDRESS fred name *rubble"),
        vec!["* SEARCHADDRESS \"Betty Rubble\""]
    );
}

/// Run `a` and `b` at the same moment in two sessions of fred, `rounds`
/// times, each round after `setup` (in a third session); `check` gets both
/// replies and the server.
fn race(
    s: &Server,
    rounds: usize,
    setup: &[&str],
    a: &[&str],
    b: &[&str],
    mut check: impl FnMut(&Server, &mut Client, &[common::Reply], &[common::Reply]),
) {
    let mut admin = s.login("fred");
    let mut ca = s.login("fred");
    let mut cb = s.login("fred");
    for _ in 0..rounds {
        for cmd in setup {
            admin.cmd(cmd);
        }
        let barrier = std::sync::Barrier::new(2);
        let run = |c: &mut Client, cmds: &[&str]| {
            barrier.wait();
            cmds.iter().map(|cmd| c.cmd(cmd)).collect::<Vec<_>>()
        };
        let (ra, rb) = std::thread::scope(|sc| {
            let ta = sc.spawn(|| run(&mut ca, a));
            let tb = sc.spawn(|| run(&mut cb, b));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        check(s, &mut admin, &ra, &rb);
    }
}

#[test]
fn a_rename_never_replaces_a_book_created_meanwhile() {
    let s = Server::start();
    let mut both = 0;
    race(
        &s,
        40,
        &[
            "DELETEADDRESSBOOK fred.a",
            "DELETEADDRESSBOOK fred.b",
            "CREATEADDRESSBOOK fred.a",
            "STOREADDRESS fred.a Old email old",
        ],
        &["RENAMEADDRESSBOOK fred.a fred.b"],
        &[
            "CREATEADDRESSBOOK fred.b",
            "STOREADDRESS fred.b Keep email k",
        ],
        |_, c, ra, rb| {
            let (renamed, created) = (ra[0].status() == "OK", rb[0].status() == "OK");
            if renamed && created {
                both += 1;
            }
            if created && rb[1].status() == "OK" {
                assert_eq!(
                    c.ok("SEARCHADDRESS fred.b name Keep").len(),
                    1,
                    "entry lost"
                );
            }
            if !created {
                assert!(
                    rb[0].tagged().contains("already exists"),
                    "{}",
                    rb[0].tagged()
                );
            }
        },
    );
    assert_eq!(
        both, 0,
        "a rename and a create of the same name both succeeded"
    );
}

#[test]
fn a_book_deleted_meanwhile_is_not_renamed() {
    let s = Server::start();
    race(
        &s,
        40,
        &[
            "DELETEADDRESSBOOK fred.b",
            "CREATEADDRESSBOOK fred.a",
            "STOREADDRESS fred.a Old email old",
        ],
        &["RENAMEADDRESSBOOK fred.a fred.b"],
        &["DELETEADDRESSBOOK fred.a"],
        |s, c, ra, rb| {
            let (renamed, deleted) = (ra[0].status() == "OK", rb[0].status() == "OK");
            assert!(
                renamed != deleted,
                "{:?} {:?}",
                ra[0].tagged(),
                rb[0].tagged()
            );
            if renamed {
                assert_eq!(c.ok("SEARCHADDRESS fred.b").len(), 1);
            } else {
                assert!(
                    ra[0].tagged().contains("does not exist"),
                    "{}",
                    ra[0].tagged()
                );
                assert!(!s.read("user/fred/abooks").contains("fred.b"));
            }
        },
    );
}

#[test]
fn a_store_or_setacl_racing_a_delete_leaves_nothing_behind() {
    let s = Server::start();
    race(
        &s,
        40,
        &["CREATEADDRESSBOOK fred.a"],
        &[
            "STOREADDRESS fred.a X email x",
            "SETACL ADDRESSBOOK fred.a barney lr",
        ],
        &["DELETEADDRESSBOOK fred.a"],
        |s, _, ra, rb| {
            assert_eq!(rb[0].status(), "OK");
            for r in ra {
                if r.status() != "OK" {
                    assert!(r.tagged().contains("does not exist"), "{}", r.tagged());
                }
            }
            assert!(
                !s.path("user/fred/abook.fred.a").exists(),
                "an entry was stored into a deleted book"
            );
            assert!(
                !s.path("abooks").exists() || !s.read("abooks").contains("fred.a"),
                "an ACL is left for a deleted book"
            );
        },
    );
}

#[test]
fn racing_stores_cannot_both_spend_the_last_of_the_quota() {
    let s = Server::builder()
        .options(&common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 1"))
        .start();
    let (x, y) = (
        format!("STOREADDRESS fred X notes {}", "x".repeat(700)),
        format!("STOREADDRESS fred.a Y notes {}", "y".repeat(700)),
    );
    race(
        &s,
        30,
        &[
            "DELETEADDRESS fred X",
            "DELETEADDRESS fred.a Y",
            "CREATEADDRESSBOOK fred.a",
        ],
        &[&x],
        &[&y],
        |s, _, ra, rb| {
            assert!(
                ra[0].status() != "OK" || rb[0].status() != "OK",
                "both stores passed a quota only one fits in"
            );
            assert!(ra[0].status() == "OK" || rb[0].status() == "OK");
            assert!(
                s.read("user/fred/options")
                    .contains("imsp.user.quota.usage R 705\n")
            );
        },
    );
}

#[test]
fn create_and_rename_do_not_reveal_a_hidden_book() {
    let s = Server::start();
    let mut f = s.login("fred");
    let mut b = s.login("barney");
    f.ok("CREATEADDRESSBOOK fred.secret");
    f.ok("CREATEADDRESSBOOK fred.shared");
    let text = |t: String| t.split_once(' ').unwrap().1.to_string();
    // No create right on fred's default book: the same NO whether the
    // name is taken or not.
    assert_eq!(
        text(b.fails("CREATEADDRESSBOOK fred.secret", "NO")).replace("secret", "X"),
        text(b.fails("CREATEADDRESSBOOK fred.nosuch", "NO")).replace("nosuch", "X")
    );
    f.ok("SETACL ADDRESSBOOK fred.shared barney lrd");
    assert_eq!(
        text(b.fails("RENAMEADDRESSBOOK fred.shared fred.secret", "NO")).replace("secret", "X"),
        text(b.fails("RENAMEADDRESSBOOK fred.shared fred.nosuch", "NO")).replace("nosuch", "X")
    );
    // Without d, neither delete nor rename.
    f.ok("SETACL ADDRESSBOOK fred.shared barney lrwc");
    f.ok("SETACL ADDRESSBOOK fred barney lrc");
    for cmd in [
        "DELETEADDRESSBOOK fred.shared",
        "RENAMEADDRESSBOOK fred.shared fred.other",
    ] {
        let t = b.fails(cmd, "NO");
        assert!(
            t.contains("Permission denied") && t.contains("delete"),
            "{t}"
        );
    }
    assert_eq!(f.ok("ADDRESSBOOK fred.*").len(), 2);
    // With d (and c on the default book): renamed.
    f.ok("SETACL ADDRESSBOOK fred.shared barney lrd");
    assert!(
        b.fails("RENAMEADDRESSBOOK fred.shared fred.secret", "NO")
            .contains("already exists")
    );
    b.ok("RENAMEADDRESSBOOK fred.shared fred.other");
    b.ok("DELETEADDRESSBOOK fred.other");
    assert_eq!(
        f.ok("ADDRESSBOOK fred.*"),
        vec!["* ADDRESSBOOK () \".\" fred.secret"]
    );
}

#[test]
fn percent_has_no_hierarchy_in_entries_and_question_mark_is_one_character() {
    let s = Server::start();
    let mut c = s.login("fred");
    c.ok("STOREADDRESS fred \"Mr. J. Smith\" email j.smith@bedrock.org");
    barney(&mut c);
    // Entry names and values have no hierarchy: `%` is `*` there.
    assert_eq!(
        c.ok("SEARCHADDRESS fred name \"Mr. %\""),
        vec!["* SEARCHADDRESS \"Mr. J. Smith\""]
    );
    assert_eq!(
        c.ok("SEARCHADDRESS fred email %@bedrock.org"),
        vec!["* SEARCHADDRESS \"Mr. J. Smith\""]
    );
    // `?` is one character (the draft's list_wildcards; 1.8 did this).
    assert_eq!(
        c.ok("SEARCHADDRESS fred name B?rney*"),
        vec!["* SEARCHADDRESS \"Barney Rubble\""]
    );
    assert!(c.ok("SEARCHADDRESS fred name B?rney").is_empty());
    assert_eq!(c.ok("SEARCHADDRESS fred phone ???").len(), 1);
    // Book names keep their hierarchy.
    c.ok("CREATEADDRESSBOOK fred.work");
    c.ok("CREATEADDRESSBOOK fred.work.old");
    assert_eq!(
        c.ok("ADDRESSBOOK fred.%"),
        vec!["* ADDRESSBOOK () \".\" fred.work"]
    );
    assert_eq!(
        c.ok("ADDRESSBOOK fred.w?rk"),
        vec!["* ADDRESSBOOK () \".\" fred.work"]
    );
    assert!(c.ok("ADDRESSBOOK fred?work").is_empty());
    // GET too (1.8: `GET fred.tes?` found `fred.test`).
    c.ok("SET fred.test \"hello world\"");
    assert_eq!(
        c.ok("GET fred.tes?"),
        vec!["* OPTION fred.test \"hello world\" [READ-WRITE]"]
    );
}

#[test]
fn book_names_are_case_insensitive_as_in_1_8() {
    let s = Server::start();
    let mut f = s.login("fred");
    // 1.8 stored `CREATEADDRESSBOOK Fred.Upper` as `fred.upper`.
    f.ok("CREATEADDRESSBOOK FRED.Work");
    assert_eq!(s.read("user/fred/abooks"), "fred \nfred.work \n");
    assert!(s.path("user/fred/abook.fred.work").exists());
    assert!(!s.path("user/FRED").exists());
    assert!(
        f.fails("CREATEADDRESSBOOK Fred.work", "NO")
            .contains("already exists")
    );
    assert_eq!(
        f.ok("STOREADDRESS FRED.WORK Boss email boss@slate"),
        vec!["* FETCHADDRESS fred.work Boss email boss@slate"]
    );
    // 1.8 served `FETCHADDRESS FRED.WORK`.
    assert_eq!(
        f.ok("FETCHADDRESS FRED.WORK Boss"),
        vec!["* FETCHADDRESS fred.work Boss email boss@slate"]
    );
    f.ok("STOREADDRESS FRED x email y");
    assert_eq!(f.ok("SEARCHADDRESS Fred").len(), 1);
    assert_eq!(
        f.ok("ADDRESSBOOK FRED.*"),
        vec!["* ADDRESSBOOK () \".\" fred.work"]
    );
    assert_eq!(f.ok("ADDRESSBOOK F*").len(), 2);
    assert_eq!(
        f.ok("MYRIGHTS ADDRESSBOOK FRED"),
        vec!["* MYRIGHTS ADDRESSBOOK FRED lrswipcda"]
    );
    f.ok("SETACL ADDRESSBOOK FRED.WORK barney lr");
    assert_eq!(
        s.read("abooks"),
        "fred.work fred\tlrswipcda\tbarney\tlr\t\n"
    );
    let mut b = s.login("barney");
    assert_eq!(b.ok("SEARCHADDRESS Fred.Work").len(), 1);
    f.ok("RENAMEADDRESSBOOK FRED.WORK Fred.Job");
    assert_eq!(s.read("user/fred/abooks"), "fred \nfred.job \n");
    assert_eq!(s.read("abooks"), "fred.job fred\tlrswipcda\tbarney\tlr\t\n");
    f.ok("DELETEADDRESSBOOK FRED.JOB");
    assert_eq!(s.read("user/fred/abooks"), "fred \n");
    assert!(!s.path("user/FRED").exists());
}

/// Log in as `user` and return the session with its server process.
fn login_with_pid(s: &Server, user: &str) -> (Client, u32) {
    let before: Vec<u32> = common::children_of(s.pid()).iter().map(|c| c.0).collect();
    let c = s.login(user);
    let new: Vec<u32> = common::children_of(s.pid())
        .iter()
        .map(|c| c.0)
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one new session process: {new:?}");
    (c, new[0])
}

#[test]
fn entry_locks_between_users_after_a_switch_and_a_kill() {
    let s = Server::start();
    let mut f = s.login("fred");
    barney(&mut f);
    f.ok("SETACL ADDRESSBOOK fred barney lrw");
    // Two users: the second is refused, told who holds it.
    f.ok("LOCK ADDRESSBOOK fred \"Barney Rubble\"");
    let (mut b, bpid) = login_with_pid(&s, "barney");
    assert!(
        b.fails("LOCK ADDRESSBOOK fred \"Barney Rubble\"", "NO")
            .ends_with(
                "NO [LOCKED] addressbook entry 'Barney Rubble' already locked by fred@127.0.0.1"
            )
    );
    // A session may release its own lock after losing the right to write.
    b.ok("LOCK ADDRESSBOOK fred Wilma");
    f.ok("SETACL ADDRESSBOOK fred barney lr");
    b.ok("UNLOCK ADDRESSBOOK fred Wilma");
    f.ok("LOCK ADDRESSBOOK fred Wilma");
    f.ok("UNLOCK ADDRESSBOOK fred Wilma");
    b.fails("UNLOCK ADDRESSBOOK fred \"Barney Rubble\"", "NO");

    // After an administrator's second LOGIN the holder is the acting user.
    let mut a = s.login("admin");
    a.ok("LOCK ADDRESSBOOK fred Early");
    a.ok("LOGIN fred \"\"");
    a.ok("LOCK ADDRESSBOOK fred Late");
    assert!(
        f.fails("LOCK ADDRESSBOOK fred Late", "NO")
            .ends_with("already locked by fred@127.0.0.1")
    );
    a.ok("UNLOCK ADDRESSBOOK fred Early");

    // A lock held by a killed session is released.
    f.ok("SETACL ADDRESSBOOK fred barney lrw");
    b.ok("LOCK ADDRESSBOOK fred Pebbles");
    f.fails("LOCK ADDRESSBOOK fred Pebbles", "NO");
    unsafe { libc::kill(bpid as i32, libc::SIGKILL) };
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.cmd("LOCK ADDRESSBOOK fred Pebbles").status() != "OK" {
        assert!(
            std::time::Instant::now() < deadline,
            "lock of a killed session not released"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn deleteacl_needs_administer_and_anonymous_is_everybody() {
    let s = Server::start();
    let mut f = s.login("fred");
    let mut b = s.login("barney");
    barney(&mut f);
    f.ok("SETACL ADDRESSBOOK fred barney lrw");
    for cmd in [
        "DELETEACL ADDRESSBOOK fred barney",
        "DELETEACL ADDRESSBOOK fred fred",
    ] {
        assert!(b.fails(cmd, "NO").contains("Permission denied"), "{cmd}");
    }
    assert!(s.read("abooks").contains("barney\tlrw\t"));
    // `anonymous`, like `anyone`, is everybody.
    f.ok("DELETEACL ADDRESSBOOK fred barney");
    b.fails("SEARCHADDRESS fred", "NO");
    f.ok("SETACL ADDRESSBOOK fred anonymous lr");
    assert_eq!(s.read("abooks"), "fred fred\tlrswipcda\tanonymous\tlr\t\n");
    assert_eq!(
        b.ok("MYRIGHTS ADDRESSBOOK fred"),
        vec!["* MYRIGHTS ADDRESSBOOK fred lr"]
    );
    assert_eq!(b.ok("SEARCHADDRESS fred").len(), 1);
    assert!(
        b.fails("DELETEACL ADDRESSBOOK fred anonymous", "NO")
            .contains("Permission denied")
    );
    f.ok("DELETEACL ADDRESSBOOK fred anonymous");
    b.fails("SEARCHADDRESS fred", "NO");
}

#[test]
fn quota_is_the_owners_when_another_user_stores() {
    let s = Server::builder()
        .options(&common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 1"))
        .start();
    let mut f = s.login("fred");
    let mut b = s.login("barney");
    f.ok("SETACL ADDRESSBOOK fred barney lrw");
    b.ok(&format!("STOREADDRESS fred X notes {}", "x".repeat(600)));
    assert!(
        s.read("user/fred/options")
            .contains("imsp.user.quota.usage R 605\n")
    );
    let barneys = s.path("user/barney/options");
    assert!(!barneys.exists() || !s.read("user/barney/options").contains("usage R 6"));
    // fred's quota is what limits it, though barney uses nothing.
    let t = b.fails(
        &format!("STOREADDRESS fred Y notes {}", "y".repeat(600)),
        "NO",
    );
    assert!(t.contains("quota"), "{t}");
    b.ok(&format!("STOREADDRESS barney Y notes {}", "y".repeat(600)));
}
