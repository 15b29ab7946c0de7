//! ADDRESSBOOK, CREATEADDRESSBOOK, DELETEADDRESSBOOK, RENAMEADDRESSBOOK,
//! SEARCHADDRESS, FETCHADDRESS, STOREADDRESS, DELETEADDRESS.
//!
//! Every command checks the right it needs on the book: lookup (`l`) to
//! list, read (`r`) to search and fetch, write (`w`) to store and delete
//! entries, create (`c`, on the owner's default book) to make books, delete
//! (`d`) to remove or rename them. A user with no right at all on a book
//! is told it does not exist, as if it did not.

use std::collections::BTreeSet;

use super::{Done, Handler, Output};
use crate::acl::Rights;
use crate::ldap;
use crate::pattern::Pattern;
use crate::protocol::{Data, Response};
use crate::store::abook::{self, Entry, owner_of};
use crate::store::names;

/// Where a readable book's entries live.
enum Readable {
    File(String),
    /// In the LDAP directory, with everybody's rights (USER0 and USER1).
    Ldap(String, Rights),
}

pub(super) fn fetch_response(book: &str, e: Entry) -> Response {
    Response::Untagged(Data::FetchAddress {
        book: book.as_bytes().to_vec(),
        name: e.name,
        fields: e.fields,
    })
}

fn right_name(c: char) -> &'static str {
    match c {
        'l' => "lookup",
        'r' => "read",
        'w' => "write",
        'c' => "create",
        'd' => "delete",
        'a' => "administer",
        _ => "needed",
    }
}

