//! Assembling one command frame from the byte stream: lines, synchronizing
//! literals (`{N}`, after the server's `+` go-ahead) and non-synchronizing
//! ones (`{N+}`, LITERAL+), within the configured limits.
//!
//! The reader never interprets a byte of a literal as a command: a literal
//! over the limit is refused before the go-ahead, or (LITERAL+) read and
//! dropped without being kept, so the session stays in step with the client.

use std::io;

use super::parser::{frame_tag, literal_header};

/// Input sizes the reader accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest command outside its literals, in octets: one line, or all
    /// the lines of a command that carries literals together (so that a
    /// command of many empty literals cannot grow without end).
    pub max_line: usize,
    /// Largest literal, and the budget for all literals of one command.
    pub max_literal: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_literal: 1024 * 1024,
        }
    }
}

/// Where the reader gets bytes and sends its go-ahead.
pub trait Transport {
    /// Append at least one byte to `buf`; `Ok(0)` at end of input.
    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Send the `+` continuation request.
    fn go_ahead(&mut self) -> io::Result<()>;
}

/// What the reader produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command, final CRLF removed, literals inline.
    Command(Vec<u8>),
    /// A line over `max_line`; the whole command was skipped.
    LineTooLong { tag: Option<String> },
    /// A literal over `max_literal`; the command was skipped.
    LiteralTooLarge { tag: Option<String>, size: u64 },
    /// The client closed the connection.
    Eof,
}

/// The literal announced at the end of a line (CRLF already removed).
pub fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    match literal_header(&line[open..]) {
        Ok((b"", hdr)) => Some(hdr),
        _ => None,
    }
}

/// How much of an over-long line is kept to name its tag in the answer.
const HEAD: usize = 1024;

/// The tag of a command whose first line was cut to `head`: none when the
/// tag itself may have been cut, running to the end of what was kept (the
/// client gets `* BAD`, not a wrong tag).
fn head_tag(head: &[u8]) -> Option<String> {
    frame_tag(head).filter(|t| t.len() < head.len())
}

