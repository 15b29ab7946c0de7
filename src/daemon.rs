//! The listener process: bind, drop privileges, accept, and fork one child
//! per connection. The parent reaps its children, enforces the connection
//! limit, runs periodic work, and stops cleanly on SIGTERM / SIGINT.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::config::Settings;
use crate::connection::Connection;
use crate::store::Store;

static STOP: AtomicUsize = AtomicUsize::new(0);
static CHILD_EXITED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_child(_: libc::c_int) {
    CHILD_EXITED.store(true, Ordering::SeqCst);
}

fn install(sig: Signal, handler: SigHandler) -> io::Result<()> {
    // No SA_RESTART: a signal interrupts poll() so the loop reacts at once.
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handlers only touch atomics.
    unsafe { signal::sigaction(sig, &action) }.map_err(io::Error::from)?;
    Ok(())
}

/// Bind every address; an unspecified IPv6 address is dual-stack.
pub fn bind(addresses: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addresses {
        let l = TcpListener::bind(a).map_err(|e| io::Error::new(e.kind(), format!("{a}: {e}")))?;
        l.set_nonblocking(true)?;
        out.push(l);
    }
    Ok(out)
}

/// The default: all addresses, IPv6 and IPv4; IPv4 alone when the host has
/// no IPv6.
pub fn bind_default(port: u16) -> io::Result<Vec<TcpListener>> {
    match bind(&[SocketAddr::from(([0u16; 8], port))]) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(_) => bind(&[SocketAddr::from(([0u8; 4], port))]),
    }
}

