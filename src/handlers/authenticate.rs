//! AUTHENTICATE (RFC 3501 style, with RFC 4959 initial responses): the
//! SASL mechanisms PLAIN and LOGIN (any password backend, when
//! `imsp.sasl.allowplaintext` is on), CRAM-MD5 and SCRAM-SHA-256 (from the
//! secrets of the password file, when the `file` backend is in use). The
//! exchange goes through the session's [`Challenger`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::{ChallengeError, Challenger, Done, Handler, Output};
use crate::auth::secrets::{CramSecret, random_bytes, same};
use crate::auth::{Verdict, scram};
use crate::store::names;

/// How a mechanism's exchange ended.
enum Attempt {
    Success {
        authid: String,
        authzid: Option<String>,
        password: Option<Vec<u8>>,
    },
    /// Wrong credentials, for this user (as far as it is known).
    Failure(String),
    /// The client's messages did not follow the mechanism.
    Malformed(String),
}

/// The security strength factor of every mechanism offered: no security
/// layer, no TLS underneath.
const MECHANISM_SSF: i64 = 0;

type Exchange<'c> = dyn FnMut(&[u8]) -> Result<Vec<u8>, ChallengeError> + 'c;

fn text(raw: &[u8]) -> Option<String> {
    String::from_utf8(raw.to_vec()).ok()
}

