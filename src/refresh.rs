//! The refresh of the global `mailboxes` file from the IMAP servers
//! (`LIST "" *` on each of `imsp.imap.servers`), run by the listener in a
//! forked child at start when the file is missing and then every
//! `imsp.mailbox.refresh` seconds (default 300; 0: only at start).
//!
//! A server that cannot be reached keeps its last known mailboxes; when no
//! server answers, the file is left as it is (never emptied). A mailbox
//! that vanished from a list its servers gave is noted in `deleted` (its
//! subscriptions then go). LAST
//! UIDs and ACLs already known are kept. The proxy identity
//! (`imsp.proxy.user`) logs in, authorized as `imsp.refresh.user` when set.

use std::collections::BTreeMap;

use crate::proxy::imap::{ProxyConfig, ProxyError, connect};
use crate::store::mailboxes::{self, MailboxEntry};
use crate::store::options::OptionTable;
use crate::store::{Records, Store, StoreError};

/// What one refresh found.
#[derive(Debug, Default)]
pub struct Report {
    pub reached: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub mailboxes: usize,
}

/// Seconds between refreshes.
pub fn interval(o: &OptionTable) -> u64 {
    o.number("imsp.mailbox.refresh").unwrap_or(300).max(0) as u64
}

/// The mailboxes of every server, or why a server could not be asked.
/// Each server's name and its mailboxes (name, separator), or the error.
type Survey = Vec<(String, Result<Vec<(String, Option<u8>)>, ProxyError>)>;

fn survey(o: &OptionTable) -> Survey {
    let cfg = ProxyConfig::from_options(o);
    let refresh_user = o
        .value("imsp.refresh.user")
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
        .filter(|s| !s.is_empty());
    let cred = cfg.proxy_as(refresh_user.as_deref());
    cfg.servers
        .iter()
        .map(|spec| {
            let r = match &cred {
                None => Err(ProxyError(
                    "no proxy identity (imsp.proxy.user, imsp.proxy.password) to list mailboxes"
                        .into(),
                )),
                Some(cred) => connect(&cfg, spec, cred).and_then(|mut c| {
                    let l = c.list_all();
                    c.logout();
                    l
                }),
            };
            (spec.name.clone(), r)
        })
        .collect()
}

/// Merge what the servers said into `mailboxes`.
pub fn refresh(store: &mut Store) -> Result<Report, StoreError> {
    let o = store.global_options()?;
    // What the list was before the servers were asked: an entry that a
    // command changed meanwhile is the command's, not the survey's.
    let before = store.mailboxes()?;
    let found = survey(&o);
    let mut report = Report::default();
    // Nothing learned: the list stays as it is (or missing).
    if found.iter().any(|(_, r)| r.is_ok()) {
        let (vanished, present) = store.update_mailboxes(|recs| {
            let r = merge(recs, &before, &found);
            report.mailboxes = recs.len();
            Ok((r, true))
        })?;
        store.note_deleted(&vanished, &present)?;
    }
    for (server, r) in found {
        match r {
            Ok(_) => report.reached.push(server),
            Err(e) => report.failed.push((server, e.0)),
        }
    }
    Ok(report)
}

