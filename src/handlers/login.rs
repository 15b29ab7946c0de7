//! LOGIN, against the password backends of the auth module.

use super::{Done, Handler};
use crate::auth::Verdict;
use crate::store::alock::Holder;
use crate::store::names;

/// The one answer to a wrong user or a wrong password.
const LOGIN_FAILED: &str = "Login failed: wrong user name or password";

impl Handler<'_> {
    pub(super) fn login(&mut self, user: &[u8], password: &[u8]) -> Done {
        if self.user.is_some() {
            return Done::bad("Already logged in");
        }
        let shown = String::from_utf8_lossy(user).into_owned();
        let Ok(user) = names::check_user(user) else {
            crate::log_warn!("failed login for invalid name {shown:?} from {}", self.peer);
            return Done::no(LOGIN_FAILED);
        };
        match self.auth.check(self.global(), &user, password) {
            Verdict::Accepted => {}
            Verdict::Rejected => {
                crate::log_warn!("failed login for {user} from {}", self.peer);
                return Done::no(LOGIN_FAILED);
            }
        }
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
        self.holder = Some(Holder::this_process(format!("{user}@{}", self.peer_host())));
        let text = format!("User `{user}' Logged in");
        self.login_user = Some(user.clone());
        self.password = Some(password.to_vec());
        self.user = Some(user);
        Done::ok(text)
    }
}
