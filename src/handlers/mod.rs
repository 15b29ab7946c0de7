//! Command handlers: typed command in, untagged data out through
//! [`Output`], and a [`Done`] that becomes the tagged response. Handlers
//! never see the connection; they reach data only through the store.

mod acl;
mod addressbook;
mod authenticate;
mod basic;
mod locks;
mod login;
mod mailboxes;
mod options;

use std::collections::BTreeSet;

use crate::auth::Auth;
use crate::config::Settings;
use crate::protocol::{AclKind, Command, MailboxListKind, Response, Status};
use crate::store::alock::Holder;
use crate::store::options::OptionTable;
use crate::store::{Store, StoreError};

/// Where handlers send untagged responses.
pub trait Output {
    fn send(&mut self, r: Response);
}

/// Collects responses in memory.
impl Output for Vec<Response> {
    fn send(&mut self, r: Response) {
        self.push(r);
    }
}

/// Why a SASL challenge got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    /// The client answered `*`.
    Cancelled,
    /// The answer was not base64, or too long: the reason.
    Invalid(String),
    /// The connection is gone (closed, idle, write failed).
    Closed,
}

/// How a handler runs a SASL exchange without seeing the connection: the
/// session sends `+ <base64 of data>` and returns the client's decoded
/// answer line.
pub trait Challenger {
    fn challenge(&mut self, data: &[u8]) -> Result<Vec<u8>, ChallengeError>;
}

/// For callers with no client to ask: every challenge is cancelled.
pub struct NoChallenges;

impl Challenger for NoChallenges {
    fn challenge(&mut self, _data: &[u8]) -> Result<Vec<u8>, ChallengeError> {
        Err(ChallengeError::Cancelled)
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
        // Not format!: this runs on every command that succeeds.
        Done::ok([cmd, " completed"].concat())
    }
}

/// A store failure as the client sees it: what went wrong in words, with
/// the details (paths, errno) left to the log.
impl From<StoreError> for Done {
    fn from(e: StoreError) -> Done {
        match e {
            StoreError::Invalid(m) => Done::no(m),
            StoreError::OverQuota { usage_kb, quota_kb } => Done::no(format!(
                "Over quota: the change would use more than {quota_kb} KB ({usage_kb} KB in use)"
            )),
            StoreError::Io { .. } => {
                crate::log_error!("database error: {e}");
                Done::no("Server database error; the change was not made")
            }
        }
    }
}

/// The per-session state the handlers share.
pub struct Handler<'a> {
    pub(crate) settings: &'a Settings,
    /// The client's address, `ip:port`.
    pub(crate) peer: String,
    pub(crate) store: Store,
    pub(crate) auth: Auth,
    /// The logged-in user, whose namespace the session acts in.
    pub(crate) user: Option<String>,
    /// Who authenticated; differs from `user` after a full administrator's
    /// second LOGIN as another user.
    pub(crate) login_user: Option<String>,
    /// Whether `login_user` is a full administrator, once asked (until the
    /// global options or the login change).
    admin: std::cell::Cell<Option<bool>>,
    /// The LOGIN password, kept for the proxy-IMAP client.
    pub(crate) password: Option<Vec<u8>>,
    /// The global options as of the current command.
    pub(crate) global: Option<OptionTable>,
    /// This session as a lock holder, once it has a user.
    pub(crate) holder: Option<Holder>,
    /// Users whose `alock` files hold locks of this session.
    pub(crate) lock_owners: BTreeSet<String>,
    /// Whether the session may only look, not change: set when an
    /// `imsp.admin.subs` / `imsp.admin.bboards` administrator acts as
    /// another user (see [`login::AdminLevel`]).
    pub(crate) view_only: bool,
    /// Failed LOGIN / AUTHENTICATE attempts in this session.
    pub(crate) login_failures: u32,
}

impl<'a> Handler<'a> {
    /// A session's handler over `store` (the listener hands over its own,
    /// with the global options already parsed).
    pub fn new(settings: &'a Settings, peer: &str, store: Store) -> Handler<'a> {
        Handler {
            settings,
            peer: peer.to_string(),
            store,
            auth: Auth::new(&settings.data_dir),
            user: None,
            login_user: None,
            admin: None.into(),
            password: None,
            global: None,
            holder: None,
            lock_owners: BTreeSet::new(),
            view_only: false,
            login_failures: 0,
        }
    }

    /// The client's host, without the port.
    pub(crate) fn peer_host(&self) -> &str {
        match self.peer.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => &self.peer,
        }
    }

    /// See edits of the global options file: every command starts from the
    /// current file (re-parsed only when it changed on disk).
    fn refresh(&mut self) -> Result<(), StoreError> {
        let g = self.store.global_options()?;
        if self.global.as_ref().is_some_and(|old| old.same_as(&g)) {
            // Unchanged since the last command: so is what it sets.
            return Ok(());
        }
        self.admin.set(None);
        crate::log::set_level(g.log_level());
        self.store
            .set_fsync(g.flag("imsp.db.fsync").unwrap_or(true));
        self.store
            .set_journal(g.flag("imsp.db.journal").unwrap_or(false));
        self.global = Some(g);
        Ok(())
    }

    pub(crate) fn global(&self) -> &OptionTable {
        self.global.as_ref().expect("refreshed before each command")
    }

    /// Whether `user` is listed in the admin option `level`
    /// (`imsp.admin.all`, `imsp.admin.bboards`, `imsp.admin.subs`).
    pub(crate) fn listed_in(&self, level: &str, user: &str) -> bool {
        self.global().list(level).iter().any(|u| u == user)
    }

