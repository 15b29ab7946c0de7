//! The mailbox commands: LIST, LSUB, UNSEEN, SUBSCRIBE, UNSUBSCRIBE, LAST,
//! SEEN, CREATE, DELETE, RENAME, REPLACE, MOVE and the MAILBOX forms of
//! SETACL, DELETEACL, GETACL and MYRIGHTS.
//!
//! Where a mailbox lives is read from the global `mailboxes` file; what
//! changes a mailbox is done on its IMAP servers first, by the proxy-IMAP
//! client, and only then written to `mailboxes`, `changed` and the
//! subscriptions. A proxy failure answers NO.
//!
//! Rights: a user manages the mailboxes of the personal hierarchy
//! `user.NAME` (INBOX excepted); any other mailbox needs
//! `imsp.admin.bboards` (or `imsp.admin.all`), as do CREATE with a server
//! list, DELETE with a host and MOVE. A session of an `imsp.admin.subs`
//! administrator acting as another user may look but not change.

use std::collections::BTreeSet;

use super::{Done, Handler, Output};
use crate::pattern::Pattern;
use crate::protocol::response::MailboxListKind;
use crate::protocol::{AclKind, Data, Response, ServerPartition, Status};
use crate::proxy::imap::{ImapConn, ProxyConfig, connect};
use crate::store::mailboxes::{self, MailboxEntry, SEP};
use crate::store::names;
use crate::store::subs::{self, Sub};
use crate::store::{Records, StoreError};

/// One line of a mailbox listing.
struct Line {
    name: String,
    attributes: Vec<String>,
    servers: Vec<String>,
    separator: Option<u8>,
}

