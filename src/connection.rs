//! A client connection over raw file descriptors (a TCP socket, or stdin and
//! stdout under inetd), with deadlines on reading and writing so that an
//! idle or stuck client can never hold a session process forever.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::protocol::Transport;

pub struct Connection {
    input: RawFd,
    output: RawFd,
    /// Reading past this instant fails with `TimedOut`.
    read_deadline: Instant,
    /// How long one write may wait for the client to take data.
    write_timeout: Duration,
    out: Vec<u8>,
    /// One socket for both ways, left blocking: a read waits in the kernel
    /// for at most the receive timeout set on it (`SO_RCVTIMEO`, this
    /// value), never past the read deadline; a write for at most the write
    /// timeout (`SO_SNDTIMEO`). That is one system call a read where a
    /// non-blocking descriptor takes three (a read that would block, a
    /// poll, the read again). `None`: non-blocking descriptors and poll
    /// (two descriptors under inetd, or not a socket).
    blocking: Option<Duration>,
    /// Session telemetry, when it is on (see [`crate::telemetry`]).
    pub tap: Option<Box<crate::telemetry::Tap>>,
}

/// How long reads may take until the session sets its first deadline.
const FIRST_DEADLINE: Duration = Duration::from_secs(3600);

/// Set a socket timeout option (`SO_RCVTIMEO` or `SO_SNDTIMEO`); fails on
/// a descriptor that is not a socket.
fn set_socket_timeout(fd: RawFd, which: libc::c_int, t: Duration) -> io::Result<()> {
    // A zero timeout would mean none: wait at least a millisecond.
    let t = t.max(Duration::from_millis(1));
    let tv = libc::timeval {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a timeval on the stack, its size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            which,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make `fd` non-blocking (`on`) or blocking.
fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were handed; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        let flags = match on {
            true => flags | libc::O_NONBLOCK,
            false => flags & !libc::O_NONBLOCK,
        };
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wait until `fd` is ready for `events` or `deadline` passes.
fn wait(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack.
        let r = unsafe { libc::poll(&mut p, 1, ms.max(1)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(());
        }
    }
}

impl Connection {
    pub fn new(input: RawFd, output: RawFd, write_timeout: Duration) -> io::Result<Connection> {
        let read_deadline = Instant::now() + FIRST_DEADLINE;
        let socket = input == output
            && set_socket_timeout(input, libc::SO_SNDTIMEO, write_timeout).is_ok()
            && set_socket_timeout(input, libc::SO_RCVTIMEO, FIRST_DEADLINE).is_ok();
        let blocking = match socket {
            true => {
                set_nonblocking(input, false)?;
                Some(FIRST_DEADLINE)
            }
            false => {
                set_nonblocking(input, true)?;
                if output != input {
                    set_nonblocking(output, true)?;
                }
                None
            }
        };
        Ok(Connection {
            input,
            output,
            read_deadline,
            write_timeout,
            out: Vec::with_capacity(4096),
            blocking,
            tap: None,
        })
    }

    /// Before a blocking read: the socket's receive timeout is made no
    /// longer than what is left until the read deadline, and not much
    /// shorter either (a short one left by a read near a deadline would
    /// wake an idle session over and over). Set again only then: a new
    /// command's deadline is as far off as the last one's, so this is rare.
    fn bound_blocking_read(&mut self) -> io::Result<()> {
        let Some(set) = self.blocking else {
            return Ok(());
        };
        let left = self.read_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if set > left || set < left / 2 {
            set_socket_timeout(self.input, libc::SO_RCVTIMEO, left)?;
            self.blocking = Some(left);
        }
        Ok(())
    }

    /// Reading must complete before `deadline`.
    pub fn set_read_deadline(&mut self, deadline: Instant) {
        self.read_deadline = deadline;
    }

    /// Queue bytes to send; [`flush`](Self::flush) sends them.
    pub fn queue(&mut self, bytes: &[u8]) {
        if let Some(t) = self.tap.as_mut() {
            t.server(bytes);
        }
        self.out.extend_from_slice(bytes);
    }

    /// Queue what `fill` appends to the queue (written in place, not
    /// copied from a buffer of its own).
    pub fn queue_with(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        let start = self.out.len();
        fill(&mut self.out);
        if let Some(t) = self.tap.as_mut() {
            t.server(&self.out[start..]);
        }
    }

    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Send everything queued, or fail once the client has taken nothing
    /// for the write timeout.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.out.len() {
            let rest = &self.out[sent..];
            // SAFETY: writing from a live slice to our descriptor.
            let n = unsafe { libc::write(self.output, rest.as_ptr().cast(), rest.len()) };
            if n >= 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                // A blocking socket waited the whole write timeout.
                io::ErrorKind::WouldBlock if self.blocking.is_some() => {
                    self.out.clear();
                    return Err(io::ErrorKind::TimedOut.into());
                }
                io::ErrorKind::WouldBlock => wait(
                    self.output,
                    libc::POLLOUT,
                    Instant::now() + self.write_timeout,
                )?,
                io::ErrorKind::Interrupted => {}
                _ => {
                    self.out.clear();
                    return Err(e);
                }
            }
        }
        self.out.clear();
        Ok(())
    }
}

impl Transport for Connection {
    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        const CHUNK: usize = 16 * 1024;
        loop {
            self.bound_blocking_read()?;
            // Straight into the buffer's spare room: nothing is zeroed or
            // copied.
            buf.reserve(CHUNK);
            let start = buf.len();
            let room = buf.capacity() - start;
            // SAFETY: reading at most `room` bytes into the spare capacity
            // of `buf`; only the bytes read are then counted in its length.
            let n = unsafe {
                let n = libc::read(self.input, buf.as_mut_ptr().add(start).cast(), room);
                if n > 0 {
                    buf.set_len(start + n as usize);
                }
                n
            };
            if n >= 0 {
                if let Some(t) = self.tap.as_mut() {
                    t.client(&buf[start..]);
                }
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                // A blocking socket's receive timeout: the deadline is
                // checked again before the next read.
                io::ErrorKind::WouldBlock if self.blocking.is_some() => {}
                io::ErrorKind::WouldBlock => wait(self.input, libc::POLLIN, self.read_deadline)?,
                io::ErrorKind::Interrupted => {}
                // A reset connection is the client going away.
                io::ErrorKind::ConnectionReset => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    fn go_ahead(&mut self) -> io::Result<()> {
        self.queue(b"+ go ahead\r\n");
        self.flush()
    }
}
