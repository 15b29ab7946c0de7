//! SETACL, DELETEACL, GETACL, MYRIGHTS on address books. (On mailboxes
//! they pass through to the IMAP servers: see the mailbox handlers.)

use super::{Done, Handler, Output};
use crate::acl::{Rights, is_everybody};
use crate::protocol::{AclKind, Data, Response};
use crate::store::abook::owner_of;

/// An identifier must fit in the tab-separated ACL line.
fn check_identifier(id: &[u8]) -> Result<String, Done> {
    match std::str::from_utf8(id) {
        Ok(s) if !s.is_empty() && !s.chars().any(|c| c.is_control() || c == ' ') => {
            Ok(s.to_string())
        }
        _ => Err(Done::bad(format!(
            "Invalid identifier '{}'",
            String::from_utf8_lossy(id)
        ))),
    }
}

impl Handler<'_> {
    pub(super) fn book_setacl(&mut self, raw: &[u8], id: &[u8], rights: Option<&[u8]>) -> Done {
        let verb = if rights.is_some() {
            "setacl"
        } else {
            "deleteacl"
        };
        let r = (|| {
            let id = check_identifier(id)?;
            let new = match rights {
                Some(r) => {
                    let s = String::from_utf8_lossy(r);
                    Some(Rights::parse(&s).map_err(|c| {
                        Done::bad(format!(
                            "Invalid right '{c}' in '{s}' (rights are lrswipcda and 0-9)"
                        ))
                    })?)
                }
                None => None,
            };
            // USER1 for everybody makes the book an LDAP-backed one,
            // read-only: as 1.8, only lookup and read are kept (and digits).
            let new = match new {
                Some(r) if is_everybody(&id) && r.has('1') => {
                    Some(r.intersect(Rights::parse("lr0123456789").expect("valid")))
                }
                other => other,
            };
            let book = self.need_book(raw, 'a')?;
            let owner = owner_of(&book).to_string();
            let changed = self.store.modify_book_acl(&book, |acl| {
                Ok(match new {
                    Some(r) => {
                        acl.set(&owner, &id, r);
                        true
                    }
                    None => acl.delete(&owner, &id),
                })
            })?;
            if !changed {
                return Err(Done::no(format!(
                    "'{id}' has no rights on address book '{book}'"
                )));
            }
            Ok(())
        })();
        match r {
            Ok(()) => Done::completed(verb),
            Err(d) => d,
        }
    }

    pub(super) fn book_getacl(&mut self, raw: &[u8], out: &mut dyn Output) -> Done {
        let r = (|| {
            let book = self.need_book(raw, 'a')?;
            Ok((book.clone(), self.store.book_acl(&book)?))
        })();
        match r {
            Ok((book, acl)) => {
                for (id, rights) in acl.entries {
                    out.send(Response::Untagged(Data::Acl {
                        kind: AclKind::AddressBook,
                        object: book.as_bytes().to_vec(),
                        identifier: id.into_bytes(),
                        rights: rights.to_string().into_bytes(),
                    }));
                }
                Done::completed("getacl")
            }
            Err(d) => d,
        }
    }

    pub(super) fn book_myrights(&mut self, raw: &[u8], out: &mut dyn Output) -> Done {
        let shown = String::from_utf8_lossy(raw).into_owned();
        let rights = match crate::store::names::check_book(raw) {
            Ok(book) => match self.book_rights(&book) {
                Ok(r) => r.map(|(_, r)| r).filter(|r| !r.is_empty()),
                Err(d) => return d,
            },
            Err(_) => None,
        };
        match rights {
            Some(r) => {
                out.send(Response::Untagged(Data::MyRights {
                    kind: AclKind::AddressBook,
                    object: raw.to_vec(),
                    rights: r.to_string().into_bytes(),
                }));
                Done::completed("myrights")
            }
            None => Done::no(format!("ADDRESSBOOK '{shown}' does not exist")),
        }
    }
}