impl Handler<'_> {
    /// The SASL mechanisms on offer now, as CAPABILITY lists them. None
    /// of them has a security layer and IMSP here has no TLS, so each has
    /// a security strength factor of 0: an `imsp.sasl.minimum_ssf` above 0
    /// offers none (the LOGIN command stays, as in 1.8), and
    /// `imsp.sasl.maximum_ssf`, a ceiling, never excludes one.
    pub(super) fn mechanisms(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.global().number("imsp.sasl.minimum_ssf").unwrap_or(0) > MECHANISM_SSF {
            return m;
        }
        if self.auth.uses_file(self.global()) {
            m.extend(["SCRAM-SHA-256", "CRAM-MD5"]);
        }
        if self
            .global()
            .flag("imsp.sasl.allowplaintext")
            .unwrap_or(false)
        {
            m.extend(["PLAIN", "LOGIN"]);
        }
        m
    }

    pub(super) fn authenticate(
        &mut self,
        mechanism: &str,
        initial: Option<Vec<u8>>,
        out: &mut dyn Output,
        ch: &mut dyn Challenger,
    ) -> Done {
        if self.user.is_some() {
            return Done::bad("Already logged in");
        }
        let offered = self.mechanisms();
        let Some(&mech) = offered.iter().find(|m| **m == mechanism) else {
            return Done::no(format!(
                "Mechanism {mechanism} is not available here (offered: {})",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(" ")
                }
            ));
        };
        // RFC 4959: `=` is an empty initial response.
        let initial = match initial {
            None => None,
            Some(r) if r == b"=" => Some(Vec::new()),
            Some(r) => match B64.decode(&r) {
                Ok(d) => Some(d),
                Err(_) => return Done::bad("Initial response is not valid base64"),
            },
        };
        let mut exchange = |data: &[u8]| ch.challenge(data);
        let attempt = match mech {
            "PLAIN" => self.sasl_plain(initial, &mut exchange),
            "LOGIN" => self.sasl_login(initial, &mut exchange),
            "CRAM-MD5" => self.sasl_cram_md5(initial, &mut exchange),
            _ => self.sasl_scram(initial, &mut exchange),
        };
        match attempt {
            Err(ChallengeError::Cancelled) => Done::bad("AUTHENTICATE cancelled by the client"),
            Err(ChallengeError::Invalid(why)) => Done::bad(format!("AUTHENTICATE failed: {why}")),
            Err(ChallengeError::Closed) => Done::bad("Connection lost").closing(),
            Ok(Attempt::Malformed(why)) => {
                crate::log_warn!("malformed {mech} exchange from {}: {why}", self.peer);
                Done::bad(format!("AUTHENTICATE failed: {why}"))
            }
            Ok(Attempt::Failure(who)) => self.login_failed(&format!("{who} ({mech})"), out),
            Ok(Attempt::Success {
                authid,
                authzid,
                password,
            }) => self.sasl_success(mech, authid, authzid, password),
        }
    }

    /// The credentials were right: log in as `authid`, then act as
    /// `authzid` if one was asked for (administrators only). All or
    /// nothing: every check is made before the session changes, so a NO
    /// leaves it logged out.
    fn sasl_success(
        &mut self,
        mech: &str,
        authid: String,
        authzid: Option<String>,
        password: Option<Vec<u8>>,
    ) -> Done {
        let target = match authzid {
            Some(z) if z != authid => match names::check_user(z.as_bytes()) {
                Ok(z) => Some(z),
                Err(_) => return Done::no(format!("Invalid authorization identity {z:?}")),
            },
            _ => None,
        };
        let view_only = match &target {
            None => false,
            Some(t) => match self.may_act_as(&authid, t) {
                Ok(v) => v,
                Err(refused) => return refused,
            },
        };
        crate::log_debug!("{authid} authenticated with {mech} from {}", self.peer);
        let done = self.logged_in(authid.clone(), password);
        match target {
            Some(t) if done.status == crate::protocol::Status::Ok => {
                self.act_as(&authid, t, view_only)
            }
            _ => done,
        }
    }

    /// A user name and password from PLAIN or LOGIN, through the backends.
    fn check_password(&self, authid: &[u8], authzid: Option<String>, password: &[u8]) -> Attempt {
        let shown = String::from_utf8_lossy(authid).into_owned();
        let Ok(user) = names::check_user(authid) else {
            return Attempt::Failure(format!("invalid name {shown:?}"));
        };
        match self.auth.check(self.global(), &user, password) {
            Verdict::Accepted => Attempt::Success {
                authid: user,
                authzid,
                password: Some(password.to_vec()),
            },
            Verdict::Rejected => Attempt::Failure(user),
        }
    }

    /// PLAIN (RFC 4616): `authzid NUL authcid NUL password`.
    fn sasl_plain(
        &self,
        initial: Option<Vec<u8>>,
        ex: &mut Exchange,
    ) -> Result<Attempt, ChallengeError> {
        let msg = match initial {
            Some(m) => m,
            None => ex(b"")?,
        };
        let parts: Vec<&[u8]> = msg.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts[..] else {
            return Ok(Attempt::Malformed(
                "PLAIN wants authzid NUL authcid NUL password".into(),
            ));
        };
        let Some(authzid) = text(authzid) else {
            return Ok(Attempt::Malformed(
                "authorization identity is not UTF-8".into(),
            ));
        };
        let authzid = Some(authzid).filter(|z| !z.is_empty());
        Ok(self.check_password(authcid, authzid, password))
    }

    /// LOGIN (draft-murchison-sasl-login): user name, then password.
    fn sasl_login(
        &self,
        initial: Option<Vec<u8>>,
        ex: &mut Exchange,
    ) -> Result<Attempt, ChallengeError> {
        let user = match initial {
            Some(u) if !u.is_empty() => u,
            _ => ex(b"Username:")?,
        };
        let password = ex(b"Password:")?;
        Ok(self.check_password(&user, None, &password))
    }

    /// CRAM-MD5 (RFC 2195): the client answers `user HMAC-MD5-hex`.
    fn sasl_cram_md5(
        &self,
        initial: Option<Vec<u8>>,
        ex: &mut Exchange,
    ) -> Result<Attempt, ChallengeError> {
        if initial.as_ref().is_some_and(|i| !i.is_empty()) {
            return Ok(Attempt::Malformed(
                "CRAM-MD5 takes no initial response".into(),
            ));
        }
        let nonce: String = random_bytes(8).iter().map(|b| format!("{b:02x}")).collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let challenge = format!("<{nonce}.{now}@{}>", self.settings.hostname);
        let answer = ex(challenge.as_bytes())?;
        let Some((user, digest)) = text(&answer).and_then(|a| {
            a.rsplit_once(' ')
                .map(|(u, d)| (u.to_string(), d.to_ascii_lowercase()))
        }) else {
            return Ok(Attempt::Malformed(
                "CRAM-MD5 wants a user name, a space and a hex digest".into(),
            ));
        };
        let Ok(user) = names::check_user(user.as_bytes()) else {
            return Ok(Attempt::Failure(format!("invalid name {user:?}")));
        };
        let secret = self
            .auth
            .file_entry(self.global(), &user)
            .and_then(|e| e.cram_md5());
        // Unknown users cost the same digest.
        let known = secret.is_some();
        let secret = secret.unwrap_or_else(|| CramSecret::new(&random_bytes(16)));
        let want = secret.respond(challenge.as_bytes());
        Ok(if same(want.as_bytes(), digest.as_bytes()) && known {
            Attempt::Success {
                authid: user,
                authzid: None,
                password: None,
            }
        } else {
            Attempt::Failure(user)
        })
    }

    /// SCRAM-SHA-256 (RFC 7677), with the stored keys of the password file.
    fn sasl_scram(
        &self,
        initial: Option<Vec<u8>>,
        ex: &mut Exchange,
    ) -> Result<Attempt, ChallengeError> {
        let path = self
            .auth
            .uses_file(self.global())
            .then(|| self.auth.password_file(self.global()));
        let decoys = crate::auth::Auth::new(&self.settings.data_dir);
        // Who the client claimed to be, for the log of a failure.
        let claimed = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let seen = claimed.clone();
        let lookup = move |user: &str| {
            if let Ok(mut s) = seen.lock() {
                *s = Some(user.to_string());
            }
            path.as_ref()
                .and_then(|p| match crate::auth::file::lookup(p, user) {
                    Ok(e) => e,
                    Err(e) => {
                        crate::log_error!("auth backend file: {e}");
                        None
                    }
                })
                .and_then(|e| e.scram_sha256())
                .unwrap_or_else(|| decoys.decoy_scram(user))
        };
        Ok(match scram::server(Box::new(lookup), initial, ex)? {
            scram::Outcome::Success { authid, authzid } => {
                match names::check_user(authid.as_bytes()) {
                    Ok(authid) => Attempt::Success {
                        authid,
                        authzid,
                        password: None,
                    },
                    Err(_) => Attempt::Failure(format!("invalid name {authid:?}")),
                }
            }
            scram::Outcome::Failure(why) => {
                crate::log_debug!("SCRAM-SHA-256 from {} failed: {why}", self.peer);
                let who = claimed.lock().ok().and_then(|c| c.clone());
                Attempt::Failure(who.unwrap_or_else(|| "an unnamed user".into()))
            }
        })
    }
}
