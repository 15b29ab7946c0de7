//! The IMSP command parser: one complete command frame (tag to end of line,
//! literals inline as `{N}CRLF` followed by N octets, final CRLF removed) in,
//! a typed [`Command`] out. Pure: no I/O, no state; fuzzed in `fuzz/`.
//!
//! The grammar is the draft's "Formal syntax", read leniently where real
//! clients need it: `*` and `%` are accepted inside atoms (patterns), and
//! quoted strings may carry 8-bit octets.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag as lit, take, take_while1},
    character::complete::{char, digit1},
    combinator::{map, opt},
};

use super::command::{AclKind, Command, LockTarget, ServerPartition};

/// Why a frame is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No valid tag at the start: answered with an untagged `* BAD`.
    BadTag,
    /// A valid tag, but the command keyword is not one we know.
    UnknownCommand { tag: String, name: String },
    /// A valid tag and command, malformed arguments.
    Syntax { tag: String, message: String },
}

/// `TCHAR`: any 7-bit CHAR except specials, `*`, `+`, SPACE and CTLs.
pub fn is_tag_char(b: u8) -> bool {
    is_atom_char(b) && b != b'*' && b != b'+' && b != b'%'
}

/// Atom characters: 7-bit, not a CTL, not SPACE, not `(){"\`.
/// (`%` and `*` are allowed so patterns can be sent unquoted.)
pub fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\')
}

fn tag_token(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_tag_char)(i)
}

fn atom(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_atom_char)(i)
}

/// A quoted string with `\"` and `\\` escapes; any other octet but CR, LF
/// and NUL is taken as is.
fn quoted(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    use nom::error::{Error, ErrorKind};
    let fail = |at| nom::Err::Error(Error::new(at, ErrorKind::Char));
    let (mut rest, _) = char('"').parse(i)?;
    let mut out = Vec::new();
    loop {
        match rest.split_first() {
            None => return Err(fail(rest)),
            Some((b'"', tail)) => return Ok((tail, out)),
            Some((b'\\', tail)) => match tail.split_first() {
                Some((&c @ (b'"' | b'\\'), tail)) => {
                    out.push(c);
                    rest = tail;
                }
                _ => return Err(fail(rest)),
            },
            Some((&c, tail)) => {
                if c == b'\r' || c == b'\n' || c == 0 {
                    return Err(fail(rest));
                }
                out.push(c);
                rest = tail;
            }
        }
    }
}

/// The `{N}` or `{N+}` literal header; returns N and whether it is
/// non-synchronizing.
pub fn literal_header(i: &[u8]) -> IResult<&[u8], (u64, bool)> {
    let (i, _) = char('{').parse(i)?;
    let (i, digits) = digit1(i)?;
    let (i, plus) = opt(char('+')).parse(i)?;
    let (i, _) = char('}').parse(i)?;
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Digit)))?;
    Ok((i, (n, plus.is_some())))
}

fn literal(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (i, (n, _)) = literal_header(i)?;
    let (i, _) = lit(&b"\r\n"[..]).parse(i)?;
    let n = usize::try_from(n)
        .map_err(|_| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::TooLarge)))?;
    let (i, body) = take(n).parse(i)?;
    Ok((i, body.to_vec()))
}

/// `astring ::= atom / quoted-string / literal`
fn astring(i: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((map(atom, |a: &[u8]| a.to_vec()), quoted, literal)).parse(i)
}