    /// Who logged in is a full administrator. Rights come from the
    /// authenticated identity (`login_user`), never from the user an
    /// administrator acts as.
    pub(crate) fn is_admin(&self) -> bool {
        if let Some(known) = self.admin.get() {
            return known;
        }
        let admin = self
            .login_user
            .as_deref()
            .is_some_and(|u| self.listed_in("imsp.admin.all", u));
        self.admin.set(Some(admin));
        admin
    }

    /// Run one command that needs no SASL exchange with the client.
    pub fn dispatch(&mut self, cmd: Command, out: &mut dyn Output) -> Done {
        self.dispatch_with(cmd, out, &mut NoChallenges)
    }

    /// Run one command; AUTHENTICATE talks to the client through `ch`.
    pub fn dispatch_with(
        &mut self,
        cmd: Command,
        out: &mut dyn Output,
        ch: &mut dyn Challenger,
    ) -> Done {
        if self.view_only && login::changes_data(&cmd) {
            return Done::no(format!(
                "Permission denied: {} as another user is view-only at your administration level",
                cmd.name().to_uppercase()
            ));
        }
        if self.user.is_none() && !cmd.allowed_before_login() {
            return Done::no(format!(
                "User must LOGIN to execute command '{}'",
                cmd.name()
            ));
        }
        self.store.files.new_command();
        if let Err(e) = self.refresh() {
            return e.into();
        }
        match cmd {
            Command::Noop => Done::completed("noop"),
            Command::Capability => self.capability(out),
            Command::Logout => self.logout(out),
            Command::Login { user, password } => self.login(&user, &password, out),
            Command::Authenticate {
                mechanism,
                initial_response,
            } => self.authenticate(&mechanism, initial_response, out, ch),
            Command::Get { pattern } => self.get(&pattern, out),
            Command::Set { option, value } => self.set(&option, Some(&value)),
            Command::Unset { option } => self.set(&option, None),
            Command::Lock(target) => self.lock(target, out),
            Command::Unlock(target) => self.unlock(target),
            Command::AddressBook { pattern } => self.addressbook(&pattern, out),
            Command::CreateAddressBook { name } => self.create_book(&name),
            Command::DeleteAddressBook { name } => self.delete_book(&name),
            Command::RenameAddressBook { old, new } => self.rename_book(&old, &new),
            Command::SearchAddress { book, criteria } => self.search_address(&book, &criteria, out),
            Command::FetchAddress { book, names } => self.fetch_address(&book, &names, out),
            Command::StoreAddress { book, name, fields } => {
                self.store_address(&book, &name, &fields, out)
            }
            Command::DeleteAddress { book, name } => self.delete_address(&book, &name),
            Command::SetAcl {
                kind: AclKind::AddressBook,
                object,
                identifier,
                rights,
            } => self.book_setacl(&object, &identifier, Some(&rights)),
            Command::DeleteAcl {
                kind: AclKind::AddressBook,
                object,
                identifier,
            } => self.book_setacl(&object, &identifier, None),
            Command::GetAcl {
                kind: AclKind::AddressBook,
                object,
            } => self.book_getacl(&object, out),
            Command::MyRights {
                kind: AclKind::AddressBook,
                object,
            } => self.book_myrights(&object, out),
            // Mailboxes (handlers/mailboxes.rs).
            Command::List { reference, pattern } => {
                self.mailbox_list(MailboxListKind::List, &reference, &pattern, out)
            }
            Command::Lsub { reference, pattern } => {
                self.mailbox_list(MailboxListKind::Lsub, &reference, &pattern, out)
            }
            Command::Unseen { reference, pattern } => {
                self.mailbox_list(MailboxListKind::Unseen, &reference, &pattern, out)
            }
            Command::Subscribe { mailbox } => self.subscribe(&mailbox, true),
            Command::Unsubscribe { mailbox } => self.subscribe(&mailbox, false),
            Command::Last { mailbox, uid } => self.last(&mailbox, &uid),
            Command::Seen { mailbox, uid, user } => self.seen(&mailbox, &uid, &user),
            Command::Create { mailbox, servers } => self.create(&mailbox, &servers),
            Command::Delete { mailbox, host } => self.delete(&mailbox, host.as_deref()),
            Command::Rename { old, new } => self.rename(&old, &new),
            Command::Replace { old, new } => self.replace(&old, &new),
            Command::Move {
                mailbox,
                host,
                servers,
            } => self.move_mailbox(&mailbox, &host, &servers),
            Command::SetAcl {
                kind: AclKind::Mailbox,
                object,
                identifier,
                rights,
            } => self.set_mailbox_acl(&object, &identifier, Some(&rights)),
            Command::DeleteAcl {
                kind: AclKind::Mailbox,
                object,
                identifier,
            } => self.set_mailbox_acl(&object, &identifier, None),
            Command::GetAcl {
                kind: AclKind::Mailbox,
                object,
            } => self.get_mailbox_acl(&object, false, out),
            Command::MyRights {
                kind: AclKind::Mailbox,
                object,
            } => self.get_mailbox_acl(&object, true, out),
        }
    }

    /// The session is over, however it ended: release its locks.
    pub fn end(&mut self) {
        self.release_locks();
        self.store.files.fold_appended();
        if let Some(u) = &self.login_user {
            crate::log_login!("logout: {u} from {}", self.peer);
        }
        crate::log_debug!("{}: session ended", self.peer);
    }
}
