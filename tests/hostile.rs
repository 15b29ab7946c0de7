//! Hostile clients against the real daemon: names that try to leave the
//! data directory, NUL and invalid UTF-8 in every argument, literals that
//! claim 4 GB, a client that trickles bytes, one that never reads, and
//! thousands of connections dropped at random points.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Client, Server, children_of};

/// No slowing down or closing after failed logins: these tests fail many.
fn server() -> common::ServerBuilder {
    Server::builder()
        .option_line("imsp.login.failures.delay N 0")
        .option_line("imsp.login.failures.max N 0")
}

/// Every path under `dir`, relative, recursively.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// What lies beside the data directory (its parent, minus the data
/// directory's own content).
fn outside(s: &Server) -> BTreeSet<String> {
    let parent = s.dir.parent().unwrap();
    let name = s.dir.file_name().unwrap().to_string_lossy().into_owned();
    tree(parent)
        .into_iter()
        .filter(|p| !p.starts_with(&format!("{name}/")))
        .collect()
}

/// `imspd check` finds every file whole.
fn assert_data_whole(s: &Server) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&s.dir)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imspd check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A non-synchronizing literal holding `b`.
fn lit(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{{{}+}}\r\n", b.len()).into_bytes();
    v.extend_from_slice(b);
    v
}

/// Send `tag CMD arg arg...` (each argument already encoded) and read the
/// reply.
fn send_args(c: &mut Client, tag: &str, cmd: &str, args: &[Vec<u8>]) -> common::Reply {
    let mut line = format!("{tag} {cmd}").into_bytes();
    for a in args {
        line.push(b' ');
        line.extend_from_slice(a);
    }
    line.extend_from_slice(b"\r\n");
    c.send(&line);
    c.read_reply(tag)
}

fn alive(c: &mut Client) {
    assert_eq!(c.cmd("NOOP").status(), "OK", "session no longer answers");
}

/// Names that must never become paths.
fn hostile_names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b".."[..],
        b".",
        b"../x",
        b"../../x",
        b"../../../../../../tmp/imspd-escape",
        b"/tmp/imspd-escape",
        b"a/b",
        b"fred/../../x",
        b"fred\0x",
        b"\0",
        b"fred\nx",
        b"fred\rx",
        b"fred\x7fx",
        b"fred\x01",
        b".hidden",
        b"trailing.",
        b"a..b",
        b"\xff\xfe",
        b"fred\xc0\xaf..\xc0\xafx",
        b"",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    v.push(vec![b'a'; 256]);
    v.push(vec![b'a'; 100_000]);
    v
}

#[test]
fn user_names_cannot_leave_the_data_directory() {
    let s = server().option_line("imsp.create.new.users N +").start();
    let before_out = outside(&s);
    let before = tree(&s.dir);
    let mut c = s.connect();
    for (i, name) in hostile_names().iter().enumerate() {
        let r = send_args(
            &mut c,
            &format!("U{i}"),
            "LOGIN",
            &[lit(name), b"secret".to_vec()],
        );
        assert!(
            ["NO", "BAD"].contains(&r.status().as_str()),
            "LOGIN {:?} -> {}",
            name.escape_ascii().to_string(),
            r.tagged()
        );
        alive(&mut c);
    }
    // An administrator's second LOGIN as another user, and SEEN's user.
    let mut a = s.login("admin");
    let mut f = s.login("fred");
    for (i, name) in hostile_names().iter().enumerate() {
        let r = send_args(
            &mut a,
            &format!("A{i}"),
            "LOGIN",
            &[lit(name), b"x".to_vec()],
        );
        assert_ne!(
            r.status(),
            "OK",
            "admin LOGIN {:?}",
            name.escape_ascii().to_string()
        );
        alive(&mut a);
        let r = send_args(
            &mut f,
            &format!("S{i}"),
            "SEEN",
            &[b"box".to_vec(), b"1".to_vec(), lit(name)],
        );
        assert_ne!(
            r.status(),
            "OK",
            "SEEN for {:?}",
            name.escape_ascii().to_string()
        );
        alive(&mut f);
    }
    drop((c, a, f));
    assert_eq!(
        outside(&s),
        before_out,
        "something was made outside the data directory"
    );
    // Inside it only the logged-in users' own directories may have appeared.
    let new: Vec<String> = tree(&s.dir).difference(&before).cloned().collect();
    for p in &new {
        assert!(
            p.starts_with("user/fred") || p.starts_with("user/admin") || p.ends_with('.'),
            "unexpected {p} (all new: {new:?})"
        );
    }
    assert!(!Path::new("/tmp/imspd-escape").exists());
}