enum Line {
    Complete(Vec<u8>),
    /// Over the limit: the line was consumed; the tail kept to spot a literal.
    TooLong {
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    Eof,
}

#[derive(Default)]
pub struct FrameReader {
    /// Bytes read; those before `start` are consumed (dropped from the
    /// front only now and then: pipelined commands would otherwise move
    /// what follows them once each).
    buf: Vec<u8>,
    start: usize,
    limits: Limits,
}

impl FrameReader {
    pub fn new(limits: Limits) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            limits,
        }
    }

    /// What was read and not consumed yet.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Read more; `Ok(0)` at end of input.
    fn fill<T: Transport>(&mut self, t: &mut T) -> io::Result<usize> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        t.fill(&mut self.buf)
    }

    /// Read one line; a bare LF ends a line as CRLF does. A line over `max`
    /// is consumed without being kept whole.
    fn read_line<T: Transport>(&mut self, t: &mut T, max: usize) -> io::Result<Line> {
        // The start kept of an over-long line: the same however its reads
        // were cut (the line has more than `max` bytes whenever this runs).
        let head = |v: &[u8]| v[..v.len().min(HEAD).min(max + 1)].to_vec();
        /// The end of a line, enough to spot the literal it may announce.
        /// Leading zeros of a `{N}` count are dropped first: padding must
        /// not push the `{` out of the part kept (the literal would then
        /// be read as commands).
        fn tail(v: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len());
            let mut after_brace = false;
            for (i, &b) in v.iter().enumerate() {
                if after_brace && b == b'0' && v.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    continue;
                }
                after_brace = b == b'{';
                out.push(b);
            }
            out.drain(..out.len().saturating_sub(32));
            out
        }
        let mut scanned = 0;
        // While skipping an over-long line: its start and its latest end.
        let mut overflow: Option<(Vec<u8>, Vec<u8>)> = None;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.pending()[scanned..]) {
                let mut line = self.pending()[..=scanned + pos].to_vec();
                self.consume(scanned + pos + 1);
                line.pop();
                // One CR before the LF ends the line, whether it came in
                // this read or was already skipped with an over-long line.
                return Ok(match overflow {
                    None => {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if line.len() <= max {
                            Line::Complete(line)
                        } else {
                            Line::TooLong {
                                head: head(&line),
                                tail: tail(&line),
                            }
                        }
                    }
                    Some((h, mut t)) => {
                        t.extend_from_slice(&line);
                        if t.last() == Some(&b'\r') {
                            t.pop();
                        }
                        Line::TooLong {
                            head: h,
                            tail: tail(&t),
                        }
                    }
                });
            }
            scanned = self.pending().len();
            if scanned > max + 1 {
                match overflow.as_mut() {
                    None => overflow = Some((head(self.pending()), tail(self.pending()))),
                    Some((_, t)) => {
                        t.extend_from_slice(self.pending());
                        *t = tail(t);
                    }
                }
                self.consume(scanned);
                scanned = 0;
            }
            if self.fill(t)? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Read and keep exactly `n` octets.
    fn read_exact<T: Transport>(
        &mut self,
        t: &mut T,
        n: usize,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        while self.pending().len() < n {
            if self.fill(t)? == 0 {
                return Ok(false);
            }
        }
        out.extend_from_slice(&self.pending()[..n]);
        self.consume(n);
        Ok(true)
    }

    /// Read and drop `n` octets without keeping them.
    fn discard<T: Transport>(&mut self, t: &mut T, mut n: u64) -> io::Result<bool> {
        loop {
            let take = (self.pending().len() as u64).min(n) as usize;
            self.consume(take);
            n -= take as u64;
            if n == 0 {
                return Ok(true);
            }
            if self.fill(t)? == 0 {
                return Ok(false);
            }
        }
    }

    /// Skip the rest of a refused command: every further non-synchronizing
    /// literal and line the client sends without waiting for us. Returns
    /// false at end of input.
    fn skip_rest<T: Transport>(
        &mut self,
        t: &mut T,
        mut last_line_tail: Vec<u8>,
    ) -> io::Result<bool> {
        loop {
            match literal_at_end(&last_line_tail) {
                Some((n, true)) => {
                    if !self.discard(t, n)? {
                        return Ok(false);
                    }
                }
                // A synchronizing literal waits for a go-ahead we never send.
                _ => return Ok(true),
            }
            match self.read_line(t, self.limits.max_line)? {
                Line::Complete(l) => last_line_tail = l,
                Line::TooLong { tail, .. } => last_line_tail = tail,
                Line::Eof => return Ok(false),
            }
        }
    }

    /// Read one plain line (no literals), e.g. the answer to a SASL
    /// challenge: `Ok(None)` when it was over `max_line` (it was skipped
    /// whole); `UnexpectedEof` when the client closed the connection.
    pub fn next_line<T: Transport>(&mut self, t: &mut T) -> io::Result<Option<Vec<u8>>> {
        match self.read_line(t, self.limits.max_line)? {
            Line::Complete(l) => Ok(Some(l)),
            Line::TooLong { .. } => Ok(None),
            Line::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    /// Read the next command frame.
    pub fn next_frame<T: Transport>(&mut self, t: &mut T) -> io::Result<Frame> {
        let mut frame = Vec::new();
        let mut literal_budget = self.limits.max_literal;
        let mut line_budget = self.limits.max_line;
        loop {
            let line = match self.read_line(t, line_budget)? {
                Line::Complete(l) => l,
                Line::TooLong { head, tail } => {
                    let tag = if frame.is_empty() {
                        head_tag(&head)
                    } else {
                        frame_tag(&frame)
                    };
                    if !self.skip_rest(t, tail)? {
                        return Ok(Frame::Eof);
                    }
                    return Ok(Frame::LineTooLong { tag });
                }
                Line::Eof => return Ok(Frame::Eof),
            };
            if frame.is_empty() && line.is_empty() {
                // Blank lines between commands are ignored, as telnet users send them.
                continue;
            }
            line_budget -= line.len();
            let literal = literal_at_end(&line);
            if literal.is_none() && frame.is_empty() {
                // A command of one line (most are): the line itself.
                return Ok(Frame::Command(line));
            }
            frame.extend_from_slice(&line);
            let Some((n, non_sync)) = literal else {
                return Ok(Frame::Command(frame));
            };
            if n > literal_budget {
                let tag = frame_tag(&frame);
                if !self.skip_rest(t, line)? {
                    return Ok(Frame::Eof);
                }
                return Ok(Frame::LiteralTooLarge { tag, size: n });
            }
            literal_budget -= n;
            if !non_sync {
                t.go_ahead()?;
            }
            frame.extend_from_slice(b"\r\n");
            if !self.read_exact(t, n as usize, &mut frame)? {
                return Ok(Frame::Eof);
            }
        }
    }
}

/// A transport over bytes in memory, handing out `chunk` bytes a read:
/// for tests and fuzzing of the reader with every split of its input.
pub struct SliceTransport<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
    /// Go-aheads the reader sent.
    pub go_aheads: usize,
    /// Reads the reader asked for.
    pub fills: usize,
}

impl<'a> SliceTransport<'a> {
    pub fn new(data: &'a [u8], chunk: usize) -> SliceTransport<'a> {
        SliceTransport {
            data,
            pos: 0,
            chunk: chunk.max(1),
            go_aheads: 0,
            fills: 0,
        }
    }

    /// How many bytes the reader has taken.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl Transport for SliceTransport<'_> {
    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.fills += 1;
        let end = (self.pos + self.chunk).min(self.data.len());
        buf.extend_from_slice(&self.data[self.pos..end]);
        let n = end - self.pos;
        self.pos = end;
        Ok(n)
    }

