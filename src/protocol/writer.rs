//! Encoding responses to bytes: the choice of atom, quoted string, literal
//! or NIL for each string, as cyrus-imspd 1.8 makes it.

use super::command::AclKind;
use super::response::{Data, MailboxListKind, Response, Status};

/// How a string goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Form {
    Atom,
    Quoted,
    Literal,
}

/// Octets that may stand in an atom the server sends.
fn is_safe_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*')
}

/// 8-bit octets, CR, LF, NUL, `"` and `\` force a literal; anything else
/// that is not a plain atom (spaces, parentheses, wildcards, the empty
/// string, the word NIL) is quoted.
pub fn form_of(s: &[u8]) -> Form {
    if s.iter()
        .any(|&b| b >= 0x80 || b == b'\r' || b == b'\n' || b == 0 || b == b'"' || b == b'\\')
    {
        Form::Literal
    } else if s.is_empty()
        || !s.iter().all(|&b| is_safe_atom_char(b))
        || s.eq_ignore_ascii_case(b"NIL")
    {
        Form::Quoted
    } else {
        Form::Atom
    }
}

/// Append `s` as an astring.
pub fn put_astring(out: &mut Vec<u8>, s: &[u8]) {
    match form_of(s) {
        Form::Atom => out.extend_from_slice(s),
        Form::Quoted => {
            out.push(b'"');
            out.extend_from_slice(s);
            out.push(b'"');
        }
        Form::Literal => {
            out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
            out.extend_from_slice(s);
        }
    }
}

fn put_separator(out: &mut Vec<u8>, sep: Option<u8>) {
    match sep {
        Some(c) => {
            out.push(b'"');
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"NIL"),
    }
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'(');
    out.extend_from_slice(items.join(" ").as_bytes());
    out.push(b')');
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "OK",
        Status::No => "NO",
        Status::Bad => "BAD",
    }
}

fn acl_word(k: AclKind) -> &'static [u8] {
    match k {
        AclKind::Mailbox => b"MAILBOX",
        AclKind::AddressBook => b"ADDRESSBOOK",
    }
}

