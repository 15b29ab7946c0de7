//! Names from the wire that become parts of paths are checked here, so that
//! nothing outside the data directory is ever read, created or removed.

use super::StoreError;

/// Longest user or address book name, in bytes.
pub const MAX_NAME: usize = 255;

fn check(kind: &str, raw: &[u8]) -> Result<String, StoreError> {
    let bad = |why: &str| Err(StoreError::Invalid(format!("invalid {kind} name: {why}")));
    if raw.is_empty() {
        return bad("empty");
    }
    if raw.len() > MAX_NAME {
        return bad("too long");
    }
    let Ok(s) = std::str::from_utf8(raw) else {
        return bad("not UTF-8");
    };
    if s.chars().any(|c| c.is_control()) {
        return bad("control characters");
    }
    if s.contains('/') {
        return bad("contains '/'");
    }
    if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
        return bad("misplaced '.'");
    }
    Ok(s.to_string())
}

/// A user name that may name `user/NAME`. Spaces and `"` are refused too,
/// since user names appear in ACL and lock lines.
pub fn check_user(raw: &[u8]) -> Result<String, StoreError> {
    let s = check("user", raw)?;
    if s.contains([' ', '"', '\t', '*', '%']) {
        return Err(StoreError::Invalid(
            "invalid user name: spaces, quotes and wildcards are not allowed".into(),
        ));
    }
    Ok(s)
}

/// An address book name (`user` or `user.ext`), the tail of `abook.NAME`.
pub fn check_book(raw: &[u8]) -> Result<String, StoreError> {
    let s = check("address book", raw)?;
    if s.contains(['"', '*', '%']) {
        return Err(StoreError::Invalid(
            "invalid address book name: quotes and wildcards are not allowed".into(),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_could_escape() {
        for bad in [
            &b""[..],
            b"..",
            b".",
            b"../etc",
            b"a/b",
            b"/etc/passwd",
            b"fred\0x",
            b"fred\nx",
            b".hidden",
            b"a..b",
            b"trailing.",
            b"\xff\xfe",
        ] {
            assert!(check_user(bad).is_err(), "{bad:?}");
            assert!(check_book(bad).is_err(), "{bad:?}");
        }
        assert!(check_user(&[b'a'; 256]).is_err());
        assert_eq!(check_user(b"fred").unwrap(), "fred");
        assert_eq!(check_book(b"fred.work stuff").unwrap(), "fred.work stuff");
        assert!(check_user(b"fred x").is_err());
    }
}