#[test]
fn book_names_cannot_leave_the_data_directory() {
    let s = server().start();
    let mut c = s.login("fred");
    c.ok("STOREADDRESS fred anchor email a@b");
    let before_out = outside(&s);
    let before = tree(&s.dir);
    let mut n = 0;
    let mut t = || {
        n += 1;
        format!("B{n}")
    };
    for name in hostile_names() {
        let shown = name.escape_ascii().to_string();
        let mut prefixed = b"fred.".to_vec();
        prefixed.extend_from_slice(&name);
        for book in [name.clone(), prefixed] {
            let b = lit(&book);
            for (cmd, args) in [
                ("CREATEADDRESSBOOK", vec![b.clone()]),
                ("DELETEADDRESSBOOK", vec![b.clone()]),
                ("RENAMEADDRESSBOOK", vec![b"fred".to_vec(), b.clone()]),
                ("RENAMEADDRESSBOOK", vec![b.clone(), b"fred.moved".to_vec()]),
                (
                    "STOREADDRESS",
                    vec![b.clone(), b"x".to_vec(), b"email".to_vec(), b"y".to_vec()],
                ),
                ("FETCHADDRESS", vec![b.clone(), b"x".to_vec()]),
                ("SEARCHADDRESS", vec![b.clone()]),
                ("DELETEADDRESS", vec![b.clone(), b"x".to_vec()]),
                (
                    "LOCK",
                    vec![b"ADDRESSBOOK".to_vec(), b.clone(), b"x".to_vec()],
                ),
                (
                    "UNLOCK",
                    vec![b"ADDRESSBOOK".to_vec(), b.clone(), b"x".to_vec()],
                ),
                (
                    "SETACL",
                    vec![
                        b"ADDRESSBOOK".to_vec(),
                        b.clone(),
                        b"barney".to_vec(),
                        b"lr".to_vec(),
                    ],
                ),
                (
                    "DELETEACL",
                    vec![b"ADDRESSBOOK".to_vec(), b.clone(), b"barney".to_vec()],
                ),
                ("GETACL", vec![b"ADDRESSBOOK".to_vec(), b.clone()]),
                ("MYRIGHTS", vec![b"ADDRESSBOOK".to_vec(), b.clone()]),
            ] {
                let r = send_args(&mut c, &t(), cmd, &args);
                // Refused outright; the only commands that may succeed on a
                // name that is no book are the ones that just report nothing.
                let may_pass = matches!(
                    cmd,
                    "UNLOCK"
                        | "DELETEACL"
                        | "GETACL"
                        | "MYRIGHTS"
                        | "SEARCHADDRESS"
                        | "FETCHADDRESS"
                );
                assert!(
                    r.status() != "OK" || may_pass,
                    "{cmd} {shown:?} -> {:?}",
                    r.lines
                        .iter()
                        .map(|l| l.escape_ascii().to_string())
                        .collect::<Vec<_>>()
                );
                alive(&mut c);
            }
        }
    }
    // The default book survived DELETEADDRESSBOOK of the tricky names.
    assert!(c.ok("FETCHADDRESS fred anchor").len() == 1);
    drop(c);
    assert_eq!(
        outside(&s),
        before_out,
        "something was made outside the data directory"
    );
    let new: Vec<String> = tree(&s.dir).difference(&before).cloned().collect();
    assert!(new.iter().all(|p| p.ends_with('.')), "new files: {new:?}");
    let gone: Vec<String> = before.difference(&tree(&s.dir)).cloned().collect();
    assert!(gone.is_empty(), "removed: {gone:?}");
    assert_data_whole(&s);
}

