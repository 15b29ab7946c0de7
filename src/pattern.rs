//! Wildcard patterns of GET, ADDRESSBOOK, SEARCHADDRESS and the mailbox
//! lists: `*` matches any run of characters, `%` any run without the
//! hierarchy separator (`.`). `?` is taken literally.

#[derive(Debug, Clone)]
pub struct Pattern {
    bytes: Vec<u8>,
    fold_case: bool,
    separator: u8,
    has_percent: bool,
}

impl Pattern {
    pub fn new(pattern: &[u8], fold_case: bool) -> Pattern {
        let bytes = if fold_case {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_vec()
        };
        Pattern {
            has_percent: bytes.contains(&b'%'),
            bytes,
            fold_case,
            separator: b'.',
        }
    }

    /// A pattern with no wildcard matches only itself.
    pub fn is_literal(&self) -> bool {
        !self.bytes.iter().any(|&b| b == b'*' || b == b'%')
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
            star_only(&self.bytes, name, self.fold_case)
        }
    }

    /// General case, `%` included: dynamic programming over positions.
    fn matches_dp(&self, name: &[u8]) -> bool {
        let p = &self.bytes;
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
                        next[j] = can[j] || (j > 0 && next[j - 1] && name[j - 1] != self.separator);
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

/// `*`-only glob, greedy with one backtrack point: linear in practice.
/// With `fold`, `p` is lower case and `s` is compared folded, without
/// allocating (searches run it on every entry of a book).
fn star_only(p: &[u8], s: &[u8], fold: bool) -> bool {
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
        } else if pi < p.len() && eq(p[pi], s[si]) {
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
}
