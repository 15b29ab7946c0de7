//! Address book entries as vCard 4.0 (RFC 6350), both ways.
//!
//! | IMSP field          | vCard property                          |
//! |---------------------|-----------------------------------------|
//! | (the entry name)    | `FN`, and `N` made from it              |
//! | `email`             | `EMAIL`, one a line of the value        |
//! | `phone`             | `TEL`, one a line of the value          |
//! | `phone-home`        | `TEL;TYPE=home`                         |
//! | `phone-work`        | `TEL;TYPE=work`                         |
//! | `fax`               | `TEL;TYPE=fax`                          |
//! | `address`           | `ADR`, the text in the street component |
//! | `notes`             | `NOTE`                                  |
//! | `alias`             | `NICKNAME`                              |
//! | any other field `f` | `X-IMSP-F`                              |
//!
//! Multi-line values are CRLF-separated, as the protocol draft has them:
//! `email` and `phone` lists become one property a line; in other values a
//! line break is the text escape `\n`, read back as CRLF. When a field's
//! name is not what the property gives back (case, or characters a property
//! name cannot hold), the parameter `X-IMSP-FIELD` keeps it. Values are
//! written as their bytes (UTF-8 stays UTF-8), escaped and folded at 75
//! octets without splitting a UTF-8 sequence.

use std::fmt;

/// One address book entry: its name and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub name: Vec<u8>,
    pub fields: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcardError {
    /// Line of the input (after unfolding, counting physical lines).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for VcardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Fields whose value is a CRLF-separated list, one property an item.
fn list_property(field: &str) -> Option<&'static str> {
    match field.to_ascii_lowercase().as_str() {
        "email" => Some("EMAIL"),
        "phone" => Some("TEL"),
        _ => None,
    }
}

/// The property (and TYPE parameter) a field is written as.
fn property_of(field: &str) -> (String, Option<&'static str>) {
    let lower = field.to_ascii_lowercase();
    let fixed = match lower.as_str() {
        "email" => Some(("EMAIL", None)),
        "phone" => Some(("TEL", None)),
        "phone-home" => Some(("TEL", Some("home"))),
        "phone-work" => Some(("TEL", Some("work"))),
        "fax" => Some(("TEL", Some("fax"))),
        "address" => Some(("ADR", None)),
        "notes" => Some(("NOTE", None)),
        "alias" => Some(("NICKNAME", None)),
        _ => None,
    };
    if let Some((p, t)) = fixed {
        return (p.to_string(), t);
    }
    let mut name = String::from("X-IMSP-");
    for c in field.chars() {
        name.push(if c.is_ascii_alphanumeric() || c == '-' {
            c.to_ascii_uppercase()
        } else {
            '-'
        });
    }
    (name, None)
}

/// The field a property (with its TYPE values, lowercase) is read as.
fn field_of(prop: &str, types: &[String]) -> Option<String> {
    let has = |t: &str| types.iter().any(|x| x == t);
    Some(match prop {
        "EMAIL" => "email".into(),
        "TEL" if has("fax") => "fax".into(),
        "TEL" if has("home") => "phone-home".into(),
        "TEL" if has("work") => "phone-work".into(),
        "TEL" => "phone".into(),
        "ADR" => "address".into(),
        "NOTE" => "notes".into(),
        "NICKNAME" => "alias".into(),
        "ORG" => "company".into(),
        "URL" => "urls".into(),
        "TITLE" => "title".into(),
        // Structure of the card, or what FN already gives.
        "BEGIN" | "END" | "VERSION" | "FN" | "N" | "PRODID" | "UID" | "REV" | "KIND" => {
            return None;
        }
        p => match p.strip_prefix("X-IMSP-") {
            Some(rest) if !rest.is_empty() => rest.to_ascii_lowercase(),
            _ => p.to_ascii_lowercase(),
        },
    })
}

/// Escape a text value: backslash, comma, semicolon, and line breaks
/// (CRLF, CR or LF) as `\n`.
fn escape_text(v: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b',' => out.extend_from_slice(b"\\,"),
            b';' => out.extend_from_slice(b"\\;"),
            b'\r' if v.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
        i += 1;
    }
}