#[test]
fn option_and_entry_names_are_keys_not_paths() {
    let s = server().start();
    let before_out = outside(&s);
    let mut c = s.login("fred");
    let mut a = s.login("admin");
    for (i, name) in hostile_names().iter().enumerate() {
        if name.len() > 1000 {
            continue;
        }
        let shown = name.escape_ascii().to_string();
        // Option names are atoms: the odd ones are refused, the rest stored
        // as keys of the options file.
        for (who, prefix) in [(&mut c, &b"fred."[..]), (&mut a, &b"*"[..])] {
            let mut opt = prefix.to_vec();
            opt.extend_from_slice(name);
            let r = send_args(who, &format!("O{i}"), "SET", &[lit(&opt), b"v".to_vec()]);
            assert!(
                ["OK", "NO", "BAD"].contains(&r.status().as_str()),
                "{}",
                r.tagged()
            );
            alive(who);
        }
        // Entry names are anything: stored, fetched back exactly, deleted.
        let r = send_args(
            &mut c,
            &format!("E{i}"),
            "STOREADDRESS",
            &[b"fred".to_vec(), lit(name), b"email".to_vec(), lit(name)],
        );
        if r.status() == "OK" {
            let f = send_args(
                &mut c,
                &format!("F{i}"),
                "FETCHADDRESS",
                &[b"fred".to_vec(), lit(name)],
            );
            assert_eq!(f.status(), "OK", "{shown:?}");
            assert_eq!(f.untagged_bytes().len(), 1, "{shown:?}");
            let line = &f.untagged_bytes()[0];
            assert!(
                line.windows(name.len().max(1)).any(|w| w == &name[..]) || name.is_empty(),
                "{shown:?} not in {:?}",
                line.escape_ascii().to_string()
            );
            let d = send_args(
                &mut c,
                &format!("D{i}"),
                "DELETEADDRESS",
                &[b"fred".to_vec(), lit(name)],
            );
            assert_eq!(d.status(), "OK", "{shown:?}");
        } else {
            assert_eq!(r.status(), "NO", "{shown:?}: {}", r.tagged());
        }
        alive(&mut c);
    }
    drop((c, a));
    assert_eq!(outside(&s), before_out);
    assert_data_whole(&s);
}

/// Values that are not text.
fn odd_values() -> Vec<Vec<u8>> {
    vec![
        b"\0".to_vec(),
        b"a\0b".to_vec(),
        b"\xff\xfe\xc0\xaf".to_vec(),
        b"line\r\nnext".to_vec(),
        b"\\ \" {3}".to_vec(),
        Vec::new(),
    ]
}

