//! LOCK / UNLOCK: advisory locks of the `alock` files. Locks belong to the
//! session and are released when it ends, however it ends.

use super::addressbook::fetch_response;
use super::{Done, Handler, Output};
use crate::protocol::LockTarget;
use crate::store::abook::{self, owner_of};
use crate::store::alock::{self, Holder, Locked};

impl Handler<'_> {
    pub(super) fn lock(&mut self, target: LockTarget, out: &mut dyn Output) -> Done {
        match target {
            LockTarget::Option(name) => self.lock_option(&name, out),
            LockTarget::AddressBook { book, name } => self.lock_entry(&book, &name, out),
        }
    }

    pub(super) fn unlock(&mut self, target: LockTarget) -> Done {
        match target {
            LockTarget::Option(name) => self.unlock_option(&name),
            LockTarget::AddressBook { book, name } => self.unlock_entry(&book, &name),
        }
    }

    fn lock_option(&mut self, raw: &str, out: &mut dyn Output) -> Done {
        let name = match self.may_set(raw) {
            Ok(t) if t.global => return Done::no("Global options cannot be locked"),
            Ok(t) => t.name.to_string(),
            Err(d) => return d,
        };
        let user = self.user.clone().expect("logged in");
        let holder = self.holder();
        match self.store.lock(&user, name.as_bytes(), &holder) {
            Ok(Locked::Taken) => {
                self.lock_owners.insert(user);
                // The client's cached value must be current: send it.
                let wanted = |n: &[u8]| n.eq_ignore_ascii_case(name.as_bytes());
                if let Ok(all) = self.visible_options(&wanted)
                    && let Some(option) =
                        all.into_iter().find(|o| o.name.eq_ignore_ascii_case(&name))
                {
                    out.send(option.response());
                }
                Done::completed("lock")
            }
            Ok(Locked::HeldBy(who)) => {
                Done::no(format!("option '{name}' already locked by {who}")).with_code("LOCKED")
            }
            Err(e) => e.into(),
        }
    }

    fn unlock_option(&mut self, name: &str) -> Done {
        let user = self.user.clone().expect("logged in");
        let holder = self.holder();
        match self.store.unlock(&user, name.as_bytes(), &holder) {
            Ok(true) => Done::completed("unlock"),
            Ok(false) => Done::no(format!("option '{name}' not locked by current client")),
            Err(e) => e.into(),
        }
    }

    fn lock_entry(&mut self, raw: &[u8], name: &[u8], out: &mut dyn Output) -> Done {
        // As a write: refused on LDAP-backed (read-only) books.
        let book = match self.writable_book(raw) {
            Ok(b) => b,
            Err(d) => return d,
        };
        if let Err(e) = abook::check_entry_name(name) {
            return e.into();
        }
        let owner = owner_of(&book).to_string();
        let holder = self.holder();
        let shown = String::from_utf8_lossy(name).into_owned();
        match self
            .store
            .lock(&owner, &alock::entry_key(&book, name), &holder)
        {
            Ok(Locked::Taken) => {
                self.lock_owners.insert(owner);
                if let Ok(recs) = self.store.book_records(&book)
                    && let Some(e) = abook::entry(&recs, name)
                {
                    out.send(fetch_response(&book, e));
                }
                Done::completed("lock")
            }
            Ok(Locked::HeldBy(who)) => Done::no(format!(
                "addressbook entry '{shown}' already locked by {who}"
            ))
            .with_code("LOCKED"),
            Err(e) => e.into(),
        }
    }

    fn unlock_entry(&mut self, raw: &[u8], name: &[u8]) -> Done {
        // A session may always release its own lock, whatever its rights
        // now (and only its own: no right is needed, nothing is told).
        let shown = String::from_utf8_lossy(raw).into_owned();
        let Ok(book) = crate::store::names::check_book(raw) else {
            return Done::no(format!("ADDRESSBOOK '{shown}' does not exist"));
        };
        let book = match self.store.resolve_book(&book) {
            Ok(Some(b)) => b,
            Ok(None) => self.store.new_book_name(&book),
            Err(e) => return e.into(),
        };
        let owner = owner_of(&book).to_string();
        if !self.store.user_exists(&owner) {
            return Done::no(format!(
                "addressbook entry '{}' not locked by current client",
                String::from_utf8_lossy(name)
            ));
        }
        let holder = self.holder();
        match self
            .store
            .unlock(&owner, &alock::entry_key(&book, name), &holder)
        {
            Ok(true) => Done::completed("unlock"),
            Ok(false) => Done::no(format!(
                "addressbook entry '{}' not locked by current client",
                String::from_utf8_lossy(name)
            )),
            Err(e) => e.into(),
        }
    }

    /// This session as a lock holder (made at its first lock: it reads the
    /// process's start time), named as the user it now acts as (after an
    /// administrator's second LOGIN, that user). Locks are the session's
    /// whatever the name: they are matched by process.
    fn holder(&mut self) -> Holder {
        let who = format!(
            "{}@{}",
            self.user.as_deref().unwrap_or(""),
            self.peer_host()
        );
        let h = self
            .holder
            .get_or_insert_with(|| Holder::this_process(who.clone()));
        h.who = who;
        h.clone()
    }

    /// Release every lock this session holds.
    pub(super) fn release_locks(&mut self) {
        let Some(holder) = self.holder.clone() else {
            return;
        };
        for owner in std::mem::take(&mut self.lock_owners) {
            if let Err(e) = self.store.unlock_all(&owner, &holder) {
                crate::log_error!("releasing locks of {}: {e}", holder.who);
            }
        }
    }
}