/// A cursor over a command's arguments that turns token failures into
/// clear messages for the tagged BAD.
struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// Consume one SPACE; `what` names the argument that should follow.
    fn space(&mut self, what: &str) -> Result<(), String> {
        match self.rest.split_first() {
            Some((b' ', tail)) => {
                self.rest = tail;
                Ok(())
            }
            None => Err(format!("Missing {what}")),
            Some(_) => Err(format!("Expected a space before {what}")),
        }
    }

    fn astring(&mut self, what: &str) -> Result<Vec<u8>, String> {
        self.space(what)?;
        match astring(self.rest) {
            Ok((rest, s)) => {
                self.rest = rest;
                Ok(s)
            }
            Err(_) if self.rest.is_empty() => Err(format!("Missing {what}")),
            Err(_) => Err(format!("Invalid {what}")),
        }
    }

    /// An argument the grammar says is an atom (option names, field names,
    /// host names). A quoted or literal form is accepted too, but it must be
    /// 7-bit printable text without spaces.
    fn word(&mut self, what: &str) -> Result<String, String> {
        let raw = self.astring(what)?;
        if raw.is_empty() || !raw.iter().all(|&b| is_atom_char(b)) {
            return Err(format!("Invalid {what}"));
        }
        Ok(String::from_utf8(raw).expect("atom chars are ASCII"))
    }

    fn keyword(&mut self, what: &str) -> Result<String, String> {
        self.space(what)?;
        match atom(self.rest) {
            Ok((rest, a)) => {
                self.rest = rest;
                Ok(String::from_utf8_lossy(a).to_ascii_uppercase())
            }
            Err(_) => Err(format!("Missing {what}")),
        }
    }

    fn acl_kind(&mut self) -> Result<AclKind, String> {
        match self.keyword("MAILBOX or ADDRESSBOOK")?.as_str() {
            "MAILBOX" => Ok(AclKind::Mailbox),
            "ADDRESSBOOK" => Ok(AclKind::AddressBook),
            other => Err(format!(
                "Expected MAILBOX or ADDRESSBOOK, not '{}'",
                other.to_ascii_lowercase()
            )),
        }
    }

    /// `"(" 1#server_partition ")"`
    fn server_list(&mut self) -> Result<Vec<ServerPartition>, String> {
        self.space("server list")?;
        let mut rest = match self.rest.split_first() {
            Some((b'(', tail)) => tail,
            _ => return Err("Expected a parenthesized server list".into()),
        };
        let mut out = Vec::new();
        loop {
            let (r, host) = atom(rest).map_err(|_| "Invalid server list".to_string())?;
            let host = String::from_utf8_lossy(host).into_owned();
            let (host, partition) = match host.split_once('/') {
                Some((h, p)) if !h.is_empty() && !p.is_empty() => {
                    (h.to_string(), Some(p.to_string()))
                }
                Some(_) => return Err("Invalid server list".into()),
                None => (host, None),
            };
            out.push(ServerPartition { host, partition });
            rest = r;
            match rest.split_first() {
                Some((b')', tail)) => {
                    self.rest = tail;
                    return Ok(out);
                }
                Some((b' ', tail)) => rest = tail,
                _ => return Err("Invalid server list".into()),
            }
        }
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("Too many arguments".into())
        }
    }
}

/// The tag at the start of a frame, if the frame has a valid one.
pub fn frame_tag(frame: &[u8]) -> Option<String> {
    let (rest, t) = tag_token(frame).ok()?;
    if rest.is_empty() || rest[0] == b' ' {
        Some(String::from_utf8_lossy(t).into_owned())
    } else {
        None
    }
}

/// Parse a complete command frame.
pub fn parse_command(frame: &[u8]) -> Result<(String, Command), ParseError> {
    let tag = frame_tag(frame).ok_or(ParseError::BadTag)?;
    let mut args = Args {
        rest: &frame[tag.len()..],
    };
    let syntax = |message: String| ParseError::Syntax {
        tag: tag.clone(),
        message,
    };
    let name = args.keyword("command").map_err(syntax)?;
    let command = parse_args(&name, &mut args).map_err(|e| match e {
        ArgError::Unknown => ParseError::UnknownCommand {
            tag: tag.clone(),
            name: name.to_ascii_lowercase(),
        },
        ArgError::Syntax(m) => syntax(m),
    })?;
    Ok((tag, command))
}

enum ArgError {
    Unknown,
    Syntax(String),
}