#[test]
fn nul_and_invalid_utf8_in_every_argument() {
    let s = server().start();
    let sane = |w: &str| w.as_bytes().to_vec();
    let commands: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("GET", vec![sane("*")]),
        ("SET", vec![sane("fred.x"), sane("v")]),
        ("UNSET", vec![sane("fred.x")]),
        ("LOCK OPTION", vec![sane("fred.x")]),
        ("UNLOCK OPTION", vec![sane("fred.x")]),
        ("ADDRESSBOOK", vec![sane("*")]),
        ("CREATEADDRESSBOOK", vec![sane("fred.new")]),
        (
            "RENAMEADDRESSBOOK",
            vec![sane("fred.new"), sane("fred.newer")],
        ),
        ("DELETEADDRESSBOOK", vec![sane("fred.newer")]),
        (
            "STOREADDRESS",
            vec![sane("fred"), sane("e"), sane("email"), sane("v")],
        ),
        ("FETCHADDRESS", vec![sane("fred"), sane("e")]),
        (
            "SEARCHADDRESS",
            vec![sane("fred"), sane("email"), sane("*")],
        ),
        ("LOCK ADDRESSBOOK", vec![sane("fred"), sane("e")]),
        ("UNLOCK ADDRESSBOOK", vec![sane("fred"), sane("e")]),
        ("DELETEADDRESS", vec![sane("fred"), sane("e")]),
        (
            "SETACL ADDRESSBOOK",
            vec![sane("fred"), sane("barney"), sane("lr")],
        ),
        ("GETACL ADDRESSBOOK", vec![sane("fred")]),
        ("MYRIGHTS ADDRESSBOOK", vec![sane("fred")]),
        ("DELETEACL ADDRESSBOOK", vec![sane("fred"), sane("barney")]),
        ("LIST", vec![sane("\"\""), sane("*")]),
        ("LSUB", vec![sane("\"\""), sane("*")]),
        ("UNSEEN", vec![sane("\"\""), sane("*")]),
        ("SUBSCRIBE", vec![sane("box")]),
        ("UNSUBSCRIBE", vec![sane("box")]),
        ("LAST", vec![sane("box"), sane("1")]),
        ("SEEN", vec![sane("box"), sane("1"), sane("fred")]),
        ("CREATE", vec![sane("box")]),
        ("DELETE", vec![sane("box")]),
        ("RENAME", vec![sane("box"), sane("box2")]),
        ("REPLACE", vec![sane("box"), sane("box2")]),
    ];
    let mut pre = s.connect();
    let mut c = s.login("fred");
    let mut n = 0;
    for v in odd_values() {
        let shown = v.escape_ascii().to_string();
        // Before login: LOGIN and AUTHENTICATE.
        for args in [vec![lit(&v), sane("secret")], vec![sane("fred"), lit(&v)]] {
            n += 1;
            let r = send_args(&mut pre, &format!("P{n}"), "LOGIN", &args);
            assert!(
                ["NO", "BAD"].contains(&r.status().as_str()),
                "{}",
                r.tagged()
            );
            alive(&mut pre);
        }
        n += 1;
        let r = send_args(&mut pre, &format!("P{n}"), "AUTHENTICATE", &[lit(&v)]);
        assert!(
            ["NO", "BAD"].contains(&r.status().as_str()),
            "{}",
            r.tagged()
        );
        alive(&mut pre);
        for (cmd, args) in &commands {
            for i in 0..args.len() {
                let mut a = args.clone();
                a[i] = lit(&v);
                n += 1;
                let r = send_args(&mut c, &format!("C{n}"), cmd, &a);
                assert!(
                    ["OK", "NO", "BAD"].contains(&r.status().as_str()),
                    "{cmd} arg {i} = {shown:?}: {}",
                    r.tagged()
                );
                alive(&mut c);
            }
        }
        // Round trips where the argument is data.
        n += 1;
        let r = send_args(
            &mut c,
            &format!("R{n}"),
            "SET",
            &[sane("fred.odd"), lit(&v)],
        );
        assert_eq!(r.status(), "OK", "SET {shown:?}");
        let r = c.cmd("GET fred.odd");
        assert_eq!(r.untagged_bytes().len(), 1);
        let line = &r.untagged_bytes()[0];
        assert!(
            v.is_empty() || line.windows(v.len()).any(|w| w == &v[..]),
            "GET {shown:?} -> {:?}",
            line.escape_ascii().to_string()
        );
        n += 1;
        let r = send_args(
            &mut c,
            &format!("R{n}"),
            "STOREADDRESS",
            &[sane("fred"), lit(&v), sane("phone"), lit(&v)],
        );
        if v.contains(&b'"') || v.is_empty() {
            // `"` separates the entry name from the field name on disk.
            assert_eq!(r.status(), "NO", "STOREADDRESS {shown:?}: {}", r.tagged());
            continue;
        }
        assert_eq!(r.status(), "OK", "STOREADDRESS {shown:?}: {}", r.tagged());
        n += 1;
        let r = send_args(
            &mut c,
            &format!("R{n}"),
            "FETCHADDRESS",
            &[sane("fred"), lit(&v)],
        );
        let line = &r.untagged_bytes()[0];
        assert!(
            v.is_empty() || line.windows(v.len()).filter(|w| *w == &v[..]).count() >= 2,
            "FETCHADDRESS {shown:?} -> {:?}",
            line.escape_ascii().to_string()
        );
    }
    drop((c, pre));
    assert_data_whole(&s);
}

