//! The daemon and the protocol engine, through the real binary over TCP.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Client, Server, children_of};

fn server() -> Server {
    Server::builder().no_users().start()
}

#[test]
fn greeting_names_host_and_version() {
    let s = server();
    let c = s.connect();
    assert!(c.greeting.starts_with("* OK "), "{}", c.greeting);
    assert!(
        c.greeting.ends_with(&format!(
            "IMSP server imspd {} ready",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        c.greeting
    );
}

#[test]
fn noop_capability_logout() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("NOOP").tagged(), "T1 OK noop completed");
    let r = c.cmd("CAPABILITY");
    assert_eq!(r.untagged().len(), 1);
    let caps = &r.untagged()[0];
    assert!(caps.starts_with("* CAPABILITY "), "{caps}");
    assert!(caps.split(' ').any(|w| w == "LITERAL+"), "{caps}");
    assert_eq!(r.status(), "OK");
    let r = c.cmd("LOGOUT");
    assert_eq!(r.untagged(), vec!["* BYE Logging user out"]);
    assert_eq!(r.tagged(), "T3 OK Logging user out");
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn commands_are_case_insensitive() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("noop").status(), "OK");
    assert_eq!(c.cmd("NoOp").status(), "OK");
    assert_eq!(c.cmd("capability").status(), "OK");
}

#[test]
fn unknown_command_bad_tag_and_login_required() {
    let s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("BOGUS").tagged(), "T1 BAD command 'bogus' unknown");
    c.send(b"+x NOOP\r\n");
    assert_eq!(c.read_line(), b"* BAD Invalid tag");
    c.send(b"(x) NOOP\r\n");
    assert_eq!(c.read_line(), b"* BAD Invalid tag");
    for cmd in [
        "GET *",
        "SET a b",
        "ADDRESSBOOK *",
        "LIST \"\" *",
        "SEARCHADDRESS fred",
    ] {
        let t = c.fails(cmd, "NO");
        let name = cmd.split(' ').next().unwrap().to_lowercase();
        assert!(
            t.ends_with(&format!("NO User must LOGIN to execute command '{name}'")),
            "{t}"
        );
    }
    // Syntax errors name what is wrong.
    assert!(c.fails("NOOP extra", "BAD").contains("Too many arguments"));
    assert!(c.fails("LOGIN", "BAD").contains("Missing user name"));
    assert!(c.fails("LOGIN fred", "BAD").contains("Missing password"));
    assert!(
        c.fails("LOGIN \"unterminated", "BAD")
            .contains("Invalid user name")
    );
    // Blank lines between commands are ignored (telnet users send them).
    c.send(b"\r\n\r\n");
    assert_eq!(c.cmd("NOOP").status(), "OK");
}

