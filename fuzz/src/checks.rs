//! The properties the fuzz targets check, one function per target. Each
//! takes arbitrary bytes and panics when a property does not hold.
//!
//! This file is shared: the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! call it through the `imspd-fuzz` crate, and the main crate's
//! `tests/fuzz_replay.rs` includes it (`#[path]`) to replay the seeds, the
//! regressions and a stream of pseudo-random inputs under plain
//! `cargo test`, with no nightly toolchain.

use imspd::protocol::framing::SliceTransport;
use imspd::protocol::parser::frame_tag;
use imspd::protocol::{Frame, FrameReader, Limits, ParseError, parse_command};
use imspd::store::codec::{parse_line, put_record};
use imspd::store::journal;
use imspd::store::{Order, Records};

/// `parse_command` on any bytes: no panic, and its verdict agrees with
/// the tag the framing layer reports (which picks the tag of BAD answers).
pub fn parse_command_input(data: &[u8]) {
    let tag = frame_tag(data);
    match parse_command(data) {
        Err(ParseError::BadTag) => assert_eq!(tag, None, "BadTag but frame_tag found one"),
        Ok((t, _)) => {
            assert_eq!(Some(&t), tag.as_ref());
            assert!(data.starts_with(t.as_bytes()));
        }
        Err(ParseError::UnknownCommand { tag: t, name }) => {
            assert_eq!(Some(&t), tag.as_ref());
            assert!(!name.is_empty());
        }
        Err(ParseError::Syntax { tag: t, message }) => {
            assert_eq!(Some(&t), tag.as_ref());
            assert!(!message.is_empty());
        }
    }
    // Pure: the same answer twice.
    assert_eq!(parse_command(data), parse_command(data));
}

pub fn frames(data: &[u8], chunk: usize, limits: Limits) -> (Vec<Frame>, usize) {
    let mut t = SliceTransport::new(data, chunk);
    let mut r = FrameReader::new(limits);
    let mut out = Vec::new();
    loop {
        let f = r.next_frame(&mut t).expect("a slice never fails");
        // Every fill took at least one byte (or ended the input), so the
        // reader can never spin.
        assert!(t.fills <= data.len() + out.len() + 2, "reader spins");
        match f {
            Frame::Eof => break,
            Frame::Command(ref c) => {
                // A frame holds at most one line limit of line bytes (all
                // its lines together), their line ends, and its literals.
                let lines = c.split(|&b| b == b'\n').count();
                assert!(
                    c.len() as u64 <= (limits.max_line + 2 * lines) as u64 + limits.max_literal,
                    "frame of {} bytes over the limits",
                    c.len()
                );
                parse_command_input(c);
            }
            _ => {}
        }
        out.push(f);
    }
    assert_eq!(t.consumed(), data.len(), "input left unread at Eof");
    (out, t.go_aheads)
}

/// The frame reader over any byte stream: the first two bytes choose the
/// limits and the read size, the rest is what the client sends. No panic,
/// frames within the limits, and the same frames and go-aheads however the
/// stream is cut into reads.
pub fn frame_reader_input(data: &[u8]) {
    let (sel, data) = match data {
        [a, b, rest @ ..] => ((*a, *b), rest),
        _ => ((0, 0), data),
    };
    let limits = Limits {
        max_line: 256 + usize::from(sel.0 & 0x3f),
        max_literal: u64::from(sel.0 >> 6) * 40,
    };
    let chunk = 1 + usize::from(sel.1 % 64);
    let whole = frames(data, data.len().max(1), limits);
    let cut = frames(data, chunk, limits);
    assert_eq!(whole, cut, "frames depend on how reads are cut ({chunk})");
}

fn entries(r: &Records) -> Vec<(Vec<u8>, Vec<u8>)> {
    r.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn encode(r: &Records) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in r.iter() {
        put_record(k, v, &mut out);
    }
    out
}

/// The file codec on any bytes: a file parses to records whose encoding
/// parses back to the same records with no damaged line (and encodes to the
/// same bytes again); a key and value split from the input survive
/// `put_record` then `parse_line`.
pub fn codec_input(data: &[u8]) {
    for order in [Order::Bytes, Order::CaseInsensitive] {
        let (recs, damaged) = Records::parse(order, data);
        assert!(damaged.iter().all(|&n| n >= 1));
        let bytes = encode(&recs);
        let (again, damaged) = Records::parse(order, &bytes);
        assert!(
            damaged.is_empty(),
            "damaged lines {damaged:?} in own output"
        );
        assert_eq!(entries(&again), entries(&recs));
        assert_eq!(encode(&again), bytes, "encoding is not a fixed point");
        // Sorted, no two keys equal in the file's order.
        for w in entries(&recs).windows(2) {
            assert_eq!(order.cmp(&w[0].0, &w[1].0), std::cmp::Ordering::Less);
        }
        for (k, v) in recs.iter() {
            assert_eq!(recs.get(k), Some(v));
        }
    }
    for line in data.split(|&b| b == b'\n') {
        if let Some((k, v)) = parse_line(line) {
            let mut out = Vec::new();
            put_record(&k, &v, &mut out);
            assert_eq!(parse_line(&out[..out.len() - 1]), Some((k, v)));
        }
    }
    // Journal changes: parsing any bytes stops within them, at the end of
    // a whole change; the changes read encode to bytes that parse whole to
    // the same changes.
    let mut changes = Vec::new();
    let n = journal::parse_changes(data, |c| changes.push(c));
    assert!(n <= data.len());
    assert!(n == 0 || data[n - 1] == b'\n');
    let again: Vec<u8> = changes.iter().flat_map(|c| journal::encode(c)).collect();
    let mut back = Vec::new();
    assert_eq!(
        journal::parse_changes(&again, |c| back.push(c)),
        again.len()
    );
    assert_eq!(back, changes);
    if let Some((_, _, start)) = journal::parse_header(data) {
        assert!(start <= data.len() && data[start - 1] == b'\n');
    }
    // Any non-empty key with any value.
    let split = data
        .iter()
        .position(|&b| b == 0xff)
        .unwrap_or(data.len() / 2);
    let (k, v) = (&data[..split], data.get(split + 1..).unwrap_or(b""));
    if !k.is_empty() {
        let mut out = Vec::new();
        put_record(k, v, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            parse_line(&out[..out.len() - 1]),
            Some((k.to_vec(), v.to_vec()))
        );
    }
}