/// Replace `recs` (the list now, under its lock) by what the servers said
/// in `found`; `before` is the list as it was before they were asked.
/// Returns the names that vanished and the names present.
fn merge(recs: &mut Records, before: &Records, found: &Survey) -> (Vec<String>, Vec<String>) {
    let mut next: BTreeMap<String, MailboxEntry> = BTreeMap::new();
    // What is known of the servers (still configured) that did not answer
    // stays.
    for (name, mut e) in mailboxes::entries(recs) {
        e.servers.retain(|s| {
            found
                .iter()
                .any(|(srv, r)| srv.eq_ignore_ascii_case(s) && r.is_err())
        });
        next.insert(name, e);
    }
    let old: &Records = recs;
    for (server, r) in found {
        let Ok(names) = r else { continue };
        for (name, sep) in names {
            if mailboxes::check_name(name.as_bytes()).is_err() {
                crate::log_warn!("mailbox refresh: {server}: skipped unusable name {name:?}");
                continue;
            }
            let e = next
                .entry(name.clone())
                .or_insert_with(|| MailboxEntry::new(Vec::new()));
            // FLAGS begins with the separator, or CR when there is none.
            let first = sep.unwrap_or(b'\r');
            match e.flags.first_mut() {
                Some(f) => *f = first,
                None => e.flags = vec![first],
            }
            if !e.servers.iter().any(|s| s.eq_ignore_ascii_case(server)) {
                e.servers.push(server.clone());
            }
        }
    }
    // Keep the known order of servers (the first is the master).
    for (name, e) in next.iter_mut() {
        if let Some(prev) = mailboxes::get(old, name) {
            e.servers.sort_by_key(|s| {
                prev.servers
                    .iter()
                    .position(|p| p == s)
                    .unwrap_or(usize::MAX)
            });
        }
    }
    let mut fresh = Records::new(mailboxes::ORDER);
    for (name, e) in next.iter().filter(|(_, e)| !e.servers.is_empty()) {
        mailboxes::put(&mut fresh, name, e);
    }
    // CREATE, DELETE, RENAME, MOVE ... made while the servers were
    // asked stand as they are now.
    let touched: Vec<Vec<u8>> = old
        .iter()
        .map(|(k, _)| k)
        .chain(before.iter().map(|(k, _)| k))
        .filter(|k| old.get(k) != before.get(k))
        .map(<[u8]>::to_vec)
        .collect();
    for k in touched {
        match old.get(&k) {
            Some(v) => {
                fresh.insert(k, v.to_vec());
            }
            None => {
                fresh.remove(&k);
            }
        }
    }
    // Gone from a list that every server holding them answered.
    let vanished: Vec<String> = mailboxes::entries(old)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| fresh.get(n.as_bytes()).is_none())
        .collect();
    let present: Vec<String> = mailboxes::entries(&fresh)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    *recs = fresh;
    (vanished, present)
}

/// Run one refresh and log how it went (the body of the listener's child).
pub fn run_logged(store: &mut Store) {
    if let Ok(o) = store.global_options() {
        crate::log::set_level(o.log_level());
    }
    match refresh(store) {
        Ok(r) => {
            for (server, why) in &r.failed {
                crate::log_warn!(
                    "mailbox refresh: {server} unreachable, keeping its last known mailboxes: {why}"
                );
            }
            if r.reached.is_empty() {
                crate::log_warn!(
                    "mailbox refresh: no IMAP server answered; mailboxes left as they were"
                );
                return;
            }
            crate::log_admin!(
                "mailbox refresh: done, {} mailboxes from {} of {} servers",
                r.mailboxes,
                r.reached.len(),
                r.reached.len() + r.failed.len()
            );
        }
        Err(e) => crate::log_error!("mailbox refresh failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, &str)]) -> Records {
        let mut r = Records::new(mailboxes::ORDER);
        for (k, v) in entries {
            r.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        r
    }

    #[test]
    fn nil_separator_is_cr() {
        let found: Survey = vec![(
            "imap1".into(),
            Ok(vec![("flat".into(), None), ("a.b".into(), Some(b'.'))]),
        )];
        let mut recs = list(&[("flat", "* . (imap1) ")]);
        let before = recs.clone();
        merge(&mut recs, &before, &found);
        assert_eq!(recs.get(b"flat"), Some(&b"* \r (imap1) "[..]));
        assert_eq!(mailboxes::get(&recs, "flat").unwrap().separator(), None);
        assert_eq!(recs.get(b"a.b"), Some(&b"* . (imap1) "[..]));
    }

    #[test]
    fn entries_changed_meanwhile_stay() {
        let found: Survey = vec![
            ("imap1".into(), Ok(vec![("old".into(), Some(b'.'))])),
            ("imap2".into(), Err(ProxyError("down".into()))),
        ];
        let before = list(&[("old", "* . (imap1) "), ("gone", "* . (imap1) ")]);
        // Meanwhile: old renamed to new, made.here created.
        let mut recs = list(&[
            ("gone", "* . (imap1) "),
            ("made.here", "0 . (imap1) "),
            ("new", "* . (imap1) "),
        ]);
        let (vanished, present) = merge(&mut recs, &before, &found);
        assert_eq!(
            mailboxes::entries(&recs)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            vec!["made.here", "new"]
        );
        assert_eq!(vanished, vec!["gone".to_string()]);
        assert_eq!(present, vec!["made.here".to_string(), "new".to_string()]);
    }
}
