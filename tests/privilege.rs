//! Privileges and secrets: started as root with `--user`, neither the
//! listener nor any session runs as root and everything the daemon makes
//! is private to it; no password reaches a log or a telemetry file.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::{Client, DEFAULT_OPTIONS, Server, children_of};

const RUN_AS: &str = "imsptest";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the test's system user, made when missing.
fn system_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, RUN_AS]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(RUN_AS)
            .status()
            .expect("run useradd");
        // Another test process may have made it meanwhile.
        assert!(
            st.success() || id("-u").is_some(),
            "useradd {RUN_AS} failed"
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// `Uid:` / `Gid:` / `Groups:` of a process.
fn ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        st.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn started_as_root_with_user_nothing_runs_as_root_and_files_are_private() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs the tests as root)");
        return;
    }
    let (uid, gid) = system_user();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("imsp");
    // What the admin makes: the data directory, options, user/, log/fred.
    for d in ["", "user", "log", "log/fred"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut options = DEFAULT_OPTIONS.to_string();
    options.push_str("imsp.sasl.allowplaintext N +\n");
    std::fs::write(dir.join("options"), options).unwrap();
    let mut made_by_admin = BTreeSet::new();
    for p in ["", "user", "log", "log/fred", "options"] {
        let p = dir.join(p);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        let mode = if p.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        made_by_admin.insert(p);
    }

    // The harness sets the passwords with `imspd passwd` (as root).
    let s = Server::builder()
        .data_dir(&dir)
        .arg("--user")
        .arg(RUN_AS)
        .start();
    let (u, g, groups) = ids(s.pid());
    assert_eq!(u, vec![uid; 4], "listener Uid");
    assert_eq!(g, vec![gid; 4], "listener Gid");
    assert_eq!(groups, vec![gid], "listener supplementary groups");

    let mut fred = s.login("fred");
    fred.ok("SET fred.x 1");
    fred.ok("STOREADDRESS fred barney email b@b");
    fred.ok("CREATEADDRESSBOOK fred.work");
    fred.ok("SETACL ADDRESSBOOK fred.work barney lr");
    fred.ok("LOCK OPTION fred.x");
    let mut barney = s.login("barney");
    barney.ok("SEARCHADDRESS fred.work");
    let _idle: Client = s.connect();
    let kids = children_of(s.pid());
    assert_eq!(kids.len(), 3, "{kids:?}");
    for (pid, _) in &kids {
        let (u, g, groups) = ids(*pid);
        assert_eq!(u, vec![uid; 4], "session {pid} Uid");
        assert_eq!(g, vec![gid; 4], "session {pid} Gid");
        assert_eq!(groups, vec![gid], "session {pid} groups");
    }
    fred.logout();
    barney.logout();

    let mut all = Vec::new();
    walk(&dir, &mut all);
    let made: Vec<&PathBuf> = all.iter().filter(|p| !made_by_admin.contains(*p)).collect();
    let names: BTreeSet<String> = made
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "passwd",
        "abooks",
        "options.",
        "user/fred",
        "user/fred/options",
        "user/fred/options.",
        "user/fred/abooks",
        "user/fred/abook.fred",
        "user/fred/abook.fred.work",
        "user/fred/alock",
    ] {
        assert!(names.contains(want), "{want} not made; made: {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("log/fred/")),
        "no telemetry file: {names:?}"
    );
    for p in made {
        let m = std::fs::symlink_metadata(p).unwrap();
        let mode = m.mode() & 0o7777;
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{} owner", p.display());
    }
}

#[test]
fn no_password_reaches_a_log() {
    const USER: &str = "pwuser";
    const PASSWORD: &str = "Zq9-uniq-Pass-Kx4";
    const WRONG: &str = "Wr0ng-uniq-Guess-Jh5";
    let s = Server::builder()
        .option_line("imsp.sasl.allowplaintext N +")
        .option_line("imsp.login.failures.delay N 0")
        .option_line("imsp.login.failures.max N 0")
        .user(USER, PASSWORD)
        .start();
    std::fs::create_dir_all(s.path(&format!("log/{USER}"))).unwrap();

    let mut c = s.connect();
    c.ok(&format!("LOGIN {USER} {PASSWORD}"));
    c.logout();
    let mut c = s.connect();
    c.fails(&format!("LOGIN {USER} {WRONG}"), "NO");
    c.fails(&format!("LOGIN {USER} \"{WRONG}\""), "NO");
    let r = c.cmd_sync(&[
        format!("LOGIN {USER} {{{}}}", WRONG.len()).as_bytes(),
        WRONG.as_bytes(),
    ]);
    assert_eq!(r.status(), "NO");
    let plain = |pw: &str| B64.encode(format!("\0{USER}\0{pw}"));
    c.fails(&format!("AUTHENTICATE PLAIN {}", plain(WRONG)), "NO");
    // LOGIN mechanism: user and password as answers to challenges.
    c.send(b"L1 AUTHENTICATE LOGIN\r\n");
    assert!(c.read_line().starts_with(b"+ "));
    c.send(format!("{}\r\n", B64.encode(USER)).as_bytes());
    assert!(c.read_line().starts_with(b"+ "));
    c.send(format!("{}\r\n", B64.encode(WRONG)).as_bytes());
    assert_eq!(c.read_reply("L1").status(), "NO");
    c.ok(&format!("AUTHENTICATE PLAIN {}", plain(PASSWORD)));
    c.logout();

    let secrets = [
        PASSWORD.to_string(),
        WRONG.to_string(),
        plain(PASSWORD),
        plain(WRONG),
        B64.encode(PASSWORD),
        B64.encode(WRONG),
    ];
    let log = s.log();
    // The log is at level 9 and did record the logins.
    assert!(log.contains(USER), "nothing logged about {USER}:\n{log}");
    for sec in &secrets {
        assert!(
            !log.contains(sec.as_str()),
            "{sec} in the daemon's log:\n{log}"
        );
    }
    // Telemetry files, and every other file but the password file.
    let mut files = Vec::new();
    walk(&s.dir, &mut files);
    let telemetry: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.is_file() && p.starts_with(s.path(&format!("log/{USER}"))))
        .collect();
    assert!(telemetry.len() >= 2, "no telemetry files: {files:?}");
    let recorded: String = telemetry
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(recorded.contains("***"), "{recorded}");
    for p in files
        .iter()
        .filter(|p| p.is_file() && !p.ends_with("passwd"))
    {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        for sec in &secrets {
            assert!(
                !text.contains(sec.as_str()),
                "{sec} in {}:\n{text}",
                p.display()
            );
        }
    }
}
