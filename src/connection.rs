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
    /// Session telemetry, when it is on (see [`crate::telemetry`]).
    pub tap: Option<Box<crate::telemetry::Tap>>,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were handed; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
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
        set_nonblocking(input)?;
        if output != input {
            set_nonblocking(output)?;
        }
        Ok(Connection {
            input,
            output,
            read_deadline: Instant::now() + Duration::from_secs(3600),
            write_timeout,
            out: Vec::with_capacity(4096),
            tap: None,
        })
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
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // SAFETY: reading into a stack buffer of the given length.
            let n = unsafe { libc::read(self.input, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n >= 0 {
                if let Some(t) = self.tap.as_mut() {
                    t.client(&chunk[..n as usize]);
                }
                buf.extend_from_slice(&chunk[..n as usize]);
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
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