/// The peer of a socket as `ip:port`, or a placeholder.
pub fn peer_name(stream: &TcpStream) -> String {
    stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Serve on bound listeners until told to stop.
pub fn run(
    listeners: Vec<TcpListener>,
    max_connections: usize,
    settings: &Settings,
) -> io::Result<()> {
    install(Signal::SIGTERM, SigHandler::Handler(on_stop))?;
    install(Signal::SIGINT, SigHandler::Handler(on_stop))?;
    install(Signal::SIGCHLD, SigHandler::Handler(on_child))?;
    // What sessions killed before their end left in journals goes into
    // the files, so that the directory is 1.8's again (readers apply the
    // journals anyway). Done before the daemon says it listens. A Store of its own: the listener keeps no user's
    // files in memory.
    match Store::open(&settings.data_dir).fold_journals() {
        Ok(0) => {}
        Ok(n) => crate::log_warn!("folded {n} journal(s) left by sessions that did not end"),
        Err(e) => crate::log_error!("folding journals: {e}"),
    }
    // The global options, kept parsed so that each session starts with them.
    let mut warm = Store::open(&settings.data_dir);
    // Mapped once here: each session takes the listener's store over,
    // mapping and all.
    if !warm.share_change_counter() {
        crate::log_warn!(
            "no change counter in {} (a network file system, or it cannot be made): every command looks at its files",
            settings.data_dir.display()
        );
    }
    apply_log_level(&mut warm);
    for l in &listeners {
        crate::log_login!("listening on {}", l.local_addr()?);
        // Tests and scripts wait for this line to learn the port.
        if crate::log::stderr_enabled() {
            let _ = writeln!(io::stderr(), "imspd: listening on {}", l.local_addr()?);
        }
    }
    let mut children: HashSet<Pid> = HashSet::new();
    let mut periodic = Periodic::new();
    let mut listeners = Some(listeners);
    warm.sweep(None);
    // Successful logins reported by sessions (see auth::cache).
    let cache_fd = match crate::auth::cache::enable() {
        Ok(fd) => Some(fd),
        Err(e) => {
            crate::log_warn!("auth cache off: {e}");
            None
        }
    };

    loop {
        reap(&mut children);
        if STOP.load(Ordering::SeqCst) > 0 {
            break;
        }
        let Some(ls) = listeners.as_ref() else { break };
        apply_log_level(&mut warm);
        let listen_fds: Vec<i32> = ls.iter().map(|l| l.as_raw_fd()).collect();
        periodic.run_due(settings, &listen_fds);
        // The listening sockets, then the auth cache's report pipe; a
        // session process closes all of them.
        let mut fds: Vec<libc::pollfd> = listen_fds
            .iter()
            .chain(cache_fd.as_ref())
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait_ms = periodic.millis_until_due().min(1000);
        // SAFETY: fds is a live array of pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if r <= 0 {
            continue; // timeout or EINTR (a signal): loop to reap / stop
        }
        if let (Some(fd), Some(p)) = (cache_fd, fds.last())
            && p.revents & libc::POLLIN != 0
        {
            crate::auth::cache::absorb(fd);
        }
        for (l, p) in ls.iter().zip(&fds) {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                match l.accept() {
                    Ok((stream, _)) => {
                        reap(&mut children);
                        if children.len() >= max_connections {
                            refuse(stream, max_connections);
                            continue;
                        }
                        if let Some(pid) = spawn_session(stream, &fds, settings, &mut warm) {
                            children.insert(pid);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and the like: log and back off a little.
                        crate::log_warn!("accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
    }

    // Stop accepting; let the sessions finish. A second signal ends them.
    drop(listeners.take());
    crate::log_login!(
        "shutting down; waiting for {} session(s) to end",
        children.len()
    );
    let mut signalled = false;
    while !children.is_empty() {
        if STOP.load(Ordering::SeqCst) > 1 && !signalled {
            for pid in &children {
                let _ = signal::kill(*pid, Signal::SIGTERM);
            }
            signalled = true;
        }
        std::thread::sleep(Duration::from_millis(50));
        reap(&mut children);
    }
    Ok(())
}

/// Read the global options (kept parsed for the sessions to inherit) and
/// log at the level they set.
fn apply_log_level(warm: &mut Store) {
    match warm.global_options() {
        Ok(g) => crate::log::set_level(g.log_level()),
        Err(e) => crate::log_warn!("reading the global options: {e}"),
    }
}

/// Collect every child that has exited.
fn reap(children: &mut HashSet<Pid>) {
    CHILD_EXITED.store(false, Ordering::SeqCst);
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    children.remove(&pid);
                }
                if let WaitStatus::Signaled(pid, sig, _) = status {
                    crate::log_warn!("session process {pid} killed by {sig}");
                }
            }
        }
    }
}

fn refuse(stream: TcpStream, limit: usize) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut s = &stream;
    let _ = write!(
        s,
        "* BYE Too many connections ({limit} sessions are open); try again later\r\n"
    );
    crate::log_warn!("refused {}: connection limit {limit}", peer_name(&stream));
}

/// The life of a child of the listener: it closes the listener's
/// descriptors `fds`, takes the default SIGTERM and SIGCHLD, ignores
/// SIGINT, runs `body` and exits. A bug that panics ends this child only,
/// logged (exit 70); it must not unwind into the listener's frames of this
/// process, whose descriptors the child has closed.
fn in_child(fds: &[i32], what: &str, body: impl FnOnce()) -> ! {
    for fd in fds {
        // SAFETY: closing the child's copies of the listener fds.
        unsafe { libc::close(*fd) };
    }
    for sig in [Signal::SIGTERM, Signal::SIGCHLD] {
        let _ = install(sig, SigHandler::SigDfl);
    }
    // A Ctrl-C at the terminal of `imspd -d` reaches the whole process
    // group: the listener stops accepting, and children finish (a second
    // signal sends them SIGTERM).
    let _ = install(Signal::SIGINT, SigHandler::SigIgn);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        crate::log_error!("{what} ended by an internal error");
        std::process::exit(70);
    }
    std::process::exit(0);
}