#[test]
fn literals_claiming_4gb_after_login_sync_and_literal_plus() {
    let s = server().start();
    let mut c = s.login("fred");
    for (i, cmd) in [
        "SET fred.x {4294967296}",
        "STOREADDRESS fred x email {4294967296}",
        "STOREADDRESS fred {4294967296}",
        "SET fred.x {18446744073709551615}",
    ]
    .iter()
    .enumerate()
    {
        c.send(format!("G{i} {cmd}\r\n").as_bytes());
        let l = String::from_utf8_lossy(&c.read_line()).into_owned();
        assert!(
            l.starts_with(&format!("G{i} BAD Literal of")),
            "{cmd} -> {l}"
        );
        alive(&mut c);
    }
    // A count past u64 is no literal at all: a syntax error.
    assert_eq!(c.cmd("SET fred.x {18446744073709551616}").status(), "BAD");
    alive(&mut c);

    // LITERAL+: the server must read the octets and drop them, never
    // keeping them. Send 8 MB of a claimed 4 GB and watch the process.
    let mut big = s.login("fred");
    let session = newest_child(&s);
    big.send(b"Z1 SET fred.x {4294967296+}\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        big.send(&chunk);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss = vm_rss_kb(session).expect("session process alive");
    assert!(
        rss < 64 * 1024,
        "session holds {rss} kB after 8 MB of literal"
    );
    // Others are served meanwhile.
    let mut other = s.login("barney");
    alive(&mut other);
    alive(&mut c);
}

/// Empty literals cost nothing against the literal limit; the lines
/// around them share the line limit, so a command of endless `{0+}` is
/// refused (before login too) and the process stays small.
#[test]
fn a_command_of_endless_empty_literals_is_refused_in_bounded_memory() {
    let s = server().start();
    let mut c = s.connect();
    let session = newest_child(&s);
    c.send(b"E1 LOGIN {0+}\r\n");
    let chunk = " {0+}\r\n".repeat(8 * 1024);
    for _ in 0..200 {
        // 12.8 MB in all, 64 KB a send.
        c.send(chunk.as_bytes());
    }
    c.send(b" x\r\n");
    let l = String::from_utf8_lossy(&c.read_line()).into_owned();
    assert!(l.starts_with("E1 BAD Line too long"), "{l}");
    let rss = vm_rss_kb(session).expect("session process alive");
    assert!(rss < 32 * 1024, "session holds {rss} kB");
    // In step: the next command is answered as itself.
    assert_eq!(c.cmd("NOOP").status(), "OK");
}

/// The most recently started session process of `s`.
fn newest_child(s: &Server) -> u32 {
    let kids = children_of(s.pid());
    kids.iter().map(|k| k.0).max().expect("a session process")
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_trickling_client_is_closed_by_the_idle_timeout_while_others_are_served() {
    let s = server().arg("--idle-timeout").arg("2").start();
    let mut slow = s.connect();
    let start = Instant::now();
    let mut fast = s.login("fred");
    // One byte every 300 ms of a command that never ends, while another
    // client works; the trickle does not keep the session alive.
    let mut sent = 0;
    let mut fast_cmds = 0;
    let msg = b"t1 SET fred.slow aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(8) {
        if slow
            .stream
            .write_all(&msg[sent % msg.len()..][..1])
            .is_err()
        {
            closed = true;
            break;
        }
        sent += 1;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            let r = fast.cmd("GET fred.*");
            assert_eq!(r.status(), "OK");
            fast_cmds += 1;
        }
        if start.elapsed() > Duration::from_secs(3) && children_of(s.pid()).len() == 1 {
            closed = true;
            break;
        }
    }
    let l = String::from_utf8_lossy(&slow.read_line()).into_owned();
    assert!(l.starts_with("* BYE Idle"), "{l}");
    assert!(slow.closed_within(Duration::from_secs(5)) || closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(fast_cmds > 20, "only {fast_cmds} commands served meanwhile");
    alive(&mut fast);
}

/// Connections that never log in cannot hold the connection limit for
/// the whole idle timeout: `--login-timeout` closes them, however busy
/// they keep themselves, while logged-in sessions idle on.
#[test]
fn sessions_that_never_log_in_are_closed_by_the_login_timeout() {
    let s = server()
        .arg("--login-timeout")
        .arg("2")
        .arg("--idle-timeout")
        .arg("60")
        .start();
    let start = Instant::now();
    let mut idle = s.connect();
    let mut busy = s.connect();
    let mut user = s.login("fred");
    // NOOPs before login do not count as logging in.
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(busy.cmd("NOOP").status(), "OK");
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut idle, &mut busy] {
        let l = String::from_utf8_lossy(&c.read_line()).into_owned();
        assert_eq!(l, "* BYE No login within 2 seconds, closing connection");
        assert!(c.closed_within(Duration::from_secs(2)));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The session that logged in is still there after the login timeout.
    std::thread::sleep(Duration::from_millis(500));
    alive(&mut user);
}

#[test]
fn a_client_that_never_reads_is_closed_by_the_write_timeout() {
    let s = server().arg("--write-timeout").arg("2").start();
    let mut c = s.login("fred");
    let value = vec![b'v'; 60_000];
    let r = send_args(&mut c, "V1", "SET", &[b"fred.big".to_vec(), lit(&value)]);
    assert_eq!(r.status(), "OK");
    let session = newest_child(&s);
    // Pipeline thousands of GETs of 60 kB each and read nothing.
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        for i in 0..5000 {
            if w.write_all(format!("g{i} GET fred.big\r\n").as_bytes())
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        sent
    });
    let start = Instant::now();
    let mut max_rss = 0;
    let gone = loop {
        match vm_rss_kb(session) {
            None => break true,
            Some(kb) => max_rss = max_rss.max(kb),
        }
        if status_field(session, "State:").is_some_and(|s| s.starts_with('Z')) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let sent = writer.join().unwrap();
    assert!(
        gone,
        "session still there after 15 s (rss {max_rss} kB, {sent} sent)"
    );
    assert!(max_rss < 64 * 1024, "session grew to {max_rss} kB");
    assert!(sent > 100, "only {sent} commands sent");
    // The listener goes on.
    alive(&mut s.login("barney"));
}

#[test]
fn thousands_of_dropped_connections_leave_the_listener_as_it_was() {
    let s = server().arg("--max-connections").arg("1000").start();
    let mut worker = s.login("fred");
    // Warm up, then measure.
    for _ in 0..50 {
        drop(TcpStream::connect(("127.0.0.1", s.port)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = vm_rss_kb(s.pid()).unwrap();
    let port = s.port;
    let dropper = std::thread::spawn(move || {
        let mut refused = 0;
        for i in 0..3000 {
            let Ok(mut t) = TcpStream::connect(("127.0.0.1", port)) else {
                refused += 1;
                continue;
            };
            let _ = match i % 6 {
                0 => Ok(()),
                1 => t.write_all(b"a LOGIN fr"),
                2 => t.write_all(b"a SET x {100}\r\nabc"),
                3 => t.write_all(b"a LOGIN fred secret\r\nb GET *\r\n"),
                4 => t.write_all(b"a NOOP\r\n"),
                _ => t.write_all(b"a LOGIN {5+}\r\nfr"),
            };
            if i % 3 == 0 {
                let _ = t.set_linger_zero();
            }
        }
        refused
    });
    let mut served = 0;
    while !dropper.is_finished() {
        worker.ok(&format!("SET fred.n {served}"));
        assert_eq!(
            worker.ok("GET fred.n"),
            vec![format!("* OPTION fred.n {served} [READ-WRITE]")]
        );
        served += 1;
    }
    let refused = dropper.join().unwrap();
    assert!(refused < 30, "{refused} connects failed");
    assert!(
        served > 10,
        "the working client got only {served} commands through"
    );
    // Every dropped session ends and is reaped: only the worker is left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let kids = children_of(s.pid());
        if kids.len() == 1 && kids[0].1 != 'Z' {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children left (Z = zombie): {} {:?}",
            kids.len(),
            &kids[..kids.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_after = vm_rss_kb(s.pid()).unwrap();
    assert!(
        rss_after <= rss_before + 1024,
        "listener grew from {rss_before} kB to {rss_after} kB"
    );
    alive(&mut worker);
}

trait LingerZero {
    fn set_linger_zero(&self) -> std::io::Result<()>;
}

impl LingerZero for TcpStream {
    /// Close with a reset instead of a FIN.
    fn set_linger_zero(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt with a linger struct on our own socket.
        let r = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[test]
fn a_literal_after_an_over_long_line_is_skipped_however_it_is_written() {
    let s = server().arg("--max-line").arg("256").start();
    let mut c = s.connect();
    for (i, digits) in ["6", "0006", &format!("{}6", "0".repeat(60))]
        .iter()
        .enumerate()
    {
        // The line is over the limit; its literal holds a command that
        // must never run.
        let mut line = format!("a{i} SET x.y ").into_bytes();
        line.extend_from_slice(&[b'x'; 300]);
        line.extend_from_slice(format!(" {{{digits}+}}\r\nb NOOP\r\nc{i} NOOP\r\n").as_bytes());
        c.send(&line);
        let l = String::from_utf8_lossy(&c.read_line()).into_owned();
        assert!(
            l.starts_with(&format!("a{i} BAD Line too long")),
            "{digits}: {l}"
        );
        let l = String::from_utf8_lossy(&c.read_line()).into_owned();
        assert_eq!(
            l,
            format!("c{i} OK noop completed"),
            "{digits}: the literal ran"
        );
    }
}
