//! LOGIN and the options commands (GET, SET, UNSET, LOCK/UNLOCK OPTION),
//! through the real daemon, with the files checked on disk.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server, children_of};

/// The option lines of a reply, without the date (it changes).
fn options(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("* OPTION common.date "))
        .cloned()
        .collect()
}

#[test]
fn login_accepts_and_refuses_alike() {
    let s = Server::start();
    let mut c = s.connect();
    let wrong_pw = c.fails("LOGIN fred wrong", "NO");
    let no_user = c.fails("LOGIN nobody secret", "NO");
    // The same words for a wrong password and an unknown user.
    assert_eq!(
        wrong_pw.split_once(' ').unwrap().1,
        no_user.split_once(' ').unwrap().1
    );
    assert!(
        c.fails("LOGIN ../etc secret", "NO")
            .ends_with("NO Login incorrect")
    );
    assert!(
        c.fails("LOGIN fred \"\"", "NO")
            .ends_with("NO Login incorrect")
    );
    let r = c.cmd("LOGIN fred secret");
    assert_eq!(r.tagged(), "T5 OK User `fred' Logged in");
    assert!(
        s.path("user/fred").is_dir(),
        "user directory made on first login"
    );
    assert_eq!(c.cmd("LOGIN fred secret").status(), "BAD");
}

#[test]
fn new_users_need_a_directory_unless_created() {
    let s = Server::builder()
        .options(
            &common::DEFAULT_OPTIONS
                .replace("imsp.create.new.users N +", "imsp.create.new.users N -"),
        )
        .start();
    let mut c = s.connect();
    let t = c.fails("LOGIN fred secret", "NO");
    assert!(t.contains("no IMSP account"), "{t}");
    assert!(!s.path("user/fred").exists());
    std::fs::create_dir_all(s.path("user/fred")).unwrap();
    c.ok("LOGIN fred secret");
}

#[test]
fn get_merges_global_and_user_options() {
    let s = Server::start();
    let mut c = s.login("fred");
    let all = c.ok("GET *");
    let date = all
        .iter()
        .find(|l| l.starts_with("* OPTION common.date "))
        .expect("date");
    assert!(
        date.ends_with("[READ-ONLY]") && date.contains(':'),
        "{date}"
    );
    assert_eq!(
        options(&all),
        vec![
            "* OPTION common.delivery.hosts \"(mailhost.example.org)\" [READ-ONLY]",
            "* OPTION common.domain example.org [READ-ONLY]",
            "* OPTION common.from fred@example.org [READ-ONLY]",
            "* OPTION common.sent.mailbox sentmail [READ-WRITE]",
            "* OPTION imsp.user.quota 1000 [READ-ONLY]",
            "* OPTION imsp.user.quota.usage 0 [READ-ONLY]",
        ]
    );
    // A user's read-write option shadows the global one.
    c.ok("SET common.sent.mailbox mysent");
    c.ok("SET fred.test \"hello world\"");
    let all = c.ok("GET *");
    assert!(all.contains(&"* OPTION common.sent.mailbox mysent [READ-WRITE]".to_string()));
    assert!(all.contains(&"* OPTION fred.test \"hello world\" [READ-WRITE]".to_string()));
    // Patterns: `*`, `%`, exact (1.8 crashed on an exact GET after SET).
    assert_eq!(
        c.ok("GET fred.test"),
        vec!["* OPTION fred.test \"hello world\" [READ-WRITE]"]
    );
    assert_eq!(
        c.ok("GET FRED.*"),
        vec!["* OPTION fred.test \"hello world\" [READ-WRITE]"]
    );
    assert_eq!(c.ok("GET %").len(), 0);
    // `%` stops at the dot: not common.delivery.hosts, not common.sent.mailbox.
    assert_eq!(options(&c.ok("GET common.%")).len(), 2);
    assert!(c.ok("GET nothing.here").is_empty());
    // Non-visible options are never shown to ordinary users...
    assert!(c.ok("GET imsp.admin.*").is_empty());
    // ...and read-only to a full administrator.
    let mut a = s.login("admin");
    assert_eq!(
        a.ok("GET imsp.admin.all"),
        vec!["* OPTION imsp.admin.all \"(admin)\" [READ-ONLY]"]
    );
}

