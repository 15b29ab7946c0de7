//! The line format of every database file, as cyrus-imspd 1.8 writes it:
//! one record a line, `key SP value LF`. The key is escaped (`\n` for a
//! newline, `\s` for a space, `\\` for a backslash) so that it holds no
//! space; the value is the rest of the line, escaped the same way except
//! that spaces stay as they are.

/// Escape newlines and backslashes, and spaces too when `space` is set.
fn escape(raw: &[u8], space: bool, out: &mut Vec<u8>) {
    let special = |b: u8| b == b'\n' || b == b'\\' || (space && b == b' ');
    if !raw.iter().any(|&b| special(b)) {
        out.extend_from_slice(raw);
        return;
    }
    for &b in raw {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b' ' if space => out.extend_from_slice(b"\\s"),
            _ => out.push(b),
        }
    }
}

/// Escape a key: newline, space and backslash.
pub fn escape_key(raw: &[u8], out: &mut Vec<u8>) {
    escape(raw, true, out);
}

/// Escape a value: newline and backslash (spaces are kept).
pub fn escape_value(raw: &[u8], out: &mut Vec<u8>) {
    escape(raw, false, out);
}

/// Undo either escaping. An unknown escape keeps the character after the
/// backslash; a trailing lone backslash is kept.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    if !s.contains(&b'\\') {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(s.len());
    unescape_into(s, &mut out);
    out
}

/// The bytes of `s` unescaped, one at a time, as [`unescape`] gives them:
/// for a scan that stops early and keeps nothing.
pub fn unescaped(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut bytes = s.iter();
    std::iter::from_fn(move || {
        let b = *bytes.next()?;
        Some(match b {
            b'\\' => match bytes.next() {
                Some(b'n') => b'\n',
                Some(b's') => b' ',
                Some(&other) => other,
                // A trailing lone backslash is kept.
                None => b'\\',
            },
            b => b,
        })
    })
}

/// [`unescape`] appending to `out`.
pub fn unescape_into(s: &[u8], out: &mut Vec<u8>) {
    let mut rest = s;
    while let Some(i) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..i]);
        match rest.get(i + 1) {
            Some(&c) => {
                out.push(match c {
                    b'n' => b'\n',
                    b's' => b' ',
                    other => other,
                });
                rest = &rest[i + 2..];
            }
            None => {
                // A trailing lone backslash is kept.
                out.push(b'\\');
                rest = &[];
            }
        }
    }
    out.extend_from_slice(rest);
}

/// [`unescape`], borrowing when there is nothing to undo.
pub fn unescape_cow(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if s.contains(&b'\\') {
        std::borrow::Cow::Owned(unescape(s))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Split one line (without its LF) into its unescaped key and value.
/// `None` for a line that is no record (no space after the key, empty key).
pub fn parse_line(line: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let sp = line.iter().position(|&b| b == b' ')?;
    if sp == 0 {
        return None;
    }
    Some((unescape(&line[..sp]), unescape(&line[sp + 1..])))
}

/// Append one record, LF included.
pub fn put_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    escape_key(key, out);
    out.push(b' ');
    escape_value(value, out);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"fred.test", b"W hello world"),
            (b"Barney Rubble\"email", b"barney@bedrock"),
            (b"a\\b\nc", b"line1\nline2 \\ end"),
            (b"x", b""),
            ("Zoë".as_bytes(), "ünï\r\ncode".as_bytes()),
        ];
        for (k, v) in cases {
            let mut line = Vec::new();
            put_record(k, v, &mut line);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let (k2, v2) = parse_line(&line[..line.len() - 1]).unwrap();
            assert_eq!((&k2[..], &v2[..]), (*k, *v));
        }
    }

    #[test]
    fn unescaped_bytes_are_unescape() {
        for s in [&b"a\\sb\\nc\\\\d"[..], b"plain", b"x\\", b"\\q\\", b""] {
            assert_eq!(unescaped(s).collect::<Vec<u8>>(), unescape(s), "{s:?}");
        }
    }

    #[test]
    fn reads_1_8_lines() {
        assert_eq!(
            parse_line(b"Barney\\sRubble\"email barney@bedrock"),
            Some((b"Barney Rubble\"email".to_vec(), b"barney@bedrock".to_vec()))
        );
        assert_eq!(
            parse_line(b"Barney\\sRubble\" "),
            Some((b"Barney Rubble\"".to_vec(), b"".to_vec()))
        );
        assert_eq!(parse_line(b"nospace"), None);
        assert_eq!(parse_line(b" leading"), None);
    }
}
