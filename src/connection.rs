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
    /// How long a flush may wait for the client to take what it sends.
    write_timeout: Duration,
    out: Vec<u8>,
    /// One socket for both ways, left blocking: a read waits in the kernel
    /// for at most the receive timeout set on it (`SO_RCVTIMEO`, this
    /// value), never past the read deadline. That is one system call a
    /// read where a non-blocking descriptor takes three (a read that would
    /// block, a poll, the read again). Writes do not wait in the kernel
    /// (`MSG_DONTWAIT`, then poll: see [`Connection::flush`]); the write
    /// timeout is also set as `SO_SNDTIMEO`, for a write made any other
    /// way. `None`: non-blocking descriptors and poll (two descriptors
    /// under inetd, or not a socket).
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

    /// Send everything queued, or fail when the client has not taken it
    /// all within the write timeout: a client that reads a byte now and
    /// then cannot hold a session for ever (what is queued is at most a
    /// response beyond 64 KB, so the least rate that keeps a session is
    /// about 220 bytes a second at the default timeout). A socket is
    /// written without waiting (`MSG_DONTWAIT`: one call when the data
    /// fits, as it mostly does), then polled until the deadline.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut sent = 0;
        let mut deadline = None;
        let r = loop {
            if sent == self.out.len() {
                break Ok(());
            }
            let rest = &self.out[sent..];
            // SAFETY: writing from a live slice to our descriptor.
            let n = unsafe {
                match self.blocking {
                    Some(_) => libc::send(
                        self.output,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    ),
                    None => libc::write(self.output, rest.as_ptr().cast(), rest.len()),
                }
            };
            if n >= 0 {
                sent += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    // The time runs from the first wait.
                    let until =
                        *deadline.get_or_insert_with(|| Instant::now() + self.write_timeout);
                    if let Err(e) = wait(self.output, libc::POLLOUT, until) {
                        break Err(e);
                    }
                }
                io::ErrorKind::Interrupted => {}
                _ => break Err(e),
            }
        };
        self.out.clear();
        r
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A connection on one end of a socket pair whose send buffer holds
    /// little, and the other end (for [`reader`]).
    fn slow_pair(timeout: Duration) -> (Connection, UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let small: libc::c_int = 4096;
        // SAFETY: an int option on a socket we hold.
        unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let conn = Connection::new(a.as_raw_fd(), a.as_raw_fd(), timeout).unwrap();
        assert!(conn.blocking.is_some(), "a socket: the blocking way");
        (conn, a, b)
    }

    fn reader(mut b: UnixStream, pause: Duration) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            loop {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
                std::thread::sleep(pause);
            }
        })
    }

    #[test]
    fn a_client_that_reads_a_little_at_a_time_cannot_stretch_a_flush() {
        let (mut conn, a, b) = slow_pair(Duration::from_secs(1));
        // 1 KB each 20 ms: the flush makes progress all the time, but 200
        // KB would take 4 s.
        let slow = reader(b, Duration::from_millis(20));
        conn.queue(&vec![b'x'; 200 * 1024]);
        let start = Instant::now();
        let r = conn.flush();
        let took = start.elapsed();
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert!(took < Duration::from_millis(2500), "took {took:?}");
        assert_eq!(conn.queued(), 0);
        drop(a);
        let got = slow.join().unwrap();
        assert!(got > 4 * 1024, "the reader took only {got} bytes");
    }

    #[test]
    fn a_reader_that_keeps_up_gets_everything() {
        let (mut conn, a, b) = slow_pair(Duration::from_secs(2));
        let fast = reader(b, Duration::ZERO);
        let data: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        conn.queue(&data);
        conn.flush().unwrap();
        drop(a);
        assert_eq!(fast.join().unwrap(), data.len());
    }
}
