//! The Debian package: built with `packaging/build-deb` (from the debug
//! build the tests use), installed with dpkg on this machine, used, and
//! removed. Needs root (CI runs as root), go-md2man and cargo-deb.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn exists_user(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn uid_of(name: &str) -> u32 {
    let o = run(Command::new("id").args(["-u", name]));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// Removes the package, and the user and data directory the test made.
struct Installed {
    had_user: bool,
    had_data: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "imspd"])
            .stdout(Stdio::null())
            .status();
        if !self.had_data {
            let _ = std::fs::remove_dir_all("/var/imsp");
        }
        if !self.had_user {
            let _ = Command::new("userdel").arg("imsp").status();
            let _ = Command::new("groupdel")
                .arg("imsp")
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn debian_package_installs_serves_and_removes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing a package needs root");
        return;
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "imspd"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&status.stdout).contains("installed") {
        eprintln!("skipped: an imspd package is installed here; not touching it");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    run(Command::new(root.join("packaging/build-deb")).args([
        "--profile",
        "dev",
        "--no-build",
        "--quiet",
        "--output",
        out.path().to_str().unwrap(),
    ]));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was built");

    let guard = Installed {
        had_user: exists_user("imsp"),
        had_data: Path::new("/var/imsp").exists(),
    };
    run(Command::new("dpkg")
        .args(["-i"])
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    // The binary, the units, the man pages, the user and the data dir.
    let v = run(Command::new("/usr/sbin/imspd").arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("imspd {}", env!("CARGO_PKG_VERSION"))
    );
    for f in [
        "/lib/systemd/system/imspd.service",
        "/lib/systemd/system/imspd.socket",
        "/lib/systemd/system/imspd@.service",
        "/usr/share/man/man8/imspd.8.gz",
        "/usr/share/man/man5/imspd.options.5.gz",
        "/usr/share/imspd/options.sample",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    let imsp = uid_of("imsp");
    // imsp joins `sasl` where the group exists (saslauthd's socket); not
    // `shadow`, as the sample options use no unix backend.
    let groups = run(Command::new("id").args(["-nG", "imsp"]));
    let groups = String::from_utf8_lossy(&groups.stdout).to_string();
    let sasl = Command::new("getent")
        .args(["group", "sasl"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert_eq!(
        groups.split_whitespace().any(|g| g == "sasl"),
        sasl,
        "{groups}"
    );
    if !guard.had_user {
        assert!(
            !groups.split_whitespace().any(|g| g == "shadow"),
            "{groups}"
        );
    }
    let m = std::fs::metadata("/var/imsp").unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (imsp, 0o700));
    if !guard.had_data {
        assert_eq!(
            std::fs::read("/var/imsp/options").unwrap(),
            std::fs::read(root.join("etc/options.sample")).unwrap()
        );
    }

    // One session through the installed binary, as inetd runs it, on a
    // data directory of the imsp user; the password set by root is
    // written as imsp, so the daemon can read it.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("imsp");
    std::fs::create_dir_all(dir.join("user")).unwrap();
    std::fs::write(dir.join("options"), common::DEFAULT_OPTIONS).unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    run(Command::new("chown").args(["-R", "imsp:imsp"]).arg(&dir));
    let mut p = Command::new("/usr/sbin/imspd")
        .arg("--data-dir")
        .arg(&dir)
        .args(["passwd", "fred"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    p.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(std::fs::metadata(dir.join("passwd")).unwrap().uid(), imsp);

    let mut s = Command::new("/usr/sbin/imspd")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--inetd", "--user", "imsp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.stdin
        .take()
        .unwrap()
        .write_all(
            b"a LOGIN fred secret\r\nb SET fred.x \"hello pkg\"\r\nc GET fred.x\r\nd LOGOUT\r\n",
        )
        .unwrap();
    let o = s.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "a OK User `fred' Logged in",
        "b OK set completed",
        "* OPTION fred.x \"hello pkg\" [READ-WRITE]",
        "d OK ",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let m = std::fs::metadata(dir.join("user/fred/options")).unwrap();
    assert_eq!(m.uid(), imsp, "the session ran as imsp");

    // Removing keeps the data.
    run(Command::new("dpkg").args(["-r", "imspd"]));
    assert!(!Path::new("/usr/sbin/imspd").exists());
    assert!(Path::new("/var/imsp/options").is_file());
    drop(guard);
}