impl Handler<'_> {
    /// The rights of the session's user on `book`; `None` when the book
    /// does not exist.
    pub(super) fn book_rights(&mut self, book: &str) -> Result<Option<(String, Rights)>, Done> {
        Ok(self.book_access(book)?.map(|(b, r, _)| (b, r)))
    }

    /// [`Handler::book_rights`], with the rights `anyone` has on the book
    /// when they make it LDAP-backed (USER1, `1`): one read of its ACL for
    /// both.
    fn book_access(
        &mut self,
        book: &str,
    ) -> Result<Option<(String, Rights, Option<Rights>)>, Done> {
        let Some(book) = self.store.resolve_book(book)? else {
            return Ok(None);
        };
        let acl = self.store.book_acl(&book)?;
        let ldap = Some(acl.everybody_rights()).filter(|r| r.has('1'));
        let rights = self.rights_by(&acl, &book);
        Ok(Some((book, rights, ldap)))
    }

    /// The rights on `book` by its ACL (whether or not it exists yet).
    fn rights_on(&mut self, book: &str) -> Result<Rights, Done> {
        if self.is_admin() {
            return Ok(Rights::all());
        }
        let acl = self.store.book_acl(book)?;
        Ok(self.rights_by(&acl, book))
    }

    /// The session's user's rights on `book` by its ACL `acl` (an admin
    /// has them all).
    fn rights_by(&self, acl: &crate::acl::Acl, book: &str) -> Rights {
        match self.is_admin() {
            true => Rights::all(),
            false => acl.rights_of(owner_of(book), self.user.as_deref().expect("logged in")),
        }
    }

    /// Check `raw` names an existing book on which the user has `right`;
    /// returns the book's stored name.
    pub(super) fn need_book(&mut self, raw: &[u8], right: char) -> Result<String, Done> {
        Ok(self.need_book_access(raw, right)?.0)
    }

    /// [`Handler::need_book`], with the rights `anyone` has when the book
    /// is LDAP-backed (see [`Handler::book_access`]).
    fn need_book_access(
        &mut self,
        raw: &[u8],
        right: char,
    ) -> Result<(String, Option<Rights>), Done> {
        let missing = || {
            let shown = String::from_utf8_lossy(raw);
            Done::no(format!("ADDRESSBOOK '{shown}' does not exist"))
        };
        let Ok(book) = names::check_book(raw) else {
            return Err(missing());
        };
        match self.book_access(&book)? {
            Some((book, r, ldap)) if r.has(right) => Ok((book, ldap)),
            Some((book, r, _)) if !r.is_empty() => Err(Done::no(format!(
                "Permission denied: User '{}' has no {} right on address book '{book}'",
                self.user.as_deref().unwrap_or(""),
                right_name(right)
            ))),
            _ => Err(missing()),
        }
    }

    /// The quota of `user` in kilobytes (their own read-only setting or the
    /// global one; 0: none).
    pub(super) fn quota_of(&mut self, user: &str) -> Result<u64, Done> {
        let mine = self.store.user_options(user)?;
        let global = self.global().number("imsp.user.quota");
        Ok(super::options::quota_limit(mine.view(), global))
    }

    pub(super) fn addressbook(&mut self, pattern: &[u8], out: &mut dyn Output) -> Done {
        match self.list_books(pattern) {
            Ok(books) => {
                for b in books {
                    out.send(Response::Untagged(Data::AddressBook {
                        attributes: vec![],
                        separator: Some(b'.'),
                        name: b.into_bytes(),
                    }));
                }
                Done::completed("addressbook")
            }
            Err(d) => d,
        }
    }

    fn list_books(&mut self, pattern: &[u8]) -> Result<Vec<String>, Done> {
        // Book names are case-insensitive.
        let pat = Pattern::new(pattern, true);
        let user = self.user.clone().expect("logged in");
        let shared = self.store.books_with_acl()?;
        let mut owners: BTreeSet<String> = shared
            .iter()
            .map(|(b, _)| owner_of(b).to_string())
            .collect();
        owners.insert(user);
        if self.is_admin() {
            // An administrator also sees the books of the owner the pattern names.
            let lit: Vec<u8> = pattern
                .iter()
                .take_while(|&&b| !crate::pattern::is_wildcard(b))
                .copied()
                .collect();
            let lit = String::from_utf8_lossy(&lit).into_owned();
            let owner = owner_of(&lit);
            if !owner.is_empty() && names::check_book(owner.as_bytes()).is_ok() {
                let owner = self.store.owner_spelled(owner);
                if self.store.user_exists(&owner) {
                    owners.insert(owner);
                }
            }
        }
        let mut books = BTreeSet::new();
        for owner in owners {
            if names::check_book(owner.as_bytes()).is_err() {
                continue;
            }
            for b in self.store.books_of(&owner)? {
                books.insert(b);
            }
        }
        let mut out = Vec::new();
        for b in books {
            if pat.matches(b.as_bytes()) && self.rights_on(&b)?.has('l') {
                out.push(b);
            }
        }
        Ok(out)
    }

    pub(super) fn create_book(&mut self, raw: &[u8]) -> Done {
        let book = match names::check_book(raw) {
            Ok(b) => self.store.new_book_name(&b),
            Err(e) => return e.into(),
        };
        let r = (|| {
            let owner = owner_of(&book).to_string();
            if names::check_book(owner.as_bytes()).is_err() {
                return Err(Done::no(format!("Invalid address book name '{book}'")));
            }
            // The right first: whether a book the user may not create
            // exists is not told.
            if !self.rights_on(&owner)?.has('c') {
                return Err(Done::no(format!(
                    "User '{}' not permitted to create address book '{book}'",
                    self.user.as_deref().unwrap_or("")
                )));
            }
            // Refused by the store when the book exists.
            self.store.create_book(&book)?;
            Ok(())
        })();
        match r {
            Ok(()) => Done::completed("createaddressbook"),
            Err(d) => d,
        }
    }

    pub(super) fn delete_book(&mut self, raw: &[u8]) -> Done {
        let r = (|| {
            let book = self.need_book(raw, 'd')?;
            if owner_of(&book) == book {
                return Err(Done::no("The default address book cannot be deleted"));
            }
            let quota = self.quota_of(owner_of(&book))?;
            self.store.delete_book(&book, quota)?;
            Ok(())
        })();
        match r {
            Ok(()) => Done::completed("deleteaddressbook"),
            Err(d) => d,
        }
    }

    pub(super) fn rename_book(&mut self, old: &[u8], new: &[u8]) -> Done {
        let r = (|| {
            let old = self.need_book(old, 'd')?;
            let new = self.store.new_book_name(&names::check_book(new)?);
            if owner_of(&old) == old || owner_of(&new) == new {
                return Err(Done::no("The default address book cannot be renamed"));
            }
            if owner_of(&old) != owner_of(&new) {
                return Err(Done::no(
                    "An address book keeps its owner: the new name must start with the same user",
                ));
            }
            if !self.rights_on(owner_of(&new))?.has('c') {
                return Err(Done::no(format!(
                    "User '{}' not permitted to create address book '{new}'",
                    self.user.as_deref().unwrap_or("")
                )));
            }
            // The store refuses, under the owner's guard, a book gone
            // meanwhile and a new name taken.
            self.store.rename_book(&old, &new)?;
            Ok(())
        })();
        match r {
            Ok(()) => Done::completed("renameaddressbook"),
            Err(d) => d,
        }
    }

    pub(super) fn search_address(
        &mut self,
        raw: &[u8],
        criteria: &[(String, Vec<u8>)],
        out: &mut dyn Output,
    ) -> Done {
        let book = match self.readable_book(raw) {
            Ok(Readable::Ldap(book, r)) => return self.ldap_search(&book, r, criteria, out),
            Ok(Readable::File(book)) => book,
            Err(d) => return d,
        };
        let (bytes, index) = match self.store.book_index(&book) {
            Ok(b) => b,
            Err(e) => return e.into(),
        };
        // Name criteria are tested on the index; field criteria on the
        // lines of the entries whose names matched.
        let mut by_name = Vec::new();
        let mut by_field = Vec::new();
        for (f, p) in criteria {
            // Entry names and values have no hierarchy: `%` is `*`.
            let pat = Pattern::flat(p, true);
            if f.eq_ignore_ascii_case("name") {
                by_name.push(pat);
            } else {
                by_field.push((f.as_bytes(), pat));
            }
        }
        for (name, lines) in index.iter() {
            if !by_name.iter().all(|p| p.matches(name)) {
                continue;
            }
            let mut hit = true;
            if !by_field.is_empty() {
                abook::scan_entries(&bytes[lines], |_, fields| {
                    hit = by_field.iter().all(|(f, pat)| {
                        fields
                            .iter()
                            .any(|(k, v)| k.eq_ignore_ascii_case(f) && pat.matches(v))
                    });
                });
            }
            if hit {
                out.send(Response::Untagged(Data::SearchAddress {
                    name: name.to_vec(),
                }));
            }
        }
        Done::completed("searchaddress")
    }

    pub(super) fn fetch_address(
        &mut self,
        raw: &[u8],
        names: &[Vec<u8>],
        out: &mut dyn Output,
    ) -> Done {
        let book = match self.readable_book(raw) {
            Ok(Readable::Ldap(book, _)) => return self.ldap_fetch(&book, names, out),
            Ok(Readable::File(book)) => book,
            Err(d) => return d,
        };
        let recs = match self.store.book_records(&book) {
            Ok(r) => r,
            Err(e) => return e.into(),
        };
        let mut missing = None;
        for n in names {
            match abook::entry(&recs, n) {
                Some(e) => out.send(fetch_response(&book, e)),
                None => missing = missing.or(Some(n)),
            }
        }
        match missing {
            // As 1.8: the entries found are sent, the first missing one named.
            Some(n) => Done::no(format!("entry '{}' not found", String::from_utf8_lossy(n))),
            None => Done::completed("fetchaddress"),
        }
    }

    pub(super) fn store_address(
        &mut self,
        raw: &[u8],
        name: &[u8],
        fields: &[(String, Vec<u8>)],
        out: &mut dyn Output,
    ) -> Done {
        if let Some((f, _)) = fields.iter().find(|(f, _)| f.eq_ignore_ascii_case("name")) {
            return Done::bad(format!("The field '{f}' is reserved for the entry name"));
        }
        let r = (|| {
            let book = self.writable_book(raw)?;
            let quota = self.quota_of(owner_of(&book))?;
            let e = self.store.store_entry(&book, name, fields, quota)?;
            Ok((book, e))
        })();
        match r {
            Ok((book, e)) => {
                out.send(fetch_response(&book, e));
                Done::completed("storeaddress")
            }
            Err(d) => d,
        }
    }

    pub(super) fn delete_address(&mut self, raw: &[u8], name: &[u8]) -> Done {
        let r = (|| {
            let book = self.writable_book(raw)?;
            let quota = self.quota_of(owner_of(&book))?;
            if !self.store.delete_entry(&book, name, quota)? {
                return Err(Done::no(format!(
                    "entry '{}' not found",
                    String::from_utf8_lossy(name)
                )));
            }
            Ok(())
        })();
        match r {
            Ok(()) => Done::completed("deleteaddress"),
            Err(d) => d,
        }
    }
}

