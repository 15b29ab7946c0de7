//! Session telemetry, as cyrus-imspd's setup notes describe it: when the
//! data directory has a directory `log/USER`, every session of USER is
//! recorded there, one file a session named after the session's process
//! (`log/USER/PID`), client lines as `C: ...`, server lines as `S: ...`.
//!
//! The tap sits on the connection and sees every byte both ways. Until the
//! session has a user it keeps what it saw in memory (at most
//! [`PENDING_MAX`] bytes); once the user is known, the file is opened when
//! `log/USER` exists and the session so far is written to it, else the tap
//! is dropped. Secrets never reach the file: the password of `LOGIN` (and
//! everything after the user name) and the client's side of `AUTHENTICATE`
//! (its initial response and every line until the tagged answer) are
//! written as `***`. A client line longer than [`LINE_MAX`] is recorded
//! by its head, masked the same way (a user name or mechanism that runs to
//! the cut is masked too); the rest of such a line of LOGIN, AUTHENTICATE
//! or a SASL exchange is never recorded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::config::Settings;
use crate::connection::Connection;
use crate::protocol::framing::literal_at_end;

/// The most a session may send and receive before it has a user, kept.
pub const PENDING_MAX: usize = 256 * 1024;
/// The longest client line kept whole while waiting for its end.
const LINE_MAX: usize = 64 * 1024;
/// What is kept of the end of a skipped secret line: enough to see the
/// literal it may announce (`{NNN+}`).
const SKIPPED_TAIL: usize = 32;
const MASK: &[u8] = b"***";

enum Sink {
    Pending(Vec<u8>),
    File(File),
    Off,
}

/// A recorder of one session.
pub struct Tap {
    dir: PathBuf,
    header: String,
    sink: Sink,
    /// Client bytes not yet a whole line.
    line: Vec<u8>,
    /// Bytes of a literal still to come, and whether they are secret.
    literal_left: u64,
    literal_masked: bool,
    /// The next client line continues a command (after a literal).
    in_command: bool,
    /// The rest of the current command is secret.
    command_masked: bool,
    /// The tag of an AUTHENTICATE exchange in progress.
    auth_tag: Option<Vec<u8>>,
    /// The client line being received outgrew [`LINE_MAX`] inside a
    /// secret (LOGIN, AUTHENTICATE, a SASL response): its head was
    /// recorded masked, the rest up to its end is not recorded at all.
    /// Holds the last bytes skipped: the line may end by announcing a
    /// literal, whose bytes are secret too.
    secret_tail: Option<Vec<u8>>,
    /// The server output is at the start of a line.
    server_at_start: bool,
}

/// Start watching a session when the data directory has `log/`.
pub fn attach(conn: &mut Connection, settings: &Settings, peer: &str) {
    let dir = settings.data_dir.join("log");
    if dir.is_dir() {
        conn.tap = Some(Box::new(Tap::new(dir, peer)));
    }
}

/// After each command: once the session has a user, record it to
/// `log/USER/PID` if that directory exists, else stop watching.
pub fn after_command(conn: &mut Connection, user: Option<&str>) {
    let Some(tap) = conn.tap.as_mut() else {
        return;
    };
    let (Sink::Pending(_), Some(user)) = (&tap.sink, user) else {
        return;
    };
    if crate::store::names::check_user(user.as_bytes()).is_err() {
        conn.tap = None;
        return;
    }
    let dir = tap.dir.join(user);
    if !dir.is_dir() {
        conn.tap = None;
        return;
    }
    let path = dir.join(std::process::id().to_string());
    match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let Sink::Pending(buf) = std::mem::replace(&mut tap.sink, Sink::Off) else {
                unreachable!()
            };
            let mut head = format!("# {} user {user}\n", tap.header).into_bytes();
            head.extend_from_slice(&buf);
            if f.write_all(&head).is_ok() {
                tap.sink = Sink::File(f);
            }
        }
        Err(e) => {
            crate::log_warn!("telemetry: {}: {e}", path.display());
            conn.tap = None;
        }
    }
}