fn is_inbox(raw: &[u8]) -> bool {
    raw.eq_ignore_ascii_case(b"INBOX")
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl Handler<'_> {
    fn me(&self) -> &str {
        self.user.as_deref().expect("logged in")
    }

    /// The mailbox shown as INBOX: `imsp.user.inbox` (default
    /// `user.$USER`) with `$USER` replaced.
    fn inbox_name(&self) -> String {
        self.inbox_of(self.me())
    }

    fn inbox_of(&self, user: &str) -> String {
        let pattern = self
            .global()
            .value("imsp.user.inbox")
            .map(|v| text(&v).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "user.$USER".into());
        pattern.replace("$USER", user)
    }

    /// What a new subs file of `user` holds: `imsp.default.subs` and
    /// `imsp.required.subs`, INBOX standing for the user's inbox.
    fn default_subs(&self, user: &str) -> Vec<String> {
        let mut defaults = self.global().list("imsp.default.subs");
        defaults.extend(self.global().list("imsp.required.subs"));
        let inbox = self.inbox_of(user);
        for d in defaults.iter_mut() {
            if is_inbox(d.as_bytes()) {
                *d = inbox.clone();
            }
        }
        defaults
    }

    /// A mailbox name from the wire: INBOX becomes the user's inbox.
    fn mailbox_name(&self, raw: &[u8]) -> Result<String, Done> {
        if is_inbox(raw) {
            return Ok(self.inbox_name());
        }
        mailboxes::check_name(raw).map_err(Done::from)
    }

    /// The administrator who logged in, at mailbox-administration level.
    fn bboard_admin(&self) -> bool {
        self.login_user.as_deref().is_some_and(|u| {
            self.listed_in("imsp.admin.all", u) || self.listed_in("imsp.admin.bboards", u)
        })
    }

    /// Any administrator level (they see server lists unsorted).
    fn any_admin(&self) -> bool {
        self.bboard_admin()
            || self
                .login_user
                .as_deref()
                .is_some_and(|u| self.listed_in("imsp.admin.subs", u))
    }

    /// A session acting as another user without the right to change
    /// things (`imsp.admin.subs` level).
    fn view_only(&self) -> Option<Done> {
        let acting_for_other = self.login_user.as_deref() != self.user.as_deref();
        (acting_for_other && (self.view_only || !self.bboard_admin())).then(|| {
            Done::no(format!(
                "Permission denied: you may view but not change {}'s mailboxes and subscriptions",
                self.me()
            ))
        })
    }

    /// May this session create, delete or rename `name`?
    fn may_manage(&self, name: &str) -> Result<(), Done> {
        if let Some(d) = self.view_only() {
            return Err(d);
        }
        let personal = format!("user.{}", self.me());
        if self.bboard_admin() || (mailboxes::is_within(name, &personal) && name != personal) {
            return Ok(());
        }
        Err(Done::no(format!(
            "Permission denied: you may manage only mailboxes below {personal}"
        )))
    }

    fn restricted(&self, what: &str) -> Result<(), Done> {
        if self.bboard_admin() && self.view_only().is_none() {
            Ok(())
        } else {
            Err(Done::no(format!(
                "Permission denied: {what} is restricted to mailbox administrators"
            )))
        }
    }

    fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig::from_options(self.global())
    }

    /// A logged-in proxy connection to `server`, acting as the user.
    fn imap(&self, cfg: &ProxyConfig, server: &str) -> Result<ImapConn, Done> {
        let Some(spec) = cfg.server(server) else {
            return Err(Done::no(format!(
                "IMAP server {server} is not one of imsp.imap.servers"
            )));
        };
        let own = self.login_user == self.user;
        let password = if own { self.password.as_deref() } else { None };
        let Some(cred) = cfg.credentials(self.me(), password) else {
            return Err(Done::no(format!(
                "Cannot reach the IMAP servers as {}: no password and no proxy identity (imsp.proxy.user)",
                self.me()
            )));
        };
        connect(cfg, spec, &cred).map_err(|e| {
            crate::log_warn!("proxy for {}: {e}", self.me());
            Done::no(e.0)
        })
    }

    fn mailboxes_now(&mut self) -> Result<std::sync::Arc<Records>, Done> {
        self.store.mailboxes().map_err(Done::from)
    }

    fn entry(&mut self, name: &str, shown: &[u8]) -> Result<MailboxEntry, Done> {
        let recs = self.mailboxes_now()?;
        mailboxes::get(&recs, name)
            .ok_or_else(|| Done::no(format!("Mailbox {} does not exist", text(shown))))
    }

    /// The user's subs (a new file gets `imsp.default.subs` and
    /// `imsp.required.subs`).
    /// A view-only session sees what a new file would hold, unwritten.
    fn my_subs(&mut self) -> Result<std::sync::Arc<Records>, Done> {
        let user = self.me().to_string();
        let defaults = self.default_subs(&user);
        if self.view_only().is_some() {
            return self.store.subs_peek(&user, &defaults).map_err(Done::from);
        }
        self.store.subs(&user, &defaults).map_err(Done::from)
    }

    // ---- LIST / LSUB / UNSEEN ----

    pub(super) fn mailbox_list(
        &mut self,
        kind: MailboxListKind,
        reference: &[u8],
        pattern: &[u8],
        out: &mut dyn Output,
    ) -> Done {
        match self.mailbox_list_inner(kind, reference, pattern, out) {
            Ok(d) | Err(d) => d,
        }
    }

    fn mailbox_list_inner(
        &mut self,
        kind: MailboxListKind,
        reference: &[u8],
        pattern: &[u8],
        out: &mut dyn Output,
    ) -> Result<Done, Done> {
        let mut full = reference.to_vec();
        full.extend_from_slice(pattern);
        let pat = Pattern::new(&full, false);
        let inbox_pat = Pattern::new(&full, true);
        let inbox = self.inbox_name();
        if kind != MailboxListKind::List {
            self.follow_changes(out)?;
        }
        let recs = self.mailboxes_now()?;
        let subs = self.my_subs()?;
        let admin = self.any_admin();
        let external_ok = self.global().flag("imsp.external.subs").unwrap_or(false);
        let line_for = |name: &str, e: &MailboxEntry| -> Line {
            let seen = subs::get(&subs, name).map(|s| s.seen).unwrap_or(0);
            let mut attributes = Vec::new();
            if e.uid.is_some_and(|u| u > seen) {
                attributes.push("\\Marked".to_string());
            }
            let mut servers = e.servers.clone();
            if !admin {
                servers.sort();
            }
            Line {
                name: name.to_string(),
                attributes,
                servers,
                separator: e.separator(),
            }
        };
        let mut lines: Vec<Line> = Vec::new();
        let mut inbox_line: Option<Line> = None;
        let matches = |name: &str| {
            if name == inbox {
                inbox_pat.matches(b"INBOX") || pat.matches(name.as_bytes())
            } else {
                pat.matches(name.as_bytes())
            }
        };
        match kind {
            MailboxListKind::List => {
                let all = mailboxes::entries(&recs);
                let mut parents = BTreeSet::new();
                for (name, _) in &all {
                    let b = name.as_bytes();
                    for (i, &c) in b.iter().enumerate() {
                        if c == SEP && mailboxes::get(&recs, &name[..i]).is_none() {
                            parents.insert(name[..i].to_string());
                        }
                    }
                }
                for p in parents {
                    if matches(&p) {
                        lines.push(Line {
                            name: p,
                            attributes: vec!["\\Noselect".into()],
                            servers: Vec::new(),
                            separator: Some(SEP),
                        });
                    }
                }
                for (name, e) in &all {
                    if matches(name) {
                        let l = line_for(name, e);
                        if *name == inbox {
                            inbox_line = Some(l);
                        } else {
                            lines.push(l);
                        }
                    }
                }
            }
            MailboxListKind::Lsub | MailboxListKind::Unseen => {
                for (name, s) in subs::entries(&subs) {
                    if !s.subscribed || !matches(&name) {
                        continue;
                    }
                    let l = match mailboxes::get(&recs, &name) {
                        Some(e) => {
                            if kind == MailboxListKind::Unseen && e.uid.is_some_and(|u| u <= s.seen)
                            {
                                continue;
                            }
                            line_for(&name, &e)
                        }
                        None if external_ok && mailboxes::is_external(name.as_bytes()) => Line {
                            name: name.clone(),
                            attributes: Vec::new(),
                            servers: Vec::new(),
                            separator: None,
                        },
                        None => continue,
                    };
                    if name == inbox {
                        inbox_line = Some(l);
                    } else {
                        lines.push(l);
                    }
                }
            }
        }
        lines.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(mut l) = inbox_line {
            l.name = "INBOX".into();
            lines.insert(0, l);
        }
        for l in lines {
            out.send(Response::Untagged(Data::Mailbox {
                kind,
                attributes: l.attributes,
                servers: l.servers,
                separator: l.separator,
                name: l.name.into_bytes(),
            }));
        }
        let word = match kind {
            MailboxListKind::List => "list",
            MailboxListKind::Lsub => "lsub",
            MailboxListKind::Unseen => "unseen",
        };
        Ok(Done::completed(word))
    }

    /// Subscriptions to mailboxes that are gone: follow `changed` to the
    /// new name, or drop them when the mailbox is known to be deleted
    /// (`deleted`); the user is told with an untagged NO. A mailbox that is
    /// merely not in `mailboxes` (a list not built yet, a server that could
    /// not be reached) keeps its subscribers.
    fn follow_changes(&mut self, out: &mut dyn Output) -> Result<(), Done> {
        let subs_now = self.my_subs()?;
        let recs = self.mailboxes_now()?;
        let changed = self.store.changed().map_err(Done::from)?;
        let deleted = self.store.deleted().map_err(Done::from)?;
        let mut moves: Vec<(String, Option<String>)> = Vec::new();
        for (name, s) in subs::entries(&subs_now) {
            if !s.subscribed
                || mailboxes::get(&recs, &name).is_some()
                || mailboxes::is_external(name.as_bytes())
            {
                continue;
            }
            match changed.get(name.as_bytes()).map(text) {
                Some(n) if mailboxes::get(&recs, &n).is_some() => moves.push((name, Some(n))),
                Some(n) if deleted.get(n.as_bytes()).is_some() => moves.push((name, None)),
                Some(_) => {}
                None if deleted.get(name.as_bytes()).is_some() => moves.push((name, None)),
                None => {}
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        if self.view_only().is_none() {
            let user = self.me().to_string();
            let m = moves.clone();
            let seen_of = |n: &str| subs::get(&subs_now, n).map(|s| s.seen).unwrap_or(0);
            self.store
                .update_subs(&user, |r| {
                    for (old, new) in &m {
                        r.remove(old.as_bytes());
                        if let Some(new) = new {
                            // What is known of the new name stays; else
                            // the old name's seen UID goes along.
                            let keep = subs::get(r, new).map(|s| s.seen).unwrap_or(seen_of(old));
                            subs::put(
                                r,
                                new,
                                Sub {
                                    subscribed: true,
                                    seen: keep,
                                },
                            );
                        }
                    }
                    Ok::<_, StoreError>(((), true))
                })
                .map_err(Done::from)?;
        }
        for (old, new) in moves {
            let t = match new {
                Some(n) => format!(
                    "Mailbox {old} was renamed or replaced; your subscription now is to {n}"
                ),
                None => format!("Mailbox {old} was deleted; your subscription to it was removed"),
            };
            out.send(Response::untagged(Status::No, t));
        }
        Ok(())
    }

    // ---- SUBSCRIBE / UNSUBSCRIBE ----

    pub(super) fn subscribe(&mut self, raw: &[u8], on: bool) -> Done {
        match self.subscribe_inner(raw, on) {
            Ok(d) | Err(d) => d,
        }
    }

    fn subscribe_inner(&mut self, raw: &[u8], on: bool) -> Result<Done, Done> {
        if let Some(d) = self.view_only() {
            return Err(d);
        }
        let external = mailboxes::is_external(raw);
        let name = if external {
            if !self.global().flag("imsp.external.subs").unwrap_or(false) {
                return Err(Done::no(
                    "Subscriptions to external {host}folder names are not allowed here",
                ));
            }
            text(raw)
        } else {
            self.mailbox_name(raw)?
        };
        let current = self.my_subs()?;
        let cur = subs::get(&current, &name);
        if on {
            if !external && mailboxes::get(&*self.mailboxes_now()?, &name).is_none() {
                return Err(Done::no(format!("Mailbox {} does not exist", text(raw))));
            }
        } else {
            if self
                .global()
                .list("imsp.required.subs")
                .iter()
                .any(|r| *r == name || (is_inbox(r.as_bytes()) && name == self.inbox_name()))
            {
                return Err(Done::no(format!(
                    "Subscription to {} is required and may not be removed",
                    text(raw)
                )));
            }
            if !cur.is_some_and(|s| s.subscribed) {
                return Err(Done::no(format!("Not subscribed to {}", text(raw))));
            }
        }
        let user = self.me().to_string();
        self.store
            .update_subs(&user, |r| {
                let seen = subs::get(r, &name).map(|s| s.seen).unwrap_or(0);
                subs::put(
                    r,
                    &name,
                    Sub {
                        subscribed: on,
                        seen,
                    },
                );
                Ok::<_, StoreError>(((), true))
            })
            .map_err(Done::from)?;
        Ok(Done::completed(if on {
            "subscribe"
        } else {
            "unsubscribe"
        }))
    }

    // ---- LAST / SEEN ----

    fn imap_identity(&self) -> Result<(), Done> {
        let who = self.login_user.as_deref().unwrap_or("");
        if self.listed_in("imsp.imap.identities", who) {
            Ok(())
        } else {
            Err(Done::no(
                "Permission denied: LAST and SEEN are accepted only from IMAP servers (imsp.imap.identities)",
            ))
        }
    }

    fn parse_uid(uid: &str) -> Result<u64, Done> {
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Done::bad(format!(
                "Invalid UID {uid:?}: a number is expected"
            )));
        }
        uid.parse()
            .map_err(|_| Done::bad(format!("Invalid UID {uid:?}: too large")))
    }

    pub(super) fn last(&mut self, raw: &[u8], uid: &str) -> Done {
        let r = (|| {
            self.imap_identity()?;
            let uid = Self::parse_uid(uid)?;
            let name = mailboxes::check_name(raw).map_err(Done::from)?;
            let found = self
                .store
                .update_mailboxes(|r| match mailboxes::get(r, &name) {
                    Some(mut e) => {
                        e.uid = Some(uid);
                        mailboxes::put(r, &name, &e);
                        Ok((true, true))
                    }
                    None => Ok((false, false)),
                })
                .map_err(Done::from)?;
            if !found {
                return Err(Done::no(format!("Mailbox {name} does not exist")));
            }
            Ok(Done::completed("last"))
        })();
        r.unwrap_or_else(|d| d)
    }

    pub(super) fn seen(&mut self, raw: &[u8], uid: &str, user: &[u8]) -> Done {
        let r = (|| {
            self.imap_identity()?;
            let uid = Self::parse_uid(uid)?;
            let user = names::check_user(user).map_err(Done::from)?;
            if !self.store.user_exists(&user) {
                return Err(Done::no(format!("{user} has no IMSP account here")));
            }
            let name = mailboxes::check_name(raw).map_err(Done::from)?;
            if mailboxes::get(&*self.mailboxes_now()?, &name).is_none() {
                return Err(Done::no(format!("Mailbox {name} does not exist")));
            }
            let defaults = self.default_subs(&user);
            self.store.subs(&user, &defaults).map_err(Done::from)?;
            self.store
                .update_subs(&user, |r| {
                    let subscribed = subs::get(r, &name).is_some_and(|s| s.subscribed);
                    subs::put(
                        r,
                        &name,
                        Sub {
                            subscribed,
                            seen: uid,
                        },
                    );
                    Ok::<_, StoreError>(((), true))
                })
                .map_err(Done::from)?;
            Ok(Done::completed("seen"))
        })();
        r.unwrap_or_else(|d| d)
    }

    // ---- CREATE / DELETE / RENAME / REPLACE / MOVE ----

    fn known_servers(
        &self,
        cfg: &ProxyConfig,
        list: &[ServerPartition],
    ) -> Result<Vec<String>, Done> {
        let mut out: Vec<String> = Vec::new();
        for sp in list {
            let Some(spec) = cfg.server(&sp.host) else {
                return Err(Done::no(format!(
                    "IMAP server {} is not one of imsp.imap.servers",
                    sp.host
                )));
            };
            if let Some(p) = &sp.partition {
                crate::log_debug!("partition {p} on {} ignored", spec.name);
            }
            if !out.contains(&spec.name) {
                out.push(spec.name.clone());
            }
        }
        Ok(out)
    }

    /// Where a new mailbox goes, by `imsp.create.policy`: `parent` (the
    /// default) is the nearest existing parent's server, else as `random`;
    /// `random` is any one of `imsp.new.mailbox.servers` (default: all of
    /// `imsp.imap.servers`).
    fn placement(&mut self, cfg: &ProxyConfig, name: &str) -> Result<Vec<String>, Done> {
        let policy = self
            .global()
            .value("imsp.create.policy")
            .map(|v| text(&v).trim().to_ascii_lowercase())
            .unwrap_or_default();
        let by_parent = match policy.as_str() {
            "" | "parent" => true,
            "random" => false,
            other => {
                crate::log_warn!(
                    "imsp.create.policy {other:?} is not known (parent, random): using parent"
                );
                true
            }
        };
        let recs = self.mailboxes_now()?;
        let mut n = name;
        while by_parent && let Some(i) = n.rfind(SEP as char) {
            n = &n[..i];
            if let Some(e) = mailboxes::get(&recs, n)
                && let Some(s) = e.servers.first()
            {
                return Ok(vec![s.clone()]);
            }
        }
        let mut pool: Vec<String> = self
            .global()
            .list("imsp.new.mailbox.servers")
            .iter()
            .filter_map(|s| {
                cfg.server(s.split('/').next().unwrap_or(s))
                    .map(|x| x.name.clone())
            })
            .collect();
        if pool.is_empty() {
            pool = cfg.servers.iter().map(|s| s.name.clone()).collect();
        }
        if pool.is_empty() {
            return Err(Done::no(
                "No IMAP servers are configured (imsp.imap.servers)",
            ));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as usize)
            .unwrap_or(0);
        let pick = (nanos ^ std::process::id() as usize) % pool.len();
        Ok(vec![pool[pick].clone()])
    }

    pub(super) fn create(&mut self, raw: &[u8], servers: &[ServerPartition]) -> Done {
        self.create_inner(raw, servers).unwrap_or_else(|d| d)
    }

    fn create_inner(&mut self, raw: &[u8], servers: &[ServerPartition]) -> Result<Done, Done> {
        if is_inbox(raw) {
            return Err(Done::no("INBOX may not be created"));
        }
        let name = self.mailbox_name(raw)?;
        if !servers.is_empty() {
            self.restricted("CREATE with a server list")?;
        }
        self.may_manage(&name)?;
        if mailboxes::get(&*self.mailboxes_now()?, &name).is_some() {
            return Err(Done::no(format!("Mailbox {name} already exists")));
        }
        let cfg = self.proxy_config();
        let targets = if servers.is_empty() {
            self.placement(&cfg, &name)?
        } else {
            self.known_servers(&cfg, servers)?
        };
        let mut made: Vec<ImapConn> = Vec::new();
        for t in &targets {
            let step = self.imap(&cfg, t).and_then(|mut c| match c.create(&name) {
                Ok(()) => Ok(c),
                Err(e) => {
                    c.logout();
                    Err(Done::no(e.0))
                }
            });
            match step {
                Ok(c) => made.push(c),
                Err(d) => {
                    for mut c in made {
                        if let Err(e) = c.delete(&name) {
                            crate::log_warn!("create rollback: {e}");
                        }
                        c.logout();
                    }
                    return Err(d);
                }
            }
        }
        for c in made {
            c.logout();
        }
        let t2 = targets.clone();
        self.store
            .update_mailboxes(|r| {
                let mut e =
                    mailboxes::get(r, &name).unwrap_or_else(|| MailboxEntry::new(Vec::new()));
                for t in &t2 {
                    if !e.servers.contains(t) {
                        e.servers.push(t.clone());
                    }
                }
                e.uid.get_or_insert(0);
                mailboxes::put(r, &name, &e);
                Ok(((), true))
            })
            .map_err(Done::from)?;
        self.store
            .note_deleted(&[], std::slice::from_ref(&name))
            .map_err(Done::from)?;
        self.log_mailbox_action("create", &format!("{name} on {}", targets.join(" ")));
        Ok(Done::completed("create"))
    }

    fn log_mailbox_action(&self, action: &str, what: &str) {
        let who = match (&self.login_user, &self.user) {
            (Some(l), Some(u)) if l != u => format!("{l} as {u}"),
            (_, Some(u)) => u.clone(),
            _ => "?".into(),
        };
        crate::log_admin!(
            "mailbox {action}: {what} by {who} from {}",
            self.peer_host()
        );
    }

    pub(super) fn delete(&mut self, raw: &[u8], host: Option<&str>) -> Done {
        self.delete_inner(raw, host).unwrap_or_else(|d| d)
    }

    fn delete_inner(&mut self, raw: &[u8], host: Option<&str>) -> Result<Done, Done> {
        if is_inbox(raw) {
            return Err(Done::no("INBOX may not be deleted"));
        }
        let name = self.mailbox_name(raw)?;
        if name == self.inbox_name() {
            return Err(Done::no("INBOX may not be deleted"));
        }
        if host.is_some() {
            self.restricted("DELETE with a host")?;
        }
        self.may_manage(&name)?;
        let e = self.entry(&name, raw)?;
        let cfg = self.proxy_config();
        let targets: Vec<String> = match host {
            Some(h) => {
                let Some(s) = e.servers.iter().find(|s| s.eq_ignore_ascii_case(h)) else {
                    return Err(Done::no(format!("Mailbox {name} is not on {h}")));
                };
                vec![s.clone()]
            }
            None => e.servers.clone(),
        };
        let mut gone = Vec::new();
        let mut failure = None;
        for t in &targets {
            match self.imap(&cfg, t).and_then(|mut c| {
                let r = c.delete(&name).map_err(|e| Done::no(e.0));
                c.logout();
                r
            }) {
                Ok(()) => gone.push(t.clone()),
                Err(d) => {
                    failure = Some(d);
                    break;
                }
            }
        }
        if !gone.is_empty() {
            let g = gone.clone();
            let all_gone = self
                .store
                .update_mailboxes(|r| {
                    let mut all_gone = false;
                    if let Some(mut e) = mailboxes::get(r, &name) {
                        e.servers.retain(|s| !g.contains(s));
                        if e.servers.is_empty() {
                            r.remove(name.as_bytes());
                            all_gone = true;
                        } else {
                            mailboxes::put(r, &name, &e);
                        }
                    }
                    Ok((all_gone, true))
                })
                .map_err(Done::from)?;
            if all_gone {
                self.store
                    .note_deleted(std::slice::from_ref(&name), &[])
                    .map_err(Done::from)?;
            }
            self.log_mailbox_action("delete", &format!("{name} on {}", gone.join(" ")));
        }
        match failure {
            Some(d) => Err(d),
            None => Ok(Done::completed("delete")),
        }
    }

    pub(super) fn rename(&mut self, old_raw: &[u8], new_raw: &[u8]) -> Done {
        self.rename_inner(old_raw, new_raw).unwrap_or_else(|d| d)
    }

    fn rename_inner(&mut self, old_raw: &[u8], new_raw: &[u8]) -> Result<Done, Done> {
        if is_inbox(new_raw) {
            return Err(Done::no("A mailbox may not be renamed to INBOX"));
        }
        let old = self.mailbox_name(old_raw)?;
        let new = self.mailbox_name(new_raw)?;
        let inbox = old == self.inbox_name();
        if !inbox {
            self.may_manage(&old)?;
        } else if let Some(d) = self.view_only() {
            return Err(d);
        }
        self.may_manage(&new)?;
        // INBOX's messages move to the new name; INBOX and what is below
        // it stay, so the new name may be below it.
        if !inbox && mailboxes::is_within(&new, &old) {
            return Err(Done::no(format!(
                "{new} is inside {old}: a mailbox cannot be renamed into itself"
            )));
        }
        let e = self.entry(&old, old_raw)?;
        let recs = self.mailboxes_now()?;
        if mailboxes::entries(&recs)
            .iter()
            .any(|(n, _)| mailboxes::is_within(n, &new))
        {
            return Err(Done::no(format!("Mailbox {new} already exists")));
        }
        if inbox {
            return self.rename_inbox(&old, &new, &e);
        }
        let steps = rename_steps(&recs, &old, &e);
        let cfg = self.proxy_config();
        let moved = |n: &str| format!("{new}{}", &n[old.len()..]);
        // Each server renames the topmost of the moving mailboxes it holds
        // (its IMAP RENAME takes what is below along); any failure undoes
        // the renames already made, last first.
        let mut conns: Vec<ImapConn> = Vec::new();
        let mut done: Vec<(usize, String)> = Vec::new();
        let mut failure = None;
        'servers: for (server, names) in &steps {
            let mut c = match self.imap(&cfg, server) {
                Ok(c) => c,
                Err(d) => {
                    failure = Some(d);
                    break;
                }
            };
            for n in names {
                if let Err(er) = c.rename(n, &moved(n)) {
                    failure = Some(Done::no(er.0));
                    conns.push(c);
                    break 'servers;
                }
                done.push((conns.len(), n.clone()));
            }
            conns.push(c);
        }
        if let Some(d) = failure {
            for (i, n) in done.iter().rev() {
                if let Err(er) = conns[*i].rename(&moved(n), n) {
                    crate::log_warn!("rename rollback: {er}");
                }
            }
            for c in conns {
                c.logout();
            }
            return Err(d);
        }
        for c in conns {
            c.logout();
        }
        // What moved on every server that holds it moves here too.
        let renamed: Vec<(String, String)> = steps
            .iter()
            .flat_map(|(s, names)| names.iter().map(move |n| (s.clone(), n.clone())))
            .collect();
        let mut pairs: Vec<(String, String)> = Vec::new();
        self.store
            .update_mailboxes(|r| {
                for (n, ent) in mailboxes::entries(r) {
                    if !mailboxes::is_within(&n, &old) {
                        continue;
                    }
                    let everywhere = ent.servers.iter().all(|s| {
                        renamed
                            .iter()
                            .any(|(rs, top)| rs == s && mailboxes::is_within(&n, top))
                    });
                    if !everywhere {
                        crate::log_warn!("rename {old}: {n} was not renamed on all its servers");
                        continue;
                    }
                    let to = moved(&n);
                    r.remove(n.as_bytes());
                    mailboxes::put(r, &to, &ent);
                    pairs.push((n, to));
                }
                Ok(((), true))
            })
            .map_err(Done::from)?;
        self.store.record_changes(&pairs).map_err(Done::from)?;
        let arrived: Vec<String> = pairs.iter().map(|(_, n)| n.clone()).collect();
        self.store.note_deleted(&[], &arrived).map_err(Done::from)?;
        self.log_mailbox_action("rename", &format!("{old} to {new}"));
        Ok(Done::completed("rename"))
    }

    /// RENAME INBOX: on each of its servers a new mailbox gets INBOX's
    /// messages, which then leave INBOX; INBOX and the mailboxes below it
    /// stay. A failure before any message left INBOX removes the new
    /// mailboxes again.
    fn rename_inbox(&mut self, old: &str, new: &str, e: &MailboxEntry) -> Result<Done, Done> {
        let cfg = self.proxy_config();
        let mut made: Vec<(ImapConn, Option<String>)> = Vec::new();
        let mut failure = None;
        for s in &e.servers {
            let mut c = match self.imap(&cfg, s) {
                Ok(c) => c,
                Err(d) => {
                    failure = Some(d);
                    break;
                }
            };
            if let Err(er) = c.create(new) {
                c.logout();
                failure = Some(Done::no(er.0));
                break;
            }
            match c.copy_within(old, new) {
                Ok(set) => made.push((c, set)),
                Err(er) => {
                    made.push((c, None));
                    failure = Some(Done::no(er.0));
                    break;
                }
            }
        }
        if let Some(d) = failure {
            for (mut c, _) in made {
                if let Err(er) = c.delete(new) {
                    crate::log_warn!("rename rollback: {er}");
                }
                c.logout();
            }
            return Err(d);
        }
        let mut notes = Vec::new();
        for (mut c, set) in made {
            if let Some(set) = set
                && let Err(er) = c.remove_messages(&set)
            {
                notes.push(format!("messages copied but not removed from INBOX: {er}"));
            }
            c.logout();
        }
        let servers = e.servers.clone();
        self.store
            .update_mailboxes(|r| {
                mailboxes::put(r, new, &MailboxEntry::new(servers.clone()));
                if let Some(mut i) = mailboxes::get(r, old) {
                    i.uid = Some(0);
                    mailboxes::put(r, old, &i);
                }
                Ok(((), true))
            })
            .map_err(Done::from)?;
        self.store
            .note_deleted(&[], &[new.to_string()])
            .map_err(Done::from)?;
        // INBOX still exists: its subscribers stay; the renaming user is
        // subscribed to the new name too.
        let user = self.me().to_string();
        if subs::get(&*self.my_subs()?, old).is_some_and(|s| s.subscribed) {
            self.store
                .update_subs(&user, |r| {
                    subs::put(
                        r,
                        new,
                        Sub {
                            subscribed: true,
                            seen: 0,
                        },
                    );
                    Ok::<_, StoreError>(((), true))
                })
                .map_err(Done::from)?;
        }
        self.log_mailbox_action("rename", &format!("INBOX {old} to {new}"));
        let mut d = Done::completed("rename");
        if !notes.is_empty() {
            d.text = format!("{} ({})", d.text, notes.join("; "));
        }
        Ok(d)
    }

    pub(super) fn replace(&mut self, old_raw: &[u8], new_raw: &[u8]) -> Done {
        self.replace_inner(old_raw, new_raw).unwrap_or_else(|d| d)
    }

    fn replace_inner(&mut self, old_raw: &[u8], new_raw: &[u8]) -> Result<Done, Done> {
        if is_inbox(old_raw) {
            return Err(Done::no("INBOX may not be replaced"));
        }
        let old = self.mailbox_name(old_raw)?;
        let new = self.mailbox_name(new_raw)?;
        if old == self.inbox_name() {
            return Err(Done::no("INBOX may not be replaced"));
        }
        if old == new {
            return Err(Done::no("A mailbox cannot replace itself"));
        }
        self.may_manage(&old)?;
        let e = self.entry(&old, old_raw)?;
        self.entry(&new, new_raw)?;
        let cfg = self.proxy_config();
        let mut gone = Vec::new();
        let mut failure = None;
        for s in &e.servers {
            match self.imap(&cfg, s).and_then(|mut c| {
                let r = c.delete(&old).map_err(|er| Done::no(er.0));
                c.logout();
                r
            }) {
                Ok(()) => gone.push(s.clone()),
                Err(d) => {
                    failure = Some(d);
                    break;
                }
            }
        }
        if gone.is_empty() {
            return Err(failure.expect("no server, no mailbox"));
        }
        let all_gone = failure.is_none();
        self.store
            .update_mailboxes(|r| {
                if let Some(mut e) = mailboxes::get(r, &old) {
                    e.servers.retain(|s| !gone.contains(s));
                    if e.servers.is_empty() {
                        r.remove(old.as_bytes());
                    } else {
                        mailboxes::put(r, &old, &e);
                    }
                }
                Ok(((), true))
            })
            .map_err(Done::from)?;
        if all_gone {
            self.store
                .record_changes(&[(old.clone(), new.clone())])
                .map_err(Done::from)?;
        }
        self.log_mailbox_action("replace", &format!("{old} by {new}"));
        match failure {
            Some(d) => Err(d),
            None => Ok(Done::completed("replace")),
        }
    }

    pub(super) fn move_mailbox(
        &mut self,
        raw: &[u8],
        host: &str,
        servers: &[ServerPartition],
    ) -> Done {
        self.move_inner(raw, host, servers).unwrap_or_else(|d| d)
    }

    fn move_inner(
        &mut self,
        raw: &[u8],
        host: &str,
        servers: &[ServerPartition],
    ) -> Result<Done, Done> {
        self.restricted("MOVE")?;
        let name = self.mailbox_name(raw)?;
        let e = self.entry(&name, raw)?;
        let cfg = self.proxy_config();
        let Some(source) = e
            .servers
            .iter()
            .find(|s| s.eq_ignore_ascii_case(host))
            .cloned()
        else {
            return Err(Done::no(format!("Mailbox {name} is not on {host}")));
        };
        let targets = self.known_servers(&cfg, servers)?;
        if targets.is_empty() {
            return Err(Done::bad("MOVE needs at least one destination server"));
        }
        let fresh: Vec<String> = targets
            .iter()
            .filter(|t| !e.servers.contains(t))
            .cloned()
            .collect();
        let keep_source = targets.contains(&source);
        let mut src = self.imap(&cfg, &source)?;
        let mut made: Vec<ImapConn> = Vec::new();
        let mut copied = 0;
        let mut failure = None;
        for t in &fresh {
            let r = self.imap(&cfg, t).and_then(|mut c| {
                if let Err(er) = c.create(&name) {
                    c.logout();
                    return Err(Done::no(er.0));
                }
                made.push(c);
                let c = made.last_mut().expect("just pushed");
                src.copy_messages(&name, c).map_err(|er| Done::no(er.0))
            });
            match r {
                Ok(n) => copied = n,
                Err(d) => {
                    failure = Some(d);
                    break;
                }
            }
        }
        if let Some(d) = failure {
            for mut c in made {
                if let Err(er) = c.delete(&name) {
                    crate::log_warn!("move rollback: {er}");
                }
                c.logout();
            }
            src.logout();
            return Err(d);
        }
        for c in made {
            c.logout();
        }
        let mut note = None;
        let mut source_gone = false;
        if !keep_source {
            match src.delete(&name) {
                Ok(()) => source_gone = true,
                Err(er) => note = Some(er.0),
            }
        }
        src.logout();
        let (f2, s2) = (fresh.clone(), source.clone());
        self.store
            .update_mailboxes(|r| {
                let mut e = mailboxes::get(r, &name).unwrap_or_else(|| e.clone());
                if source_gone {
                    e.servers.retain(|s| *s != s2);
                }
                for t in &f2 {
                    if !e.servers.contains(t) {
                        e.servers.push(t.clone());
                    }
                }
                mailboxes::put(r, &name, &e);
                Ok(((), true))
            })
            .map_err(Done::from)?;
        self.log_mailbox_action(
            "move",
            &format!(
                "{name} from {source} to {} ({copied} messages)",
                targets.join(" ")
            ),
        );
        match note {
            Some(n) => Err(Done::no(format!(
                "Mailbox copied to {} but not removed from {source}: {n}",
                fresh.join(" ")
            ))),
            None => Ok(Done::completed("move")),
        }
    }

    // ---- ACLs of mailboxes ----

    fn acl_target(&mut self, raw: &[u8]) -> Result<(String, MailboxEntry), Done> {
        let name = self.mailbox_name(raw)?;
        let e = self.entry(&name, raw)?;
        Ok((name, e))
    }

    fn identifier(raw: &[u8]) -> Result<String, Done> {
        match std::str::from_utf8(raw) {
            Ok(s) if !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Ok(s.to_string())
            }
            _ => Err(Done::bad("Invalid identifier")),
        }
    }

    /// Remember the ACL the server reported, for the `mailboxes` file.
    fn cache_acl(&mut self, name: &str, acl: Vec<(String, String)>) {
        let r = self
            .store
            .update_mailboxes(|r| match mailboxes::get(r, name) {
                Some(mut e) if e.acl != acl => {
                    e.acl = acl;
                    mailboxes::put(r, name, &e);
                    Ok(((), true))
                }
                _ => Ok(((), false)),
            });
        if let Err(e) = r {
            crate::log_warn!("mailboxes: cannot keep the ACL of {name}: {e}");
        }
    }

    pub(super) fn set_mailbox_acl(&mut self, raw: &[u8], id: &[u8], rights: Option<&[u8]>) -> Done {
        let r = (|| {
            if let Some(d) = self.view_only() {
                return Err(d);
            }
            let (name, e) = self.acl_target(raw)?;
            let id = Self::identifier(id)?;
            let rights = match rights {
                Some(r) => {
                    let r = text(r);
                    if !r.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(Done::bad(format!(
                            "Invalid rights {r:?}: letters and digits only"
                        )));
                    }
                    Some(r)
                }
                None => None,
            };
            let cfg = self.proxy_config();
            let mut acl = None;
            for s in &e.servers {
                let mut c = self.imap(&cfg, s)?;
                let res = match &rights {
                    Some(r) => c.set_acl(&name, &id, r),
                    None => c.delete_acl(&name, &id),
                };
                if let Err(er) = res {
                    c.logout();
                    return Err(Done::no(er.0));
                }
                if acl.is_none() {
                    acl = c.get_acl(&name).ok();
                }
                c.logout();
            }
            if let Some(a) = acl {
                self.cache_acl(&name, a);
            }
            let what = match &rights {
                Some(r) => format!("setacl {name} {id} {r}"),
                None => format!("deleteacl {name} {id}"),
            };
            self.log_mailbox_action("acl", &what);
            Ok(Done::completed(if rights.is_some() {
                "setacl"
            } else {
                "deleteacl"
            }))
        })();
        r.unwrap_or_else(|d| d)
    }

    pub(super) fn get_mailbox_acl(&mut self, raw: &[u8], mine: bool, out: &mut dyn Output) -> Done {
        let r = (|| {
            let (name, e) = self.acl_target(raw)?;
            let cfg = self.proxy_config();
            let server = e.servers.first().cloned().unwrap_or_default();
            let mut c = self.imap(&cfg, &server)?;
            if mine {
                let rights = c.my_rights(&name).map_err(|er| Done::no(er.0));
                c.logout();
                out.send(Response::Untagged(Data::MyRights {
                    kind: AclKind::Mailbox,
                    object: raw.to_vec(),
                    rights: rights?.into_bytes(),
                }));
                return Ok(Done::completed("myrights"));
            }
            let acl = c.get_acl(&name).map_err(|er| Done::no(er.0));
            c.logout();
            let acl = acl?;
            for (id, rights) in &acl {
                out.send(Response::Untagged(Data::Acl {
                    kind: AclKind::Mailbox,
                    object: raw.to_vec(),
                    identifier: id.clone().into_bytes(),
                    rights: rights.clone().into_bytes(),
                }));
            }
            self.cache_acl(&name, acl);
            Ok(Done::completed("getacl"))
        })();
        r.unwrap_or_else(|d| d)
    }
}

/// The IMAP renames that move `old` and everything below it: for each
/// server that holds any of them (`old`'s own servers first), the topmost
/// of those it holds.
fn rename_steps(recs: &Records, old: &str, top: &MailboxEntry) -> Vec<(String, Vec<String>)> {
    let moving: Vec<(String, MailboxEntry)> = mailboxes::entries(recs)
        .into_iter()
        .filter(|(n, _)| mailboxes::is_within(n, old))
        .collect();
    let mut servers: Vec<String> = top.servers.clone();
    for (_, e) in &moving {
        for s in &e.servers {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
    }
    servers
        .into_iter()
        .map(|s| {
            let held: Vec<&String> = moving
                .iter()
                .filter(|(_, e)| e.servers.contains(&s))
                .map(|(n, _)| n)
                .collect();
            let tops = held
                .iter()
                .filter(|n| !held.iter().any(|p| p != *n && mailboxes::is_within(n, p)))
                .map(|n| n.to_string())
                .collect();
            (s, tops)
        })
        .collect()
}