/// LDAP-backed books (see [`crate::ldap`]): chosen by the book's ACL,
/// searched and fetched in the directory, never written.
impl Handler<'_> {
    /// A book the user may read (`r`), and where its entries live.
    fn readable_book(&mut self, raw: &[u8]) -> Result<Readable, Done> {
        let (book, ldap) = self.need_book_access(raw, 'r')?;
        Ok(match ldap {
            Some(r) => Readable::Ldap(book, r),
            None => Readable::File(book),
        })
    }

    /// A book the user may write (`w`) in: not LDAP-backed. A user with
    /// some right on an LDAP-backed book (where nobody keeps `w`) is told
    /// it is read-only.
    pub(super) fn writable_book(&mut self, raw: &[u8]) -> Result<String, Done> {
        let read_only = |book: &str| {
            Done::no(format!(
                "Address book '{book}' is read-only: its entries come from an LDAP directory"
            ))
        };
        match self.need_book_access(raw, 'w') {
            Ok((book, None)) => Ok(book),
            Ok((book, Some(_))) => Err(read_only(&book)),
            Err(d) => {
                let seen = names::check_book(raw)
                    .ok()
                    .map(|b| self.book_access(&b))
                    .transpose()?
                    .flatten();
                match seen {
                    Some((book, r, Some(_))) if !r.is_empty() => Err(read_only(&book)),
                    _ => Err(d),
                }
            }
        }
    }

    fn ldap_directory_failed(book: &str, e: ldap::LdapError) -> Done {
        crate::log_error!("address book '{book}': {e}");
        Done::no(format!("Address book '{book}' is unavailable: {e}"))
    }

    fn ldap_search(
        &mut self,
        book: &str,
        rights: Rights,
        criteria: &[(String, Vec<u8>)],
        out: &mut dyn Output,
    ) -> Done {
        if rights.has('0') && ldap::is_unqualified(criteria) {
            return Done::no(format!(
                "Unqualified searches of address book '{book}' are not permitted: \
                 give a pattern that is not only wildcards"
            ));
        }
        let names = ldap::Config::from_options(self.global())
            .and_then(|cfg| ldap::Directory::connect(&cfg)?.search_names(criteria));
        match names {
            Ok(names) => {
                for name in names {
                    out.send(Response::Untagged(Data::SearchAddress { name }));
                }
                Done::completed("searchaddress")
            }
            Err(e) => Self::ldap_directory_failed(book, e),
        }
    }

    fn ldap_fetch(&mut self, book: &str, names: &[Vec<u8>], out: &mut dyn Output) -> Done {
        let r = (|| {
            let cfg = ldap::Config::from_options(self.global())?;
            let mut dir = ldap::Directory::connect(&cfg)?;
            let mut problem = None;
            for n in names {
                let shown = String::from_utf8_lossy(n);
                match dir.fetch(n)? {
                    ldap::Fetched::Found(e) => out.send(fetch_response(book, e)),
                    ldap::Fetched::NotFound => {
                        problem = problem.or(Some(format!("entry '{shown}' not found")))
                    }
                    ldap::Fetched::Ambiguous(k) => {
                        problem = problem.or(Some(format!(
                            "entry '{shown}' names {k} directory entries; \
                             fetch the name SEARCHADDRESS returned"
                        )))
                    }
                }
            }
            Ok(problem)
        })();
        match r {
            Ok(Some(p)) => Done::no(p),
            Ok(None) => Done::completed("fetchaddress"),
            Err(e) => Self::ldap_directory_failed(book, e),
        }
    }
}