fn now() -> String {
    // SAFETY: localtime_r/strftime with buffers we own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        let mut buf = [0u8; 64];
        let fmt = c"%Y-%m-%d %H:%M:%S %z";
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// The end of the token that starts `s`: an atom up to a space, or a
/// quoted string with its escapes.
fn token_end(s: &[u8]) -> usize {
    token(s).0
}

/// [`token_end`], and whether the token is surely whole: a quoted string
/// without its closing quote is not (what follows may be a password).
fn token(s: &[u8]) -> (usize, bool) {
    if s.first() == Some(&b'"') {
        let mut i = 1;
        while i < s.len() {
            match s[i] {
                b'\\' => i += 2,
                b'"' => return (i + 1, true),
                _ => i += 1,
            }
        }
        (s.len(), false)
    } else {
        (s.iter().position(|&b| b == b' ').unwrap_or(s.len()), true)
    }
}

impl Tap {
    pub fn new(dir: PathBuf, peer: &str) -> Tap {
        Tap {
            dir,
            header: format!(
                "imspd session {} from {peer} at {}",
                std::process::id(),
                now()
            ),
            sink: Sink::Pending(Vec::new()),
            line: Vec::new(),
            literal_left: 0,
            literal_masked: false,
            in_command: false,
            command_masked: false,
            auth_tag: None,
            secret_tail: None,
            server_at_start: true,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        match &mut self.sink {
            Sink::Pending(buf) => {
                if buf.len() + bytes.len() > PENDING_MAX {
                    self.sink = Sink::Off;
                } else {
                    buf.extend_from_slice(bytes);
                }
            }
            Sink::File(f) => {
                if let Err(e) = f.write_all(bytes) {
                    crate::log_warn!("telemetry: {e}; recording stopped");
                    self.sink = Sink::Off;
                }
            }
            Sink::Off => {}
        }
    }

    /// Bytes the client sent.
    pub fn client(&mut self, mut bytes: &[u8]) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        while !bytes.is_empty() {
            if self.literal_left > 0 {
                let n = (self.literal_left.min(bytes.len() as u64)) as usize;
                if !self.literal_masked {
                    self.put(&bytes[..n]);
                }
                self.literal_left -= n as u64;
                bytes = &bytes[n..];
                if self.literal_left == 0 && self.literal_masked {
                    self.put(MASK);
                }
                continue;
            }
            if let Some(tail) = self.secret_tail.as_mut() {
                let end = bytes.iter().position(|&b| b == b'\n');
                tail.extend_from_slice(&bytes[..end.unwrap_or(bytes.len())]);
                let keep = tail.len().saturating_sub(SKIPPED_TAIL);
                tail.drain(..keep);
                let Some(i) = end else { return };
                bytes = &bytes[i + 1..];
                let tail = self.secret_tail.take().unwrap_or_default();
                let tail = tail.strip_suffix(b"\r").unwrap_or(&tail);
                // The literal the skipped line announced: secret, as the
                // rest of the command is.
                if let Some((n, _)) = literal_at_end(tail) {
                    self.in_command = true;
                    self.literal_left = n;
                    self.literal_masked = n > 0;
                }
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    // An over-long line is masked the same whether or
                    // not its end came in the read that overflowed.
                    let long = line.len() > LINE_MAX;
                    self.client_line(&line, long);
                }
                None => {
                    self.line.extend_from_slice(bytes);
                    if self.line.len() > LINE_MAX {
                        // Record the head now, as a line of its own; the
                        // rest of a secret line is dropped, however long.
                        let line = std::mem::take(&mut self.line);
                        self.client_line(&line, true);
                        if self.command_masked || self.auth_tag.is_some() {
                            // Its end so far: a literal's announcement may
                            // be cut there.
                            let end = &line[line.len().saturating_sub(SKIPPED_TAIL)..];
                            self.secret_tail = Some(end.to_vec());
                        }
                    }
                    return;
                }
            }
        }
    }

    /// One client line (CRLF removed); `long`: over [`LINE_MAX`], whole
    /// or only its head, in which a token running to the end may be cut.
    fn client_line(&mut self, line: &[u8], long: bool) {
        let literal = literal_at_end(line);
        let mut user_literal = false;
        if !self.in_command && self.auth_tag.is_some() {
            // A SASL response (or `*` to cancel): never recorded.
            self.put(b"C: ");
            self.put(if line == b"*" { b"*" } else { MASK });
            self.put(b"\n");
            return;
        }
        if self.in_command {
            if self.command_masked {
                if !line.is_empty() {
                    self.put(b" ");
                    self.put(MASK);
                }
            } else {
                self.put(line);
            }
        } else {
            self.command_masked = false;
            self.put(b"C: ");
            let tag_end = token_end(line);
            let after_tag = line.get(tag_end + 1..).unwrap_or(b"");
            let cmd_end = token_end(after_tag);
            let cmd = after_tag[..cmd_end].to_ascii_uppercase();
            let args = after_tag.get(cmd_end + 1..).unwrap_or(b"");
            let head = &line[..(tag_end + 1 + cmd_end).min(line.len())];
            match cmd.as_slice() {
                b"LOGIN" => {
                    self.command_masked = true;
                    if args.first() == Some(&b'{') && literal.is_some() {
                        // The user name is a literal: keep it, hide the rest.
                        self.put(line);
                        user_literal = true;
                    } else {
                        // The user name, unless it may run into the
                        // password: unterminated, or cut at LINE_MAX.
                        let (user_end, whole) = token(args);
                        self.put(head);
                        self.put(b" ");
                        if !whole || (long && user_end == args.len()) {
                            self.put(MASK);
                        } else {
                            self.put(&args[..user_end]);
                            if args.len() > user_end {
                                self.put(b" ");
                                self.put(MASK);
                            }
                        }
                    }
                }
                b"AUTHENTICATE" => {
                    self.command_masked = true;
                    self.auth_tag = Some(line[..tag_end].to_vec());
                    let (mech_end, whole) = token(args);
                    self.put(head);
                    self.put(b" ");
                    if !whole || (long && mech_end == args.len()) {
                        self.put(MASK);
                    } else {
                        self.put(&args[..mech_end]);
                    }
                    if args.len() > mech_end {
                        self.put(b" ");
                        self.put(MASK);
                    }
                }
                _ => self.put(line),
            }
        }
        match literal {
            Some((n, _)) if n > 0 => {
                self.put(b"\n");
                self.literal_left = n;
                self.literal_masked = self.command_masked && !user_literal;
                self.in_command = true;
            }
            Some(_) => self.in_command = true,
            None => {
                self.put(b"\n");
                self.in_command = false;
            }
        }
    }

    /// Bytes the server sends.
    pub fn server(&mut self, bytes: &[u8]) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            if self.server_at_start {
                if let Some(tag) = &self.auth_tag
                    && piece.starts_with(tag)
                    && piece.get(tag.len()) == Some(&b' ')
                {
                    self.auth_tag = None;
                }
                self.put(b"S: ");
            }
            let (body, end) = match piece.strip_suffix(b"\n") {
                Some(b) => (b.strip_suffix(b"\r").unwrap_or(b), true),
                None => (piece, false),
            };
            self.put(body);
            if end {
                self.put(b"\n");
            }
            self.server_at_start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(client: &[&[u8]]) -> String {
        let mut t = Tap::new(PathBuf::from("/nonexistent"), "peer");
        for c in client {
            t.client(c);
        }
        match t.sink {
            Sink::Pending(b) => String::from_utf8(b).unwrap(),
            _ => panic!("not pending"),
        }
    }

    #[test]
    fn masks_login_passwords() {
        assert_eq!(
            recorded(&[b"a LOGIN fred secret\r\nb GET *\r\n"]),
            "C: a LOGIN fred ***\nC: b GET *\n"
        );
        assert_eq!(
            recorded(&[b"a login \"fr ed\" \"sec ret\"\r\n"]),
            "C: a login \"fr ed\" ***\n"
        );
        // Password as a literal, in pieces.
        assert_eq!(
            recorded(&[b"a LOGIN fred {6}\r\nsec", b"ret\r\nb NOOP\r\n"]),
            "C: a LOGIN fred ***\n***\nC: b NOOP\n"
        );
        // User name as a literal: kept; the password hidden.
        assert_eq!(
            recorded(&[b"a LOGIN {4+}\r\nfred {6+}\r\nsecret\r\n"]),
            "C: a LOGIN {4+}\nfred ***\n***\n"
        );
    }

    #[test]
    fn never_records_the_tail_of_an_over_long_secret_line() {
        let secret = b"TOPSECRET".repeat(LINE_MAX / 9 * 3);
        for cmd in [&b"a LOGIN fred "[..], b"a AUTHENTICATE PLAIN ", b"a LOGIN "] {
            let mut t = Tap::new(PathBuf::from("/x"), "peer");
            // In pieces, as reads cut it.
            t.client(cmd);
            for piece in secret.chunks(4000) {
                t.client(piece);
            }
            t.client(b"\r\nb NOOP\r\n");
            let Sink::Pending(b) = t.sink else { panic!() };
            let text = String::from_utf8(b).unwrap();
            assert!(!text.contains("TOPSECRET"), "{}", &text[..200]);
            // (b NOOP is still within the AUTHENTICATE exchange: no answer.)
            let next = if cmd.starts_with(b"a AUTH") {
                "***"
            } else {
                "b NOOP"
            };
            assert!(text.ends_with(&format!("***\nC: {next}\n")), "{text:?}");
        }
        // Over-long lines are masked alike however the reads cut them.
        for pieces in [
            &[&b"a LOGIN "[..], &secret, b"\r\n"][..],
            &[&[b"a LOGIN ".as_slice(), &secret, b"\r\n"].concat()],
        ] {
            let mut t = Tap::new(PathBuf::from("/x"), "peer");
            for p in pieces {
                t.client(p);
            }
            let Sink::Pending(b) = t.sink else { panic!() };
            assert_eq!(String::from_utf8(b).unwrap(), "C: a LOGIN ***\n");
        }
        // An over-long user name that announces the password as a literal
        // at its end: the literal is masked too, however the reads cut it.
        let long_user = b"u".repeat(LINE_MAX + 100);
        let whole = [
            &b"a LOGIN "[..],
            &long_user,
            b" {9+}\r\nTOPSECRET\r\nb NOOP\r\n",
        ]
        .concat();
        for cut in [10, LINE_MAX + 105, whole.len() - 12, whole.len() - 20] {
            let mut t = Tap::new(PathBuf::from("/x"), "peer");
            t.client(&whole[..cut]);
            t.client(&whole[cut..]);
            let Sink::Pending(b) = t.sink else { panic!() };
            let text = String::from_utf8(b).unwrap();
            assert!(!text.contains("TOPSECRET"), "{cut}: {text:?}");
            assert!(text.ends_with("C: b NOOP\n"), "{cut}: {text:?}");
        }
        // A user name without its closing quote may hold the password.
        let mut t = Tap::new(PathBuf::from("/x"), "peer");
        t.client(b"a LOGIN \"fred TOPSECRET\r\n");
        let Sink::Pending(b) = t.sink else { panic!() };
        assert_eq!(String::from_utf8(b).unwrap(), "C: a LOGIN ***\n");
        // A long line that is no secret is still recorded.
        let mut t = Tap::new(PathBuf::from("/x"), "peer");
        t.client(b"a SET fred.x ");
        t.client(&secret);
        t.client(b"\r\n");
        let Sink::Pending(b) = t.sink else { panic!() };
        assert!(String::from_utf8(b).unwrap().matches("TOPSECRET").count() > 1000);
    }

    #[test]
    fn masks_authenticate_until_tagged_answer() {
        let mut t = Tap::new(PathBuf::from("/x"), "peer");
        t.client(b"A1 AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0\r\n");
        t.server(b"+ \r\n");
        t.client(b"c2VjcmV0\r\n");
        t.server(b"A1 OK done\r\n");
        t.client(b"A2 SET x y\r\n");
        let Sink::Pending(b) = t.sink else { panic!() };
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "C: A1 AUTHENTICATE PLAIN ***\nS: + \nC: ***\nS: A1 OK done\nC: A2 SET x y\n"
        );
    }
}