#[test]
fn values_round_trip_as_atom_quoted_or_literal() {
    let s = Server::start();
    let mut c = s.login("fred");
    c.ok("SET x.atom plain");
    c.ok("SET x.empty \"\"");
    c.ok("SET x.paren \"(a b)\"");
    let utf = "Zoë Müller — ünïcödé";
    let r = c.cmd_sync(&[
        format!("SET x.utf {{{}}}", utf.len()).as_bytes(),
        utf.as_bytes(),
    ]);
    assert_eq!(r.status(), "OK");
    let multi = b"line one\r\nline \"two\" \\ end";
    let mut cmd = format!("SET x.multi {{{}+}}\r\n", multi.len()).into_bytes();
    cmd.extend_from_slice(multi);
    assert_eq!(c.cmd_bytes(&cmd).status(), "OK");
    let r = c.cmd("GET x.*");
    let got: Vec<Vec<u8>> = r.untagged_bytes().to_vec();
    let mut want_utf = format!("* OPTION x.utf {{{}}}\r\n", utf.len()).into_bytes();
    want_utf.extend_from_slice(utf.as_bytes());
    want_utf.extend_from_slice(b" [READ-WRITE]");
    let mut want_multi = format!("* OPTION x.multi {{{}}}\r\n", multi.len()).into_bytes();
    want_multi.extend_from_slice(multi);
    want_multi.extend_from_slice(b" [READ-WRITE]");
    assert_eq!(
        got,
        vec![
            b"* OPTION x.atom plain [READ-WRITE]".to_vec(),
            b"* OPTION x.empty \"\" [READ-WRITE]".to_vec(),
            want_multi,
            b"* OPTION x.paren \"(a b)\" [READ-WRITE]".to_vec(),
            want_utf,
        ]
    );
}

