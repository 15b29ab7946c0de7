//! LDAP-backed address books, as cyrus-imspd 1.8 has them: a book whose
//! ACL gives `anyone` the USER1 right (`1`) is read from an LDAP directory
//! instead of its file. This module is the directory side: the settings
//! (global options `imsp.ldap.*`), IMSP search criteria turned into an
//! LDAP filter, and the searches. It knows nothing of the protocol.
//!
//! ```text
//! imsp.ldap.host          host name, or ldap://host[:port] / ldaps://host[:port]
//! imsp.ldap.port          port when the host names none (389; 636 for ldaps)
//! imsp.ldap.searchbase    the base DN of every search
//! imsp.ldap.scope         subtree, onelevel or base
//! imsp.ldap.fullnameattr  the attribute holding an entry's full name (cn)
//! imsp.ldap.uniqueattr    an attribute unique to each entry (uid)
//! imsp.ldap.defaultfilter ANDed with every search, e.g. (objectClass=person)
//! imsp.ldap.attrmap       (field attribute field attribute ...), NULL: none
//! imsp.ldap.tls           none, starttls or ldaps (default: none, or ldaps
//!                         when the host is an ldaps:// URL)
//! imsp.ldap.tls.verify    check the server's certificate (default +)
//! imsp.ldap.binddn        bind as this DN (default: anonymous)
//! imsp.ldap.bindpw        its password (must not be empty)
//! imsp.ldap.timeout       seconds a command may spend on the directory,
//!                         connecting, binding and searching (10)
//! ```
//!
//! Searches return full names; a full name that more than one directory
//! entry carries gets the unique attribute appended, `John Anderson[uid:
//! anderson2]`, which [`Directory::fetch`] understands.
//!
//! Each command opens its own connection (as 1.8 does) in the session's
//! process; `ldap3`'s synchronous connection runs a private single-thread
//! runtime, made only then.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ldap3::{LdapConn, LdapConnSettings, ResultEntry, Scope, SearchEntry};

use crate::pattern::Pattern;
use crate::store::abook::Entry;
use crate::store::options::OptionTable;

/// Why an LDAP lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The `imsp.ldap.*` options are missing or wrong.
    #[error("LDAP is not configured properly: {0}")]
    Config(String),
    /// The directory could not be reached, did not answer in time, or
    /// refused the request.
    #[error("LDAP directory error: {0}")]
    Directory(String),
}

fn config(m: impl Into<String>) -> LdapError {
    LdapError::Config(m.into())
}

fn directory(what: &str, e: impl std::fmt::Display) -> LdapError {
    LdapError::Directory(format!("{what}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    None,
    StartTls,
    Ldaps,
}

/// The LDAP settings from the global options.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    pub tls: Tls,
    pub verify: bool,
    pub searchbase: String,
    pub scope: Scope,
    pub fullnameattr: String,
    pub uniqueattr: String,
    /// The default filter, in parentheses.
    pub defaultfilter: String,
    /// (IMSP field, LDAP attribute or none), in option order.
    pub attrmap: Vec<(String, Option<String>)>,
    pub bind: Option<(String, String)>,
    pub timeout: Duration,
}

/// An attribute description: a name or an OID, with options (`;lang-en`).
fn check_attr(option: &str, a: &str) -> Result<String, LdapError> {
    let ok = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b';' | b'.'));
    if ok {
        Ok(a.to_string())
    } else {
        Err(config(format!("{option}: '{a}' is not an attribute name")))
    }
}

fn text(g: &OptionTable, name: &str) -> Option<String> {
    g.value(name)
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
        .filter(|v| !v.is_empty())
}

fn required(g: &OptionTable, name: &str) -> Result<String, LdapError> {
    text(g, name).ok_or_else(|| config(format!("{name} is not set")))
}

