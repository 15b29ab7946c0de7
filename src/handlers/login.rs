//! LOGIN, against the password backends of the auth module; what a
//! successful login (LOGIN or AUTHENTICATE) sets up; the administrators'
//! second LOGIN as another user; and the slowing down of clients that keep
//! failing.

use std::time::Duration;

use super::{Done, Handler, Output};
use crate::auth::Verdict;
use crate::protocol::{Command, Response};
use crate::store::names;

/// The one answer to a wrong user or a wrong password.
/// The one answer to a wrong user or a wrong password (1.8's words).
pub(super) const LOGIN_FAILED: &str = "Login incorrect";

/// Administration levels (implementation notes, ADMINISTRATION), each
/// including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminLevel {
    None,
    /// `imsp.admin.subs`: may view other users' subscriptions and mailboxes.
    Subs,
    /// `imsp.admin.bboards`: administers the mailbox tree.
    Bboards,
    /// `imsp.admin.all`: full access.
    All,
}

/// Commands that change data, refused in a view-only session.
pub(super) fn changes_data(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Set { .. }
            | Command::Unset { .. }
            | Command::Lock(_)
            | Command::Unlock(_)
            | Command::CreateAddressBook { .. }
            | Command::DeleteAddressBook { .. }
            | Command::RenameAddressBook { .. }
            | Command::StoreAddress { .. }
            | Command::DeleteAddress { .. }
            | Command::SetAcl { .. }
            | Command::DeleteAcl { .. }
            | Command::Subscribe { .. }
            | Command::Unsubscribe { .. }
            | Command::Create { .. }
            | Command::Delete { .. }
            | Command::Rename { .. }
            | Command::Replace { .. }
            | Command::Move { .. }
            | Command::Seen { .. }
    )
}

/// Defaults of the failed-login options.
const FAILURE_DELAY_MS: i64 = 1000;
const FAILURE_MAX: i64 = 5;
/// The longest pause after a failure.
const MAX_DELAY: Duration = Duration::from_secs(60);

