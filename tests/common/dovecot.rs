//! A real IMAP server for the mailbox tests: Dovecot (Debian package
//! `dovecot-imapd`), started by the test on a free loopback port with its
//! own temporary configuration, and stopped when dropped.
//!
//! One shared mail tree for every user (a maildir with the `.` separator),
//! so that `user.fred`, `bboard.news`, ... form one namespace as on a Cyrus
//! server; users fred/secret, barney/rubble, admin/adminpw; a master user
//! `proxy/proxypw` for the proxy identity (`master_user=%u`, so ACLs are
//! checked as the user); the acl and imap_acl plugins; STARTTLS with a
//! self-signed certificate.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DOVECOT: &str = "/usr/sbin/dovecot";
/// The uid and gid the mail processes run as.
const MAIL_UID: u32 = 1001;

pub struct Dovecot {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chown_tree(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    unsafe { libc::chown(c.as_ptr(), MAIL_UID, MAIL_UID) };
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path());
        }
    }
}

impl Dovecot {
    pub fn start() -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: the mailbox tests need a real IMAP server; \
             install the Debian package dovecot-imapd (listed in .ci/packages)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("imspd-dovecot.")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_path_buf();
        // Dovecot's unprivileged processes must reach the files.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        std::fs::copy(data.join("dovecot-test-cert.pem"), dir.join("cert.pem")).unwrap();
        std::fs::copy(data.join("dovecot-test-key.pem"), dir.join("key.pem")).unwrap();
        std::fs::write(
            dir.join("passwd"),
            "fred:{PLAIN}secret::::::\nbarney:{PLAIN}rubble::::::\nadmin:{PLAIN}adminpw::::::\n",
        )
        .unwrap();
        std::fs::write(dir.join("masters"), "proxy:{PLAIN}proxypw::::::\n").unwrap();
        for d in ["mail", "index", "home"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            chown_tree(&dir.join(d));
        }
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_master_user_separator = *
# Tests try a wrong password on purpose: answer at once.
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {d}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={d}/home/%u master_user=%u
}}
mail_location = maildir:{d}/mail:INDEX={d}/index/%u
mail_plugins = acl
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
plugin {{
  acl = vfile
}}
namespace inbox {{
  inbox = yes
  separator = .
  prefix =
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DOVECOT} (package dovecot-imapd): {e}"));
        let mut dc = Dovecot {
            child: Some(child),
            port,
            dir,
            _tmp: tmp,
        };
        dc.wait_ready();
        dc
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut line = String::new();
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line);
                if line.starts_with("* OK") {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let mut err = String::new();
                if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "dovecot exited with {status}: {err}\n{}",
                    std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "dovecot did not start");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// `127.0.0.1:PORT`, the name imspd knows this server by.
    pub fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop the server (a server that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the process this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            // The listening port must be closed before this returns.
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// A direct IMAP session as `user` (plain text LOGIN), to set up and
    /// check what imspd did.
    pub fn session(&self, user: &str) -> imap::Session<imap::Connection> {
        let pw = match user {
            "fred" => "secret",
            "barney" => "rubble",
            "admin" => "adminpw",
            other => panic!("no dovecot user {other}"),
        };
        imap::ClientBuilder::new("127.0.0.1", self.port)
            .mode(imap::ConnectionMode::Plaintext)
            .connect()
            .unwrap()
            .login(user, pw)
            .map_err(|(e, _)| e)
            .unwrap()
    }

    /// The selectable mailboxes, INBOX left out, sorted.
    pub fn mailboxes(&self) -> Vec<String> {
        let mut s = self.session("admin");
        let mut out: Vec<String> = s
            .list(Some(""), Some("*"))
            .unwrap()
            .iter()
            .filter(|n| {
                !n.attributes()
                    .iter()
                    .any(|a| format!("{a:?}").to_ascii_lowercase().contains("noselect"))
            })
            .map(|n| n.name().to_string())
            .filter(|n| n != "INBOX")
            .collect();
        out.sort();
        let _ = s.logout();
        out
    }

    pub fn create(&self, names: &[&str]) {
        let mut s = self.session("admin");
        for n in names {
            s.create(n).unwrap();
        }
        let _ = s.logout();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
