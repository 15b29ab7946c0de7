//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server side, with rsasl's
//! implementation answered from stored secrets: the password itself is
//! never needed. The exchange reaches the client through a `challenge`
//! function, so this module knows nothing of the protocol it runs in.

use std::io::Cursor;

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechname::Mechname;
use rsasl::prelude::{MessageSent, SASLConfig, SASLServer, SessionError, State};
use rsasl::property::{AuthId, AuthzId};
use rsasl::validate::{Validate, Validation, ValidationError};

use super::secrets::ScramSecret;

/// How a SCRAM exchange ended (when the client did not abort it).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proof was right: the authentication and authorization ids.
    Success {
        authid: String,
        authzid: Option<String>,
    },
    /// A wrong proof or a malformed message; details for the log only.
    Failure(String),
}

type Lookup = Box<dyn Fn(&str) -> ScramSecret + Send + Sync>;

/// Sends server data to the client and returns its answer.
pub type Exchange<'c, E> = dyn FnMut(&[u8]) -> Result<Vec<u8>, E> + 'c;

struct Callback {
    lookup: Lookup,
}

struct Ids;
impl Validation for Ids {
    type Value = (String, Option<String>);
}

impl SessionCallback for Callback {
    fn callback(
        &self,
        _sd: &SessionData,
        ctx: &Context,
        req: &mut Request,
    ) -> Result<(), SessionError> {
        if let Some(user) = ctx.get_ref::<AuthId>() {
            let s = (self.lookup)(user);
            req.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
                s.iterations,
                &s.salt,
                &s.stored_key,
                &s.server_key,
            ))?;
        }
        Ok(())
    }

    fn validate(
        &self,
        _sd: &SessionData,
        ctx: &Context,
        v: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        // Reached only once the client proof has been verified.
        let authid = ctx.get_ref::<AuthId>().unwrap_or("").to_string();
        let authzid = ctx
            .get_ref::<AuthzId>()
            .filter(|z| !z.is_empty())
            .map(str::to_string);
        v.with::<Ids, _>(|| Ok::<_, ValidationError>((authid, authzid)))?;
        Ok(())
    }
}

/// Run SCRAM-SHA-256 as the server. `lookup` gives the secret of a user
/// (a decoy for unknown users); `challenge` sends server data and returns
/// the client's answer, or an error that ends the exchange at once.
pub fn server<E>(
    lookup: Lookup,
    initial: Option<Vec<u8>>,
    challenge: &mut Exchange<'_, E>,
) -> Result<Outcome, E> {
    let config = match SASLConfig::builder()
        .with_defaults()
        .with_callback(Callback { lookup })
    {
        Ok(c) => c,
        Err(e) => return Ok(Outcome::Failure(format!("SASL setup: {e}"))),
    };
    let mech = Mechname::parse(b"SCRAM-SHA-256").expect("valid mechanism name");
    let mut session = match SASLServer::<Ids>::new(config).start_suggested(mech) {
        Ok(s) => s,
        Err(e) => return Ok(Outcome::Failure(format!("SASL setup: {e}"))),
    };
    // Client-first: without an initial response, ask for it.
    let mut input = match initial {
        Some(i) => i,
        None => challenge(b"")?,
    };
    loop {
        let mut out = Cursor::new(Vec::new());
        match session.step(Some(&input), &mut out) {
            Ok(State::Running) => input = challenge(out.get_ref())?,
            Ok(State::Finished(sent)) => {
                let Some((authid, authzid)) = session.validation() else {
                    return Ok(Outcome::Failure("not validated".into()));
                };
                if sent == MessageSent::Yes {
                    // The server signature goes as one more challenge; the
                    // client's (empty) answer is not looked at.
                    challenge(out.get_ref())?;
                }
                return Ok(Outcome::Success { authid, authzid });
            }
            // Not sent to the client: no "e=unknown-user" or the like.
            Err(e) => return Ok(Outcome::Failure(e.to_string())),
        }
    }
}