/// Response text is one line: CR and LF in it become spaces.
fn put_text(out: &mut Vec<u8>, code: &Option<String>, text: &str) {
    if let Some(code) = code {
        out.push(b'[');
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(b"] ");
    }
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Append the encoding of `r`, CRLF included.
pub fn encode(r: &Response, out: &mut Vec<u8>) {
    match r {
        Response::Continue(text) => {
            out.extend_from_slice(b"+ ");
            put_text(out, &None, text);
        }
        Response::Tagged {
            tag,
            status,
            code,
            text,
        } => {
            out.extend_from_slice(tag.as_bytes());
            out.push(b' ');
            out.extend_from_slice(status_word(*status).as_bytes());
            out.push(b' ');
            put_text(out, code, text);
        }
        Response::Untagged(d) => {
            out.extend_from_slice(b"* ");
            encode_data(d, out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn encode_data(d: &Data, out: &mut Vec<u8>) {
    match d {
        Data::Status { status, code, text } => {
            out.extend_from_slice(status_word(*status).as_bytes());
            out.push(b' ');
            put_text(out, code, text);
        }
        Data::Bye(text) => {
            out.extend_from_slice(b"BYE ");
            put_text(out, &None, text);
        }
        Data::Capability(caps) => {
            out.extend_from_slice(b"CAPABILITY");
            for c in caps {
                out.push(b' ');
                out.extend_from_slice(c.as_bytes());
            }
        }
        Data::Option {
            name,
            value,
            read_write,
        } => {
            out.extend_from_slice(b"OPTION ");
            put_astring(out, name.as_bytes());
            out.push(b' ');
            put_astring(out, value);
            out.extend_from_slice(if *read_write {
                b" [READ-WRITE]"
            } else {
                b" [READ-ONLY]"
            });
        }
        Data::AddressBook {
            attributes,
            separator,
            name,
        } => {
            out.extend_from_slice(b"ADDRESSBOOK ");
            put_list(out, attributes);
            out.push(b' ');
            put_separator(out, *separator);
            out.push(b' ');
            put_astring(out, name);
        }
        Data::SearchAddress { name } => {
            out.extend_from_slice(b"SEARCHADDRESS ");
            put_astring(out, name);
        }
        Data::FetchAddress { book, name, fields } => {
            out.extend_from_slice(b"FETCHADDRESS ");
            put_astring(out, book);
            out.push(b' ');
            put_astring(out, name);
            for (k, v) in fields {
                out.push(b' ');
                put_astring(out, k.as_bytes());
                out.push(b' ');
                put_astring(out, v);
            }
        }
        Data::Acl {
            kind,
            object,
            identifier,
            rights,
        } => {
            out.extend_from_slice(b"ACL ");
            out.extend_from_slice(acl_word(*kind));
            for s in [object, identifier, rights] {
                out.push(b' ');
                put_astring(out, s);
            }
        }
        Data::MyRights {
            kind,
            object,
            rights,
        } => {
            out.extend_from_slice(b"MYRIGHTS ");
            out.extend_from_slice(acl_word(*kind));
            for s in [object, rights] {
                out.push(b' ');
                put_astring(out, s);
            }
        }
        Data::Mailbox {
            kind,
            attributes,
            servers,
            separator,
            name,
        } => {
            out.extend_from_slice(match kind {
                MailboxListKind::List => b"LIST ",
                MailboxListKind::Lsub => b"LSUB ",
                MailboxListKind::Unseen => b"UNSEEN ",
            });
            put_list(out, attributes);
            out.push(b' ');
            put_list(out, servers);
            out.push(b' ');
            put_separator(out, *separator);
            out.push(b' ');
            put_astring(out, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Response) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&r, &mut v);
        v
    }

    fn opt(value: &[u8]) -> Vec<u8> {
        enc(Response::Untagged(Data::Option {
            name: "fred.test".into(),
            value: value.to_vec(),
            read_write: true,
        }))
    }

    #[test]
    fn string_forms_as_observed_in_1_8() {
        assert_eq!(opt(b"hello"), b"* OPTION fred.test hello [READ-WRITE]\r\n");
        assert_eq!(
            opt(b"hello world"),
            b"* OPTION fred.test \"hello world\" [READ-WRITE]\r\n"
        );
        assert_eq!(
            opt(b"(mailhost.myorg.com)"),
            b"* OPTION fred.test \"(mailhost.myorg.com)\" [READ-WRITE]\r\n"
        );
        assert_eq!(opt(b""), b"* OPTION fred.test \"\" [READ-WRITE]\r\n");
        let utf = "Zoë Müller — ünïcödé".as_bytes();
        let mut want = format!("* OPTION fred.test {{{}}}\r\n", utf.len()).into_bytes();
        want.extend_from_slice(utf);
        want.extend_from_slice(b" [READ-WRITE]\r\n");
        assert_eq!(opt(utf), want);
        assert_eq!(form_of(b"a\"b"), Form::Literal);
        assert_eq!(form_of(b"a\\b"), Form::Literal);
        assert_eq!(form_of(b"a\r\nb"), Form::Literal);
        assert_eq!(form_of(b"barney@bedrock"), Form::Atom);
    }

    #[test]
    fn tagged_and_lists() {
        assert_eq!(
            enc(Response::Tagged {
                tag: "A14".into(),
                status: Status::No,
                code: Some("LOCKED".into()),
                text: "locked by fred@localhost".into()
            }),
            b"A14 NO [LOCKED] locked by fred@localhost\r\n"
        );
        assert_eq!(
            enc(Response::Untagged(Data::AddressBook {
                attributes: vec![],
                separator: Some(b'.'),
                name: b"fred.work".to_vec()
            })),
            b"* ADDRESSBOOK () \".\" fred.work\r\n"
        );
        assert_eq!(
            enc(Response::Untagged(Data::Mailbox {
                kind: MailboxListKind::List,
                attributes: vec!["\\Noselect".into()],
                servers: vec!["imap1".into()],
                separator: None,
                name: b"INBOX".to_vec()
            })),
            b"* LIST (\\Noselect) (imap1) NIL INBOX\r\n"
        );
    }
}