impl Config {
    pub fn from_options(g: &OptionTable) -> Result<Config, LdapError> {
        let host = required(g, "imsp.ldap.host")?;
        let (scheme, rest) = match host.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r.trim_end_matches('/')),
            None => (None, host.as_str()),
        };
        let mut tls = match text(g, "imsp.ldap.tls").map(|t| t.to_ascii_lowercase()) {
            None => Tls::None,
            Some(t) if t == "none" || t == "no" || t == "-" => Tls::None,
            Some(t) if t == "starttls" => Tls::StartTls,
            Some(t) if t == "ldaps" => Tls::Ldaps,
            Some(t) => {
                return Err(config(format!(
                    "imsp.ldap.tls: '{t}' is not none, starttls or ldaps"
                )));
            }
        };
        match scheme.as_deref() {
            None | Some("ldap") => {}
            Some("ldaps") if tls == Tls::StartTls => {
                return Err(config(
                    "imsp.ldap.tls is starttls but imsp.ldap.host is an ldaps:// URL",
                ));
            }
            Some("ldaps") => tls = Tls::Ldaps,
            Some(s) => {
                return Err(config(format!(
                    "imsp.ldap.host: scheme '{s}' is not ldap or ldaps"
                )));
            }
        }
        if rest.is_empty() || rest.contains(['/', '?', '@', ' ']) {
            return Err(config(format!("imsp.ldap.host: '{host}' is not a host")));
        }
        // host, host:port, [v6], [v6]:port, or a bare IPv6 address.
        let has_port = if rest.starts_with('[') {
            rest.contains("]:")
        } else {
            rest.matches(':').count() == 1
        };
        let hostpart = if !rest.starts_with('[') && rest.matches(':').count() > 1 {
            format!("[{rest}]")
        } else {
            rest.to_string()
        };
        let authority = if has_port {
            hostpart
        } else {
            let port = match text(g, "imsp.ldap.port") {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| config(format!("imsp.ldap.port: '{p}' is not a port")))?,
                None if tls == Tls::Ldaps => 636,
                None => 389,
            };
            format!("{hostpart}:{port}")
        };
        let url = format!(
            "{}://{authority}",
            if tls == Tls::Ldaps { "ldaps" } else { "ldap" }
        );

        let scope = match required(g, "imsp.ldap.scope")?
            .to_ascii_lowercase()
            .as_str()
        {
            "subtree" | "sub" => Scope::Subtree,
            "onelevel" | "one" => Scope::OneLevel,
            "base" => Scope::Base,
            s => {
                return Err(config(format!(
                    "imsp.ldap.scope: '{s}' is not subtree, onelevel or base"
                )));
            }
        };
        let fullnameattr = check_attr(
            "imsp.ldap.fullnameattr",
            &required(g, "imsp.ldap.fullnameattr")?,
        )?;
        let uniqueattr = check_attr(
            "imsp.ldap.uniqueattr",
            &required(g, "imsp.ldap.uniqueattr")?,
        )?;
        let defaultfilter = required(g, "imsp.ldap.defaultfilter")?;
        let defaultfilter = if defaultfilter.starts_with('(') {
            defaultfilter
        } else {
            format!("({defaultfilter})")
        };
        let items = g.list("imsp.ldap.attrmap");
        if items.is_empty() || !items.len().is_multiple_of(2) {
            return Err(config(
                "imsp.ldap.attrmap must be a list of (field attribute) pairs",
            ));
        }
        let mut attrmap = Vec::new();
        for p in items.chunks(2) {
            let attr = if p[1].eq_ignore_ascii_case("null") {
                None
            } else {
                Some(check_attr("imsp.ldap.attrmap", &p[1])?)
            };
            attrmap.push((p[0].clone(), attr));
        }
        let bind = match (text(g, "imsp.ldap.binddn"), g.value("imsp.ldap.bindpw")) {
            (None, None) => None,
            (Some(dn), Some(pw)) if !pw.is_empty() => {
                let pw =
                    String::from_utf8(pw).map_err(|_| config("imsp.ldap.bindpw is not UTF-8"))?;
                Some((dn, pw))
            }
            // An empty password is an anonymous bind to LDAP, whatever the DN.
            (Some(_), _) => {
                return Err(config(
                    "imsp.ldap.binddn is set but imsp.ldap.bindpw is empty",
                ));
            }
            (None, Some(_)) => {
                return Err(config("imsp.ldap.bindpw is set without imsp.ldap.binddn"));
            }
        };
        let timeout = match text(g, "imsp.ldap.timeout") {
            None => Duration::from_secs(10),
            Some(t) => t
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    config(format!(
                        "imsp.ldap.timeout: '{t}' is not a number of seconds"
                    ))
                })?,
        };
        Ok(Config {
            url,
            tls,
            verify: g.flag("imsp.ldap.tls.verify").unwrap_or(true),
            searchbase: required(g, "imsp.ldap.searchbase")?,
            scope,
            fullnameattr,
            uniqueattr,
            defaultfilter,
            attrmap,
            bind,
            timeout,
        })
    }

    /// The attribute an IMSP search field maps to: `name` is the full name
    /// unless the map says otherwise. `None`: the field has no attribute.
    fn attr_of(&self, field: &str) -> Option<&str> {
        match self
            .attrmap
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(field))
        {
            Some((_, a)) => a.as_deref(),
            None if field.eq_ignore_ascii_case("name") => Some(&self.fullnameattr),
            None => None,
        }
    }
}

