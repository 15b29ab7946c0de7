//! Access control lists of address books: identifiers and rights as the
//! draft lists them (`l r s w i p c d a` and the digits `0`-`9`), the
//! default ACL (the owner has every right, nobody else any), `anyone` and
//! `anonymous` for everybody, and the owner always keeping `a`.

/// The letters of the draft, in the order rights are shown.
pub const LETTERS: &str = "lrswipcda";

/// Every right: what an owner has by default.
pub const ALL: &str = "lrswipcda";

/// A set of rights: letters and digits, shown in canonical order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights(u32);

impl Rights {
    fn bit(c: char) -> Option<u32> {
        match LETTERS.bytes().position(|l| c == l as char) {
            Some(i) => Some(1 << i),
            None => c.to_digit(10).map(|d| 1 << (16 + d)),
        }
    }

    /// Parse a rights string; unknown characters are an error.
    pub fn parse(s: &str) -> Result<Rights, char> {
        let mut r = 0;
        for c in s.chars() {
            r |= Rights::bit(c).ok_or(c)?;
        }
        Ok(Rights(r))
    }

    /// Parse what a file holds: unknown characters are dropped.
    pub fn parse_lenient(s: &str) -> Rights {
        Rights(s.chars().filter_map(Rights::bit).fold(0, |a, b| a | b))
    }

    pub fn all() -> Rights {
        // Every letter of ALL (the same as LETTERS): a bit each.
        const { assert!(ALL.len() == LETTERS.len()) };
        Rights((1 << LETTERS.len()) - 1)
    }

    pub fn none() -> Rights {
        Rights(0)
    }