#[test]
fn files_are_written_as_1_8_writes_them() {
    let s = Server::start();
    let mut c = s.login("fred");
    c.ok("SET fred.test \"hello world\"");
    assert_eq!(
        s.read("user/fred/options"),
        "fred.test W hello world\nimsp.user.quota.usage R 20\n"
    );
    c.ok("SET Alpha.Multi {7+}\r\na\nb \\ c");
    assert_eq!(
        s.read("user/fred/options"),
        "Alpha.Multi W a\\nb \\\\ c\nfred.test W hello world\nimsp.user.quota.usage R 38\n"
    );
    assert!(s.path("user/fred/options.").exists(), "lock file");
    // Names are case-insensitive: a SET in other case replaces the value.
    c.ok("SET FRED.TEST bye");
    assert_eq!(
        c.ok("GET fred.test"),
        vec!["* OPTION fred.test bye [READ-WRITE]"]
    );
    c.ok("UNSET fred.test");
    c.ok("UNSET alpha.multi");
    assert_eq!(s.read("user/fred/options"), "imsp.user.quota.usage R 0\n");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.path("user/fred/options"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn read_only_non_visible_and_magic_options_are_refused() {
    let s = Server::start();
    let mut c = s.login("fred");
    for name in [
        "common.domain",
        "imsp.admin.all",
        "common.date",
        "common.from",
        "imsp.user.quota.usage",
    ] {
        let t = c.fails(&format!("SET {name} x"), "NO");
        assert!(
            t.ends_with(&format!(
                "NO User 'fred' not authorized to change option '{name}'"
            )),
            "{t}"
        );
        c.fails(&format!("UNSET {name}"), "NO");
    }
    let t = c.fails("UNSET never.set", "NO");
    assert!(
        t.ends_with("NO option 'never.set' was already unset"),
        "{t}"
    );
    // Only administrators use the * and % prefixes.
    assert!(
        c.fails("SET *common.sent.mailbox x", "NO")
            .contains("not authorized")
    );
    assert!(c.fails("SET %fred.x y", "NO").contains("not authorized"));
    assert_eq!(c.cmd("SET \"bad name\" x").status(), "BAD");
    assert!(!s.path("user/fred/options").exists(), "nothing written");
}

#[test]
fn administrators_change_global_options() {
    let s = Server::start();
    let mut a = s.login("admin");
    a.ok("SET *common.sent.mailbox outbox");
    a.ok("SET *%common.domain example.net");
    a.ok("SET *%%imsp.secret.thing 42");
    a.fails("SET *common.domain plain", "NO");
    let g = s.read("options");
    assert!(g.contains("common.sent.mailbox W outbox\n"), "{g}");
    assert!(g.contains("common.domain R example.net\n"), "{g}");
    assert!(g.contains("imsp.secret.thing N 42\n"), "{g}");
    let mut c = s.login("fred");
    assert_eq!(
        c.ok("GET common.domain"),
        vec!["* OPTION common.domain example.net [READ-ONLY]"]
    );
    assert!(c.ok("GET imsp.secret.*").is_empty());
    a.fails("UNSET *imsp.secret.thing", "NO");
    a.ok("UNSET *%%imsp.secret.thing");
    assert!(!s.read("options").contains("imsp.secret.thing"));
}

#[test]
fn two_sessions_see_each_others_writes() {
    let s = Server::start();
    let mut a = s.login("fred");
    let mut b = s.login("fred");
    a.ok("SET shared.x one");
    assert_eq!(
        b.ok("GET shared.x"),
        vec!["* OPTION shared.x one [READ-WRITE]"]
    );
    b.ok("SET shared.x two");
    assert_eq!(
        a.ok("GET shared.x"),
        vec!["* OPTION shared.x two [READ-WRITE]"]
    );
}

/// A session whose change counter has not moved does not look at its
/// files again (imspd.generation): a change another session made, and
/// acknowledged, is still seen by the very next command, whether the
/// change was journaled or rewrote the file, and whoever made it.
#[test]
fn a_session_that_has_not_looked_sees_a_change_acknowledged_elsewhere() {
    for journal in ["-", "+"] {
        let s = Server::builder()
            .option_line(&format!("imsp.db.journal N {journal}"))
            .start();
        let mut a = s.login("fred");
        let mut b = s.login("fred");
        let mut admin = s.login("admin");
        for i in 0..40 {
            // `a` reads over and over (the counter still), then `b`
            // changes the file under it.
            a.ok(&format!("SET mine.{i} a{i}"));
            for _ in 0..3 {
                a.ok("GET shared.x");
            }
            b.ok(&format!("SET shared.x b{i}"));
            assert_eq!(
                a.ok("GET shared.x"),
                vec![format!("* OPTION shared.x b{i} [READ-WRITE]")],
                "journal {journal}, round {i}"
            );
            // A global option set by an administrator, read by a session
            // that was still.
            admin.ok(&format!("SET *site.round {i}"));
            assert_eq!(
                a.ok("GET site.round"),
                vec![format!("* OPTION site.round {i} [READ-WRITE]")],
                "journal {journal}, round {i}"
            );
        }
        let m = std::fs::metadata(s.path("imspd.generation")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!((m.len(), m.permissions().mode() & 0o777), (4096, 0o600));
    }
}

#[test]
fn an_edit_of_the_options_file_is_seen_live() {
    let s = Server::start();
    let mut c = s.login("fred");
    assert!(c.ok("GET site.motd").is_empty());
    let mut g = s.read("options");
    g.push_str("site.motd R welcome back\n");
    // An edit by hand moves no change counter: it is seen by every
    // command that starts a second or more after it.
    let after_a_second = |c: &mut Client, command: &str| {
        common::until_a_hand_edit_is_seen();
        c.ok(command)
    };
    // An editor writing in place, and one replacing the file.
    std::fs::write(s.path("options"), &g).unwrap();
    assert_eq!(
        after_a_second(&mut c, "GET site.motd"),
        vec!["* OPTION site.motd \"welcome back\" [READ-ONLY]"]
    );
    let tmp = s.path("options.new");
    std::fs::write(&tmp, g.replace("welcome back", "hello again")).unwrap();
    std::fs::rename(&tmp, s.path("options")).unwrap();
    assert_eq!(
        after_a_second(&mut c, "GET site.motd"),
        vec!["* OPTION site.motd \"hello again\" [READ-ONLY]"]
    );
    // A damaged line is skipped, not fatal, and the admin is told.
    std::fs::write(
        s.path("options"),
        format!("{g}garbage-without-space\nsite.bad Qvalue\n"),
    )
    .unwrap();
    assert_eq!(
        after_a_second(&mut c, "GET site.motd"),
        vec!["* OPTION site.motd \"welcome back\" [READ-ONLY]"]
    );
    assert!(c.ok("GET site.bad").is_empty());
    let log = s.log();
    assert!(log.contains("is damaged; skipped"), "{log}");
    assert!(
        log.contains("option \"site.bad\" skipped: its type is not N, R or W"),
        "{log}"
    );
    // Once per change of the file, not at every command (by the session;
    // the listener reads the file too, and says so once as well).
    c.ok("GET site.motd");
    let listener = format!("imspd[{}]", s.pid());
    let said = || {
        s.log()
            .lines()
            .filter(|l| l.contains("\"site.bad\" skipped") && !l.starts_with(&listener))
            .count()
    };
    assert_eq!(said(), 1);
    after_a_second(&mut c, "GET site.motd");
    assert_eq!(said(), 1);
}

/// A usage recorded lower than what the options cost (an edited or
/// restored file) must not wrap below zero: the change is made, the usage
/// floors at zero, and the session goes on.
#[test]
fn a_usage_below_the_options_cost_floors_at_zero() {
    let s = Server::start();
    std::fs::create_dir_all(s.path("user/fred")).unwrap();
    std::fs::write(
        s.path("user/fred/options"),
        "fred.x W hello world\nimsp.user.quota.usage R 0\n",
    )
    .unwrap();
    let mut c = s.login("fred");
    c.ok("UNSET fred.x");
    assert_eq!(
        c.ok("GET imsp.user.quota.usage"),
        vec!["* OPTION imsp.user.quota.usage 0 [READ-ONLY]"]
    );
    c.ok("SET fred.y z");
    assert!(s.read("user/fred/options").contains("fred.y W z"));
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[test]
fn quota_refuses_a_set_and_changes_nothing() {
    let s = Server::builder()
        .options(&common::DEFAULT_OPTIONS.replace("imsp.user.quota R 1000", "imsp.user.quota R 1"))
        .start();
    let mut c = s.login("fred");
    c.ok(&format!("SET small {}", "a".repeat(900)));
    let before = s.read("user/fred/options");
    let t = c.fails(&format!("SET big {}", "b".repeat(1200)), "NO");
    assert!(t.contains("quota"), "{t}");
    assert_eq!(s.read("user/fred/options"), before);
    // Shrinking is always allowed.
    c.ok("SET small x");
    c.ok(&format!("SET big {}", "b".repeat(1000)));
    // 6 + 1003 bytes: 1 KB, at the limit but not over it.
    assert_eq!(
        c.ok("GET imsp.user.quota.usage"),
        vec!["* OPTION imsp.user.quota.usage 1 [READ-ONLY]"]
    );
}

#[test]
fn option_locks_belong_to_sessions() {
    let s = Server::start();
    let mut a = s.login("fred");
    a.ok("SET fred.test \"hello world\"");
    let r = a.cmd("LOCK OPTION fred.test");
    assert_eq!(
        r.untagged(),
        vec!["* OPTION fred.test \"hello world\" [READ-WRITE]"]
    );
    assert_eq!(r.status(), "OK");
    assert!(
        s.read("user/fred/alock")
            .starts_with("fred.test fred@127.0.0.1")
    );
    // Another session, even of the same user, is refused.
    let mut b = s.login("fred");
    let t = b.fails("LOCK OPTION FRED.TEST", "NO");
    assert!(
        t.contains("[LOCKED]") && t.contains("fred@127.0.0.1"),
        "{t}"
    );
    assert!(
        b.fails("UNLOCK OPTION fred.test", "NO")
            .contains("not locked")
    );
    // A lock on an option that does not exist yet is allowed (no data sent).
    assert!(b.ok("LOCK OPTION fred.new").is_empty());
    // Read-only options cannot be locked by users.
    b.fails("LOCK OPTION common.domain", "NO");
    // SET is not blocked by another session's lock.
    b.ok("SET fred.test changed");
    a.ok("UNLOCK OPTION fred.test");
    b.ok("LOCK OPTION fred.test");
    // Released at LOGOUT.
    b.logout();
    a.ok("LOCK OPTION fred.test");
    a.ok("LOCK OPTION fred.new");
    // Released when the connection just drops.
    drop(a);
    let mut c = s.login("fred");
    wait_until(|| c.cmd("LOCK OPTION fred.test").status() == "OK");
    assert!(s.read("user/fred/alock").lines().count() >= 1);
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the session process that serves the newest connection.
fn session_pid(s: &Server, before: &[(u32, char)]) -> u32 {
    let now = children_of(s.pid());
    let new: Vec<u32> = now
        .iter()
        .map(|c| c.0)
        .filter(|p| !before.iter().any(|b| b.0 == *p))
        .collect();
    assert_eq!(new.len(), 1, "{now:?} vs {before:?}");
    new[0]
}

#[test]
fn a_killed_session_loses_no_acknowledged_write_and_holds_no_lock() {
    let s = Server::start();
    let before = children_of(s.pid());
    let mut a = s.login("fred");
    let pid = session_pid(&s, &before);
    a.ok("SET durable.value 12345");
    a.ok("LOCK OPTION durable.value");
    // SAFETY: killing the test's own session process.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(a.closed_within(Duration::from_secs(5)));
    let mut b = s.login("fred");
    assert_eq!(
        b.ok("GET durable.value"),
        vec!["* OPTION durable.value 12345 [READ-WRITE]"]
    );
    // The stale lock of the dead process does not block.
    let r = b.cmd("LOCK OPTION durable.value");
    assert_eq!(r.status(), "OK", "{:?}", r.lines);
}

#[test]
fn sixteen_concurrent_sessions_lose_no_option() {
    let s = Server::start();
    let port = s.port;
    common::concurrently(16, move |i| {
        let mut c = Client::connect(port);
        c.ok("LOGIN fred secret");
        for j in 0..20 {
            c.ok(&format!("SET t{i}.o{j} v{i}-{j}"));
        }
    });
    let mut c = s.login("fred");
    let all = c.ok("GET t*");
    assert_eq!(all.len(), 320, "{all:?}");
    for i in 0..16 {
        for j in 0..20 {
            assert!(all.contains(&format!("* OPTION t{i}.o{j} v{i}-{j} [READ-WRITE]")));
        }
    }
    // And the usage line agrees with the file.
    let file = s.read("user/fred/options");
    let usage: u64 = file
        .lines()
        .filter(|l| l.contains(" W "))
        .map(|l| {
            let (name, rest) = l.split_once(" W ").unwrap();
            (name.len() + rest.len()) as u64
        })
        .sum();
    assert!(
        file.contains(&format!("imsp.user.quota.usage R {usage}\n")),
        "{usage}"
    );
}
