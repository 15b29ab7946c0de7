//! The proxy-IMAP client: how imspd acts on the IMAP servers it manages.
//!
//! A connection is made with a connect timeout and socket read/write
//! timeouts (`imsp.proxy.timeout`, seconds), so a dead or stuck server gives
//! an error quickly. STARTTLS is used when the server offers it
//! (`imsp.proxy.tls`: `auto`, `require` or `off`; `imsp.proxy.tls.verify -`
//! accepts self-signed test certificates). It logs in as the user with the
//! user's LOGIN password, or as the proxy identity (`imsp.proxy.user`,
//! `imsp.proxy.password`) with SASL PLAIN and the user as authorization
//! identity.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use imap::types::{AclModifyMode, AclRights};
use imap::{Client, Connection, Session};
use rustls_connector::RustlsConnector;
use rustls_connector::rustls;

use crate::store::options::OptionTable;

/// Something went wrong talking to an IMAP server; the text says what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError(pub String);

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(server: &str, what: &str, e: impl fmt::Display) -> ProxyError {
    let e = e.to_string();
    let e = e.trim();
    ProxyError(format!("IMAP server {server}: {what} failed: {e}"))
}

/// One entry of `imsp.imap.servers`: `host`, `host:port`, `[v6]:port`,
/// each with an optional `/implementation` suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The name shown in server lists: the entry without its suffix.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub implementation: Option<String>,
}