/// Escape a value for a filter (RFC 4515): `( ) * \` NUL, and every octet
/// that is not printable ASCII, as `\XX`.
pub fn escape_value(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len());
    for &b in v {
        if b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'*' | b'\\') || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:02x}"));
        }
    }
    out
}

/// An IMSP pattern as an LDAP assertion: its `*` and `%` wildcards become
/// substring wildcards, everything else is escaped. LDAP has no wildcard
/// for one character: `?` becomes `*` too, and the values found are
/// matched against the pattern afterwards (see [`Directory::search_names`]).
/// `None` for the empty pattern, which no directory value matches.
pub fn pattern_assertion(attr: &str, pattern: &[u8]) -> Option<String> {
    if pattern.is_empty() {
        return None;
    }
    let mut out = String::new();
    let mut last_star = false;
    for part in pattern
        .split(|&b| crate::pattern::is_wildcard(b))
        .enumerate()
    {
        let (i, part) = part;
        if i > 0 && !last_star {
            out.push('*');
            last_star = true;
        }
        if !part.is_empty() {
            out.push_str(&escape_value(part));
            last_star = false;
        }
    }
    Some(format!("({attr}={out})"))
}

/// A search that names nothing: no criteria, or only wildcard patterns.
pub fn is_unqualified(criteria: &[(String, Vec<u8>)]) -> bool {
    criteria
        .iter()
        .all(|(_, p)| !p.is_empty() && p.iter().all(|&b| crate::pattern::is_wildcard(b)))
}

/// The filter of a SEARCHADDRESS: the default filter ANDed with each
/// criterion. `None` when nothing can match (a field with no attribute,
/// an empty pattern).
pub fn search_filter(cfg: &Config, criteria: &[(String, Vec<u8>)]) -> Option<String> {
    let mut f = format!("(&{}({}=*)", cfg.defaultfilter, cfg.fullnameattr);
    for (field, pattern) in criteria {
        f.push_str(&pattern_assertion(cfg.attr_of(field)?, pattern)?);
    }
    f.push(')');
    Some(f)
}

/// `Name[attr:value]` split when `attr` is the unique attribute.
pub fn split_unique<'a>(cfg: &Config, name: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let body = name.strip_suffix(b"]")?;
    let open = body.iter().rposition(|&b| b == b'[')?;
    let (plain, tagged) = (&body[..open], &body[open + 1..]);
    let colon = tagged.iter().position(|&b| b == b':')?;
    let attr = &tagged[..colon];
    attr.eq_ignore_ascii_case(cfg.uniqueattr.as_bytes())
        .then_some((plain, &tagged[colon + 1..]))
}