/// Undo text escaping; `\n` becomes CRLF (the protocol's line break).
fn unescape_text(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            match v[i + 1] {
                b'n' | b'N' => out.extend_from_slice(b"\r\n"),
                c => out.push(c),
            }
            i += 2;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// Split a structured value at unescaped `;` (components stay escaped).
fn split_components(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\\' => i += 2,
            b';' => {
                out.push(&v[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push(&v[start.min(v.len())..]);
    out
}

/// A parameter value, quoted when needed, with RFC 6868 caret escapes.
fn param_value(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        match c {
            '^' => s.push_str("^^"),
            '"' => s.push_str("^'"),
            '\n' => s.push_str("^n"),
            '\r' => {}
            c => s.push(c),
        }
    }
    if s.contains([':', ';', ',']) || s.is_empty() {
        format!("\"{s}\"")
    } else {
        s
    }
}

fn unparam(v: &str) -> String {
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '^' {
            match chars.next() {
                Some('^') => out.push('^'),
                Some('\'') => out.push('"'),
                Some('n') => out.push('\n'),
                Some(o) => {
                    out.push('^');
                    out.push(o);
                }
                None => out.push('^'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Write one content line, folded at 75 octets (never inside a UTF-8
/// sequence), CRLF-terminated.
fn put_line(line: &[u8], out: &mut Vec<u8>) {
    let mut width = 0;
    for (i, &b) in line.iter().enumerate() {
        let starts_char = b & 0xC0 != 0x80;
        // Room for the whole UTF-8 sequence that starts here.
        let len = if starts_char {
            line[i + 1..]
                .iter()
                .take_while(|&&c| c & 0xC0 == 0x80)
                .count()
                + 1
        } else {
            0
        };
        if starts_char && width + len > 75 {
            out.extend_from_slice(b"\r\n ");
            width = 1;
        }
        out.push(b);
        width += 1;
    }
    out.extend_from_slice(b"\r\n");
}

fn property(
    name: &str,
    types: Option<&str>,
    field_param: Option<&str>,
    value: &[u8],
    out: &mut Vec<u8>,
) {
    let mut line = name.as_bytes().to_vec();
    if let Some(t) = types {
        line.extend_from_slice(format!(";TYPE={t}").as_bytes());
    }
    if let Some(f) = field_param {
        line.extend_from_slice(format!(";X-IMSP-FIELD={}", param_value(f)).as_bytes());
    }
    line.push(b':');
    line.extend_from_slice(value);
    put_line(&line, out);
}

/// `N` from a full name: the last word is the family name.
fn n_of(name: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(name);
    let text = text.trim();
    let (given, family) = match text.rsplit_once(' ') {
        Some((g, f)) => (g.trim(), f),
        None => ("", text),
    };
    let mut v = Vec::new();
    escape_text(family.as_bytes(), &mut v);
    v.push(b';');
    escape_text(given.as_bytes(), &mut v);
    v.extend_from_slice(b";;;");
    v
}

/// Append one entry as a vCard.
pub fn write_card(card: &Card, out: &mut Vec<u8>) {
    put_line(b"BEGIN:VCARD", out);
    put_line(b"VERSION:4.0", out);
    let mut fn_ = Vec::new();
    escape_text(&card.name, &mut fn_);
    property("FN", None, None, &fn_, out);
    property("N", None, None, &n_of(&card.name), out);
    for (field, value) in &card.fields {
        let (prop, types) = property_of(field);
        // Keep the field's exact name when reading back would not give it.
        let back = field_of(
            &prop,
            &types.map(|t| vec![t.to_string()]).unwrap_or_default(),
        );
        let keep = (back.as_deref() != Some(field.as_str())).then_some(field.as_str());
        let items: Vec<&[u8]> = value.split(|&b| b == b'\n').collect();
        let clean_list = list_property(field).is_some()
            && items.len() > 1
            && items.iter().enumerate().all(|(i, it)| {
                let it = if i + 1 < items.len() {
                    it.strip_suffix(b"\r").unwrap_or(b"\x00")
                } else {
                    it
                };
                !it.is_empty() && !it.contains(&b'\r') && !it.contains(&0)
            });
        if clean_list {
            for (i, it) in items.iter().enumerate() {
                let it = if i + 1 < items.len() {
                    &it[..it.len() - 1]
                } else {
                    it
                };
                let mut v = Vec::new();
                escape_text(it, &mut v);
                property(&prop, types, keep, &v, out);
            }
            continue;
        }
        let mut v = Vec::new();
        if prop == "ADR" {
            // PO box; extended; street; locality; region; code; country.
            v.extend_from_slice(b";;");
            escape_text(value, &mut v);
            v.extend_from_slice(b";;;;");
        } else {
            escape_text(value, &mut v);
        }
        property(&prop, types, keep, &v, out);
    }
    put_line(b"END:VCARD", out);
}

/// One content line: name (uppercase), parameters (names uppercase) and
/// the raw value.
struct ContentLine {
    name: String,
    params: Vec<(String, String)>,
    value: Vec<u8>,
}

fn parse_content_line(line: &[u8]) -> Option<ContentLine> {
    // The value starts at the first ':' outside a quoted parameter value.
    let mut quoted = false;
    let colon = line.iter().position(|&b| {
        if b == b'"' {
            quoted = !quoted;
        }
        b == b':' && !quoted
    })?;
    let head = std::str::from_utf8(&line[..colon]).ok()?;
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut q = false;
    for c in head.chars() {
        match c {
            '"' => {
                q = !q;
                cur.push(c);
            }
            ';' if !q => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut it = parts.into_iter();
    let mut name = it.next()?.to_ascii_uppercase();
    // A group prefix (`item1.EMAIL`) is dropped.
    if let Some((_, n)) = name.rsplit_once('.') {
        name = n.to_string();
    }
    if name.is_empty() {
        return None;
    }
    let params = it
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v.to_string()),
            // vCard 2.1 style `TEL;HOME:...`
            None => ("TYPE".to_string(), p),
        })
        .collect();
    Some(ContentLine {
        name,
        params,
        value: line[colon + 1..].to_vec(),
    })
}

/// Unfold: a line break followed by a space or tab continues the line.
/// Yields (first physical line number, logical line).
fn unfold(input: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    for (n, raw) in input.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match raw.first() {
            Some(b' ') | Some(b'\t') if !out.is_empty() => {
                out.last_mut().unwrap().1.extend_from_slice(&raw[1..]);
            }
            _ if raw.is_empty() => {}
            _ => out.push((n + 1, raw.to_vec())),
        }
    }
    out
}

/// Read every vCard of `input` (any version; 4.0 as written above).
pub fn read_cards(input: &[u8]) -> Result<Vec<Card>, VcardError> {
    let mut cards = Vec::new();
    // A card being read: its first line, FN, N, and fields.
    type Open = (
        usize,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Vec<u8>)>,
    );
    let mut cur: Option<Open> = None;
    let err = |line: usize, m: &str| VcardError {
        line,
        message: m.to_string(),
    };
    for (n, line) in unfold(input) {
        let Some(cl) = parse_content_line(&line) else {
            return Err(err(n, "not a vCard content line (NAME:VALUE)"));
        };
        match cl.name.as_str() {
            "BEGIN" if cl.value.eq_ignore_ascii_case(b"VCARD") => {
                if cur.is_some() {
                    return Err(err(n, "BEGIN:VCARD inside a vCard"));
                }
                cur = Some((n, None, None, Vec::new()));
                continue;
            }
            "END" if cl.value.eq_ignore_ascii_case(b"VCARD") => {
                let Some((start, fn_, n_, fields)) = cur.take() else {
                    return Err(err(n, "END:VCARD without BEGIN:VCARD"));
                };
                let name = match (fn_, n_) {
                    (Some(f), _) if !f.is_empty() => f,
                    (_, Some(nv)) => name_from_n(&nv),
                    _ => Vec::new(),
                };
                if name.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(err(start, "vCard without a name (FN or N)"));
                }
                cards.push(Card { name, fields });
                continue;
            }
            _ => {}
        }
        let Some((_, fn_, n_, fields)) = cur.as_mut() else {
            return Err(err(n, "content outside BEGIN:VCARD ... END:VCARD"));
        };
        let types: Vec<String> = cl
            .params
            .iter()
            .filter(|(k, _)| k == "TYPE")
            .flat_map(|(_, v)| {
                unparam(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .collect();
        match cl.name.as_str() {
            "FN" => {
                *fn_ = Some(unescape_text(&cl.value));
                continue;
            }
            "N" => {
                *n_ = Some(cl.value.clone());
                continue;
            }
            _ => {}
        }
        let explicit = cl
            .params
            .iter()
            .find(|(k, _)| k == "X-IMSP-FIELD")
            .map(|(_, v)| unparam(v));
        let Some(field) = explicit.or_else(|| field_of(&cl.name, &types)) else {
            continue;
        };
        let value = if cl.name == "ADR" {
            address_text(&cl.value)
        } else {
            unescape_text(&cl.value)
        };
        // Repeated properties of one field make a CRLF-separated list.
        match fields
            .iter_mut()
            .find(|(f, _)| f.eq_ignore_ascii_case(&field))
        {
            Some((_, v)) => {
                v.extend_from_slice(b"\r\n");
                v.extend_from_slice(&value);
            }
            None => fields.push((field, value)),
        }
    }
    if let Some((start, ..)) = cur {
        return Err(err(start, "vCard not ended by END:VCARD"));
    }
    Ok(cards)
}

/// `Family;Given;Additional;Prefix;Suffix` as "Prefix Given Additional
/// Family Suffix".
fn name_from_n(v: &[u8]) -> Vec<u8> {
    let c: Vec<Vec<u8>> = split_components(v).into_iter().map(unescape_text).collect();
    let get = |i: usize| c.get(i).cloned().unwrap_or_default();
    let parts = [get(3), get(1), get(2), get(0), get(4)];
    let mut out = Vec::new();
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(p);
    }
    out
}

/// An `ADR` as text: the street component alone when only it is set (as
/// written above), else the non-empty parts, one a line.
fn address_text(v: &[u8]) -> Vec<u8> {
    let c: Vec<Vec<u8>> = split_components(v).into_iter().map(unescape_text).collect();
    let nonempty: Vec<usize> = (0..c.len()).filter(|&i| !c[i].is_empty()).collect();
    if nonempty == [2] || c.len() == 1 {
        return c.into_iter().find(|x| !x.is_empty()).unwrap_or_default();
    }
    let get = |i: usize| c.get(i).cloned().unwrap_or_default();
    // PO box, extended, street; "locality, region code"; country.
    let mut lines: Vec<Vec<u8>> = [get(0), get(1), get(2)]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect();
    let mut city = get(3);
    for (i, sep) in [(4, &b", "[..]), (5, &b" "[..])] {
        let part = get(i);
        if !part.is_empty() {
            if !city.is_empty() {
                city.extend_from_slice(sep);
            }
            city.extend_from_slice(&part);
        }
    }
    if !city.is_empty() {
        lines.push(city);
    }
    if !get(6).is_empty() {
        lines.push(get(6));
    }
    lines.join(&b"\r\n"[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(name: &str, fields: &[(&str, &[u8])]) -> Card {
        Card {
            name: name.as_bytes().to_vec(),
            fields: fields
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn writes_mapped_properties() {
        let mut out = Vec::new();
        write_card(
            &card(
                "Wilma Flintstone",
                &[
                    ("address", b"1 Cave Street\r\nBedrock"),
                    ("email", b"wilma@bedrock\r\nw@rock"),
                    ("alias", b"wil, ma"),
                    ("title", b"Boss;ish"),
                    ("Email2", b"x"),
                ],
            ),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Wilma Flintstone\r\nN:Flintstone;Wilma;;;\r\n\
ADR:;;1 Cave Street\\nBedrock;;;;\r\nEMAIL:wilma@bedrock\r\nEMAIL:w@rock\r\n\
NICKNAME:wil\\, ma\r\nX-IMSP-TITLE:Boss\\;ish\r\nX-IMSP-EMAIL2;X-IMSP-FIELD=Email2:x\r\n\
END:VCARD\r\n"
        );
    }

    #[test]
    fn round_trips_odd_values() {
        let cards = vec![
            card(
                "Zoë Müller",
                &[
                    ("note", "Grüße aus Köln".as_bytes()),
                    ("notes", b"Lodge brother.\r\nOwns a \"rock\" band\r\n"),
                    ("Email", b"BOB@EXAMPLE.ORG"),
                    ("phone", b"555\r\n\r\n556"),
                    ("v4", b"x\\y"),
                    ("odd_name\"x", b"a:b;c,d"),
                    ("long", "ü".repeat(100).as_bytes()),
                ],
            ),
            card("Pebbles", &[]),
        ];
        let mut out = Vec::new();
        for c in &cards {
            write_card(c, &mut out);
        }
        for line in out.split(|&b| b == b'\n') {
            assert!(line.len() <= 76, "{:?}", String::from_utf8_lossy(line));
            assert!(std::str::from_utf8(line).is_ok());
        }
        assert_eq!(read_cards(&out).unwrap(), cards);
    }

    #[test]
    fn reads_foreign_cards() {
        let input = b"BEGIN:VCARD\nVERSION:3.0\nN:Rubble;Betty;;Mrs.;\nTEL;TYPE=HOME,VOICE:1\n\
item1.EMAIL;TYPE=INTERNET:b@rock\nADR;TYPE=home:;;1 Road;Bedrock;CA;12345;USA\nORG:Quarry\n\
NOTE:folded \n  line\nEND:VCARD\n";
        let c = read_cards(input).unwrap();
        assert_eq!(
            c,
            vec![card(
                "Mrs. Betty Rubble",
                &[
                    ("phone-home", b"1"),
                    ("email", b"b@rock"),
                    ("address", b"1 Road\r\nBedrock, CA 12345\r\nUSA"),
                    ("company", b"Quarry"),
                    ("notes", b"folded  line"),
                ]
            )]
        );
        let e = read_cards(b"BEGIN:VCARD\nVERSION:4.0\nEMAIL:x\nEND:VCARD\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(read_cards(b"BEGIN:VCARD\nFN:x\n").is_err());
        assert!(read_cards(b"garbage\n").is_err());
    }
}