impl From<String> for ArgError {
    fn from(m: String) -> Self {
        ArgError::Syntax(m)
    }
}

fn parse_args(name: &str, a: &mut Args) -> Result<Command, ArgError> {
    let cmd = match name {
        "NOOP" => Command::Noop,
        "CAPABILITY" => Command::Capability,
        "LOGOUT" => Command::Logout,
        "LOGIN" => Command::Login {
            user: a.astring("user name")?,
            password: a.astring("password")?,
        },
        "AUTHENTICATE" => {
            let mechanism = a.word("mechanism name")?.to_ascii_uppercase();
            let initial_response = if a.at_end() {
                None
            } else {
                Some(a.astring("initial response")?)
            };
            Command::Authenticate {
                mechanism,
                initial_response,
            }
        }
        "GET" => Command::Get {
            pattern: a.astring("option pattern")?,
        },
        "SET" => Command::Set {
            option: a.word("option name")?,
            value: a.astring("option value")?,
        },
        "UNSET" => Command::Unset {
            option: a.word("option name")?,
        },
        "LOCK" | "UNLOCK" => {
            let target = match a.keyword("OPTION or ADDRESSBOOK")?.as_str() {
                "OPTION" => LockTarget::Option(a.word("option name")?),
                "ADDRESSBOOK" => LockTarget::AddressBook {
                    book: a.astring("address book name")?,
                    name: a.astring("entry name")?,
                },
                _ => return Err("Expected OPTION or ADDRESSBOOK".to_string().into()),
            };
            if name == "LOCK" {
                Command::Lock(target)
            } else {
                Command::Unlock(target)
            }
        }
        "ADDRESSBOOK" => Command::AddressBook {
            pattern: a.astring("address book pattern")?,
        },
        "CREATEADDRESSBOOK" => Command::CreateAddressBook {
            name: a.astring("address book name")?,
        },
        "DELETEADDRESSBOOK" => Command::DeleteAddressBook {
            name: a.astring("address book name")?,
        },
        "RENAMEADDRESSBOOK" => Command::RenameAddressBook {
            old: a.astring("address book name")?,
            new: a.astring("new address book name")?,
        },
        "SEARCHADDRESS" => {
            let book = a.astring("address book name")?;
            let mut criteria = Vec::new();
            while !a.at_end() {
                let field = a.word("field name")?;
                let pattern = a.astring("search pattern")?;
                criteria.push((field, pattern));
            }
            Command::SearchAddress { book, criteria }
        }
        "FETCHADDRESS" => {
            let book = a.astring("address book name")?;
            let mut names = vec![a.astring("entry name")?];
            while !a.at_end() {
                names.push(a.astring("entry name")?);
            }
            Command::FetchAddress { book, names }
        }
        "STOREADDRESS" => {
            let book = a.astring("address book name")?;
            let name = a.astring("entry name")?;
            let mut fields = vec![(a.word("field name")?, a.astring("field value")?)];
            while !a.at_end() {
                fields.push((a.word("field name")?, a.astring("field value")?));
            }
            Command::StoreAddress { book, name, fields }
        }
        "DELETEADDRESS" => Command::DeleteAddress {
            book: a.astring("address book name")?,
            name: a.astring("entry name")?,
        },
        "SETACL" => Command::SetAcl {
            kind: a.acl_kind()?,
            object: a.astring("name")?,
            identifier: a.astring("identifier")?,
            rights: a.astring("rights")?,
        },
        "DELETEACL" => Command::DeleteAcl {
            kind: a.acl_kind()?,
            object: a.astring("name")?,
            identifier: a.astring("identifier")?,
        },
        "GETACL" => Command::GetAcl {
            kind: a.acl_kind()?,
            object: a.astring("name")?,
        },
        "MYRIGHTS" => Command::MyRights {
            kind: a.acl_kind()?,
            object: a.astring("name")?,
        },
        "LIST" | "LSUB" | "UNSEEN" => {
            let reference = a.astring("reference")?;
            let pattern = a.astring("mailbox pattern")?;
            match name {
                "LIST" => Command::List { reference, pattern },
                "LSUB" => Command::Lsub { reference, pattern },
                _ => Command::Unseen { reference, pattern },
            }
        }
        "SUBSCRIBE" => Command::Subscribe {
            mailbox: a.astring("mailbox name")?,
        },
        "UNSUBSCRIBE" => Command::Unsubscribe {
            mailbox: a.astring("mailbox name")?,
        },
        "CREATE" => {
            let mailbox = a.astring("mailbox name")?;
            let servers = if a.at_end() {
                Vec::new()
            } else {
                a.server_list()?
            };
            Command::Create { mailbox, servers }
        }
        "DELETE" => {
            let mailbox = a.astring("mailbox name")?;
            let host = if a.at_end() {
                None
            } else {
                Some(a.word("host name")?)
            };
            Command::Delete { mailbox, host }
        }
        "RENAME" => Command::Rename {
            old: a.astring("mailbox name")?,
            new: a.astring("new mailbox name")?,
        },
        "REPLACE" => Command::Replace {
            old: a.astring("mailbox name")?,
            new: a.astring("new mailbox name")?,
        },
        "MOVE" => Command::Move {
            mailbox: a.astring("mailbox name")?,
            host: a.word("host name")?,
            servers: a.server_list()?,
        },
        "LAST" => Command::Last {
            mailbox: a.astring("mailbox name")?,
            uid: a.word("uid")?,
        },
        "SEEN" => Command::Seen {
            mailbox: a.astring("mailbox name")?,
            uid: a.word("uid")?,
            user: a.astring("user name")?,
        },
        _ => return Err(ArgError::Unknown),
    };
    a.end()?;
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(frame: &[u8]) -> Command {
        parse_command(frame).unwrap().1
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(ok(b"a1 noop"), Command::Noop);
        assert_eq!(ok(b"a1 NoOp"), Command::Noop);
    }

    #[test]
    fn astring_forms() {
        let want = Command::Set {
            option: "x.y".into(),
            value: b"a \"b\" \\c".to_vec(),
        };
        assert_eq!(ok(b"t SET x.y \"a \\\"b\\\" \\\\c\""), want);
        assert_eq!(ok(b"t SET x.y {8}\r\na \"b\" \\c"), want);
        assert_eq!(ok(b"t SET x.y {8+}\r\na \"b\" \\c"), want);
        assert_eq!(
            ok(b"t SET x.y atom"),
            Command::Set {
                option: "x.y".into(),
                value: b"atom".to_vec()
            }
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse_command(b"+bad NOOP"), Err(ParseError::BadTag));
        assert_eq!(parse_command(b""), Err(ParseError::BadTag));
        assert!(matches!(
            parse_command(b"a BOGUS"),
            Err(ParseError::UnknownCommand { name, .. }) if name == "bogus"
        ));
        assert!(matches!(
            parse_command(b"a SET x"),
            Err(ParseError::Syntax { message, .. }) if message == "Missing option value"
        ));
        assert!(matches!(
            parse_command(b"a NOOP extra"),
            Err(ParseError::Syntax { message, .. }) if message == "Too many arguments"
        ));
        // A literal shorter than announced.
        assert!(parse_command(b"a SET x {10}\r\nabc").is_err());
        // A literal count that does not fit.
        assert!(parse_command(b"a SET x {99999999999999999999999}\r\nabc").is_err());
    }

    #[test]
    fn server_lists() {
        assert_eq!(
            ok(b"a CREATE FOOBAR (imap2.do.main/a imap4.do.main)"),
            Command::Create {
                mailbox: b"FOOBAR".to_vec(),
                servers: vec![
                    ServerPartition {
                        host: "imap2.do.main".into(),
                        partition: Some("a".into())
                    },
                    ServerPartition {
                        host: "imap4.do.main".into(),
                        partition: None
                    },
                ]
            }
        );
    }
}
