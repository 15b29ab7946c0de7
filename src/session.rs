//! One client session: read a frame, parse it, check the session state, let
//! the handlers act, write their typed responses. This is the only stage
//! that sees the connection.

use std::io;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::{Settings, VERSION};
use crate::connection::Connection;
use crate::handlers::{ChallengeError, Challenger, Flow, Handler, Output};
use crate::protocol::{Frame, FrameReader, ParseError, Response, Status, parse_command, writer};

/// Where handlers put untagged data: encoded straight into the
/// connection's output queue, sent when it grows or the command ends.
struct ConnOutput<'a> {
    conn: &'a mut Connection,
    error: Option<io::Error>,
}

impl Output for ConnOutput<'_> {
    fn send(&mut self, r: Response) {
        if self.error.is_some() {
            return;
        }
        self.conn.queue_with(|out| writer::encode(&r, out));
        if self.conn.queued() > 64 * 1024
            && let Err(e) = self.conn.flush()
        {
            self.error = Some(e);
        }
    }
}

/// SASL challenges over the connection: `+ <base64>`, then one line back
/// within the session's read deadline, `*` to cancel.
struct ConnChallenger<'a> {
    conn: &'a mut Connection,
    reader: &'a mut FrameReader,
    settings: &'a Settings,
    started: Instant,
    logged_in: bool,
}

impl Challenger for ConnChallenger<'_> {
    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, ChallengeError> {
        if send(self.conn, &Response::Continue(B64.encode(data))).is_err() {
            return Err(ChallengeError::Closed);
        }
        // Each round within the idle timeout, and before login within the
        // login timeout too: challenges do not hold a connection longer.
        self.conn
            .set_read_deadline(read_deadline(self.settings, self.started, self.logged_in));
        let line = match self.reader.next_line(self.conn) {
            Ok(Some(l)) => l,
            Ok(None) => return Err(ChallengeError::Invalid("response line too long".into())),
            Err(e) => {
                crate::log_debug!("reading a SASL response: {e}");
                return Err(ChallengeError::Closed);
            }
        };
        let line = line.trim_ascii();
        if line == b"*" {
            return Err(ChallengeError::Cancelled);
        }
        B64.decode(line)
            .map_err(|_| ChallengeError::Invalid("response is not valid base64".into()))
    }
}

/// When the next read must be done: within the idle timeout, and before
/// login within the login timeout of the session's start.
fn read_deadline(settings: &Settings, started: Instant, logged_in: bool) -> Instant {
    let idle = Instant::now() + settings.idle_timeout;
    match logged_in {
        true => idle,
        false => idle.min(started + settings.login_timeout),
    }
}

fn send(conn: &mut Connection, r: &Response) -> io::Result<()> {
    conn.queue_with(|out| writer::encode(r, out));
    conn.flush()
}

/// Serve one client until it logs out, goes away, idles out or fails.
pub fn serve(mut conn: Connection, settings: &Settings, peer: &str, store: crate::store::Store) {
    let mut handler = Handler::new(settings, peer, store);
    crate::telemetry::attach(&mut conn, settings, peer);
    let greeting = Response::untagged(
        Status::Ok,
        format!("{} IMSP server imspd {} ready", settings.hostname, VERSION),
    );
    if send(&mut conn, &greeting).is_err() {
        return;
    }
    let mut reader = FrameReader::new(settings.limits);
    let started = Instant::now();
    loop {
        let logged_in = handler.user.is_some();
        conn.set_read_deadline(read_deadline(settings, started, logged_in));
        let frame = match reader.next_frame(&mut conn) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let (limit, what) = if logged_in || settings.idle_timeout <= settings.login_timeout
                {
                    (settings.idle_timeout, "Idle for more than")
                } else {
                    (settings.login_timeout, "No login within")
                };
                let mins = limit.as_secs() / 60;
                let text = if mins > 0 && limit.as_secs() % 60 == 0 {
                    format!("{what} {mins} minutes, closing connection")
                } else {
                    format!("{what} {} seconds, closing connection", limit.as_secs())
                };
                let _ = send(&mut conn, &Response::bye(text));
                crate::log_debug!("{peer}: idle timeout");
                break;
            }
            Err(e) => {
                crate::log_debug!("{peer}: read error: {e}");
                break;
            }
        };
        let flow = match frame {
            Frame::Eof => break,
            Frame::LineTooLong { tag } => refuse(
                &mut conn,
                tag,
                format!(
                    "Line too long (the limit is {} bytes)",
                    settings.limits.max_line
                ),
            ),
            Frame::LiteralTooLarge { tag, size } => refuse(
                &mut conn,
                tag,
                format!(
                    "Literal of {size} bytes is too large (the limit is {} bytes)",
                    settings.limits.max_literal
                ),
            ),
            Frame::Command(bytes) => command(
                &mut conn,
                &mut reader,
                &mut handler,
                &bytes,
                settings,
                started,
            ),
        };
        crate::telemetry::after_command(&mut conn, handler.user.as_deref());
        if !flow {
            break;
        }
    }
    handler.end();
}

/// Answer a command that could not be read whole.
fn refuse(conn: &mut Connection, tag: Option<String>, text: String) -> bool {
    let r = match tag {
        Some(tag) => Response::tagged(&tag, Status::Bad, text),
        None => Response::untagged(Status::Bad, text),
    };
    send(conn, &r).is_ok()
}

/// Parse and run one command; false when the session is over.
fn command(
    conn: &mut Connection,
    reader: &mut FrameReader,
    handler: &mut Handler,
    bytes: &[u8],
    settings: &Settings,
    started: Instant,
) -> bool {
    let (tag, cmd) = match parse_command(bytes) {
        Ok(x) => x,
        Err(ParseError::BadTag) => {
            return send(conn, &Response::untagged(Status::Bad, "Invalid tag")).is_ok();
        }
        Err(ParseError::UnknownCommand { tag, name }) => {
            let r = Response::tagged(&tag, Status::Bad, format!("command '{name}' unknown"));
            return send(conn, &r).is_ok();
        }
        Err(ParseError::Syntax { tag, message }) => {
            return send(conn, &Response::tagged(&tag, Status::Bad, message)).is_ok();
        }
    };
    let done = if matches!(cmd, crate::protocol::Command::Authenticate { .. }) {
        // The exchange comes first; untagged data is sent after it.
        let mut collected: Vec<Response> = Vec::new();
        let logged_in = handler.user.is_some();
        let mut ch = ConnChallenger {
            conn,
            reader,
            settings,
            started,
            logged_in,
        };
        let done = handler.dispatch_with(cmd, &mut collected, &mut ch);
        for r in &collected {
            conn.queue_with(|out| writer::encode(r, out));
        }
        done
    } else {
        let mut out = ConnOutput { conn, error: None };
        let done = handler.dispatch(cmd, &mut out);
        if let Some(e) = out.error {
            crate::log_debug!("write failed: {e}");
            return false;
        }
        done
    };
    let r = Response::Tagged {
        tag,
        status: done.status,
        code: done.code,
        text: done.text,
    };
    send(conn, &r).is_ok() && done.flow == Flow::Continue
}