/// Fork a child to serve `stream`; the parent gets its pid.
fn spawn_session(
    stream: TcpStream,
    listeners: &[libc::pollfd],
    settings: &Settings,
    warm: &mut Store,
) -> Option<Pid> {
    // SAFETY: the listener is single-threaded, so the child may run freely.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            // The child must not keep the port: close the listening sockets
            // (and the listener's end of the auth cache pipe).
            let fds: Vec<i32> = listeners.iter().map(|l| l.fd).collect();
            let peer = peer_name(&stream);
            in_child(&fds, &format!("{peer}: session"), || {
                crate::log::after_fork();
                let fd = stream.as_raw_fd();
                let _ = stream.set_nodelay(true);
                match Connection::new(fd, fd, settings.write_timeout) {
                    Ok(conn) => {
                        // The listener's store, global options parsed:
                        // taken over.
                        let store = std::mem::replace(warm, Store::open(&settings.data_dir));
                        crate::session::serve(conn, settings, &peer, store)
                    }
                    Err(e) => crate::log_warn!("{peer}: {e}"),
                }
                drop(stream);
            })
        }
        Err(e) => {
            crate::log_error!("fork failed: {e}");
            let mut s = &stream;
            let _ = s.write_all(b"* BYE Server is out of resources; try again later\r\n");
            None
        }
    }
}

/// Work the listener does between accepts: the refresh of the mailbox
/// list from the IMAP servers (see [`crate::refresh`]), in a forked child
/// so that accepts never wait on it.
struct Periodic {
    next: Instant,
    /// The refresh child while it runs.
    refreshing: Option<Pid>,
    /// The first round (at start) is over.
    started: bool,
}

impl Periodic {
    fn new() -> Periodic {
        Periodic {
            next: Instant::now(),
            refreshing: None,
            started: false,
        }
    }

    fn millis_until_due(&self) -> i32 {
        self.next
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32
    }

    fn run_due(&mut self, settings: &Settings, listen_fds: &[i32]) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        // The child is reaped with the sessions; gone means finished.
        if let Some(pid) = self.refreshing
            && signal::kill(pid, None).is_ok()
        {
            self.next = now + Duration::from_secs(1);
            return;
        }
        self.refreshing = None;
        let mut store = crate::store::Store::open(&settings.data_dir);
        let (due, every) = match store.global_options() {
            Ok(o) => {
                let missing = !store.mailboxes_path().exists();
                let every = crate::refresh::interval(&o);
                // Build the list when it is missing; refresh it when due;
                // nothing to do without IMAP servers.
                let servers = !o.list("imsp.imap.servers").is_empty();
                (servers && (missing || (every > 0 && self.started)), every)
            }
            Err(e) => {
                crate::log_error!("mailbox refresh: cannot read the options: {e}");
                (false, 60)
            }
        };
        self.started = true;
        self.next = now + Duration::from_secs(if every == 0 { 60 } else { every });
        if due {
            self.refreshing = spawn_refresh(settings, listen_fds);
        }
    }
}

/// Fork the child that refreshes `mailboxes`.
fn spawn_refresh(settings: &Settings, listen_fds: &[i32]) -> Option<Pid> {
    // SAFETY: the listener is single-threaded, so the child may run freely.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => in_child(listen_fds, "mailbox refresh", || {
            crate::log::reopen();
            let mut store = crate::store::Store::open(&settings.data_dir);
            crate::refresh::run_logged(&mut store);
        }),
        Err(e) => {
            crate::log_error!("mailbox refresh: fork failed: {e}");
            None
        }
    }
}

/// Serve one session on stdin/stdout (inetd, or a systemd socket with
/// Accept=yes).
pub fn serve_inetd(settings: &Settings) {
    // SAFETY: fd 0 is ours; the TcpStream is forgotten, never closed here.
    let peer = {
        use std::os::fd::FromRawFd;
        let s = unsafe { TcpStream::from_raw_fd(0) };
        let p = s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "stdin".into());
        std::mem::forget(s);
        p
    };
    match Connection::new(0, 1, settings.write_timeout) {
        Ok(conn) => crate::session::serve(conn, settings, &peer, Store::open(&settings.data_dir)),
        Err(e) => crate::log_error!("inetd session: {e}"),
    }
}

/// Detach from the terminal (without `-d`).
pub fn daemonize() -> io::Result<()> {
    // SAFETY: called before any other thread exists.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    nix::unistd::setsid().map_err(io::Error::from)?;
    std::env::set_current_dir("/")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}
