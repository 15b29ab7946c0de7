//! The fuzz targets' properties (`fuzz/src/checks.rs`) under plain
//! `cargo test`: every seed in `fuzz/seeds/TARGET/`, every input kept in
//! `fuzz/regressions/TARGET/` (crashes the fuzzer found, after the fix),
//! and a few thousand pseudo-random inputs built from the seeds by a small
//! PRNG, so the properties are checked on every build, nightly or not.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// xorshift64*: small, seedable, good enough to mutate bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            out.push(std::fs::read(&p).unwrap());
        }
    }
    out
}

/// Tokens that reach the interesting branches sooner than random bytes.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"{0}",
    b"{5}\r\n",
    b"{3+}\r\n",
    b"{4294967296}",
    b"\"",
    b"\\",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\0",
    b"\xff",
    b"(",
    b")",
    b"*",
    b"%",
    b"/",
    b"..",
    b"+",
    b"{00000000000000000000000000000000000003+}\r\n",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 if !v.is_empty() => {
                // Repeat a slice (long lines, many literals).
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let piece = v[start..end].repeat(1 + rng.below(20));
                v.splice(at..at, piece);
            }
            _ => v.insert(at, rng.next() as u8),
        }
    }
    v
}

fn run(target: &str, check: fn(&[u8]), rounds: usize) {
    let corpus = inputs(target);
    assert!(!corpus.is_empty(), "no seeds for {target}");
    for input in &corpus {
        check(input);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..rounds {
        let seed = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, seed);
        let r = std::panic::catch_unwind(|| check(&input));
        if r.is_err() {
            panic!(
                "{target}: property failed for input {:?}",
                input.escape_ascii().to_string()
            );
        }
    }
}

#[test]
fn parse_command_properties() {
    run("parse_command", checks::parse_command_input, 20_000);
}

#[test]
fn frame_reader_properties() {
    run("frame_reader", checks::frame_reader_input, 3_000);
}

#[test]
fn codec_properties() {
    run("codec", checks::codec_input, 20_000);
}

/// Found by tests/hostile.rs: an over-long line whose `{N+}` count was
/// padded with zeros past the part of the line the reader keeps had its
/// literal read as commands. Every way of cutting the stream into reads.
#[test]
fn a_padded_literal_count_after_an_over_long_line_is_still_skipped() {
    use imspd::protocol::{Frame, Limits};
    let limits = Limits {
        max_line: 256,
        max_literal: 1000,
    };
    for zeros in [0, 3, 31, 32, 33, 100, 5000] {
        let mut input = b"a SET x ".to_vec();
        input.extend_from_slice(&[b'x'; 300]);
        input.extend_from_slice(
            format!(" {{{}6+}}\r\nb NOOP\r\nc NOOP\r\n", "0".repeat(zeros)).as_bytes(),
        );
        let want = vec![
            Frame::LineTooLong {
                tag: Some("a".into()),
            },
            Frame::Command(b"c NOOP".to_vec()),
        ];
        for chunk in [1, 2, 3, 7, 31, 32, 33, 64, 255, 256, 257, 4096, input.len()] {
            let (got, _) = checks::frames(&input, chunk, limits);
            assert_eq!(got, want, "{zeros} zeros, reads of {chunk}");
        }
    }
}