/// The values of `attr` in an entry (attribute names are case-insensitive).
fn values(e: &SearchEntry, attr: &str) -> Vec<Vec<u8>> {
    let text = e
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()));
    let bin = e
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().cloned());
    text.chain(bin).collect()
}

fn first(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    values(e, attr).into_iter().next()
}

/// A directory answer that `ldap3` cannot take apart would panic it: a
/// failure of that entry instead.
fn construct(re: ResultEntry) -> Result<SearchEntry, LdapError> {
    crate::log::catch_expected(|| SearchEntry::construct(re))
        .map_err(|_| LdapError::Directory("malformed search result entry".into()))
}

fn lower(v: &[u8]) -> Vec<u8> {
    v.to_ascii_lowercase()
}

/// What a FETCHADDRESS name found.
#[derive(Debug)]
pub enum Fetched {
    Found(Entry),
    NotFound,
    /// More than one entry has this full name.
    Ambiguous(usize),
}

/// A connection to the directory, for one command, which must be done
/// with the directory by `deadline` (the timeout after it connected).
pub struct Directory<'a> {
    cfg: &'a Config,
    conn: LdapConn,
    deadline: Instant,
}

/// The time left until `deadline`; an error once it passed.
fn left(deadline: Instant, what: &str) -> Result<Duration, LdapError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(LdapError::Directory(format!("{what}: timeout"))),
    }
}

/// How many full names one counting search asks about.
const COUNT_BATCH: usize = 50;

impl<'a> Directory<'a> {
    /// Connect (and bind, when configured).
    pub fn connect(cfg: &'a Config) -> Result<Directory<'a>, LdapError> {
        let deadline = Instant::now() + cfg.timeout;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.timeout)
            .set_starttls(cfg.tls == Tls::StartTls)
            .set_no_tls_verify(!cfg.verify);
        let mut conn = LdapConn::with_settings(settings, &cfg.url)
            .map_err(|e| directory(&format!("connecting to {}", cfg.url), e))?;
        if let Some((dn, pw)) = &cfg.bind {
            conn.with_timeout(left(deadline, &format!("binding as {dn}"))?)
                .simple_bind(dn, pw)
                .and_then(|r| r.success())
                .map_err(|e| directory(&format!("binding as {dn}"), e))?;
        }
        Ok(Directory {
            cfg,
            conn,
            deadline,
        })
    }

    /// Search; a size limit reached on the server gives what came back.
    fn search(&mut self, filter: &str, attrs: Vec<&str>) -> Result<Vec<SearchEntry>, LdapError> {
        let cfg = self.cfg;
        let r = self
            .conn
            .with_timeout(left(self.deadline, "search")?)
            .search(&cfg.searchbase, cfg.scope, filter, attrs)
            .map_err(|e| directory("search", e))?;
        let (entries, res) = (r.0, r.1);
        match res.rc {
            0 => {}
            // sizeLimitExceeded: the entries sent so far.
            4 => crate::log_warn!(
                "LDAP search {filter}: size limit reached, {} entries",
                entries.len()
            ),
            // noSuchObject: the search base does not exist.
            _ => return Err(directory("search", res)),
        }
        entries.into_iter().map(construct).collect()
    }