impl ServerSpec {
    pub fn parse(entry: &str) -> Option<ServerSpec> {
        let (name, implementation) = match entry.split_once('/') {
            Some((n, i)) => (n, Some(i.to_string())),
            None => (entry, None),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (host, port) = if let Some(rest) = name.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => 143,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match name.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (name.to_string(), 143),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(ServerSpec {
            name: name.to_string(),
            host,
            port,
            implementation,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when the server offers it.
    Auto,
    /// STARTTLS or fail.
    Require,
    /// Plain text.
    Off,
}

/// How to reach the IMAP servers, from the global options.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub servers: Vec<ServerSpec>,
    pub tls: TlsMode,
    pub verify: bool,
    pub timeout: Duration,
    pub proxy_user: Option<String>,
    pub proxy_password: Option<String>,
    /// `imsp.proxy.login proxy`: use the proxy identity even when the
    /// user's password is known.
    pub always_proxy: bool,
}

impl ProxyConfig {
    pub fn from_options(o: &OptionTable) -> ProxyConfig {
        let text = |n: &str| {
            o.value(n)
                .map(|v| String::from_utf8_lossy(&v).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let servers = o
            .list("imsp.imap.servers")
            .iter()
            .filter_map(|s| {
                let spec = ServerSpec::parse(s);
                if spec.is_none() {
                    crate::log_warn!("imsp.imap.servers: cannot use {s:?}");
                }
                spec
            })
            .collect();
        let tls = match text("imsp.proxy.tls").as_deref() {
            Some("require") => TlsMode::Require,
            Some("off") => TlsMode::Off,
            _ => TlsMode::Auto,
        };
        ProxyConfig {
            servers,
            tls,
            verify: o.flag("imsp.proxy.tls.verify").unwrap_or(true),
            timeout: Duration::from_secs(
                o.number("imsp.proxy.timeout").unwrap_or(10).clamp(1, 600) as u64,
            ),
            proxy_user: text("imsp.proxy.user"),
            proxy_password: text("imsp.proxy.password"),
            always_proxy: text("imsp.proxy.login").as_deref() == Some("proxy"),
        }
    }

    /// The configured server shown as `name`.
    pub fn server(&self, name: &str) -> Option<&ServerSpec> {
        self.servers
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Credentials to act as `user`.
    pub fn credentials(&self, user: &str, password: Option<&[u8]>) -> Option<Credentials> {
        match password {
            Some(pw) if !self.always_proxy && !pw.is_empty() => Some(Credentials::Password {
                user: user.to_string(),
                password: String::from_utf8_lossy(pw).into_owned(),
            }),
            _ => self.proxy_as(Some(user)),
        }
    }

    /// The proxy identity, acting as `authz` (or as itself).
    pub fn proxy_as(&self, authz: Option<&str>) -> Option<Credentials> {
        Some(Credentials::Proxy {
            user: self.proxy_user.clone()?,
            password: self.proxy_password.clone()?,
            authz: authz.map(str::to_string),
        })
    }
}

#[derive(Debug, Clone)]
pub enum Credentials {
    /// LOGIN as the user.
    Password { user: String, password: String },
    /// AUTHENTICATE PLAIN as the proxy identity, authorized as `authz`.
    Proxy {
        user: String,
        password: String,
        authz: Option<String>,
    },
}

struct Plain(Vec<u8>);

impl imap::Authenticator for Plain {
    type Response = Vec<u8>;
    fn process(&self, _challenge: &[u8]) -> Vec<u8> {
        self.0.clone()
    }
}

/// Accepts any certificate (`imsp.proxy.tls.verify -`), still checking
/// the handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector(verify: bool) -> Result<RustlsConnector, String> {
    if verify {
        return RustlsConnector::new_with_native_certs().map_err(|e| e.to_string());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(config.into())
}

/// One response line (CRLF removed), read octet by octet so that nothing
/// past it is consumed before a TLS handshake.
fn read_line(tcp: &mut TcpStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 * 1024 {
        match tcp.read(&mut b) {
            Ok(0) => return Err("connection closed".into()),
            Ok(_) if b[0] == b'\n' => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("response line too long".into())
}

/// Send a tagged command before login; its lines, up to the tagged OK.
fn command(tcp: &mut TcpStream, cmd: &str) -> Result<Vec<String>, String> {
    tcp.write_all(format!("{cmd}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let tag = cmd.split(' ').next().unwrap_or("");
    let mut lines = Vec::new();
    loop {
        let l = read_line(tcp)?;
        if let Some(rest) = l.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
            return if rest.starts_with("OK") {
                Ok(lines)
            } else {
                Err(rest.to_string())
            };
        }
        lines.push(l);
    }
}

/// A logged-in connection to one IMAP server.
pub struct ImapConn {
    session: Session<Connection>,
    /// The server's name, for messages.
    pub server: String,
}

/// Connect to `spec` and log in.
pub fn connect(
    cfg: &ProxyConfig,
    spec: &ServerSpec,
    cred: &Credentials,
) -> Result<ImapConn, ProxyError> {
    let name = &spec.name;
    let addrs: Vec<_> = (spec.host.as_str(), spec.port)
        .to_socket_addrs()
        .map_err(|e| err(name, "name lookup", e))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, cfg.timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match tcp {
        Some(t) => t,
        None => {
            return Err(err(
                name,
                "connect",
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "no address".into()),
            ));
        }
    };
    tcp.set_read_timeout(Some(cfg.timeout))
        .and_then(|_| tcp.set_write_timeout(Some(cfg.timeout)))
        .map_err(|e| err(name, "connect", e))?;
    let _ = tcp.set_nodelay(true);
    let mut tcp = tcp;
    let greeting = read_line(&mut tcp).map_err(|e| err(name, "greeting", e))?;
    if !greeting.starts_with("* OK") {
        return Err(err(name, "greeting", greeting));
    }
    let starttls = cfg.tls != TlsMode::Off && {
        let lines = command(&mut tcp, "C0 CAPABILITY").map_err(|e| err(name, "CAPABILITY", e))?;
        lines.iter().any(|l| {
            l.starts_with("* CAPABILITY")
                && l.split_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("STARTTLS"))
        })
    };
    let stream: Connection = if starttls {
        command(&mut tcp, "C1 STARTTLS").map_err(|e| err(name, "STARTTLS", e))?;
        let connector = tls_connector(cfg.verify).map_err(|e| err(name, "TLS setup", e))?;
        Box::new(
            connector
                .connect(&spec.host, tcp)
                .map_err(|e| err(name, "TLS handshake", e))?,
        )
    } else if cfg.tls == TlsMode::Require {
        return Err(ProxyError(format!(
            "IMAP server {name} does not offer STARTTLS, and imsp.proxy.tls requires it"
        )));
    } else {
        Box::new(tcp)
    };
    let mut client = Client::new(stream);
    client.greeting_read = true;
    let session = match cred {
        Credentials::Password { user, password } => client
            .login(user, password)
            .map_err(|(e, _)| err(name, &format!("LOGIN as {user}"), e))?,
        Credentials::Proxy {
            user,
            password,
            authz,
        } => {
            let resp = format!("{}\0{user}\0{password}", authz.as_deref().unwrap_or(""));
            let who = match authz {
                Some(a) => format!("AUTHENTICATE PLAIN as {user} for {a}"),
                None => format!("AUTHENTICATE PLAIN as {user}"),
            };
            client
                .authenticate("PLAIN", &Plain(resp.into_bytes()))
                .map_err(|(e, _)| err(name, &who, e))?
        }
    };
    Ok(ImapConn {
        session,
        server: name.clone(),
    })
}

impl ImapConn {
    /// Every selectable mailbox (`LIST "" *`), INBOX left out: it is the
    /// proxy login's own, not a name of the shared tree.
    pub fn list_all(&mut self) -> Result<Vec<(String, Option<u8>)>, ProxyError> {
        let names = self
            .session
            .list(Some(""), Some("*"))
            .map_err(|e| err(&self.server, "LIST", e))?;
        Ok(names
            .iter()
            .filter(|n| {
                !n.attributes().iter().any(|a| {
                    let a = format!("{a:?}").to_ascii_lowercase();
                    a.contains("noselect") || a.contains("nonexistent")
                })
            })
            .filter(|n| !n.name().eq_ignore_ascii_case("INBOX"))
            .map(|n| {
                (
                    n.name().to_string(),
                    n.delimiter().and_then(|d| d.bytes().next()),
                )
            })
            .collect())
    }

    pub fn create(&mut self, name: &str) -> Result<(), ProxyError> {
        self.session
            .create(name)
            .map_err(|e| err(&self.server, &format!("CREATE {name}"), e))
    }

    pub fn delete(&mut self, name: &str) -> Result<(), ProxyError> {
        self.session
            .delete(name)
            .map_err(|e| err(&self.server, &format!("DELETE {name}"), e))
    }

    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), ProxyError> {
        self.session
            .rename(old, new)
            .map_err(|e| err(&self.server, &format!("RENAME {old} {new}"), e))
    }

    pub fn set_acl(&mut self, name: &str, id: &str, rights: &str) -> Result<(), ProxyError> {
        let r = AclRights::try_from(rights)
            .map_err(|e| ProxyError(format!("Invalid rights {rights:?}: {e}")))?;
        self.session
            .set_acl(name, id, &r, AclModifyMode::Replace)
            .map_err(|e| err(&self.server, &format!("SETACL {name} {id}"), e))
    }

    pub fn delete_acl(&mut self, name: &str, id: &str) -> Result<(), ProxyError> {
        self.session
            .delete_acl(name, id)
            .map_err(|e| err(&self.server, &format!("DELETEACL {name} {id}"), e))
    }

    pub fn get_acl(&mut self, name: &str) -> Result<Vec<(String, String)>, ProxyError> {
        let r = self
            .session
            .get_acl(name)
            .map_err(|e| err(&self.server, &format!("GETACL {name}"), e))?;
        Ok(r.parsed()
            .acls()
            .iter()
            .map(|e| (e.identifier.to_string(), e.rights.to_string()))
            .collect())
    }

    pub fn my_rights(&mut self, name: &str) -> Result<String, ProxyError> {
        let r = self
            .session
            .my_rights(name)
            .map_err(|e| err(&self.server, &format!("MYRIGHTS {name}"), e))?;
        Ok(r.parsed().rights().to_string())
    }

    /// Copy every message of `name` here to `name` on `to` (which must
    /// exist there), flags and internal dates kept. Returns how many.
    pub fn copy_messages(&mut self, name: &str, to: &mut ImapConn) -> Result<usize, ProxyError> {
        let mb = self
            .session
            .examine(name)
            .map_err(|e| err(&self.server, &format!("EXAMINE {name}"), e))?;
        let total = mb.exists;
        let mut done = 0usize;
        let mut start = 1u32;
        while start <= total {
            let end = (start + 99).min(total);
            let fetched = self
                .session
                .fetch(format!("{start}:{end}"), "(FLAGS INTERNALDATE BODY.PEEK[])")
                .map_err(|e| err(&self.server, &format!("FETCH from {name}"), e))?;
            // A message the server gives no body for is not copied as an
            // empty one: the copy fails (and the caller undoes it).
            let msgs: Vec<_> = fetched
                .iter()
                .map(|f| {
                    let body = f.body().ok_or_else(|| {
                        ProxyError(format!(
                            "IMAP server {}: FETCH from {name} gave no body for message {}",
                            self.server, f.message
                        ))
                    })?;
                    Ok((
                        body.to_vec(),
                        f.flags()
                            .iter()
                            .filter(|fl| **fl != imap::types::Flag::Recent)
                            .map(|fl| fl.clone().into_owned())
                            .collect::<Vec<_>>(),
                        f.internal_date(),
                    ))
                })
                .collect::<Result<_, ProxyError>>()?;
            drop(fetched);
            if msgs.len() as u32 != end - start + 1 {
                return Err(ProxyError(format!(
                    "IMAP server {}: FETCH {start}:{end} from {name} gave {} messages",
                    self.server,
                    msgs.len()
                )));
            }
            for (body, flags, date) in msgs {
                let mut cmd = to.session.append(name, &body);
                cmd.flags(flags);
                if let Some(d) = date {
                    cmd.internal_date(d);
                }
                cmd.finish()
                    .map_err(|e| err(&to.server, &format!("APPEND to {name}"), e))?;
                done += 1;
            }
            start = end + 1;
        }
        let _ = self.session.close();
        Ok(done)
    }

    /// Copy every message of `from` into `to` (both here). Returns the
    /// UIDs copied, as a set for [`ImapConn::remove_messages`], or `None`
    /// when `from` is empty. `from` stays selected.
    pub fn copy_within(&mut self, from: &str, to: &str) -> Result<Option<String>, ProxyError> {
        self.session
            .select(from)
            .map_err(|e| err(&self.server, &format!("SELECT {from}"), e))?;
        let mut uids: Vec<u32> = self
            .session
            .uid_search("ALL")
            .map_err(|e| err(&self.server, &format!("UID SEARCH in {from}"), e))?
            .into_iter()
            .collect();
        if uids.is_empty() {
            return Ok(None);
        }
        uids.sort_unstable();
        let set = uid_set(&uids);
        self.session
            .uid_copy(&set, to)
            .map_err(|e| err(&self.server, &format!("UID COPY {from} to {to}"), e))?;
        Ok(Some(set))
    }

    /// Expunge the messages `set` (UIDs) of the selected mailbox.
    pub fn remove_messages(&mut self, set: &str) -> Result<(), ProxyError> {
        self.session
            .uid_store(set, "+FLAGS.SILENT (\\Deleted)")
            .map_err(|e| err(&self.server, "UID STORE \\Deleted", e))?;
        self.session
            .uid_expunge(set)
            .map_err(|e| err(&self.server, "UID EXPUNGE", e))?;
        Ok(())
    }

    pub fn logout(mut self) {
        let _ = self.session.logout();
    }
}

/// `1:3,7,9:10` for sorted UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            uids[i].to_string()
        } else {
            format!("{}:{}", uids[i], uids[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod uid_set_tests {
    #[test]
    fn ranges() {
        assert_eq!(super::uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(super::uid_set(&[4]), "4");
    }
}
