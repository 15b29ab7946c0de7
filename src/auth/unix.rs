//! The `unix` password backend: system accounts, through PAM (service
//! `imsp` unless `imsp.auth.pam.service` says otherwise) or, where PAM is
//! not wanted (`imsp.auth.unix.method N shadow`), straight from
//! `/etc/shadow` with the crypt(3) hashes of [`super::hash`].
//!
//! Either way the daemon must be able to read the shadow data: as root, or
//! as a member of group `shadow` (for PAM, pam_unix's helper unix_chkpwd
//! then reads it even where NoNewPrivileges disables its setgid bit). A
//! failed PAM login takes a while (pam_unix's delay): that is wanted. PAM
//! successes are never cached (see [`super::cache`]): the account check
//! runs at every login.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nonstick::{AuthnFlags, ConversationAdapter, ErrorCode, Transaction, TransactionBuilder};

use super::{PasswordBackend, Verdict, hash};

/// Check passwords through PAM.
pub struct PamBackend {
    pub service: String,
}

/// Answers PAM's prompts: the user name to plain ones, the password to
/// masked ones.
struct Answers {
    user: OsString,
    password: OsString,
}

impl ConversationAdapter for Answers {
    fn prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(self.user.clone())
    }
    fn masked_prompt(&self, _request: impl AsRef<OsStr>) -> nonstick::Result<OsString> {
        Ok(self.password.clone())
    }
    fn error_msg(&self, message: impl AsRef<OsStr>) {
        crate::log_debug!("pam: {}", message.as_ref().to_string_lossy());
    }
    fn info_msg(&self, message: impl AsRef<OsStr>) {
        crate::log_debug!("pam: {}", message.as_ref().to_string_lossy());
    }
}

/// PAM results that mean "not this user with this password", as opposed
/// to a broken setup.
fn is_refusal(e: ErrorCode) -> bool {
    matches!(
        e,
        ErrorCode::AuthenticationError
            | ErrorCode::UserUnknown
            | ErrorCode::CredentialsInsufficient
            | ErrorCode::MaxTries
            | ErrorCode::PermissionDenied
            | ErrorCode::AccountExpired
            | ErrorCode::NewAuthTokRequired
            | ErrorCode::AuthTokExpired
    )
}

impl PasswordBackend for PamBackend {
    fn name(&self) -> &'static str {
        "unix"
    }

    /// Each login runs PAM's account check too: never cached.
    fn cacheable(&self) -> bool {
        false
    }

    fn check(&self, user: &str, password: &[u8]) -> Result<Verdict, String> {
        if password.is_empty() || password.contains(&0) || user.contains('\0') {
            return Ok(Verdict::Rejected);
        }
        let answers = Answers {
            user: user.into(),
            password: OsStr::from_bytes(password).to_os_string(),
        };
        let mut txn = TransactionBuilder::new_with_service(&self.service)
            .username(user)
            .build(answers.into_conversation())
            .map_err(|e| format!("pam service {}: {e}", self.service))?;
        let result = txn
            .authenticate(AuthnFlags::empty())
            .and_then(|()| txn.account_management(AuthnFlags::empty()));
        match result {
            Ok(()) => Ok(Verdict::Accepted),
            Err(e) if is_refusal(e) => {
                crate::log_debug!("pam service {} refused {user}: {e}", self.service);
                Ok(Verdict::Rejected)
            }
            Err(e) => Err(format!("pam service {}: {e}", self.service)),
        }
    }
}

/// Check passwords against a shadow file.
pub struct ShadowBackend {
    pub path: PathBuf,
}

impl PasswordBackend for ShadowBackend {
    fn name(&self) -> &'static str {
        "unix"
    }

    fn check(&self, user: &str, password: &[u8]) -> Result<Verdict, String> {
        let text =
            std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let found = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(':');
                Some((f.next()?, f.next()?))
            })
            .find(|(u, _)| *u == user)
            .map(|(_, h)| h);
        // Locked (`!...`) and password-less (`*`, empty) accounts never
        // match: their hash is not one verify() knows.
        let ok = hash::verify(password, found.unwrap_or(hash::DUMMY));
        Ok(if ok && found.is_some() && !password.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Rejected
        })
    }
}
