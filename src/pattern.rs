//! Wildcard patterns of GET, ADDRESSBOOK, SEARCHADDRESS and the mailbox
//! lists, the draft's `list_wildcards`: `*` matches any run of characters,
//! `?` exactly one character (as 1.8: `GET fred.tes?` finds `fred.test`),
//! `%` any run without the hierarchy separator (`.`). In a hierarchical
//! pattern ([`Pattern::new`]: option, book and mailbox names) `?` does not
//! match the separator either; in a flat one ([`Pattern::flat`]: entry
//! names and field values, which have no hierarchy) `%` is `*` and `?` is
//! any character. A character is a UTF-8 sequence (a byte that is not
//! UTF-8 counts alone).

#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: Vec<u8>,
    fold_case: bool,
    separator: Option<u8>,
    has_percent: bool,
}

/// The length of the character at `s[i]` (`i < s.len()`): a UTF-8 lead
/// byte and the continuation bytes after it, else one byte.
fn char_len(s: &[u8], i: usize) -> usize {
    if s[i] < 0xc0 {
        return 1;
    }
    let more = s[i + 1..]
        .iter()
        .take(3)
        .take_while(|&&b| (0x80..0xc0).contains(&b))
        .count();
    1 + more
}

/// Whether `b` is a wildcard of IMSP patterns: `*`, `%` or `?`.
pub fn is_wildcard(b: u8) -> bool {
    matches!(b, b'*' | b'%' | b'?')
}

impl Pattern {
    /// A pattern of hierarchical names (separator `.`).
    pub fn new(pattern: &[u8], fold_case: bool) -> Pattern {
        Pattern::make(pattern, fold_case, Some(b'.'))
    }

    /// A pattern of names without hierarchy: `%` is `*`.
    pub fn flat(pattern: &[u8], fold_case: bool) -> Pattern {
        let p: Vec<u8> = pattern
            .iter()
            .map(|&b| if b == b'%' { b'*' } else { b })
            .collect();
        Pattern::make(&p, fold_case, None)
    }

    fn make(pattern: &[u8], fold_case: bool, separator: Option<u8>) -> Pattern {
        let bytes = if fold_case {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_vec()
        };
        Pattern {
            has_percent: bytes.contains(&b'%'),
            bytes,
            fold_case,
            separator,
        }
    }

    /// A pattern with no wildcard matches only itself.
    pub fn is_literal(&self) -> bool {
        !self.bytes.iter().any(|&b| is_wildcard(b))
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        if self.has_percent {
            let folded;
            let name = if self.fold_case {
                folded = name.to_ascii_lowercase();
                &folded[..]
            } else {
                name
            };
            self.matches_dp(name)
        } else {
            star_only(&self.bytes, name, self.fold_case, self.separator)
        }
    }

    /// General case, `%` included: dynamic programming over positions.
    fn matches_dp(&self, name: &[u8]) -> bool {
        let p = &self.bytes;
        let not_sep = |b: u8| Some(b) != self.separator;
        // can[j]: pattern[..i] matches name[..j]
        let mut can = vec![false; name.len() + 1];
        can[0] = true;
        for &pc in p {
            let mut next = vec![false; name.len() + 1];
            match pc {
                b'*' => {
                    let mut any = false;
                    for j in 0..=name.len() {
                        any |= can[j];
                        next[j] = any;
                    }
                }
                b'%' => {
                    for j in 0..=name.len() {
                        next[j] = can[j] || (j > 0 && next[j - 1] && not_sep(name[j - 1]));
                    }
                }
                b'?' => {
                    for k in 0..name.len() {
                        if can[k] && not_sep(name[k]) {
                            next[k + char_len(name, k)] = true;
                        }
                    }
                }
                c => {
                    for j in 1..=name.len() {
                        next[j] = can[j - 1] && name[j - 1] == c;
                    }
                }
            }
            can = next;
        }
        can[name.len()]
    }
}

/// `*` and `?` glob, greedy with one backtrack point: linear in practice.
/// With `fold`, `p` is lower case and `s` is compared folded, without
/// allocating (searches run it on every entry of a book).
fn star_only(p: &[u8], s: &[u8], fold: bool, sep: Option<u8>) -> bool {
    let eq = |a: u8, b: u8| {
        if fold {
            a == b.to_ascii_lowercase()
        } else {
            a == b
        }
    };
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == b'?' && Some(s[si]) != sep {
            pi += 1;
            si += char_len(s, si);
        } else if pi < p.len() && p[pi] != b'?' && eq(p[pi], s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p.as_bytes(), true).matches(s.as_bytes())
    }

    fn flat(p: &str, s: &str) -> bool {
        Pattern::flat(p.as_bytes(), true).matches(s.as_bytes())
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("*", "a.b.c"));
        assert!(m("fred.*", "Fred.Test"));
        assert!(!m("fred.*", "fred"));
        assert!(m("*rubble", "Barney Rubble"));
        assert!(m("* Rubble", "Betty Rubble"));
        assert!(!m("* Rubble", "Rubble"));
        assert!(m("%", "fred"));
        assert!(!m("%", "fred.work"));
        assert!(m("fred.%", "fred.work"));
        assert!(!m("fred.%", "fred.work.old"));
        assert!(m("%.*", "fred.work.old"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("exact", "EXACT"));
        assert!(!Pattern::new(b"Exact", false).matches(b"exact"));
    }

    #[test]
    fn question_mark_is_one_character() {
        // 1.8: `GET fred.tes?` found `fred.test`.
        assert!(m("fred.tes?", "fred.test"));
        assert!(!m("fred.tes?", "fred.tes"));
        assert!(!m("fred.tes?", "fred.tests"));
        assert!(m("?", "x"));
        assert!(!m("?", ""));
        assert!(m("b?rney*", "Barney Rubble"));
        assert!(m("*?", "a"));
        assert!(!m("*??", "a"));
        assert!(m("a*?c", "abxc"));
        assert!(m("?*b", "ab"));
        assert!(!m("?*b", "b"));
        // One character, not one byte.
        assert!(m("Zo?", "Zoë"));
        assert!(!m("Zo??", "Zoë"));
        assert!(flat("?o?", "Zoë"));
        // Latin-1 bytes count one each.
        assert!(Pattern::new(b"Zo?", true).matches(b"Zo\xe9"));
        // Hierarchical: `?` does not match the separator, as `%` does not.
        assert!(!m("fred?work", "fred.work"));
        assert!(m("fred%.w?rk", "fred.work"));
        assert!(m("%.?", "a.b"));
        assert!(!m("%?", "a.b"));
        // With `%` (the general matcher) too.
        assert!(m("fred.%?", "fred.work"));
        assert!(!m("%?", "."));
        assert!(!Pattern::new(b"a?", false).is_literal());
    }

    #[test]
    fn flat_patterns_have_no_hierarchy() {
        assert!(flat("%", "a.b.c"));
        assert!(flat("Mr. %", "Mr. J. Smith"));
        assert!(flat("%@bedrock.org", "fred@bedrock.org"));
        assert!(flat("fred?work", "fred.work"));
        assert!(flat("%rubble", "Barney Rubble"));
        assert!(!flat("%x", "a.b"));
        assert!(!Pattern::flat(b"%", false).is_literal());
    }
}