#[test]
fn literal_go_ahead_and_literal_plus() {
    let s = server();
    let mut c = s.connect();
    // Synchronizing literals: the server sends `+` before each.
    let r = c.cmd_sync(&[b"LOGIN {4}", b"fred {6}", b"secret"]);
    assert_eq!(r.status(), "NO", "{:?}", r.lines);
    // Non-synchronizing literals: no go-ahead; the whole command at once.
    c.send(b"L1 LOGIN {4+}\r\nfred {6+}\r\nsecret\r\nL2 NOOP\r\n");
    let r = c.read_reply("L1");
    assert_eq!(r.lines.len(), 1, "no go-ahead expected: {:?}", r.lines);
    assert_eq!(r.status(), "NO");
    assert_eq!(c.read_reply("L2").status(), "OK");
    // A quoted string with escapes parses as one argument.
    assert_eq!(c.cmd(r#"LOGIN "fr\"ed" "a \\ b""#).status(), "NO");
}

#[test]
fn byte_by_byte_sends_parse_the_same() {
    let s = server();
    let mut c = s.connect();
    c.stream.set_nodelay(true).unwrap();
    let input = b"B1 NOOP\r\nB2 LOGIN {4+}\r\nfred \"x y\"\r\nB3 CAPABILITY\r\n";
    for b in input {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.read_reply("B1").tagged(), "B1 OK noop completed");
    assert_eq!(c.read_reply("B2").status(), "NO");
    let r = c.read_reply("B3");
    assert_eq!(r.status(), "OK");
    assert!(r.untagged()[0].starts_with("* CAPABILITY"));
}

#[test]
fn over_long_line_and_literal_are_refused_in_sync() {
    let s = Server::builder()
        .no_users()
        .arg("--max-line")
        .arg("300")
        .arg("--max-literal")
        .arg("16")
        .start();
    let mut c = s.connect();
    // A line over the limit: tagged BAD, and the session goes on.
    let long = format!("L1 LOGIN fred {}\r\n", "x".repeat(1000));
    c.send(long.as_bytes());
    let r = c.read_reply("L1");
    assert_eq!(r.status(), "BAD");
    assert!(r.tagged().contains("Line too long"), "{}", r.tagged());
    assert_eq!(c.cmd("NOOP").status(), "OK");

    // A synchronizing literal over the limit: BAD, and no go-ahead.
    c.send(b"L2 LOGIN {100}\r\n");
    let l = c.read_line();
    assert!(
        l.starts_with(b"L2 BAD Literal of 100 bytes is too large"),
        "{:?}",
        String::from_utf8_lossy(&l)
    );
    assert_eq!(c.cmd("NOOP").status(), "OK");

    // A non-synchronizing literal over the limit: its bytes are skipped,
    // never run as commands (it holds a LOGOUT that must not happen).
    let mut lit = b"L3 LOGIN {40+}\r\n".to_vec();
    let body = b"X1 LOGOUT\r\nX2 LOGOUT\r\nX3 LOGOUT\r\nX4 LOGO";
    assert_eq!(body.len(), 40);
    lit.extend_from_slice(body);
    lit.extend_from_slice(b" secret\r\n");
    c.send(&lit);
    let r = c.read_reply("L3");
    assert_eq!(r.lines.len(), 1, "{:?}", r.lines);
    assert!(
        r.tagged().starts_with("L3 BAD Literal of 40 bytes"),
        "{}",
        r.tagged()
    );
    assert_eq!(c.cmd("NOOP").tagged(), "T3 OK noop completed");
}

#[test]
fn a_literal_claiming_4gb_is_refused_and_the_session_survives() {
    let s = server();
    let mut c = s.connect();
    c.send(b"H1 LOGIN {4294967296}\r\n");
    let l = String::from_utf8_lossy(&c.read_line()).into_owned();
    assert!(
        l.starts_with("H1 BAD Literal of 4294967296 bytes is too large"),
        "{l}"
    );
    assert_eq!(c.cmd("NOOP").status(), "OK");
}

#[test]
fn each_session_is_its_own_process() {
    let s = server();
    let clients: Vec<Client> = (0..12).map(|_| s.connect()).collect();
    let kids = children_of(s.pid());
    assert_eq!(kids.len(), 12, "{kids:?}");
    let mut pids: Vec<u32> = kids.iter().map(|k| k.0).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 12);
    assert!(!pids.contains(&s.pid()));
    drop(clients);
}

#[test]
fn no_zombies_after_200_sessions() {
    let s = server();
    for i in 0..200 {
        let mut c = s.connect();
        if i % 2 == 0 {
            c.logout();
        }
        // Odd ones just drop the connection.
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = children_of(s.pid());
        if kids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children left (Z = zombie): {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_the_listener_and_lets_sessions_finish() {
    let mut s = server();
    let mut c = s.connect();
    s.signal(libc::SIGTERM);
    // The port closes...
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...the open session goes on...
    assert_eq!(c.cmd("NOOP").status(), "OK");
    assert!(
        s.wait_exit(Duration::from_millis(300)).is_none(),
        "exited before its session ended"
    );
    // ...and when it ends, the listener exits.
    c.logout();
    let status = s.wait_exit(Duration::from_secs(5)).expect("listener exit");
    assert!(status.success(), "{status}");
}

/// A Ctrl-C at the terminal of `imspd -d` signals the whole process
/// group: the listener stops, and sessions finish rather than die.
#[test]
fn sigint_to_the_process_group_lets_sessions_finish() {
    let mut s = server();
    let mut c = s.connect();
    assert_eq!(c.cmd("NOOP").status(), "OK");
    let sessions = children_of(s.pid());
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    // What the terminal does: every process of the group gets SIGINT.
    s.signal(libc::SIGINT);
    for (pid, _) in &sessions {
        // SAFETY: signalling the session process this test started.
        unsafe { libc::kill(*pid as i32, libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.cmd("NOOP").status(), "OK");
    c.logout();
    let status = s.wait_exit(Duration::from_secs(5)).expect("listener exit");
    assert!(status.success(), "{status}");
    let log = s.log();
    assert!(!log.contains("killed by SIGINT"), "{log}");
    // The listener logs at the options' imsp.log.level (9 here): its
    // level-3 notices are there.
    assert!(log.contains("notice: listening on 127.0.0.1:"), "{log}");
    assert!(log.contains("notice: shutting down"), "{log}");
}

#[test]
fn connection_limit_refuses_with_bye() {
    let s = Server::builder()
        .no_users()
        .arg("--max-connections")
        .arg("2")
        .start();
    let _a = s.connect();
    let _b = s.connect();
    let c = Client::connect(s.port);
    assert!(
        c.greeting.starts_with("* BYE Too many connections"),
        "{}",
        c.greeting
    );
    drop(_a);
    // Once a session ends, a new one is served.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = Client::connect(s.port);
        if c.greeting.starts_with("* OK") {
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_sessions_are_closed_with_bye() {
    let s = Server::builder()
        .no_users()
        .arg("--idle-timeout")
        .arg("1")
        .start();
    let mut c = s.connect();
    let t = Instant::now();
    let l = String::from_utf8_lossy(&c.read_line()).into_owned();
    assert!(l.starts_with("* BYE Idle"), "{l}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn inetd_mode_serves_a_session_over_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("options"), common::DEFAULT_OPTIONS).unwrap();
    let mut child = Command::new(BIN)
        .arg("--inetd")
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n")
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(
        lines[0].starts_with("* OK ") && lines[0].contains("IMSP server imspd"),
        "{out}"
    );
    assert_eq!(lines[1], "a OK noop completed");
    assert!(lines[2].starts_with("* CAPABILITY"));
    assert_eq!(lines[3], "b OK capability completed");
    assert_eq!(lines[4], "* BYE Logging user out");
    assert_eq!(lines[5], "c OK Logging user out");
}
