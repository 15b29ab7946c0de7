//! Authentication and authorization through the real daemon: each password
//! backend against the real thing (password file, PAM and /etc/shadow with
//! a system account made here, a saslauthd started here), each SASL
//! mechanism with a client that is not the server's code
//! (tests/support/sasl_client.py: Python's hmac, `scramp`), cancellation,
//! administrators acting as other users, and slowing down failed logins.
//!
//! Needs root (for useradd, chpasswd and /etc/pam.d), the Debian packages
//! `passwd` and `sasl2-bin`, and python3 with the PyPI package `scramp`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{DEFAULT_OPTIONS, Server};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/sasl_client.py");

/// Options with the plaintext mechanisms allowed, and `extra` lines.
fn plaintext_options(extra: &str) -> String {
    format!("{DEFAULT_OPTIONS}imsp.sasl.allowplaintext N +\n{extra}")
}

/// Run the independent SASL client: its lines (CHALLENGE ..., RESULT ...).
fn sasl(s: &Server, args: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .arg(CLIENT)
        .arg(s.port.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (Debian package python3): {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'scramp'"),
        "the SCRAM test client needs the PyPI package scramp (pip install scramp)"
    );
    assert!(
        out.status.success(),
        "sasl_client {args:?} failed: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The tagged line the client got.
fn result(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no result in {lines:?}"))
        .to_string()
}

fn accepted(s: &Server, args: &[&str], user: &str) -> Vec<String> {
    let lines = sasl(s, args);
    let r = result(&lines);
    // An administrator authorizing as another user is told of the switch.
    assert!(
        r == format!("A1 OK User `{user}' Logged in")
            || (r.starts_with("A1 OK Administrator switch from user `")
                && r.ends_with(&format!("' to user `{user}' successful."))),
        "{args:?}: {lines:?}"
    );
    lines
}

fn refused(s: &Server, args: &[&str]) -> String {
    let lines = sasl(s, args);
    let r = result(&lines);
    assert!(r.starts_with("A1 NO "), "{args:?}: {lines:?}");
    r
}

/// Wait until `text` shows in the server's log (sessions log as they go).
fn log_shows(s: &Server, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if s.log().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn need_binary(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (see .ci/packages)"
    );
}

#[test]
fn file_backend_serves_every_mechanism() {
    let s = Server::builder().options(&plaintext_options("")).start();
    let mut c = s.connect();
    let caps = c.ok("CAPABILITY");
    assert_eq!(
        caps,
        vec!["* CAPABILITY AUTH=SCRAM-SHA-256 AUTH=CRAM-MD5 AUTH=PLAIN AUTH=LOGIN LITERAL+"]
    );

    // PLAIN, with and without an initial response (then an empty "+ ").
    let l = accepted(&s, &["PLAIN", "fred", "secret"], "fred");
    assert_eq!(l[0], "CHALLENGE ", "{l:?}");
    let l = accepted(&s, &["PLAIN", "fred", "secret", "--ir"], "fred");
    assert!(!l.iter().any(|l| l.starts_with("CHALLENGE")), "{l:?}");
    refused(&s, &["PLAIN", "fred", "wrong", "--ir"]);
    refused(&s, &["PLAIN", "nobody", "secret", "--ir"]);

    // LOGIN asks for the user name, then the password.
    let l = accepted(&s, &["LOGIN", "barney", "rubble"], "barney");
    assert_eq!(l[..2], ["CHALLENGE Username:", "CHALLENGE Password:"]);
    let l = accepted(&s, &["LOGIN", "barney", "rubble", "--ir"], "barney");
    assert_eq!(l[0], "CHALLENGE Password:");
    refused(&s, &["LOGIN", "barney", "Rubble"]);

    // CRAM-MD5: a fresh challenge each time.
    let a = accepted(&s, &["CRAM-MD5", "fred", "secret"], "fred");
    let b = accepted(&s, &["CRAM-MD5", "fred", "secret"], "fred");
    assert!(
        a[0].starts_with("CHALLENGE <") && a[0].ends_with('>'),
        "{a:?}"
    );
    assert_ne!(a[0], b[0]);
    refused(&s, &["CRAM-MD5", "fred", "secreT"]);
    refused(&s, &["CRAM-MD5", "nobody", "secret"]);

    // SCRAM-SHA-256: the client checks the server's signature too.
    for ir in [false, true] {
        let mut args = vec!["SCRAM-SHA-256", "admin", "adminpw"];
        if ir {
            args.push("--ir");
        }
        let l = accepted(&s, &args, "admin");
        assert!(l.contains(&"SERVER-SIGNATURE OK".to_string()), "{l:?}");
    }
    let wrong = refused(&s, &["SCRAM-SHA-256", "fred", "wrong", "--ir"]);
    let unknown = refused(&s, &["SCRAM-SHA-256", "nobody", "secret", "--ir"]);
    // An unknown user is not told apart: same answer, and no e=... leak.
    assert_eq!(wrong, unknown);
    let l = sasl(&s, &["SCRAM-SHA-256", "nobody", "secret", "--ir"]);
    assert!(!l.iter().any(|l| l.contains("e=")), "{l:?}");

    // Logins are logged at level 3 with the client address; failures too.
    assert!(log_shows(&s, "login: fred from 127.0.0.1:"));
    assert!(log_shows(
        &s,
        "failed login for fred (CRAM-MD5) from 127.0.0.1:"
    ));
    // The password file holds no clear password.
    let passwd = s.read("passwd");
    assert!(passwd.contains(":scram-sha-256=4096,") && passwd.contains(":cram-md5="));
    assert!(!passwd.contains("secret") && !passwd.contains("rubble"));
}

#[test]
fn authenticated_session_is_logged_in() {
    let s = Server::builder().options(&plaintext_options("")).start();
    let mut c = s.connect();
    c.fails("GET *", "NO");
    // AUTHENTICATE by hand: PLAIN with an initial response ("\0fred\0secret").
    let r = c.cmd("AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0");
    assert_eq!(r.tagged(), "T2 OK User `fred' Logged in");
    c.ok("SET fred.x hello");
    assert_eq!(
        c.ok("GET fred.x"),
        vec!["* OPTION fred.x hello [READ-WRITE]"]
    );
    assert_eq!(c.cmd("AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0").status(), "BAD");
}

#[test]
fn plaintext_mechanisms_follow_allowplaintext() {
    // The sample options turn it off; so does leaving it out.
    for options in [
        format!("{DEFAULT_OPTIONS}imsp.sasl.allowplaintext N -\n"),
        DEFAULT_OPTIONS.to_string(),
    ] {
        let s = Server::builder().options(&options).start();
        let mut c = s.connect();
        assert_eq!(
            c.ok("CAPABILITY"),
            vec!["* CAPABILITY AUTH=SCRAM-SHA-256 AUTH=CRAM-MD5 LITERAL+"]
        );
        let t = c.fails("AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0", "NO");
        assert!(t.contains("PLAIN is not available"), "{t}");
        assert!(t.contains("SCRAM-SHA-256 CRAM-MD5"), "{t}");
        c.fails("AUTHENTICATE LOGIN", "NO");
        // The LOGIN command is always allowed, as in 1.8.
        c.ok("LOGIN fred secret");
    }
}

#[test]
fn minimum_ssf_above_zero_offers_no_mechanism() {
    // No mechanism here has a security layer, and IMSP has no TLS: SSF 0.
    let s = Server::builder()
        .options(&plaintext_options("imsp.sasl.minimum_ssf N 56\n"))
        .start();
    let mut c = s.connect();
    assert_eq!(c.ok("CAPABILITY"), vec!["* CAPABILITY LITERAL+"]);
    let t = c.fails("AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0", "NO");
    assert!(t.contains("offered: none"), "{t}");
    c.fails("AUTHENTICATE SCRAM-SHA-256", "NO");
    // The LOGIN command stays, as in 1.8.
    c.ok("LOGIN fred secret");
    // 0 and a maximum exclude nothing.
    let s = Server::builder()
        .options(&plaintext_options(
            "imsp.sasl.minimum_ssf N 0\nimsp.sasl.maximum_ssf N 0\n",
        ))
        .start();
    assert_eq!(
        s.connect().ok("CAPABILITY"),
        vec!["* CAPABILITY AUTH=SCRAM-SHA-256 AUTH=CRAM-MD5 AUTH=PLAIN AUTH=LOGIN LITERAL+"]
    );
    accepted(&s, &["PLAIN", "fred", "secret", "--ir"], "fred");
}

#[test]
fn password_lines_without_secrets_serve_plain_only() {
    let s = Server::builder()
        .options(&plaintext_options(""))
        .no_users()
        .start();
    // A hash made by libxcrypt for "secret", with no SASL secrets.
    std::fs::write(
        s.path("passwd"),
        "old:$5$7mU5iwltzH2XtoT2$QWvqgQOV7xDrC6taxYmH/A75wW9g.42ieVayVZSxWi.\n",
    )
    .unwrap();
    accepted(&s, &["PLAIN", "old", "secret", "--ir"], "old");
    accepted(&s, &["LOGIN", "old", "secret"], "old");
    refused(&s, &["CRAM-MD5", "old", "secret"]);
    refused(&s, &["SCRAM-SHA-256", "old", "secret"]);
    // `imspd passwd` adds them.
    common::set_password(&s.dir, "old", "secret");
    accepted(&s, &["CRAM-MD5", "old", "secret"], "old");
    accepted(&s, &["SCRAM-SHA-256", "old", "secret"], "old");
}

#[test]
fn cancelled_and_malformed_exchanges() {
    let s = Server::builder().options(&plaintext_options("")).start();
    // Cancelled at each step of each mechanism: a tagged BAD.
    for (args, at) in [
        (vec!["PLAIN", "fred", "secret"], "1"),
        (vec!["LOGIN", "fred", "secret"], "2"),
        (vec!["CRAM-MD5", "fred", "secret"], "1"),
        (vec!["SCRAM-SHA-256", "fred", "secret", "--ir"], "1"),
    ] {
        let mut a = args.clone();
        a.extend(["--cancel-at", at]);
        let r = result(&sasl(&s, &a));
        assert_eq!(r, "A1 BAD AUTHENTICATE cancelled by the client", "{a:?}");
    }

    let mut c = s.connect();
    c.send(b"A1 AUTHENTICATE PLAIN\r\n");
    assert_eq!(c.read_line(), b"+ ");
    c.send(b"*\r\n");
    let r = c.read_reply("A1");
    assert_eq!(r.tagged(), "A1 BAD AUTHENTICATE cancelled by the client");

    c.send(b"A2 AUTHENTICATE LOGIN\r\n");
    assert_eq!(c.read_line(), b"+ VXNlcm5hbWU6"); // "Username:"
    c.send(b"not base64!\r\n");
    let t = c.read_reply("A2").tagged();
    assert!(t.starts_with("A2 BAD ") && t.contains("base64"), "{t}");

    let t = c.fails("AUTHENTICATE PLAIN ***", "BAD");
    assert!(t.contains("not valid base64"), "{t}");
    // "fred secret": no NUL separators.
    let t = c.fails("AUTHENTICATE PLAIN ZnJlZCBzZWNyZXQ=", "BAD");
    assert!(t.contains("authzid NUL authcid NUL password"), "{t}");
    let t = c.fails("AUTHENTICATE KERBEROS_V4", "NO");
    assert!(t.contains("KERBEROS_V4 is not available"), "{t}");
    c.fails("AUTHENTICATE", "BAD");
    // A SCRAM client-first that is not one.
    let t = c.fails("AUTHENTICATE SCRAM-SHA-256 Z2FyYmFnZQ==", "NO");
    assert!(t.ends_with("NO Login incorrect"), "{t}");
    // An empty initial response (=) to PLAIN is malformed, not a crash.
    c.fails("AUTHENTICATE PLAIN =", "BAD");
    // The session is still in step and usable.
    c.ok("NOOP");
    c.ok("LOGIN fred secret");
}

#[test]
fn administrators_act_as_other_users() {
    let s = Server::builder()
        .options(&plaintext_options(
            "imsp.admin.subs N (watcher)\nimsp.admin.bboards N (postmaster)\n",
        ))
        .user("watcher", "watchpw")
        .user("postmaster", "postpw")
        .start();
    // fred exists and has an option.
    let mut f = s.login("fred");
    f.ok("SET fred.color blue");
    // A non-admin may not, with or without a password.
    let t = f.fails("LOGIN barney \"\"", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    f.fails("LOGIN barney rubble", "BAD");
    assert!(log_shows(&s, "fred from 127.0.0.1:"));

    // A full administrator: a second LOGIN with an empty password.
    let mut a = s.login("admin");
    let r = a.cmd("LOGIN fred \"\"");
    assert_eq!(
        r.tagged(),
        "T2 OK Administrator switch from user `admin' to user `fred' successful."
    );
    assert_eq!(
        a.ok("GET fred.color"),
        vec!["* OPTION fred.color blue [READ-WRITE]"]
    );
    a.ok("SET fred.color red");
    assert_eq!(
        f.ok("GET fred.color"),
        vec!["* OPTION fred.color red [READ-WRITE]"]
    );
    assert!(log_shows(&s, "admin from 127.0.0.1:"));
    assert!(s.log().contains(" acts as fred"));
    // Only users with an IMSP account.
    a.fails("LOGIN nosuchuser \"\"", "NO");

    // imsp.admin.subs: may look, not change.
    let mut w = s.connect();
    w.ok("LOGIN watcher watchpw");
    w.ok("LOGIN fred \"\"");
    assert_eq!(
        w.ok("GET fred.color"),
        vec!["* OPTION fred.color red [READ-WRITE]"]
    );
    let t = w.fails("SET fred.color green", "NO");
    assert!(t.contains("view-only"), "{t}");
    assert!(log_shows(&s, "acts as fred (view only)"));
    // A view-only session sees what the watcher may see, no more.
    assert_eq!(w.ok("GET imsp.admin.*"), Vec::<String>::new());
    // ...and may not act as a full administrator at all: the rights of a
    // session are those of who logged in, never of whom they act as.
    let t = w.fails("LOGIN admin \"\"", "NO");
    assert!(t.contains("Permission denied"), "{t}");
    assert_eq!(w.ok("GET imsp.admin.*"), Vec::<String>::new());
    assert_eq!(w.ok("ADDRESSBOOK admin*"), Vec::<String>::new());
    assert!(log_shows(&s, "watcher from 127.0.0.1:"));
    let mut w2 = s.connect();
    w2.ok("LOGIN watcher watchpw");
    w2.fails("LOGIN admin \"\"", "NO");
    assert_eq!(w2.ok("GET imsp.admin.*"), Vec::<String>::new());
    w2.ok("SET watcher.x y");
    // A bboards administrator may view a subs administrator's namespace,
    // not a full administrator's.
    let mut p = s.connect();
    p.ok("LOGIN postmaster postpw");
    p.ok("LOGIN watcher \"\"");
    p.fails("LOGIN admin \"\"", "NO");
    assert_eq!(p.ok("GET imsp.admin.*"), Vec::<String>::new());
    // A full administrator acting as fred keeps the administrator's view.
    let mut a2 = s.login("admin");
    a2.ok("LOGIN fred \"\"");
    assert_eq!(
        a2.ok("GET imsp.admin.all"),
        vec!["* OPTION imsp.admin.all \"(admin)\" [READ-ONLY]"]
    );

    // PLAIN with an authorization identity does the same in one step.
    accepted(
        &s,
        &["PLAIN", "admin", "adminpw", "--authzid", "fred", "--ir"],
        "fred",
    );
    let r = refused(
        &s,
        &["PLAIN", "barney", "rubble", "--authzid", "fred", "--ir"],
    );
    assert!(r.contains("Permission denied"), "{r}");
    // Lower administrators may not authorize as a full one.
    let r = refused(
        &s,
        &["PLAIN", "watcher", "watchpw", "--authzid", "admin", "--ir"],
    );
    assert!(r.contains("Permission denied"), "{r}");
    // AUTHENTICATE is all or nothing: a NO leaves the session logged out.
    let mut c = s.connect();
    for (authzid, authcid, password) in [
        ("nosuch", "admin", "adminpw"),
        ("admin", "watcher", "watchpw"),
    ] {
        use base64::Engine as _;
        let msg = format!("{authzid}\0{authcid}\0{password}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(msg);
        c.fails(&format!("AUTHENTICATE PLAIN {b64}"), "NO");
        let t = c.fails("GET imsp.*", "NO");
        assert!(t.contains("must LOGIN"), "{authzid}: {t}");
    }
    // An authzid equal to the authid is no impersonation.
    accepted(
        &s,
        &["PLAIN", "barney", "rubble", "--authzid", "barney", "--ir"],
        "barney",
    );
}

#[test]
fn logins_and_logouts_are_logged_at_level_3_not_at_2() {
    for level in [3, 2] {
        let options =
            DEFAULT_OPTIONS.replace("imsp.log.level N 9", &format!("imsp.log.level N {level}"));
        assert!(options.contains(&format!("imsp.log.level N {level}\n")));
        let s = Server::builder()
            .options(&format!("{options}imsp.sasl.allowplaintext N +\n"))
            .start();
        let mut c = s.connect();
        c.ok("LOGIN fred secret");
        c.logout();
        // A session that ends without LOGOUT logs out too.
        let mut b = s.login("barney");
        b.ok("NOOP");
        drop(b);
        accepted(&s, &["PLAIN", "admin", "adminpw", "--ir"], "admin");
        // A failure is a warning (level 1): logged at both levels.
        s.connect().fails("LOGIN fred wrong", "NO");
        assert!(log_shows(&s, "failed login for fred from 127.0.0.1:"));
        let wanted = [
            "login: fred from 127.0.0.1:",
            "logout: fred from 127.0.0.1:",
            "login: barney from 127.0.0.1:",
            "logout: barney from 127.0.0.1:",
            "login: admin from 127.0.0.1:",
        ];
        if level == 3 {
            for w in wanted {
                assert!(log_shows(&s, w), "level 3: no {w:?} in\n{}", s.log());
            }
        } else {
            // Give the sessions time to have logged what they would.
            std::thread::sleep(Duration::from_millis(300));
            let log = s.log();
            for w in ["login:", "logout:"] {
                assert!(!log.contains(w), "level 2: {w:?} in\n{log}");
            }
        }
    }
}

#[test]
fn failed_logins_slow_down_then_close_the_session() {
    let s = Server::builder()
        .options(&plaintext_options(
            "imsp.login.failures.delay N 300\nimsp.login.failures.max N 4\n",
        ))
        .start();
    let mut c = s.connect();
    let timed = |c: &mut common::Client, cmd: &str| {
        let t = Instant::now();
        let r = c.cmd(cmd);
        (r, t.elapsed())
    };
    let (r, t1) = timed(&mut c, "LOGIN fred wrong1");
    assert_eq!(r.status(), "NO");
    let (_, t2) = timed(&mut c, "LOGIN fred wrong2");
    // The third failure waits 600 ms: meanwhile other sessions go on.
    c.send(b"T3 LOGIN fred wrong3\r\n");
    std::thread::sleep(Duration::from_millis(50));
    let mut other = s.connect();
    let t = Instant::now();
    other.ok("NOOP");
    // Had it waited behind the sleeping session, it would take 550 ms.
    assert!(
        t.elapsed() < Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let started = Instant::now();
    let r = c.read_reply("T3");
    let t3 = started.elapsed() + Duration::from_millis(50);
    assert_eq!(r.status(), "NO");
    // The first failure is not delayed: faster than the second, which is.
    assert!(t1 < t2, "first failure {t1:?}, second {t2:?}");
    assert!(t2 >= Duration::from_millis(300), "second failure: {t2:?}");
    assert!(t3 >= Duration::from_millis(600), "third failure: {t3:?}");
    // The fourth: BYE, and the connection is closed.
    let r = c.cmd("AUTHENTICATE PLAIN AGZyZWQAd3Jvbmc0");
    assert_eq!(r.status(), "NO");
    assert!(
        r.untagged()[0].starts_with("* BYE Too many failed logins"),
        "{:?}",
        r.lines
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    assert!(log_shows(&s, "closing session from 127.0.0.1:"));
    assert!(s.log().contains("failed login for fred from 127.0.0.1:"));
    // A success resets nothing for other sessions: a new session logs in.
    s.login("fred");
}

// ---- system accounts: PAM, /etc/shadow, saslauthd ------------------------

const UNIX_USER: &str = "imspdtestu";
const UNIX_PASSWORD: &str = "Sys-pw-4711";
const PAM_SERVICE: &str = "imspd-test";

/// Make the system account and the PAM service file once (tests run as
/// root in CI).
fn system_account() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        need_binary("/usr/sbin/useradd", "passwd");
        need_binary("/usr/sbin/chpasswd", "passwd");
        account(UNIX_USER, UNIX_PASSWORD);
        let pam = PathBuf::from("/etc/pam.d").join(PAM_SERVICE);
        if !pam.exists() {
            std::fs::write(&pam, "@include common-auth\n@include common-account\n")
                .unwrap_or_else(|e| panic!("{}: {e} (are the tests root?)", pam.display()));
        }
    });
}

fn unix_options(extra: &str) -> String {
    plaintext_options(&format!("imsp.auth.pam.service N {PAM_SERVICE}\n{extra}"))
}

#[test]
fn unix_backend_through_pam() {
    system_account();
    let s = Server::builder()
        .options(&unix_options("imsp.auth.backends N (unix)\n"))
        .start();
    let mut c = s.connect();
    c.ok(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"));
    let mut c = s.connect();
    // PAM makes a refusal slow (pam_unix's delay): one wrong try only.
    c.fails(&format!("LOGIN {UNIX_USER} wrong"), "NO");
    // The password file is not a backend here.
    c.fails("LOGIN fred secret", "NO");
    // SASL PLAIN goes to the same backends; the file-only mechanisms are off.
    accepted(&s, &["PLAIN", UNIX_USER, UNIX_PASSWORD, "--ir"], UNIX_USER);
    assert_eq!(
        c.ok("CAPABILITY"),
        vec!["* CAPABILITY AUTH=PLAIN AUTH=LOGIN LITERAL+"]
    );
    c.fails("AUTHENTICATE CRAM-MD5", "NO");
}

#[test]
fn unix_backend_through_shadow_and_backends_in_order() {
    system_account();
    let s = Server::builder()
        .options(&unix_options(
            "imsp.auth.backends N (file unix)\nimsp.auth.unix.method N shadow\n",
        ))
        .start();
    let mut c = s.connect();
    c.fails(&format!("LOGIN {UNIX_USER} wrong"), "NO");
    c.ok(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"));
    // The file backend still answers first for its users.
    s.login("fred");
    // A shadow file that cannot be read is an error, logged; the next
    // backend (none here) decides.
    let s = Server::builder()
        .options(&unix_options(
            "imsp.auth.backends N (unix file)\nimsp.auth.unix.method N shadow\n\
             imsp.auth.shadow.file N /nonexistent/shadow\n",
        ))
        .start();
    s.login("fred");
    assert!(log_shows(&s, "auth backend unix: /nonexistent/shadow"));
    s.connect()
        .fails(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"), "NO");
}

/// A saslauthd of our own, killed when dropped.
struct Saslauthd {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Saslauthd {
    fn start(mech: &str) -> Saslauthd {
        need_binary("/usr/sbin/saslauthd", "sasl2-bin");
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        // Its own process group: on SIGTERM saslauthd signals its whole
        // group, which must not be the test runner's.
        let child = Command::new("/usr/sbin/saslauthd")
            .process_group(0)
            .args(["-a", mech, "-n", "1", "-d", "-m"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start saslauthd");
        let socket = dir.path().join("mux");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "saslauthd made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Saslauthd {
            child,
            _dir: dir,
            socket,
        }
    }
}

impl Drop for Saslauthd {
    fn drop(&mut self) {
        // SAFETY: ending the saslauthd this test started and its worker:
        // the process group made for it.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn saslauthd_backend() {
    system_account();
    let daemon = Saslauthd::start("pam");
    let s = Server::builder()
        .options(&unix_options(&format!(
            "imsp.auth.backends N (saslauthd file)\n\
             imsp.auth.cache.ttl N 0\n\
             imsp.auth.saslauthd.socket N {}\n\
             imsp.auth.saslauthd.service N {PAM_SERVICE}\n",
            daemon.socket.display()
        )))
        .start();
    let mut c = s.connect();
    c.fails(&format!("LOGIN {UNIX_USER} wrong"), "NO");
    c.ok(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"));
    accepted(&s, &["LOGIN", UNIX_USER, UNIX_PASSWORD], UNIX_USER);
    // saslauthd refuses fred; the file backend after it accepts.
    s.login("fred");
    drop(daemon);
    // With saslauthd gone: an error in the log, and the next backend.
    s.login("barney");
    assert!(log_shows(&s, "auth backend saslauthd: saslauthd at "));
    s.connect()
        .fails(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"), "NO");
}

/// A system user for the daemon to run as, member of the groups `groups`
/// (as the Debian package makes `imsp` a member of `sasl` and, on request,
/// `shadow`).
fn daemon_user(name: &str, groups: &str) -> u32 {
    let uid = || -> Option<u32> {
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        out.status.success().then_some(())?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if uid().is_none() {
        let st = Command::new("/usr/sbin/useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .args(["--groups", groups, name])
            .status()
            .unwrap();
        assert!(st.success() || uid().is_some(), "useradd {name} failed");
    }
    let st = Command::new("/usr/sbin/usermod")
        .args(["--append", "--groups", groups, name])
        .status()
        .unwrap();
    assert!(st.success(), "usermod {name} failed");
    uid().unwrap()
}

/// A data directory owned by `user`, with `options`.
fn data_dir_owned_by(parent: &Path, user: &str, options: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.join("imsp");
    std::fs::create_dir_all(dir.join("user")).unwrap();
    std::fs::write(dir.join("options"), options).unwrap();
    let st = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

fn group_id(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    line.split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no group {name} (install sasl2-bin / passwd)"))
}

/// The supplementary groups of a process.
fn groups_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap_or("")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect()
}

const GROUP_USER: &str = "imspgrptest";

/// Run as a user who is not root but a member of `sasl` and `shadow`, as
/// the shipped units run `imsp`: saslauthd's socket in a root:sasl 0710
/// directory, as Debian makes /run/saslauthd, and the shadow file (root:
/// shadow 0640) are reachable through the user's groups.
#[test]
fn saslauthd_and_shadow_backends_as_a_non_root_user_in_their_groups() {
    system_account();
    need_binary("/usr/sbin/usermod", "passwd");
    daemon_user(GROUP_USER, "sasl,shadow");
    let daemon = Saslauthd::start("pam");
    let sock_dir = daemon.socket.parent().unwrap();
    let st = Command::new("chown")
        .arg("root:sasl")
        .arg(sock_dir)
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sock_dir, std::fs::Permissions::from_mode(0o710)).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir_owned_by(
        tmp.path(),
        GROUP_USER,
        &unix_options(&format!(
            "imsp.auth.backends N (saslauthd)\n\
             imsp.auth.cache.ttl N 0\n\
             imsp.auth.saslauthd.socket N {}\n\
             imsp.auth.saslauthd.service N {PAM_SERVICE}\n",
            daemon.socket.display()
        )),
    );
    let s = Server::builder()
        .no_users()
        .data_dir(&dir)
        .arg("--user")
        .arg(GROUP_USER)
        .start();
    let groups = groups_of(s.pid());
    assert!(groups.contains(&group_id("sasl")), "{groups:?}");
    s.connect()
        .ok(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"));
    accepted(&s, &["PLAIN", UNIX_USER, UNIX_PASSWORD, "--ir"], UNIX_USER);
    s.connect().fails(&format!("LOGIN {UNIX_USER} wrong"), "NO");
    assert!(!s.log().contains("auth backend saslauthd:"), "{}", s.log());
    drop(s);

    // The unix backend reading /etc/shadow itself, as the same user.
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir_owned_by(
        tmp.path(),
        GROUP_USER,
        &unix_options("imsp.auth.backends N (unix)\nimsp.auth.unix.method N shadow\n"),
    );
    let s = Server::builder()
        .no_users()
        .data_dir(&dir)
        .arg("--user")
        .arg(GROUP_USER)
        .start();
    assert!(groups_of(s.pid()).contains(&group_id("shadow")));
    s.connect()
        .ok(&format!("LOGIN {UNIX_USER} {UNIX_PASSWORD}"));
    s.connect().fails(&format!("LOGIN {UNIX_USER} wrong"), "NO");
    assert!(!s.log().contains("auth backend unix:"), "{}", s.log());
}

/// A system account of its own (with a password), for a test that changes
/// it.
fn own_system_account(name: &str, password: &str) {
    system_account();
    account(name, password);
}

/// Make the system account `name` if it is missing, and set its password.
fn account(name: &str, password: &str) {
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let st = Command::new("/usr/sbin/useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", name])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name} failed (are the tests root?)");
    }
    let mut c = Command::new("/usr/sbin/chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{name}:{password}\n").as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "chpasswd failed");
}

fn set_expiry(user: &str, date: &str) {
    let st = Command::new("/usr/sbin/usermod")
        .args(["--expiredate", date, user])
        .status()
        .unwrap();
    assert!(st.success(), "usermod --expiredate {date} {user}");
}

#[test]
fn the_auth_cache_never_skips_the_pam_account_check() {
    const USER: &str = "imspdtestexp";
    const PASSWORD: &str = "Exp-pw-0815";
    own_system_account(USER, PASSWORD);
    set_expiry(USER, "");
    // The cache on (the default TTL), PAM the backend.
    let s = Server::builder()
        .options(&unix_options("imsp.auth.backends N (unix)\n"))
        .start();
    s.connect().ok(&format!("LOGIN {USER} {PASSWORD}"));
    s.connect().ok(&format!("LOGIN {USER} {PASSWORD}"));
    assert!(log_shows(
        &s,
        &format!("{USER} accepted by the unix backend")
    ));
    assert!(
        !s.log()
            .contains(&format!("{USER} accepted by the auth cache"))
    );
    // The account expires: PAM's account check refuses it, however recent
    // the last success (pam_unix still accepts the password itself).
    set_expiry(USER, "1970-01-02");
    let refused = s.connect().fails(&format!("LOGIN {USER} {PASSWORD}"), "NO");
    set_expiry(USER, "");
    assert!(refused.contains("Login incorrect"), "{refused}");
    s.connect().ok(&format!("LOGIN {USER} {PASSWORD}"));
}

#[test]
fn the_auth_cache_vouches_for_recent_logins_until_the_password_changes() {
    let s = Server::start();
    s.login("fred");
    assert!(log_shows(&s, "fred accepted by the file backend"));
    assert!(!s.log().contains("fred accepted by the auth cache"));
    // The next session finds the success its predecessor reported.
    s.login("fred");
    assert!(log_shows(&s, "fred accepted by the auth cache"));
    // A wrong password is not vouched for.
    s.connect().fails("LOGIN fred secreT", "NO");
    // A new password misses the cache at once: the old one is refused.
    common::set_password(&s.dir, "fred", "newsecret");
    s.connect().fails("LOGIN fred secret", "NO");
    s.connect().ok("LOGIN fred newsecret");
}
