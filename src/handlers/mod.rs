//! Command handlers: typed command in, untagged data out through
//! [`Output`], and a [`Done`] that becomes the tagged response. Handlers
//! never see the connection; they reach data only through the store.

mod basic;

use crate::config::Settings;
use crate::protocol::{Command, Response, Status};

/// Where handlers send untagged responses.
pub trait Output {
    fn send(&mut self, r: Response);
}

/// Collects responses in memory (tests, and handlers that must decide
/// before anything is sent).
impl Output for Vec<Response> {
    fn send(&mut self, r: Response) {
        self.push(r);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// The outcome of a command: the tagged response's status, optional
/// response code, text, and whether the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub status: Status,
    pub code: Option<String>,
    pub text: String,
    pub flow: Flow,
}

impl Done {
    pub fn ok(text: impl Into<String>) -> Done {
        Done {
            status: Status::Ok,
            code: None,
            text: text.into(),
            flow: Flow::Continue,
        }
    }
    pub fn no(text: impl Into<String>) -> Done {
        Done {
            status: Status::No,
            ..Done::ok(text)
        }
    }
    pub fn bad(text: impl Into<String>) -> Done {
        Done {
            status: Status::Bad,
            ..Done::ok(text)
        }
    }
    pub fn with_code(mut self, code: &str) -> Done {
        self.code = Some(code.to_string());
        self
    }
    pub fn closing(mut self) -> Done {
        self.flow = Flow::Close;
        self
    }
    /// `<command> completed`, the OK text cyrus-imspd 1.8 uses.
    pub fn completed(cmd: &str) -> Done {
        Done::ok(format!("{cmd} completed"))
    }
}

/// The per-session state the handlers share.
pub struct Handler<'a> {
    #[allow(dead_code)] // the store, next, reads its data directory from here
    pub(crate) settings: &'a Settings,
    pub(crate) peer: String,
    /// The authenticated user, once logged in.
    pub(crate) user: Option<String>,
}

impl<'a> Handler<'a> {
    pub fn new(settings: &'a Settings, peer: &str) -> Handler<'a> {
        Handler {
            settings,
            peer: peer.to_string(),
            user: None,
        }
    }

    /// Run one command.
    pub fn dispatch(&mut self, cmd: Command, out: &mut dyn Output) -> Done {
        if self.user.is_none() && !cmd.allowed_before_login() {
            return Done::no(format!(
                "Please login first ({} needs a login)",
                cmd.name().to_uppercase()
            ));
        }
        match cmd {
            Command::Noop => Done::completed("noop"),
            Command::Capability => self.capability(out),
            Command::Logout => self.logout(out),
            other => Done::no(format!(
                "{} is not available on this server",
                other.name().to_uppercase()
            )),
        }
    }

    /// The session is over, however it ended.
    pub fn end(&mut self) {
        crate::log_debug!("{}: session ended", self.peer);
    }
}