impl Handler<'_> {
    /// The administration level of `user`.
    pub(crate) fn admin_level(&self, user: &str) -> AdminLevel {
        if self.listed_in("imsp.admin.all", user) {
            AdminLevel::All
        } else if self.listed_in("imsp.admin.bboards", user) {
            AdminLevel::Bboards
        } else if self.listed_in("imsp.admin.subs", user) {
            AdminLevel::Subs
        } else {
            AdminLevel::None
        }
    }

    pub(super) fn login(&mut self, user: &[u8], password: &[u8], out: &mut dyn Output) -> Done {
        if self.user.is_some() {
            return self.login_as(user, password);
        }
        let shown = String::from_utf8_lossy(user).into_owned();
        let Ok(user) = names::check_user(user) else {
            return self.login_failed(&format!("invalid name {shown:?}"), out);
        };
        match self.auth.check(self.global(), &user, password) {
            Verdict::Accepted => {}
            Verdict::Rejected => return self.login_failed(&user, out),
        }
        self.logged_in(user, Some(password.to_vec()))
    }

    /// A failed login: logged with the client's address; from the second
    /// failure on the session pauses (`imsp.login.failures.delay`
    /// milliseconds, doubling each time); at `imsp.login.failures.max`
    /// failures it is closed. The pause is in this session's own process.
    pub(super) fn login_failed(&mut self, who: &str, out: &mut dyn Output) -> Done {
        self.login_failures += 1;
        let n = self.login_failures;
        crate::log_warn!(
            "failed login for {who} from {} ({n} in this session)",
            self.peer
        );
        let max = self
            .global()
            .number("imsp.login.failures.max")
            .unwrap_or(FAILURE_MAX);
        if max > 0 && i64::from(n) >= max {
            crate::log_warn!("closing session from {} after {n} failed logins", self.peer);
            out.send(Response::bye(format!(
                "Too many failed logins ({n}), closing connection"
            )));
            return Done::no(LOGIN_FAILED).closing();
        }
        let base = self
            .global()
            .number("imsp.login.failures.delay")
            .unwrap_or(FAILURE_DELAY_MS)
            .max(0) as u64;
        if n >= 2 && base > 0 {
            let factor = 1u64 << (n - 2).min(16);
            std::thread::sleep(Duration::from_millis(base.saturating_mul(factor)).min(MAX_DELAY));
        }
        Done::no(LOGIN_FAILED)
    }

    /// `user` proved who they are: start acting in their namespace (made
    /// now if `imsp.create.new.users` allows).
    pub(super) fn logged_in(&mut self, user: String, password: Option<Vec<u8>>) -> Done {
        if !self.store.user_exists(&user) {
            if !self.global().flag("imsp.create.new.users").unwrap_or(false) {
                crate::log_warn!(
                    "login refused for {user} from {}: no user directory",
                    self.peer
                );
                return Done::no(format!(
                    "Login failed: {user} has no IMSP account here and new users are not created"
                ));
            }
            if let Err(e) = self.store.create_user(&user) {
                return e.into();
            }
            crate::log_admin!("created user directory for {user}");
        }
        self.store.sweep(Some(&user));
        crate::log_login!("login: {user} from {}", self.peer);
        let text = format!("User `{user}' Logged in");
        self.login_user = Some(user.clone());
        self.admin.set(None);
        self.password = password;
        self.user = Some(user);
        self.login_failures = 0;
        Done::ok(text)
    }

    /// May `who` act as `target`? `Ok(view_only)` or the refusal. A full
    /// administrator may act as anyone, with full rights; an
    /// `imsp.admin.bboards` or `imsp.admin.subs` administrator only views,
    /// and never as a user at a higher administration level than their
    /// own. `target` must have an IMSP account. Nothing changes here: the
    /// switch itself is [`Handler::act_as`], which cannot fail.
    pub(super) fn may_act_as(&self, who: &str, target: &str) -> Result<bool, Done> {
        if who == target {
            return Ok(false);
        }
        let mine = self.admin_level(who);
        let theirs = self.admin_level(target);
        let refuse = |why: &str| {
            crate::log_warn!("{who} from {} tried to act as {target}: {why}", self.peer);
            Err(Done::no(format!(
                "Permission denied: {who} may not act as {target}"
            )))
        };
        let view_only = match mine {
            AdminLevel::None => {
                crate::log_warn!(
                    "{who} from {} tried to act as {target}: not an administrator",
                    self.peer
                );
                return Err(Done::no(format!(
                    "Permission denied: {who} may not act as another user"
                )));
            }
            AdminLevel::All => false,
            AdminLevel::Bboards | AdminLevel::Subs if theirs > mine => {
                return refuse("a higher administration level than theirs");
            }
            AdminLevel::Bboards | AdminLevel::Subs => true,
        };
        if !self.store.user_exists(target) {
            return Err(Done::no(format!(
                "Login failed: {target} has no IMSP account here"
            )));
        }
        Ok(view_only)
    }

    /// Switch the session to `target`'s namespace on behalf of `who`, once
    /// [`Handler::may_act_as`] allowed it. The session's rights stay those
    /// of who logged in (`login_user`).
    pub(super) fn act_as(&mut self, who: &str, target: String, view_only: bool) -> Done {
        if who != target {
            crate::log_admin!(
                "{who} from {} acts as {target}{}",
                self.peer,
                if view_only { " (view only)" } else { "" }
            );
        }
        // 1.8's words for an administrator's switch.
        let text = if who != target {
            format!("Administrator switch from user `{who}' to user `{target}' successful.")
        } else {
            format!("User `{target}' Logged in")
        };
        self.user = Some(target);
        self.view_only = view_only;
        Done::ok(text)
    }

    /// The second LOGIN of a session: an administrator, with an empty
    /// password, takes on another user's namespace.
    fn login_as(&mut self, target: &[u8], password: &[u8]) -> Done {
        if !password.is_empty() {
            return Done::bad("Already logged in");
        }
        let who = self
            .login_user
            .clone()
            .expect("a logged-in session has a login user");
        let Ok(target) = names::check_user(target) else {
            return Done::no(format!(
                "Login failed: invalid user name {:?}",
                String::from_utf8_lossy(target)
            ));
        };
        match self.may_act_as(&who, &target) {
            Ok(view_only) => self.act_as(&who, target, view_only),
            Err(refused) => refused,
        }
    }
}