    fn go_ahead(&mut self) -> io::Result<()> {
        self.go_aheads += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], chunk: usize, limits: Limits) -> (Vec<Frame>, usize) {
        let mut t = SliceTransport::new(input, chunk);
        let mut r = FrameReader::new(limits);
        let mut out = Vec::new();
        loop {
            let f = r.next_frame(&mut t).unwrap();
            if f == Frame::Eof {
                break;
            }
            out.push(f);
        }
        (out, t.go_aheads)
    }

    #[test]
    fn same_frames_for_any_chunking() {
        let input = b"a NOOP\r\nb SET x {5}\r\nhello\r\nc SET y {3+}\r\nab\n\r\nd LOGOUT\n";
        let (whole, ga) = frames(input, input.len(), Limits::default());
        assert_eq!(ga, 1);
        assert_eq!(
            whole,
            vec![
                Frame::Command(b"a NOOP".to_vec()),
                Frame::Command(b"b SET x {5}\r\nhello".to_vec()),
                Frame::Command(b"c SET y {3+}\r\nab\n".to_vec()),
                Frame::Command(b"d LOGOUT".to_vec()),
            ]
        );
        for chunk in 1..input.len() {
            assert_eq!(
                frames(input, chunk, Limits::default()).0,
                whole,
                "chunk {chunk}"
            );
        }
    }

    /// An over-long line that ends in `{3+}` and two CRs announces no
    /// literal, however its reads are cut (found by the fuzzer: a CR was
    /// dropped twice when the line spanned reads, so the next command's
    /// bytes were skipped as a literal).
    #[test]
    fn over_long_line_drops_one_cr_only() {
        let limits = Limits {
            max_line: 20,
            max_literal: 80,
        };
        let mut input = b"a SET x ".to_vec();
        input.extend_from_slice(&[b'0'; 40]);
        input.extend_from_slice(b" {3+}\r\r\nb NOOP\r\n");
        let expect = vec![
            Frame::LineTooLong {
                tag: Some("a".into()),
            },
            Frame::Command(b"b NOOP".to_vec()),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(frames(&input, chunk, limits).0, expect, "chunk {chunk}");
        }
    }

    /// Empty literals cost no literal bytes, but the lines around them
    /// count against one budget for the whole command: a client cannot
    /// grow a command without end with `{0+}` after `{0+}`.
    #[test]
    fn lines_of_one_command_share_the_line_limit() {
        let limits = Limits {
            max_line: 40,
            max_literal: 80,
        };
        let mut input = b"a STOREADDRESS fred x {0+}\r\n".to_vec();
        for _ in 0..20 {
            input.extend_from_slice(b" f {0+}\r\n");
        }
        input.extend_from_slice(b" v\r\nb NOOP\r\n");
        let expect = vec![
            Frame::LineTooLong {
                tag: Some("a".into()),
            },
            Frame::Command(b"b NOOP".to_vec()),
        ];
        for chunk in [1, 3, 7, input.len()] {
            assert_eq!(frames(&input, chunk, limits).0, expect, "chunk {chunk}");
        }
        // Within the budget the same shape is one command.
        let ok = b"a SET x {0+}\r\n y {0+}\r\n\r\nb NOOP\r\n";
        assert_eq!(
            frames(ok, 2, limits).0,
            vec![
                Frame::Command(b"a SET x {0+}\r\n y {0+}\r\n".to_vec()),
                Frame::Command(b"b NOOP".to_vec()),
            ]
        );
    }

    /// The BAD for an over-long line carries the client's whole tag, or
    /// none at all when the tag alone is too long to keep.
    #[test]
    fn an_over_long_line_is_answered_with_its_whole_tag() {
        let limits = Limits {
            max_line: 300,
            max_literal: 80,
        };
        let tag = "T".repeat(200);
        let mut input = format!("{tag} SET x ").into_bytes();
        input.extend_from_slice(&[b'v'; 400]);
        input.extend_from_slice(b"\r\n");
        input.extend_from_slice(&[b'U'; 2000]);
        input.extend_from_slice(b" NOOP\r\n");
        assert_eq!(
            frames(&input, 64, limits).0,
            vec![
                Frame::LineTooLong { tag: Some(tag) },
                Frame::LineTooLong { tag: None },
            ]
        );
    }

    #[test]
    fn limits_keep_the_stream_in_sync() {
        let limits = Limits {
            max_line: 20,
            max_literal: 4,
        };
        let input = b"a SET x 0123456789012345678901234567890\r\nb SET x {10+}\r\nNOOP NOOP\r\n\r\nc SET x {10}\r\nd NOOP\r\n";
        let (f, ga) = frames(input, 3, limits);
        assert_eq!(ga, 0);
        assert_eq!(
            f,
            vec![
                Frame::LineTooLong {
                    tag: Some("a".into())
                },
                Frame::LiteralTooLarge {
                    tag: Some("b".into()),
                    size: 10
                },
                Frame::LiteralTooLarge {
                    tag: Some("c".into()),
                    size: 10
                },
                Frame::Command(b"d NOOP".to_vec()),
            ]
        );
    }
}
