//! The test harness: starts the real `imspd` binary on a free loopback port
//! with a temporary data directory, and a small client that speaks IMSP.
#![allow(dead_code)]

pub mod dovecot;
pub mod slapd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_imspd");

/// Wait until an edit made by hand (which moves no change counter) is
/// seen by the next command of every session.
pub fn until_a_hand_edit_is_seen() {
    std::thread::sleep(imspd::store::file::QUIET_FOR + Duration::from_millis(100));
}

/// The binary servers start: `IMSPD_BIN` when set (the benchmark compares
/// two builds that way), else this build's.
pub fn server_bin() -> PathBuf {
    std::env::var_os("IMSPD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// Global options every test server starts with (a 1.8-style file).
pub const DEFAULT_OPTIONS: &str = "common.date R \n\
common.delivery.hosts R (mailhost.example.org)\n\
common.domain R example.org\n\
common.from R \n\
common.sent.mailbox W sentmail\n\
imsp.admin.all N (admin)\n\
imsp.create.new.users N +\n\
imsp.db.fsync N +\n\
imsp.log.level N 9\n\
imsp.user.quota R 1000\n";

pub struct ServerBuilder {
    options: String,
    args: Vec<String>,
    users: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    bin: Option<PathBuf>,
}

impl ServerBuilder {
    pub fn options(mut self, options: &str) -> Self {
        self.options = options.to_string();
        self
    }
    /// Add one global option line, e.g. `imsp.user.quota R 1`.
    pub fn option_line(mut self, line: &str) -> Self {
        self.options.push_str(line);
        self.options.push('\n');
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    /// Start without the default users (no `passwd` file).
    pub fn no_users(mut self) -> Self {
        self.users.clear();
        self
    }
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }
    /// Run this imspd binary (the benchmark's base build), not
    /// [`server_bin`].
    pub fn bin(mut self, bin: &Path) -> Self {
        self.bin = Some(bin.to_path_buf());
        self
    }
    /// Serve an existing directory (it is not removed afterwards).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => {
                let d = tmp.path().join("imsp");
                std::fs::create_dir_all(d.join("user")).unwrap();
                std::fs::write(d.join("options"), &self.options).unwrap();
                d
            }
        };
        for (u, p) in &self.users {
            set_password(&dir, u, p);
        }
        let log_path = tmp.path().join("imspd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(self.bin.clone().unwrap_or_else(server_bin))
            .args(["-d", "-p", "0", "--listen", "127.0.0.1", "--data-dir"])
            .arg(&dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start imspd");
        let mut server = Server {
            child,
            port: 0,
            dir,
            log_path,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = server.log();
            if let Some(rest) = log.split("listening on 127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                server.port = digits.parse().unwrap();
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("imspd exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "imspd did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

/// Set a password with the real `imspd passwd` command.
pub fn set_password(dir: &Path, user: &str, password: &str) {
    let mut c = Command::new(server_bin())
        .args(["--data-dir"])
        .arg(dir)
        .args(["passwd", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "imspd passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            options: DEFAULT_OPTIONS.to_string(),
            args: Vec::new(),
            users: vec![
                ("fred".into(), "secret".into()),
                ("barney".into(), "rubble".into()),
                ("admin".into(), "adminpw".into()),
            ],
            data_dir: None,
            bin: None,
        }
    }

    pub fn start() -> Server {
        Server::builder().start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// A session logged in as `user` (password from the default users).
    pub fn login(&self, user: &str) -> Client {
        let pw = match user {
            "fred" => "secret",
            "barney" => "rubble",
            "admin" => "adminpw",
            other => panic!("no default password for {other}"),
        };
        let mut c = self.connect();
        c.ok(&format!("LOGIN {user} {pw}"));
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// What the database holds in a file: its bytes, with the changes in
    /// its journal folded in when it has one (`imsp.db.journal`), read as
    /// imspd reads them (under the file's lock).
    pub fn read(&self, rel: &str) -> String {
        let p = self.path(rel);
        let mut files = imspd::store::Files::default();
        assert!(files.exists(&p), "{rel}: no such file");
        let order = if rel.ends_with("/subs") {
            imspd::store::Order::Bytes
        } else {
            imspd::store::Order::CaseInsensitive
        };
        let bytes = files
            .read_raw(&p, order)
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Wait for the listener to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        for (child, _) in children_of(pid as u32) {
            // SAFETY: ending the session processes this test started.
            unsafe { libc::kill(child as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `work(i)` on `n` threads at once (each typically a session of its
/// own, so a server process of its own) and collect what they return.
pub fn concurrently<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let work = work.clone();
            std::thread::spawn(move || work(i))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("worker"))
        .collect()
}

/// The processes whose parent is `pid`, with their state letter.
/// The child of `pid` that is not among `before` (as [`children_of`]
/// listed them): the session process a login just made. Waits up to a
/// second for it.
pub fn new_child(pid: u32, before: &[(u32, char)]) -> u32 {
    for _ in 0..100 {
        let new = children_of(pid)
            .into_iter()
            .map(|c| c.0)
            .find(|p| !before.iter().any(|b| b.0 == *p));
        if let Some(p) = new {
            return p;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no new child of {pid}");
}

pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid {
            out.push((p, state));
        }
    }
    out
}

/// The response to one command: every line up to and including the tagged
/// one, literals inline.
#[derive(Debug, Clone)]
pub struct Reply {
    pub lines: Vec<Vec<u8>>,
}

impl Reply {
    pub fn tagged(&self) -> String {
        String::from_utf8_lossy(self.lines.last().unwrap()).into_owned()
    }
    /// The status word of the tagged line.
    pub fn status(&self) -> String {
        self.tagged().split(' ').nth(1).unwrap_or("").to_string()
    }
    pub fn untagged(&self) -> Vec<String> {
        self.lines[..self.lines.len() - 1]
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
    pub fn untagged_bytes(&self) -> &[Vec<u8>] {
        &self.lines[..self.lines.len() - 1]
    }
}

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub greeting: String,
    next_tag: u32,
    /// Buffers [`Client::ok_count`] keeps between commands.
    scratch: Vec<u8>,
    scratch_tag: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Client {
            stream,
            reader,
            greeting: String::new(),
            next_tag: 0,
            scratch: Vec::new(),
            scratch_tag: Vec::new(),
        };
        c.greeting = String::from_utf8_lossy(&c.read_line()).into_owned();
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One response line, CRLF removed; a literal `{N}` is read whole and
    /// kept inline (`{N}\r\n` + the octets), as the server sent it.
    pub fn read_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.read_line_into(&mut line);
        line
    }

    /// [`read_line`](Self::read_line), appended to `line`.
    fn read_line_into(&mut self, line: &mut Vec<u8>) {
        loop {
            let part = line.len();
            let n = self.reader.read_until(b'\n', line).expect("read");
            assert!(
                n > 0,
                "connection closed; got so far: {:?}",
                String::from_utf8_lossy(line)
            );
            let body = &line[part..line.len() - 1];
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            if let Some(n) = trailing_literal(body) {
                let at = line.len();
                line.resize(at + n, 0);
                self.reader.read_exact(&mut line[at..]).unwrap();
                continue;
            }
            line.truncate(line.len() - 1);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return;
        }
    }

    /// True when the server has closed the connection (EOF within `wait`).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = Vec::new();
        let r = self.reader.read_until(b'\n', &mut buf);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("T{}", self.next_tag)
    }

    /// Read lines until the tagged response for `tag`.
    pub fn read_reply(&mut self, tag: &str) -> Reply {
        let mut lines = Vec::new();
        let prefix = format!("{tag} ");
        loop {
            let l = self.read_line();
            let done = l.starts_with(prefix.as_bytes());
            lines.push(l);
            if done {
                return Reply { lines };
            }
        }
    }

    /// Send `command` (without tag) and read its reply.
    pub fn cmd(&mut self, command: &str) -> Reply {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.read_reply(&tag)
    }

    /// Like [`cmd`](Self::cmd) with raw bytes after the tag.
    pub fn cmd_bytes(&mut self, command: &[u8]) -> Reply {
        let tag = self.tag();
        let mut line = format!("{tag} ").into_bytes();
        line.extend_from_slice(command);
        line.extend_from_slice(b"\r\n");
        self.send(&line);
        self.read_reply(&tag)
    }

    /// Send a command in parts: each part but the last ends with a
    /// synchronizing literal header; the go-ahead is awaited before the
    /// next part is sent.
    pub fn cmd_sync(&mut self, parts: &[&[u8]]) -> Reply {
        let tag = self.tag();
        let mut first = format!("{tag} ").into_bytes();
        first.extend_from_slice(parts[0]);
        let mut to_send = first;
        for (i, _) in parts.iter().enumerate() {
            if i > 0 {
                to_send = parts[i].to_vec();
            }
            to_send.extend_from_slice(b"\r\n");
            if i + 1 < parts.len() {
                // The line ends with `{N}`: send it, wait for `+`.
                self.send(&to_send);
                let l = self.read_line();
                assert!(
                    l.starts_with(b"+ "),
                    "expected go-ahead, got {:?}",
                    String::from_utf8_lossy(&l)
                );
            } else {
                self.send(&to_send);
            }
        }
        self.read_reply(&tag)
    }

    /// Run a command that must succeed; returns its untagged lines.
    pub fn ok(&mut self, command: &str) -> Vec<String> {
        let r = self.cmd(command);
        assert_eq!(
            r.status(),
            "OK",
            "{command} -> {:?}",
            r.lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
        r.untagged()
    }

    /// LOGOUT, and wait until the server closes the connection: the
    /// session folds its journals into their files after its answer and
    /// before it closes, so the files are whole once it has.
    pub fn logout(&mut self) {
        self.ok("LOGOUT");
        assert!(
            self.closed_within(Duration::from_secs(30)),
            "the server did not close the connection after LOGOUT"
        );
    }

    /// [`ok`](Self::ok) for a measure: the reply is read into one buffer
    /// kept between commands, not copied into strings, so that the client
    /// costs the machine little beside the server it measures. Returns how
    /// many untagged lines came (a literal is taken as part of its line).
    pub fn ok_count(&mut self, command: &str) -> usize {
        self.next_tag += 1;
        let tag = self.next_tag;
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        let _ = write!(line, "T{tag} {command}\r\n");
        self.send(&line);
        let mut prefix = std::mem::take(&mut self.scratch_tag);
        prefix.clear();
        let _ = write!(prefix, "T{tag} ");
        let mut untagged = 0;
        loop {
            line.clear();
            self.read_line_into(&mut line);
            if !line.starts_with(&prefix) {
                untagged += 1;
                continue;
            }
            let status = line[prefix.len()..].split(|&b| b == b' ').next();
            assert_eq!(
                status,
                Some(&b"OK"[..]),
                "{command} -> {}",
                String::from_utf8_lossy(&line)
            );
            self.scratch = line;
            self.scratch_tag = prefix;
            return untagged;
        }
    }

    /// Run a command that must fail with `status` (NO or BAD); returns the
    /// tagged line.
    pub fn fails(&mut self, command: &str, status: &str) -> String {
        let r = self.cmd(command);
        assert_eq!(r.status(), status, "{command} -> {:?}", r.untagged());
        r.tagged()
    }
}

fn trailing_literal(line: &[u8]) -> Option<usize> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..line.len() - 1])
        .ok()?
        .trim_end_matches('+')
        .parse()
        .ok()
}