    pub fn has(self, c: char) -> bool {
        Rights::bit(c).is_some_and(|b| self.0 & b != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, o: Rights) -> Rights {
        Rights(self.0 | o.0)
    }

    pub fn with(self, c: char) -> Rights {
        Rights(self.0 | Rights::bit(c).unwrap_or(0))
    }

    /// Keep only the rights in `keep`.
    pub fn intersect(self, keep: Rights) -> Rights {
        Rights(self.0 & keep.0)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in LETTERS.chars().chain('0'..='9') {
            if self.has(c) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Identifiers that stand for everybody.
pub fn is_everybody(id: &str) -> bool {
    id.eq_ignore_ascii_case("anyone") || id.eq_ignore_ascii_case("anonymous")
}

/// An ACL: identifier and rights pairs, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<(String, Rights)>,
}

impl Acl {
    /// The default ACL of a book owned by `owner`.
    pub fn default_for(owner: &str) -> Acl {
        Acl {
            entries: vec![(owner.to_string(), Rights::all())],
        }
    }

    /// Is this the default ACL of `owner`'s books?
    pub fn is_default_for(&self, owner: &str) -> bool {
        *self == Acl::default_for(owner)
    }

    /// Parse the global `abooks` value: `id TAB rights TAB ...`.
    pub fn decode(v: &[u8]) -> Acl {
        let s = String::from_utf8_lossy(v);
        let parts: Vec<&str> = s.split('\t').collect();
        let entries = parts
            .chunks(2)
            .filter(|p| p.len() == 2 && !p[0].is_empty())
            .map(|p| (p[0].to_string(), Rights::parse_lenient(p[1])))
            .collect();
        Acl { entries }
    }

    /// The `abooks` value: every pair followed by a tab.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (id, r) in &self.entries {
            out.push_str(&format!("{id}\t{r}\t"));
        }
        out.into_bytes()
    }

    /// Set `id`'s rights (empty rights remove the entry). The owner always
    /// keeps `a`.
    pub fn set(&mut self, owner: &str, id: &str, rights: Rights) {
        let rights = if id == owner {
            rights.with('a')
        } else {
            rights
        };
        match self.entries.iter_mut().find(|(i, _)| i == id) {
            Some(e) if !rights.is_empty() => e.1 = rights,
            Some(_) => self.entries.retain(|(i, _)| i != id),
            None if !rights.is_empty() => self.entries.push((id.to_string(), rights)),
            None => {}
        }
    }

    /// Remove `id`'s entry; the owner's entry shrinks to `a` instead.
    pub fn delete(&mut self, owner: &str, id: &str) -> bool {
        let had = self.entries.iter().any(|(i, _)| i == id);
        if id == owner {
            self.set(owner, id, Rights::none());
        } else {
            self.entries.retain(|(i, _)| i != id);
        }
        had
    }

    /// The rights given to everybody (`anyone`, `anonymous`). USER1 (`1`)
    /// there makes the book LDAP-backed, USER0 (`0`) forbids unqualified
    /// searches of it (see [`crate::ldap`]).
    pub fn everybody_rights(&self) -> Rights {
        self.entries
            .iter()
            .filter(|(id, _)| is_everybody(id))
            .fold(Rights::none(), |a, (_, r)| a.union(*r))
    }

    /// Whether the book is LDAP-backed: USER1 (`1`) for everybody.
    pub fn is_ldap_backed(&self) -> bool {
        self.everybody_rights().has('1')
    }

    /// On an LDAP-backed book, which is read-only, every identifier has
    /// only lookup, read and the digits (the owner also administer, to
    /// undo it), so that MYRIGHTS and GETACL tell what may be done. Applied
    /// to the ACL as read, not to the stored line.
    pub fn restrict_ldap(&mut self, owner: &str) {
        if !self.is_ldap_backed() {
            return;
        }
        let kept = Rights::parse_lenient("lr0123456789");
        for (id, r) in &mut self.entries {
            *r = r.intersect(kept);
            if id == owner {
                *r = r.with('a');
            }
        }
        self.entries.retain(|(_, r)| !r.is_empty());
    }

    /// The rights `user` has: their own entry joined with everybody's;
    /// the owner has at least `a`.
    pub fn rights_of(&self, owner: &str, user: &str) -> Rights {
        let mut r = self
            .entries
            .iter()
            .filter(|(id, _)| id == user || is_everybody(id))
            .fold(Rights::none(), |a, (_, r)| a.union(*r));
        if user == owner {
            r = r.with('a');
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_show_in_order() {
        assert_eq!(Rights::parse("adrl").unwrap().to_string(), "lrda");
        assert_eq!(Rights::parse("lr10").unwrap().to_string(), "lr01");
        assert_eq!(Rights::parse("lrx"), Err('x'));
        assert_eq!(Rights::all().to_string(), "lrswipcda");
        assert_eq!(Rights::all(), Rights::parse_lenient(ALL));
    }

    #[test]
    fn acl_lines_as_1_8_writes_them() {
        let mut acl = Acl::default_for("fred");
        acl.set("fred", "barney", Rights::parse("lr").unwrap());
        assert_eq!(acl.encode(), b"fred\tlrswipcda\tbarney\tlr\t");
        assert_eq!(Acl::decode(&acl.encode()), acl);
        assert_eq!(acl.rights_of("fred", "barney").to_string(), "lr");
        assert_eq!(acl.rights_of("fred", "wilma").to_string(), "");
        acl.set("fred", "anyone", Rights::parse("l").unwrap());
        assert_eq!(acl.rights_of("fred", "wilma").to_string(), "l");
        assert_eq!(acl.rights_of("fred", "barney").to_string(), "lr");
        // The owner keeps `a`.
        acl.set("fred", "fred", Rights::parse("lr").unwrap());
        assert_eq!(acl.rights_of("fred", "fred").to_string(), "lra");
        acl.delete("fred", "fred");
        // `a` of the owner, `l` of anyone.
        assert_eq!(acl.rights_of("fred", "fred").to_string(), "la");
        acl.delete("fred", "barney");
        acl.delete("fred", "anyone");
        acl.set("fred", "fred", Rights::all());
        assert!(acl.is_default_for("fred"));
        assert!(acl.everybody_rights().is_empty());
        acl.set("fred", "anyone", Rights::parse("lr1").unwrap());
        acl.set("fred", "barney", Rights::parse("0").unwrap());
        assert_eq!(acl.everybody_rights().to_string(), "lr1");
    }

    #[test]
    fn ldap_backed_books_keep_only_lookup_and_read() {
        let mut acl = Acl::default_for("fred");
        acl.set("fred", "barney", Rights::parse("lrwd2").unwrap());
        acl.set("fred", "wilma", Rights::parse("wc").unwrap());
        let before = acl.clone();
        acl.restrict_ldap("fred");
        assert_eq!(acl, before, "not LDAP-backed: unchanged");
        acl.set("fred", "anyone", Rights::parse("lrw1").unwrap());
        acl.restrict_ldap("fred");
        assert_eq!(acl.encode(), b"fred\tlra\tbarney\tlr2\tanyone\tlr1\t");
        assert_eq!(acl.rights_of("fred", "barney").to_string(), "lr12");
    }
}
