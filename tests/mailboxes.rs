//! Mailboxes against two real IMAP servers (Dovecot, package
//! dovecot-imapd): the refresh of `mailboxes`, LIST/LSUB/UNSEEN,
//! subscriptions, LAST/SEEN, and CREATE/DELETE/RENAME/REPLACE/MOVE and the
//! mailbox ACL commands carried out by the proxy-IMAP client, each checked
//! on the IMAP servers themselves.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::dovecot::Dovecot;

struct Site {
    d1: Dovecot,
    d2: Dovecot,
    s: Server,
}

impl Site {
    fn s1(&self) -> String {
        self.d1.name()
    }
    fn s2(&self) -> String {
        self.d2.name()
    }
}

/// Wait until the daemon's log shows `n` finished refreshes.
fn wait_refreshes(s: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.log().matches("mailbox refresh: done").count() < n {
        assert!(
            Instant::now() < deadline,
            "no mailbox refresh:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two Dovecots with mailboxes, and imspd managing both.
fn site(extra: &[&str]) -> Site {
    let d1 = Dovecot::start();
    let d2 = Dovecot::start();
    d1.create(&[
        "user.fred",
        "user.fred.work",
        "bboard.news",
        "user.barney.old",
    ]);
    d2.create(&["user.barney", "bboard.news", "bboard.comp.mail"]);
    let mut b = Server::builder()
        .user("imapd", "imappw")
        .user("arbitron", "arbpw")
        .option_line(&format!(
            "imsp.imap.servers R ({} {}/dovecot)",
            d1.name(),
            d2.name()
        ))
        .option_line("imsp.proxy.user N proxy")
        .option_line("imsp.proxy.password N proxypw")
        .option_line("imsp.refresh.user N admin")
        .option_line("imsp.proxy.tls N require")
        .option_line("imsp.proxy.tls.verify N -")
        .option_line("imsp.proxy.timeout N 3")
        .option_line("imsp.user.inbox R user.$USER")
        .option_line("imsp.admin.bboards N (postmaster)")
        .option_line("imsp.admin.subs N (arbitron)")
        .option_line("imsp.imap.identities N (imapd)")
        .option_line("imsp.default.subs N (INBOX bboard.news)")
        .option_line("imsp.required.subs N (bboard.news)")
        .option_line("imsp.external.subs N +")
        .option_line(&format!("imsp.new.mailbox.servers N ({})", d2.name()));
    for l in extra {
        b = b.option_line(l);
    }
    let s = b.start();
    wait_refreshes(&s, 1);
    Site { d1, d2, s }
}

#[test]
fn refresh_lists_and_subscriptions() {
    let site = site(&[]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    // The mailboxes file as built from LIST "" * on both servers.
    assert_eq!(
        s.read("mailboxes"),
        format!(
            "bboard.comp.mail * . ({s2}) \n\
             bboard.news * . ({s1} {s2}) \n\
             user.barney * . ({s2}) \n\
             user.barney.old * . ({s1}) \n\
             user.fred * . ({s1}) \n\
             user.fred.work * . ({s1}) \n"
        )
    );
    // Users other than administrators see server lists sorted.
    let both = if s1 < s2 {
        format!("{s1} {s2}")
    } else {
        format!("{s2} {s1}")
    };
    let mut fred = s.login("fred");
    assert_eq!(
        fred.ok("LIST \"\" *"),
        vec![
            format!("* LIST () ({s1}) \".\" INBOX"),
            "* LIST (\\Noselect) () \".\" bboard".to_string(),
            "* LIST (\\Noselect) () \".\" bboard.comp".to_string(),
            format!("* LIST () ({s2}) \".\" bboard.comp.mail"),
            format!("* LIST () ({both}) \".\" bboard.news"),
            "* LIST (\\Noselect) () \".\" user".to_string(),
            format!("* LIST () ({s2}) \".\" user.barney"),
            format!("* LIST () ({s1}) \".\" user.barney.old"),
            format!("* LIST () ({s1}) \".\" user.fred.work"),
        ]
    );
    assert_eq!(
        fred.ok("LIST \"\" %"),
        vec![
            format!("* LIST () ({s1}) \".\" INBOX"),
            "* LIST (\\Noselect) () \".\" bboard".to_string(),
            "* LIST (\\Noselect) () \".\" user".to_string(),
        ]
    );
    // Reference plus pattern.
    assert_eq!(
        fred.ok("LIST bboard. %"),
        vec![
            "* LIST (\\Noselect) () \".\" bboard.comp".to_string(),
            format!("* LIST () ({both}) \".\" bboard.news"),
        ]
    );
    assert_eq!(fred.ok("LIST \"\" nothing.*"), Vec::<String>::new());
    // A new subs file has the default subscriptions.
    assert_eq!(
        fred.ok("LSUB \"\" *"),
        vec![
            format!("* LSUB () ({s1}) \".\" INBOX"),
            format!("* LSUB () ({both}) \".\" bboard.news"),
        ]
    );
    assert_eq!(s.read("user/fred/subs"), "bboard.news 1 0\nuser.fred 1 0\n");
    fred.ok("SUBSCRIBE bboard.comp.mail");
    fred.ok("SUBSCRIBE \"{imap.example.org}INBOX\"");
    let t = fred.fails("SUBSCRIBE no.such.box", "NO");
    assert!(t.contains("does not exist"), "{t}");
    let t = fred.fails("SUBSCRIBE \"bad..name\"", "NO");
    assert!(t.contains("Invalid mailbox name"), "{t}");
    let t = fred.fails("UNSUBSCRIBE bboard.news", "NO");
    assert!(t.contains("required"), "{t}");
    fred.ok("UNSUBSCRIBE INBOX");
    let t = fred.fails("UNSUBSCRIBE INBOX", "NO");
    assert!(t.contains("Not subscribed"), "{t}");
    assert_eq!(
        fred.ok("LSUB \"\" *"),
        vec![
            format!("* LSUB () ({s2}) \".\" bboard.comp.mail"),
            format!("* LSUB () ({both}) \".\" bboard.news"),
            "* LSUB () () NIL \"{imap.example.org}INBOX\"".to_string(),
        ]
    );
    assert_eq!(
        s.read("user/fred/subs"),
        "bboard.comp.mail 1 0\nbboard.news 1 0\nuser.fred 0 0\n{imap.example.org}INBOX 1 0\n"
    );

    // LAST and SEEN only from the IMAP servers' identity.
    let t = fred.fails("LAST bboard.news 5", "NO");
    assert!(t.contains("imsp.imap.identities"), "{t}");
    let mut imapd = s.connect();
    imapd.ok("LOGIN imapd imappw");
    imapd.ok("LAST bboard.news 7");
    imapd.ok("LAST bboard.comp.mail 3");
    imapd.fails("LAST bboard.news x7", "BAD");
    imapd.fails("LAST no.such 1", "NO");
    imapd.ok("SEEN bboard.comp.mail 3 fred");
    imapd.fails("SEEN bboard.news 3 ../etc", "NO");
    assert!(
        s.read("mailboxes")
            .contains(&format!("bboard.news 7 . ({s1} {s2}) \n"))
    );
    // bboard.comp.mail is seen up to its last UID; the external mailbox's
    // state is unknown, so it is listed as LSUB would.
    assert_eq!(
        fred.ok("UNSEEN \"\" *"),
        vec![
            format!("* UNSEEN (\\Marked) ({both}) \".\" bboard.news"),
            "* UNSEEN () () NIL \"{imap.example.org}INBOX\"".to_string(),
        ]
    );
    assert_eq!(
        fred.ok("LIST \"\" bboard.*"),
        vec![
            "* LIST (\\Noselect) () \".\" bboard.comp".to_string(),
            format!("* LIST () ({s2}) \".\" bboard.comp.mail"),
            format!("* LIST (\\Marked) ({both}) \".\" bboard.news"),
        ]
    );
    imapd.ok("SEEN bboard.news 7 fred");
    assert_eq!(fred.ok("UNSEEN \"\" bboard.*"), Vec::<String>::new());
    assert!(s.read("user/fred/subs").contains("bboard.news 1 7\n"));

    // Barney's view: his own INBOX, the servers sorted.
    let mut barney = s.login("barney");
    assert_eq!(
        barney.ok("LIST \"\" INBOX"),
        vec![format!("* LIST () ({s2}) \".\" INBOX")]
    );
    // An administrator sees the server list as stored (master first),
    // others sorted: a list stored out of order tells them apart.
    let (lo, hi) = if s1 < s2 { (&s1, &s2) } else { (&s2, &s1) };
    let mut admin = s.login("admin");
    admin.ok(&format!("CREATE bboard.pair ({hi} {lo})"));
    assert!(
        s.read("mailboxes")
            .contains(&format!("bboard.pair 0 . ({hi} {lo}) \n"))
    );
    assert_eq!(
        admin.ok("LIST \"\" bboard.pair"),
        vec![format!("* LIST () ({hi} {lo}) \".\" bboard.pair")]
    );
    assert_eq!(
        fred.ok("LIST \"\" bboard.pair"),
        vec![format!("* LIST () ({lo} {hi}) \".\" bboard.pair")]
    );
}

fn message(subject: &str) -> Vec<u8> {
    format!("From: fred@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n")
        .into_bytes()
}

#[test]
fn mailbox_commands_on_the_servers() {
    let site = site(&[]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    let mut fred = s.login("fred");

    // CREATE below a parent goes to the parent's server.
    fred.ok("CREATE user.fred.projects");
    assert!(
        site.d1
            .mailboxes()
            .contains(&"user.fred.projects".to_string())
    );
    assert!(
        !site
            .d2
            .mailboxes()
            .contains(&"user.fred.projects".to_string())
    );
    assert!(
        s.read("mailboxes")
            .contains(&format!("user.fred.projects 0 . ({s1}) \n"))
    );
    // Without a parent: imsp.new.mailbox.servers.
    let mut admin = s.login("admin");
    admin.ok("CREATE bboard2");
    assert!(site.d2.mailboxes().contains(&"bboard2".to_string()));
    // Restrictions.
    let t = fred.fails("CREATE bboard.mine", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    let t = fred.fails(&format!("CREATE user.fred.x ({s2})"), "NO");
    assert!(t.contains("restricted"), "{t}");
    fred.fails("CREATE INBOX", "NO");
    fred.fails("CREATE user.fred.projects", "NO");
    fred.fails("CREATE \"user.fred.a*b\"", "NO");
    fred.fails("DELETE INBOX", "NO");
    let t = fred.fails("DELETE user.barney.old", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    // An administrator creates on a list of servers.
    admin.ok(&format!("CREATE bboard.both ({s1} {s2}/part1)"));
    assert!(site.d1.mailboxes().contains(&"bboard.both".to_string()));
    assert!(site.d2.mailboxes().contains(&"bboard.both".to_string()));
    admin.fails("CREATE bboard.nowhere (imap.invalid:1)", "NO");
    // DELETE with a host removes one copy.
    admin.ok(&format!("DELETE bboard.both {s1}"));
    assert!(!site.d1.mailboxes().contains(&"bboard.both".to_string()));
    assert!(
        s.read("mailboxes")
            .contains(&format!("bboard.both 0 . ({s2}) \n"))
    );
    admin.ok("DELETE bboard.both");
    assert!(!site.d2.mailboxes().contains(&"bboard.both".to_string()));
    assert!(!s.read("mailboxes").contains("bboard.both"));

    // RENAME twice: `changed` is never chained; subscriptions follow.
    fred.ok("SUBSCRIBE user.fred.projects");
    fred.ok("RENAME user.fred.projects user.fred.plans");
    fred.ok("RENAME user.fred.plans user.fred.archive");
    assert_eq!(
        s.read("changed"),
        "user.fred.plans user.fred.archive\nuser.fred.projects user.fred.archive\n"
    );
    assert!(
        site.d1
            .mailboxes()
            .contains(&"user.fred.archive".to_string())
    );
    assert!(
        !site
            .d1
            .mailboxes()
            .contains(&"user.fred.projects".to_string())
    );
    let r = fred.cmd("LSUB \"\" user.fred.*");
    assert_eq!(r.status(), "OK");
    let u = r.untagged();
    assert!(
        u[0].starts_with("* NO Mailbox user.fred.projects was renamed"),
        "{u:?}"
    );
    assert_eq!(u[1], format!("* LSUB () ({s1}) \".\" user.fred.archive"));
    assert!(s.read("user/fred/subs").contains("user.fred.archive 1 0\n"));
    assert!(!s.read("user/fred/subs").contains("user.fred.projects"));
    // Renaming a parent moves what is below it.
    fred.ok("CREATE user.fred.archive.2024");
    fred.ok("RENAME user.fred.archive user.fred.old");
    assert!(
        site.d1
            .mailboxes()
            .contains(&"user.fred.old.2024".to_string())
    );
    assert!(
        s.read("changed")
            .contains("user.fred.archive.2024 user.fred.old.2024\n")
    );
    assert!(
        s.read("changed")
            .contains("user.fred.projects user.fred.old\n")
    );
    fred.fails("RENAME user.fred.old user.fred.work", "NO");
    fred.fails("RENAME user.fred.old user.fred.old.inner", "NO");

    // REPLACE: the old one goes, subscribers move to the new one.
    fred.ok("SUBSCRIBE user.fred.old.2024");
    fred.ok("REPLACE user.fred.old.2024 user.fred.work");
    assert!(
        !site
            .d1
            .mailboxes()
            .contains(&"user.fred.old.2024".to_string())
    );
    assert!(
        s.read("changed")
            .contains("user.fred.old.2024 user.fred.work\n")
    );
    let u = fred.ok("LSUB \"\" user.fred.work");
    assert!(
        u.contains(&"* NO Mailbox user.fred.old.2024 was renamed or replaced; your subscription now is to user.fred.work".to_string()),
        "{u:?}"
    );
    assert_eq!(
        u.last().unwrap(),
        &format!("* LSUB () ({s1}) \".\" user.fred.work")
    );
    fred.fails("REPLACE user.fred.work no.such", "NO");

    // A subscription to a deleted mailbox is removed, and fred is told.
    fred.ok("DELETE user.fred.old");
    assert!(!site.d1.mailboxes().contains(&"user.fred.old".to_string()));
    let u = fred.ok("LSUB \"\" *");
    assert!(
        u.contains(
            &"* NO Mailbox user.fred.old was deleted; your subscription to it was removed"
                .to_string()
        ),
        "{u:?}"
    );
    assert!(!s.read("user/fred/subs").contains("user.fred.old "));

    // ACLs pass through to the server's ACL extension.
    fred.ok("SETACL MAILBOX user.fred.work barney lr");
    let mut direct = site.d1.session("fred");
    let acl = direct.get_acl("user.fred.work").unwrap();
    assert!(
        acl.parsed()
            .acls()
            .iter()
            .any(|e| e.identifier == "barney" && e.rights.to_string() == "lr"),
        "{:?}",
        acl.parsed().acls()
    );
    let _ = direct.logout();
    let acl = fred.ok("GETACL MAILBOX user.fred.work");
    assert!(
        acl.contains(&"* ACL MAILBOX user.fred.work barney lr".to_string()),
        "{acl:?}"
    );
    assert!(s.read("mailboxes").contains("barney\tlr\t"));
    let my = fred.ok("MYRIGHTS MAILBOX INBOX");
    assert!(
        my[0].starts_with("* MYRIGHTS MAILBOX INBOX ") && my[0].contains('l'),
        "{my:?}"
    );
    fred.ok("DELETEACL MAILBOX user.fred.work barney");
    let acl = fred.ok("GETACL MAILBOX user.fred.work");
    assert!(!acl.iter().any(|l| l.contains("barney")), "{acl:?}");
    fred.fails("SETACL MAILBOX no.such barney lr", "NO");
    fred.fails("SETACL MAILBOX user.fred.work barney \"l r\"", "BAD");

    // MOVE: messages, flags and dates are copied, then the source goes.
    let originals: Vec<_>;
    {
        let mut d = site.d1.session("fred");
        d.append("user.fred.work", &message("one"))
            .finish()
            .unwrap();
        d.append("user.fred.work", &message("two"))
            .flag(imap::types::Flag::Seen)
            .flag(imap::types::Flag::Flagged)
            .finish()
            .unwrap();
        d.examine("user.fred.work").unwrap();
        let dates = d.fetch("1:*", "INTERNALDATE").unwrap();
        originals = dates.iter().map(|f| f.internal_date().unwrap()).collect();
        drop(dates);
        let _ = d.logout();
    }
    // Dates made afresh by the copy would differ from the originals.
    std::thread::sleep(Duration::from_millis(1100));
    let t = fred.fails(&format!("MOVE user.fred.work {s1} ({s2})"), "NO");
    assert!(t.contains("restricted"), "{t}");
    admin.ok(&format!("MOVE user.fred.work {s1} ({s2})"));
    assert!(!site.d1.mailboxes().contains(&"user.fred.work".to_string()));
    assert!(
        s.read("mailboxes")
            .contains(&format!("user.fred.work * . ({s2}) "))
    );
    let mut d = site.d2.session("fred");
    d.examine("user.fred.work").unwrap();
    let fetched = d.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])").unwrap();
    let got: Vec<(Vec<u8>, bool, bool)> = fetched
        .iter()
        .map(|f| {
            let flags = f.flags();
            (
                f.body().unwrap().to_vec(),
                flags.contains(&imap::types::Flag::Seen),
                flags.contains(&imap::types::Flag::Flagged),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(message("one"), false, false), (message("two"), true, true)]
    );
    let dates: Vec<_> = fetched.iter().map(|f| f.internal_date().unwrap()).collect();
    assert_eq!(dates, originals);
    let _ = d.logout();
}

/// Append lines to the global options file (read afresh by each command).
fn add_options(s: &Server, lines: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(s.path("options"))
        .unwrap();
    f.write_all(lines.as_bytes()).unwrap();
    common::until_a_hand_edit_is_seen();
}

#[test]
fn servers_down_and_the_proxy_identity() {
    let mut site = site(&["imsp.mailbox.refresh N 1"]);
    let (s1, s2) = (site.s1(), site.s2());
    // The refresh is periodic: a mailbox made on a server shows up.
    site.d1.create(&["bboard.fresh"]);
    let n = site.s.log().matches("mailbox refresh: done").count();
    wait_refreshes(&site.s, n + 1);
    assert!(
        site.s
            .read("mailboxes")
            .contains(&format!("bboard.fresh * . ({s1}) \n"))
    );

    // A server that is down keeps its last known mailboxes, and is logged.
    site.d2.stop();
    let n = site.s.log().matches("mailbox refresh: done").count();
    wait_refreshes(&site.s, n + 1);
    let log = site.s.log();
    assert!(
        log.contains(&format!(
            "mailbox refresh: {s2} unreachable, keeping its last known mailboxes"
        )),
        "{log}"
    );
    let mb = site.s.read("mailboxes");
    assert!(mb.contains(&format!("user.barney * . ({s2}) \n")), "{mb}");
    assert!(
        mb.contains(&format!("bboard.news * . ({s1} {s2}) \n")),
        "{mb}"
    );

    // CREATE on a server that is down: a quick NO, nothing changed; on
    // two servers, the one that worked is rolled back.
    let mut admin = site.s.login("admin");
    let start = Instant::now();
    let t = admin.fails(&format!("CREATE bboard.z ({s2})"), "NO");
    assert!(
        t.contains(&format!("IMAP server {s2}: connect failed")),
        "{t}"
    );
    let t = admin.fails(&format!("CREATE bboard.z ({s1} {s2})"), "NO");
    assert!(t.contains(&s2), "{t}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!site.d1.mailboxes().contains(&"bboard.z".to_string()));
    assert!(!site.s.read("mailboxes").contains("bboard.z"));
    // The same for the other commands that reach the server.
    let mut fred = site.s.login("fred");
    admin.fails("DELETE user.barney", "NO");
    assert!(site.s.read("mailboxes").contains("user.barney "));
    fred.fails("GETACL MAILBOX user.barney", "NO");

    // Bad input is refused with a reason, never a crash.
    fred.fails("CREATE \"../../etc/passwd\"", "NO");
    fred.fails("LIST", "BAD");
    fred.fails(&format!("DELETE user.fred.x {s2}"), "NO");

    // The proxy identity (SASL PLAIN, authorized as the user): it works,
    // and it is what is used (a wrong proxy password fails). Last, since
    // Dovecot slows down logins from an address after a failed one.
    add_options(&site.s, "imsp.proxy.login N proxy\n");
    fred.ok("CREATE user.fred.viaproxy");
    assert!(
        site.d1
            .mailboxes()
            .contains(&"user.fred.viaproxy".to_string())
    );
    add_options(&site.s, "imsp.proxy.password N wrong\n");
    let t = fred.fails("CREATE user.fred.viaproxy2", "NO");
    assert!(t.contains("AUTHENTICATE PLAIN as proxy for fred"), "{t}");
    assert!(!site.s.read("mailboxes").contains("user.fred.viaproxy2"));
    fred.ok("NOOP");
}

#[test]
fn rename_moves_sub_mailboxes_on_every_server() {
    let site = site(&[]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    let mut admin = s.login("admin");
    // user.barney is on the second server, user.barney.old on the first.
    admin.ok("RENAME user.barney user.rubble");
    assert!(site.d2.mailboxes().contains(&"user.rubble".to_string()));
    assert!(!site.d2.mailboxes().contains(&"user.barney".to_string()));
    let on1 = site.d1.mailboxes();
    assert!(on1.contains(&"user.rubble.old".to_string()), "{on1:?}");
    assert!(!on1.contains(&"user.barney.old".to_string()), "{on1:?}");
    let mb = s.read("mailboxes");
    assert!(mb.contains(&format!("user.rubble * . ({s2}) \n")), "{mb}");
    assert!(
        mb.contains(&format!("user.rubble.old * . ({s1}) \n")),
        "{mb}"
    );
    assert!(!mb.contains("user.barney"), "{mb}");
    assert!(
        s.read("changed")
            .contains("user.barney.old user.rubble.old\n")
    );

    // A server that refuses: what was renamed elsewhere is renamed back.
    site.d1.create(&["user.flint.old"]);
    let t = admin.fails("RENAME user.rubble user.flint", "NO");
    assert!(t.contains("RENAME user.rubble.old user.flint.old"), "{t}");
    assert!(site.d2.mailboxes().contains(&"user.rubble".to_string()));
    assert!(!site.d2.mailboxes().contains(&"user.flint".to_string()));
    assert!(site.d1.mailboxes().contains(&"user.rubble.old".to_string()));
    assert_eq!(s.read("mailboxes"), mb);
}

/// Wait for `what` to appear once more than `n` times in the log.
fn wait_log(s: &Server, what: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.log().matches(what).count() <= n {
        assert!(Instant::now() < deadline, "no {what:?}:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn subscriptions_go_only_with_mailboxes_known_deleted() {
    let mut site = site(&["imsp.mailbox.refresh N 1"]);
    let s1 = site.s1();
    let mut fred = site.s.login("fred");
    fred.ok("SUBSCRIBE user.fred.work");
    fred.ok("SUBSCRIBE bboard.comp.mail");
    let subs = site.s.read("user/fred/subs");
    assert_eq!(
        subs,
        "bboard.comp.mail 1 0\nbboard.news 1 0\nuser.fred 1 0\nuser.fred.work 1 0\n"
    );

    // The list is missing (as before the first refresh): nothing is lost.
    let n = site.s.log().matches("mailbox refresh: done").count();
    std::fs::remove_file(site.s.path("mailboxes")).unwrap();
    let u = fred.ok("LSUB \"\" *");
    assert!(!u.iter().any(|l| l.starts_with("* NO")), "{u:?}");
    assert_eq!(site.s.read("user/fred/subs"), subs);
    wait_refreshes(&site.s, n + 1);
    let u = fred.ok("LSUB \"\" user.fred.*");
    assert_eq!(u, vec![format!("* LSUB () ({s1}) \".\" user.fred.work")]);

    // A mailbox that vanished from a server that answered is deleted.
    {
        let mut d = site.d1.session("admin");
        d.delete("user.fred.work").unwrap();
        let _ = d.logout();
    }
    let n = site.s.log().matches("mailbox refresh: done").count();
    wait_refreshes(&site.s, n + 1);
    assert!(site.s.read("deleted").starts_with("user.fred.work "));
    let u = fred.ok("LSUB \"\" *");
    assert!(
        u.contains(
            &"* NO Mailbox user.fred.work was deleted; your subscription to it was removed"
                .to_string()
        ),
        "{u:?}"
    );
    let subs = site.s.read("user/fred/subs");
    assert_eq!(
        subs,
        "bboard.comp.mail 1 0\nbboard.news 1 0\nuser.fred 1 0\n"
    );

    // No server answers and the list is missing: it is not written empty,
    // and the subscriptions stay.
    site.d1.stop();
    site.d2.stop();
    std::fs::remove_file(site.s.path("mailboxes")).unwrap();
    let n = site.s.log().matches("no IMAP server answered").count();
    wait_log(&site.s, "no IMAP server answered", n);
    assert!(!site.s.path("mailboxes").exists());
    let u = fred.ok("LSUB \"\" *");
    assert!(!u.iter().any(|l| l.starts_with("* NO")), "{u:?}");
    assert_eq!(site.s.read("user/fred/subs"), subs);
}

/// A server that accepts connections and never says a word.
fn mute_server() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let name = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
            if held.len() > 50 {
                break;
            }
        }
    });
    (name, h)
}

#[test]
fn refresh_stuck_on_a_mute_server() {
    let (mute, _h) = mute_server();
    let site = site(&["imsp.mailbox.refresh N 1"]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    // The mute server is asked last: each refresh waits on it for the
    // proxy timeout (5 s) after the two others have answered.
    add_options(
        s,
        &format!("imsp.imap.servers R ({s1} {s2}/dovecot {mute})\nimsp.proxy.timeout N 5\n"),
    );
    let n = s.log().matches("mailbox refresh: done").count();
    wait_refreshes(s, n + 1);
    let n = s.log().matches("mailbox refresh: done").count();
    wait_refreshes(s, n + 1);
    assert!(
        s.log()
            .contains(&format!("mailbox refresh: {mute} unreachable")),
        "{}",
        s.log()
    );
    // A new refresh has started (within a second) and is stuck.
    std::thread::sleep(Duration::from_millis(1500));
    let n = s.log().matches("mailbox refresh: done").count();
    // The listener still serves sessions meanwhile.
    let start = Instant::now();
    let mut admin = s.login("admin");
    admin.ok(&format!("CREATE bboard.during ({s1})"));
    admin.ok("RENAME user.fred.work user.fred.job");
    let l = admin.ok("LIST \"\" user.fred.*");
    assert_eq!(l, vec![format!("* LIST () ({s1}) \".\" user.fred.job")]);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        s.log().matches("mailbox refresh: done").count(),
        n,
        "the refresh was not stuck"
    );
    // The refresh that was under way when they were made keeps them.
    wait_refreshes(s, n + 1);
    let mb = s.read("mailboxes");
    assert!(mb.contains(&format!("bboard.during 0 . ({s1}) \n")), "{mb}");
    assert!(mb.contains(&format!("user.fred.job * . ({s1}) \n")), "{mb}");
    assert!(!mb.contains("user.fred.work"), "{mb}");
    assert!(!site.s.path("deleted").exists());
}

#[test]
fn a_user_renames_inbox() {
    let site = site(&[]);
    let s1 = site.s1();
    let s = &site.s;
    {
        let mut d = site.d1.session("fred");
        d.append("user.fred", &message("in one")).finish().unwrap();
        d.append("user.fred", &message("in two"))
            .flag(imap::types::Flag::Seen)
            .finish()
            .unwrap();
        let _ = d.logout();
    }
    let mut fred = s.login("fred");
    fred.ok("LSUB \"\" *");
    fred.ok("RENAME INBOX user.fred.saved");
    // The messages moved; INBOX and what is below it stay.
    let on1 = site.d1.mailboxes();
    for m in ["user.fred", "user.fred.saved", "user.fred.work"] {
        assert!(on1.contains(&m.to_string()), "{m}: {on1:?}");
    }
    assert!(
        !on1.iter().any(|m| m.starts_with("user.fred.saved.")),
        "{on1:?}"
    );
    let mut d = site.d1.session("fred");
    assert_eq!(d.examine("user.fred").unwrap().exists, 0);
    d.examine("user.fred.saved").unwrap();
    let fetched = d.fetch("1:*", "(FLAGS BODY.PEEK[])").unwrap();
    let got: Vec<(Vec<u8>, bool)> = fetched
        .iter()
        .map(|f| {
            (
                f.body().unwrap().to_vec(),
                f.flags().contains(&imap::types::Flag::Seen),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(message("in one"), false), (message("in two"), true)]
    );
    drop(fetched);
    let _ = d.logout();
    let mb = s.read("mailboxes");
    assert!(mb.contains(&format!("user.fred 0 . ({s1}) \n")), "{mb}");
    assert!(
        mb.contains(&format!("user.fred.saved * . ({s1}) \n")),
        "{mb}"
    );
    assert!(
        mb.contains(&format!("user.fred.work * . ({s1}) \n")),
        "{mb}"
    );
    assert!(!s.path("changed").exists() || !s.read("changed").contains("user.fred "));
    assert_eq!(
        fred.ok("LSUB \"\" *"),
        vec![
            format!("* LSUB () ({s1}) \".\" INBOX"),
            format!("* LSUB () ({}) \".\" bboard.news", {
                let mut v = [site.s1(), site.s2()];
                v.sort();
                v.join(" ")
            }),
            format!("* LSUB () ({s1}) \".\" user.fred.saved"),
        ]
    );
    // Still refused: a name outside the user's own, or one that exists.
    let t = fred.fails("RENAME INBOX bboard.mine", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    fred.fails("RENAME INBOX user.fred.work", "NO");
}

#[test]
fn seen_uids_and_sessions_that_only_look() {
    let site = site(&[]);
    let s1 = site.s1();
    let s = &site.s;
    // An administrator (arbitron, even acting as barney) sees the server
    // list as stored (the refresh's order: the servers' order in
    // imsp.imap.servers), not sorted.
    let both = format!("{} {}", site.s1(), site.s2());
    // barney has an account (his first LOGIN made it) but no subs file.
    s.login("barney").logout();
    assert!(!s.path("user/barney/subs").exists());

    // An imsp.admin.subs administrator looks without writing: no subs
    // file is made for a user who has none.
    let mut arb = s.connect();
    arb.ok("LOGIN arbitron arbpw");
    arb.ok("LOGIN barney \"\"");
    assert_eq!(
        arb.ok("LSUB \"\" *"),
        vec![
            format!("* LSUB () ({}) \".\" INBOX", site.s2()),
            format!("* LSUB () ({both}) \".\" bboard.news"),
        ]
    );
    assert!(!s.path("user/barney/subs").exists());

    // SEEN makes a new subs file with the inbox's real name.
    let mut imapd = s.connect();
    imapd.ok("LOGIN imapd imappw");
    imapd.ok("SEEN bboard.news 3 barney");
    assert_eq!(
        s.read("user/barney/subs"),
        "bboard.news 1 3\nuser.barney 1 0\n"
    );

    // Following a rename keeps the seen UID.
    let mut fred = s.login("fred");
    fred.ok("SUBSCRIBE user.fred.work");
    imapd.ok("SEEN user.fred.work 5 fred");
    fred.ok("RENAME user.fred.work user.fred.job");
    let u = fred.ok("LSUB \"\" user.fred.*");
    assert_eq!(
        u.last().unwrap(),
        &format!("* LSUB () ({s1}) \".\" user.fred.job")
    );
    let subs = s.read("user/fred/subs");
    assert!(subs.contains("user.fred.job 1 5\n"), "{subs}");

    // A renamed subscription is shown to the administrator who looks, but
    // the file is not changed.
    fred.ok("RENAME user.fred.job user.fred.task");
    let before = s.read("user/fred/subs");
    let mut arb = s.connect();
    arb.ok("LOGIN arbitron arbpw");
    arb.ok("LOGIN fred \"\"");
    let u = arb.ok("LSUB \"\" user.fred.*");
    assert!(
        u[0].starts_with("* NO Mailbox user.fred.job was renamed"),
        "{u:?}"
    );
    assert_eq!(s.read("user/fred/subs"), before);
}

#[test]
fn create_policy() {
    let site = site(&["imsp.create.policy N random"]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    let mut fred = s.login("fred");
    // random: imsp.new.mailbox.servers (only the second), parent or not.
    fred.ok("CREATE user.fred.anywhere");
    assert!(
        site.d2
            .mailboxes()
            .contains(&"user.fred.anywhere".to_string())
    );
    assert!(
        !site
            .d1
            .mailboxes()
            .contains(&"user.fred.anywhere".to_string())
    );
    assert!(
        s.read("mailboxes")
            .contains(&format!("user.fred.anywhere 0 . ({s2}) \n"))
    );
    // parent: the parent's server.
    add_options(s, "imsp.create.policy N parent\n");
    fred.ok("CREATE user.fred.near");
    assert!(site.d1.mailboxes().contains(&"user.fred.near".to_string()));
    // An unknown policy is logged and parent used.
    add_options(s, "imsp.create.policy N free-space\n");
    fred.ok("CREATE user.fred.near2");
    assert!(
        s.read("mailboxes")
            .contains(&format!("user.fred.near2 0 . ({s1}) \n"))
    );
    assert!(
        s.log()
            .contains("imsp.create.policy \"free-space\" is not known"),
        "{}",
        s.log()
    );
}

/// An IMAP server that answers FETCH with flags and a date but no body.
/// Returns its name and the commands it was sent.
fn bodiless_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let name = l.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let _ = w.write_all(b"* OK fake IMAP ready\r\n");
                for line in BufReader::new(c).lines() {
                    let Ok(line) = line else { break };
                    let mut words = line.splitn(3, ' ');
                    let tag = words.next().unwrap_or("").to_string();
                    let cmd = words.next().unwrap_or("").to_ascii_uppercase();
                    log.lock().unwrap().push(cmd.clone());
                    let reply = match cmd.as_str() {
                        "CAPABILITY" => format!("* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n"),
                        "EXAMINE" | "SELECT" => {
                            format!("* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK done\r\n")
                        }
                        "FETCH" => format!(
                            "* 1 FETCH (FLAGS (\\Seen) INTERNALDATE \"01-Jan-2020 00:00:00 +0000\")\r\n\
                             * 2 FETCH (FLAGS () INTERNALDATE \"02-Jan-2020 00:00:00 +0000\")\r\n\
                             {tag} OK done\r\n"
                        ),
                        "LOGOUT" => format!("* BYE bye\r\n{tag} OK done\r\n"),
                        _ => format!("{tag} OK done\r\n"),
                    };
                    if w.write_all(reply.as_bytes()).is_err() || cmd == "LOGOUT" {
                        break;
                    }
                }
            });
        }
    });
    (name, seen)
}

#[test]
fn move_refuses_messages_without_bodies() {
    let site = site(&[]);
    let (s1, s2) = (site.s1(), site.s2());
    let s = &site.s;
    let (fake, sent) = bodiless_server();
    add_options(
        s,
        &format!("imsp.imap.servers R ({s1} {s2}/dovecot {fake})\nimsp.proxy.tls N off\n"),
    );
    let mut lines: Vec<String> = s.read("mailboxes").lines().map(String::from).collect();
    lines.push(format!("bboard.fake * . ({fake}) "));
    lines.sort();
    std::fs::write(s.path("mailboxes"), lines.join("\n") + "\n").unwrap();
    let before = s.read("mailboxes");
    let mut admin = s.login("admin");
    let t = admin.fails(&format!("MOVE bboard.fake {fake} ({s1})"), "NO");
    assert!(t.contains("gave no body"), "{t}");
    // Nothing changed: no copy left behind, the source kept.
    assert!(!site.d1.mailboxes().contains(&"bboard.fake".to_string()));
    assert_eq!(s.read("mailboxes"), before);
    let sent = sent.lock().unwrap().clone();
    assert!(sent.contains(&"FETCH".to_string()), "{sent:?}");
    assert!(!sent.contains(&"DELETE".to_string()), "{sent:?}");
}