    /// SEARCHADDRESS: the full names of the matching entries, made unique
    /// with `[uniqueattr:value]` where the directory has more than one
    /// entry of that name; sorted.
    pub fn search_names(
        &mut self,
        criteria: &[(String, Vec<u8>)],
    ) -> Result<Vec<Vec<u8>>, LdapError> {
        let cfg = self.cfg;
        let Some(filter) = search_filter(cfg, criteria) else {
            return Ok(Vec::new());
        };
        crate::log_debug!("LDAP search {filter}");
        // Criteria with `?`, which the filter widened to `*`: matched
        // here, as file books match them (`%` like `*`, case-insensitive).
        let exact: Vec<(&str, Pattern)> = criteria
            .iter()
            .filter(|(_, p)| p.contains(&b'?'))
            .filter_map(|(f, p)| Some((cfg.attr_of(f)?, Pattern::flat(p, true))))
            .collect();
        let mut attrs = vec![cfg.fullnameattr.as_str(), cfg.uniqueattr.as_str()];
        attrs.extend(exact.iter().map(|(a, _)| *a));
        let found = self.search(&filter, attrs)?;
        let hits: Vec<(Vec<u8>, Option<Vec<u8>>)> = found
            .iter()
            .filter(|e| {
                exact
                    .iter()
                    .all(|(a, p)| values(e, a).iter().any(|v| p.matches(v)))
            })
            .filter_map(|e| Some((first(e, &cfg.fullnameattr)?, first(e, &cfg.uniqueattr))))
            .collect();
        // How many directory entries carry each full name.
        let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
        for (n, _) in &hits {
            count.entry(lower(n)).or_insert(0);
        }
        let names: Vec<Vec<u8>> = count.keys().cloned().collect();
        for batch in names.chunks(COUNT_BATCH) {
            let mut f = format!("(&{}(|", cfg.defaultfilter);
            for n in batch {
                f.push_str(&format!("({}={})", cfg.fullnameattr, escape_value(n)));
            }
            f.push_str("))");
            for e in self.search(&f, vec![&cfg.fullnameattr])? {
                let mut seen: Vec<Vec<u8>> = values(&e, &cfg.fullnameattr)
                    .iter()
                    .map(|v| lower(v))
                    .collect();
                seen.sort();
                seen.dedup();
                for v in seen {
                    if let Some(c) = count.get_mut(&v) {
                        *c += 1;
                    }
                }
            }
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (name, unique) in hits {
            let shown = match (count.get(&lower(&name)).copied().unwrap_or(0) > 1, unique) {
                (true, Some(u)) => {
                    let mut s = name.clone();
                    s.push(b'[');
                    s.extend_from_slice(cfg.uniqueattr.as_bytes());
                    s.push(b':');
                    s.extend_from_slice(&u);
                    s.push(b']');
                    s
                }
                _ => name.clone(),
            };
            out.push((lower(&shown), shown));
        }
        out.sort();
        out.dedup();
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// FETCHADDRESS of one name (plain, or with the unique suffix): the
    /// mapped fields of its entry, named as asked without the suffix.
    pub fn fetch(&mut self, name: &[u8]) -> Result<Fetched, LdapError> {
        let cfg = self.cfg;
        let suffixed = split_unique(cfg, name).is_some();
        let (shown, filter) = match split_unique(cfg, name) {
            Some((plain, u)) => (
                plain,
                format!(
                    "(&{}({}={}))",
                    cfg.defaultfilter,
                    cfg.uniqueattr,
                    escape_value(u)
                ),
            ),
            None => (
                name,
                format!(
                    "(&{}({}={}))",
                    cfg.defaultfilter,
                    cfg.fullnameattr,
                    escape_value(name)
                ),
            ),
        };
        if shown.is_empty() {
            return Ok(Fetched::NotFound);
        }
        let mut attrs: Vec<&str> = cfg
            .attrmap
            .iter()
            .filter_map(|(_, a)| a.as_deref())
            .chain(std::iter::once(cfg.fullnameattr.as_str()))
            .collect();
        attrs.sort_unstable_by_key(|a| a.to_ascii_lowercase());
        attrs.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
        let mut found = self.search(&filter, attrs)?;
        // `Name[uid:x]` is the entry x only if it is named Name.
        if suffixed {
            found.retain(|e| {
                values(e, &cfg.fullnameattr)
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(shown))
            });
        }
        let e = match found.len() {
            0 => return Ok(Fetched::NotFound),
            1 => &found[0],
            n => return Ok(Fetched::Ambiguous(n)),
        };
        let fields = cfg
            .attrmap
            .iter()
            .filter(|(f, _)| !f.eq_ignore_ascii_case("name"))
            .filter_map(|(f, a)| Some((f.clone(), first(e, a.as_deref()?)?)))
            .collect();
        Ok(Fetched::Found(Entry {
            name: shown.to_vec(),
            fields,
        }))
    }
}

impl Drop for Directory<'_> {
    fn drop(&mut self) {
        let _ = self.conn.unbind();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            url: "ldap://127.0.0.1:389".into(),
            tls: Tls::None,
            verify: true,
            searchbase: "dc=example,dc=org".into(),
            scope: Scope::Subtree,
            fullnameattr: "cn".into(),
            uniqueattr: "uid".into(),
            defaultfilter: "(objectClass=person)".into(),
            attrmap: vec![
                ("name".into(), Some("cn".into())),
                ("email".into(), Some("mail".into())),
                ("notes".into(), None),
            ],
            bind: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn patterns_escape_all_but_wildcards() {
        assert_eq!(pattern_assertion("cn", b"*son*").unwrap(), "(cn=*son*)");
        assert_eq!(pattern_assertion("cn", b"**").unwrap(), "(cn=*)");
        assert_eq!(pattern_assertion("cn", b"a**b%c").unwrap(), "(cn=a*b*c)");
        assert_eq!(pattern_assertion("cn", b"J?hn*").unwrap(), "(cn=J*hn*)");
        assert_eq!(
            pattern_assertion("cn", b"*)(uid=*").unwrap(),
            "(cn=*\\29\\28uid=*)"
        );
        assert_eq!(
            pattern_assertion("cn", b"a\\b\0").unwrap(),
            "(cn=a\\5cb\\00)"
        );
        assert_eq!(
            pattern_assertion("cn", "Zoë".as_bytes()).unwrap(),
            "(cn=Zo\\c3\\ab)"
        );
        assert_eq!(pattern_assertion("cn", b""), None);
        assert_eq!(escape_value(b"a*b (c)"), "a\\2ab \\28c\\29");
    }

    #[test]
    fn filters_map_fields() {
        let c = cfg();
        let crit = |f: &str, p: &str| vec![(f.to_string(), p.as_bytes().to_vec())];
        assert_eq!(
            search_filter(&c, &crit("name", "J*")).unwrap(),
            "(&(objectClass=person)(cn=*)(cn=J*))"
        );
        assert_eq!(
            search_filter(&c, &crit("EMAIL", "*@x")).unwrap(),
            "(&(objectClass=person)(cn=*)(mail=*@x))"
        );
        // No attribute: nothing matches.
        assert_eq!(search_filter(&c, &crit("notes", "*")), None);
        assert_eq!(search_filter(&c, &crit("phone", "1")), None);
        assert_eq!(
            search_filter(&c, &[]).unwrap(),
            "(&(objectClass=person)(cn=*))"
        );
        assert!(is_unqualified(&[]));
        assert!(is_unqualified(&crit("name", "*")));
        assert!(is_unqualified(&crit("email", "%*")));
        assert!(is_unqualified(&crit("email", "?*")));
        assert!(!is_unqualified(&crit("name", "a*")));
        assert!(!is_unqualified(&crit("name", "")));
    }

    #[test]
    fn unique_suffix() {
        let c = cfg();
        assert_eq!(
            split_unique(&c, b"John Anderson[uid:anderson2]"),
            Some((&b"John Anderson"[..], &b"anderson2"[..]))
        );
        assert_eq!(
            split_unique(&c, b"John Anderson[UID:a:b]"),
            Some((&b"John Anderson"[..], &b"a:b"[..]))
        );
        assert_eq!(split_unique(&c, b"John Anderson[mail:x]"), None);
        assert_eq!(split_unique(&c, b"John Anderson"), None);
    }
}
