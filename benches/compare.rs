//! `cargo bench`: imspd against Debian's cyrus-imspd 1.8 on this machine, in
//! the same run, with the ratios. Not a test: it measures and prints.
//!
//! cyrus-imspd is measured when /usr/sbin/cyrus-imspd exists and this runs
//! as root (1.8 keeps its data in /var/lib/imsp, which is moved aside for
//! the run and put back after). `BENCH_QUICK=1` runs smaller counts.
//!
//! For comparing changes by hand: `BENCH_MODES=off-journal,on-rewrite`
//! runs only those modes of imspd (fsync on/off, rewrite/journal),
//! `BENCH_ONLY=setget,writers` only those measures (sessions, setget,
//! search, store, writers, idle), `BENCH_NO_CYRUS=1` skips 1.8,
//! `BENCH_PER_WRITER=N` has each of the 8 writers store N entries, and
//! `IMSPD_BIN=path` measures another build of imspd, `IMSPD_BASE=path`
//! measures one beside this build (fsync off, journal; this build again
//! shows the noise), `BENCH_ROUNDS=N` runs the short measures in at least
//! N rounds (default 9), and `BENCH_PIN=0` lets the client share the
//! servers' CPUs (see `pin`).
//!
//! SET+GET is also measured against a responder that does no work (the
//! floor, printed under the table): what any server pays on this machine
//! for a pair, so that what is left of a server's figures is its own work.
//! Under the table too: SET+GET against 1.8 round by round (the median
//! of the ratios of rounds run close together, finer than the ratio of
//! two medians), with a 95% confidence interval for that median and the
//! count of rounds imspd led: the test of "at least equal".
//!
//! The 8 writers are shown as entries stored per second and as entries
//! kept per second (1.8 keeps one writer's copy of the book). For changes
//! too small for this machine's timings, `benches/instructions.sh` counts
//! the instructions of a command with callgrind.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, children_of, new_child};

const CYRUS: &str = "/usr/sbin/cyrus-imspd";
const CYRUS_DIR: &str = "/var/lib/imsp";

/// How an imspd under test writes.
#[derive(Clone, Copy)]
struct Mode {
    fsync: bool,
    journal: bool,
}

impl Mode {
    fn label(self) -> String {
        format!(
            "fsync {}, {}",
            if self.fsync { "on" } else { "off" },
            if self.journal { "journal" } else { "rewrite" }
        )
    }
}

fn flag(on: bool) -> &'static str {
    if on { "+" } else { "-" }
}

fn options(mode: Mode) -> String {
    format!(
        "common.domain R example.org\n\
         imsp.admin.all N (admin)\n\
         imsp.create.new.users N +\n\
         imsp.db.fsync N {}\n\
         imsp.db.journal N {}\n\
         imsp.log.level N 1\n\
         imsp.user.quota R 0\n",
        flag(mode.fsync),
        flag(mode.journal)
    )
}

/// A book of `n` entries in 1.8's format (sorted as 1.8 sorts).
fn book_file(n: usize) -> Vec<u8> {
    let mut names: Vec<String> = (0..n).map(|i| format!("Person {i:06}")).collect();
    names.sort_by_key(|s| s.to_lowercase());
    let mut out = Vec::with_capacity(n * 80);
    for (i, name) in names.iter().enumerate() {
        let key = name.replace(' ', "\\s");
        let _ = i;
        out.extend_from_slice(format!("{key}\" \n").as_bytes());
        out.extend_from_slice(
            format!("{key}\"email {}@example.org\n", name.replace(' ', ".")).as_bytes(),
        );
        out.extend_from_slice(format!("{key}\"phone 555-{}\n", &name[7..]).as_bytes());
    }
    out
}

/// Put a book of `n` entries as `owner`'s default book.
fn preload(dir: &Path, owner: &str, n: usize) {
    let u = dir.join("user").join(owner);
    std::fs::create_dir_all(&u).unwrap();
    std::fs::write(u.join(format!("abook.{owner}")), book_file(n)).unwrap();
    std::fs::write(u.join("abooks"), format!("{owner} \n")).unwrap();
}

struct Target<'a> {
    name: &'a str,
    port: u16,
    listener: u32,
    dir: PathBuf,
    password: &'static str,
}

fn login(t: &Target, user: &str) -> Client {
    let mut c = Client::connect(t.port);
    c.ok_count(&format!("LOGIN {user} {}", t.password));
    c
}

fn sessions_per_sec(t: &Target, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let mut c = login(t, "bench");
        c.ok_count("LOGOUT");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// SET+GET pairs per second on one connection, the session's CPU time a
/// pair and the client's, in microseconds.
fn set_get_pairs_per_sec(t: &Target, n: usize) -> (f64, f64, f64) {
    let (mut c, pid) = login_with_pid(t, "bench");
    let start = Instant::now();
    let cpu = cpu_ns(pid);
    let client = thread_cpu_ns();
    set_get_pairs(&mut c, n);
    let client = thread_cpu_ns().saturating_sub(client);
    let cpu = cpu_ns(pid).saturating_sub(cpu);
    let a_pair = |ns: u64| ns as f64 / 1000.0 / n as f64;
    (
        n as f64 / start.elapsed().as_secs_f64(),
        a_pair(cpu),
        a_pair(client),
    )
}

/// `n` SET+GET pairs, the same for every server and the floor.
fn set_get_pairs(c: &mut Client, n: usize) {
    for i in 0..n {
        c.ok_count(&format!("SET bench.key v{i}"));
        // 1.8 dies on GET of an exact existing name: use a pattern.
        assert_eq!(c.ok_count("GET bench.key*"), 1);
    }
}

/// The floor of a SET+GET pair on this machine: a responder that does
/// no work (it answers every command from a constant, a thread of this
/// benchmark on the servers' CPUs), measured as the servers are. What a
/// server's pair costs above it is the server's own work; the rest is
/// what any server pays here to be woken and to wake its client.
struct Floor {
    port: u16,
    /// The responder's thread id (its CPU time is in
    /// `/proc/self/task/TID/schedstat`).
    tid: u32,
}

impl Floor {
    fn start(cpus: Option<std::ops::Range<usize>>) -> Floor {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            if let Some(cpus) = cpus {
                set_affinity(cpus, tid);
            }
            tx.send(tid as u32).unwrap();
            // One connection at a time, as a session serves one.
            for stream in listener.incoming() {
                let Ok(mut out) = stream else { continue };
                let _ = out.set_nodelay(true);
                let _ = out.set_read_timeout(Some(Duration::from_secs(1800)));
                let mut input = BufReader::new(out.try_clone().unwrap());
                let _ = out.write_all(b"* OK floor ready\r\n");
                let mut line = Vec::new();
                let mut reply = Vec::new();
                loop {
                    line.clear();
                    if input.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let tag_end = line.iter().position(|&b| b == b' ').unwrap_or(0);
                    let (tag, command) = line.split_at(tag_end);
                    reply.clear();
                    if command.starts_with(b" GET") {
                        reply.extend_from_slice(b"* OPTION bench.key v [READ-WRITE]\r\n");
                    }
                    reply.extend_from_slice(tag);
                    reply.extend_from_slice(b" OK completed\r\n");
                    if out.write_all(&reply).is_err() || command.starts_with(b" LOGOUT") {
                        break;
                    }
                }
            }
        });
        Floor {
            port,
            tid: rx.recv().unwrap(),
        }
    }

    /// Pairs per second, and the responder's CPU time a pair (us).
    fn set_get_pairs_per_sec(&self, n: usize) -> (f64, f64) {
        let cpu = || cpu_ns_of(&format!("/proc/self/task/{}/schedstat", self.tid));
        let mut c = Client::connect(self.port);
        let start = Instant::now();
        let before = cpu();
        set_get_pairs(&mut c, n);
        let used = cpu().saturating_sub(before);
        let rate = n as f64 / start.elapsed().as_secs_f64();
        c.ok_count("LOGOUT");
        (rate, used as f64 / 1000.0 / n as f64)
    }
}

/// A logged-in session, and its process.
fn login_with_pid(t: &Target, user: &str) -> (Client, u32) {
    let before = children_of(t.listener);
    let c = login(t, user);
    (c, new_child(t.listener, &before))
}

fn stores_per_sec(t: &Target, user: &str, n: usize) -> f64 {
    let mut c = login(t, user);
    let start = Instant::now();
    for i in 0..n {
        c.ok_count(&format!(
            "STOREADDRESS {user} \"New {i}\" email new{i}@example.org"
        ));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Milliseconds of a selective SEARCHADDRESS: the first in a new session
/// (cold), and the median of it repeated in that session (warm).
fn search_ms(t: &Target, user: &str, runs: usize) -> (f64, f64) {
    let mut c = login(t, user);
    let cmd = format!("SEARCHADDRESS {user} name \"*son 0012*\" email \"*@example.org\"");
    let s = Instant::now();
    let hits = c.ok_count(&cmd);
    let cold = s.elapsed().as_secs_f64() * 1000.0;
    assert!(hits > 0, "{}: no hits", t.name);
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            c.ok_count(&cmd);
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (cold, times[times.len() / 2])
}

/// The CPU time (user and system) process `pid` has used so far, in
/// nanoseconds (`/proc/PID/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    cpu_ns_of(&format!("/proc/{pid}/schedstat"))
}

/// The CPU time a `schedstat` file gives, in nanoseconds.
fn cpu_ns_of(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 8 sessions store `per` entries each into one book at once; returns
/// (entries per second, entries that survived, the sessions' CPU time a
/// store in microseconds). The sessions log in first; the time runs from
/// their first store to their last LOGOUT answer (1.8 writes its files at
/// LOGOUT, imspd folds its journals then), so password checks are not
/// counted as writes. The CPU time is of the stores alone, each session's
/// taken from its first store to its last: the work a store costs the
/// server, whatever else the machine does meanwhile (what LOGOUT does
/// is in the rate, not in it). The last value is the CPU time the
/// benchmark's client threads spent on the stores, a store: what the
/// machine's two cores give the client instead of the sessions.
fn concurrent_writers(t: &Target, user: &str, per: usize) -> (f64, usize, f64, f64) {
    let owner = user.to_string();
    // The owner's directory and book made first, by one session: 1.8
    // fails stores ("Failed to modify address book") when eight sessions
    // make a new user's book at once.
    let mut c = login(t, user);
    c.ok(&format!("STOREADDRESS {owner} \"Warm up\" email w@x"));
    c.ok(&format!("DELETEADDRESS {owner} \"Warm up\""));
    c.ok("LOGOUT");
    // Logged in one at a time, each finds its session's process.
    let sessions: Vec<_> = (0..8).map(|_| login_with_pid(t, user)).collect();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(9));
    let ws: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(w, (mut c, pid))| {
            let owner = owner.clone();
            let ready = ready.clone();
            std::thread::spawn(move || {
                ready.wait();
                let cpu = cpu_ns(pid);
                let client = thread_cpu_ns();
                for i in 0..per {
                    c.ok_count(&format!(
                        "STOREADDRESS {owner} \"W{w} E{i}\" email w{w}e{i}@x"
                    ));
                }
                let client = thread_cpu_ns().saturating_sub(client);
                let cpu = cpu_ns(pid).saturating_sub(cpu);
                c.ok_count("LOGOUT");
                (cpu, client)
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    let (cpu, client) = ws
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    let rate = (8 * per) as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = login(t, user);
    // 1.8 may fail the search of a book its writers damaged: none survived.
    let r = c.cmd(&format!("SEARCHADDRESS {owner}"));
    let survived = match r.status().as_str() {
        "OK" => r.untagged().len(),
        _ => {
            eprintln!("[{}] SEARCHADDRESS failed: {}", t.name, r.tagged());
            0
        }
    };
    let a_store = |ns: u64| ns as f64 / 1000.0 / (8 * per) as f64;
    (rate, survived, a_store(cpu), a_store(client))
}

/// The CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Resident memory (KB) of an idle, logged-in session process.
fn idle_session_kb(t: &Target) -> u64 {
    let (_c, pid) = login_with_pid(t, "bench");
    // Settled after its login.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default, Clone)]
struct Figures {
    sessions: f64,
    /// Pairs per second, and the session's and the client's CPU time a
    /// pair (us).
    set_get: (f64, f64, f64),
    /// Pairs per second of each round, in round order.
    set_get_rounds: Vec<f64>,
    store_5k: f64,
    search_5k: (f64, f64),
    store_10k: f64,
    search_10k: (f64, f64),
    search_100k: (f64, f64),
    store_100k: f64,
    concurrent: (f64, usize, f64),
    /// The client's CPU time a store of the 8 writers, in microseconds.
    concurrent_client: f64,
    /// Entries that survived, per second of the same run.
    concurrent_kept: f64,
    idle_kb: u64,
}

struct Counts {
    sessions: usize,
    pairs: usize,
    stores: usize,
    big: usize,
    per_writer: usize,
}

/// Whether `what` is among the comma-separated words of the environment
/// variable `var` (or the variable is unset).
fn selected(var: &str, what: &str) -> bool {
    std::env::var(var).map_or(true, |v| v.split(',').any(|w| w.trim() == what))
}

/// The short measures (sessions, SET+GET, searches, 8 writers: a second
/// or less each) are run at least this many times and the median kept:
/// one run is at the mercy of this machine's noise. The rounds take turns
/// between the servers (imspd's modes and 1.8, all running), so a slower
/// minute falls on all of them alike.
const ROUNDS: usize = 9;

/// Most servers measured in one run: imspd's four modes, a base build
/// and 1.8.
const MOST_TARGETS: usize = 6;

/// Rounds for `n` taking turns: a multiple of `n`, so that with each
/// round starting one further along (see [`rotated`]) each takes each
/// place in the order equally often. At least `BENCH_ROUNDS` (default
/// [`ROUNDS`]): more for a finer comparison.
fn rounds_for(n: usize) -> usize {
    let n = n.max(1);
    let least = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(ROUNDS);
    least.div_ceil(n) * n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `f(i, round)` for each `i` of `0..n`, round after round: the values of
/// each. Each round starts one further along, so that no place in the
/// order is favoured: in the same order every round, an identical build
/// measured second did 1.3% to 2.6% more SET+GET pairs a second than the
/// one measured first, in four runs out of four. (Rotated, the first led
/// in the next four: a place is not shown to matter beside the noise,
/// but if it does, rotating evens it out.)
///
/// Each measure starts on a quiet disk ([`quiet`]).
fn rotated<T>(n: usize, mut f: impl FnMut(usize, usize) -> T) -> Vec<Vec<T>> {
    let mut all: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for round in 0..rounds_for(n) {
        for k in 0..n {
            let i = (round + k) % n;
            quiet();
            all[i].push(f(i, round));
        }
    }
    all
}

/// Write back what the page cache holds, then let the kernel's threads
/// finish: the writeback of the modes that do not fsync, and the file
/// system's journal after those that do, would otherwise fall on
/// whichever server is measured next.
fn quiet() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(50));
}

/// `f` for each target, in [`rotated`] turns: the values of each target.
fn in_turns<T>(targets: &[Target], mut f: impl FnMut(&Target, usize) -> T) -> Vec<Vec<T>> {
    rotated(targets.len(), |i, round| f(&targets[i], round))
}

/// The figures of each target, and the floor's SET+GET (pairs per
/// second, its CPU time a pair in us; zero when not measured).
fn measure_all(targets: &[Target], floor: &Floor, k: &Counts) -> (Vec<Figures>, (f64, f64)) {
    let only = |m| selected("BENCH_ONLY", m);
    let mut figures: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
    let mut floor_figures = (0.0, 0.0);
    for t in targets {
        preload(&t.dir, "bench5k", 5_000);
        preload(&t.dir, "bench10k", 10_000);
        preload(&t.dir, "bench100k", k.big);
    }
    if only("sessions") {
        eprintln!("sessions");
        let all = in_turns(targets, |t, _| sessions_per_sec(t, k.sessions));
        for (f, v) in figures.iter_mut().zip(all) {
            f.sessions = median(v);
        }
    }
    if only("setget") {
        eprintln!("SET+GET");
        // The floor takes its turns with the servers, as one more.
        let n = targets.len();
        let mut all = match n {
            0 => Vec::new(),
            _ => rotated(n + 1, |i, _| match targets.get(i) {
                Some(t) => set_get_pairs_per_sec(t, k.pairs),
                None => {
                    let (rate, cpu) = floor.set_get_pairs_per_sec(k.pairs);
                    (rate, cpu, 0.0)
                }
            }),
        };
        if let Some(floor_runs) = all.pop() {
            floor_figures = (
                median(floor_runs.iter().map(|x| x.0).collect()),
                median(floor_runs.iter().map(|x| x.1).collect()),
            );
        }
        for (f, v) in figures.iter_mut().zip(all) {
            f.set_get_rounds = v.iter().map(|x| x.0).collect();
            f.set_get = (
                median(v.iter().map(|x| x.0).collect()),
                median(v.iter().map(|x| x.1).collect()),
                median(v.iter().map(|x| x.2).collect()),
            );
        }
    }
    if only("search") {
        eprintln!("searches");
        // In turns too: one slow minute made a server's searches 1.5x to
        // 3x slower than its siblings' in one run.
        let all = in_turns(targets, |t, _| {
            [
                search_ms(t, "bench5k", 10),
                search_ms(t, "bench10k", 10),
                search_ms(t, "bench100k", 5),
            ]
        });
        for (f, v) in figures.iter_mut().zip(all) {
            let at = |i: usize| {
                (
                    median(v.iter().map(|x| x[i].0).collect()),
                    median(v.iter().map(|x| x[i].1).collect()),
                )
            };
            (f.search_5k, f.search_10k, f.search_100k) = (at(0), at(1), at(2));
        }
    }
    for (t, f) in targets.iter().zip(&mut figures) {
        if only("store") {
            eprintln!("[{}] STOREADDRESS", t.name);
            f.store_5k = stores_per_sec(t, "bench5k", k.stores);
            f.store_10k = stores_per_sec(t, "bench10k", k.stores);
            f.store_100k = stores_per_sec(t, "bench100k", (k.stores / 10).max(10));
        }
    }
    if only("writers") {
        eprintln!("8 writers");
        // A fresh book each round; the median round by rate.
        let all = in_turns(targets, |t, round| {
            concurrent_writers(t, &writers_user(round), k.per_writer)
        });
        for (f, mut rounds) in figures.iter_mut().zip(all) {
            // The CPU time a store: its own median, not the median
            // round's by rate.
            let cpu = median(rounds.iter().map(|r| r.2).collect());
            f.concurrent_client = median(rounds.iter().map(|r| r.3).collect());
            rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mid = rounds.len() / 2;
            f.concurrent = (rounds[mid].0, rounds[mid].1, cpu);
            let (rate, kept, _) = f.concurrent;
            f.concurrent_kept = rate * kept as f64 / (8 * k.per_writer) as f64;
        }
    }
    if only("idle") {
        for (t, f) in targets.iter().zip(&mut figures) {
            f.idle_kb = idle_session_kb(t);
        }
    }
    (figures, floor_figures)
}

/// Every user the measures log in as (password `benchpw`): one writers'
/// book a round.
fn bench_users() -> Vec<String> {
    let fixed = ["bench", "bench5k", "bench10k", "bench100k"].map(String::from);
    let most = (1..=MOST_TARGETS).map(rounds_for).max().unwrap_or(1);
    let conc = (0..most).map(writers_user);
    fixed.into_iter().chain(conc).collect()
}

fn writers_user(round: usize) -> String {
    format!("benchconc{round}")
}

/// One imspd measured: its mode, and the binary when it is not this
/// build's (`IMSPD_BASE`).
struct Run<'a> {
    mode: Mode,
    bin: Option<&'a Path>,
}

impl Run<'_> {
    fn label(&self) -> String {
        match self.bin {
            Some(_) => format!("{}, base build", self.mode.label()),
            None => self.mode.label(),
        }
    }
}

fn start_imspd(run: &Run) -> Server {
    let mut b = Server::builder().options(&options(run.mode));
    if let Some(bin) = run.bin {
        b = b.bin(bin);
    }
    bench_users()
        .iter()
        .fold(b, |b, u| b.user(u, "benchpw"))
        .start()
}

/// Pin the benchmark's client to the last CPU and every server (each
/// process and thread of it, and the sessions it forks later) to `cpus`,
/// the others (see [`server_cpus`]), the way a load generator is kept off
/// the system it measures. A client on the servers' CPUs takes a share of
/// them, and how large a share depends on where the scheduler puts each
/// session beside its client, not on the server: on this project's 2-CPU
/// machine the 8 writers' client threads spent 0.49x to 0.76x as much CPU
/// a store with 1.8 as with imspd, for the same work. Clients of a real
/// server are elsewhere. Returns where each runs, for the table.
fn pin(cpus: std::ops::Range<usize>, servers: &[u32]) -> String {
    // The CPU after the servers' (the last).
    let client = cpus.end;
    for &pid in servers {
        let mut pids = vec![pid];
        pids.extend(children_of(pid).into_iter().map(|(p, _)| p));
        for p in pids {
            let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten();
            for t in tasks.flatten() {
                if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) {
                    set_affinity(cpus.clone(), tid);
                }
            }
        }
    }
    // This thread, and the client threads it starts after.
    set_affinity(client..client + 1, 0);
    format!(
        "client on CPU {client}, servers on CPUs {}-{}",
        cpus.start,
        cpus.end - 1
    )
}

/// The CPUs the servers run on (all but the last), unless the client is
/// not pinned (see [`pin`]). (Asked before `pin`: once this thread is
/// pinned, it sees one CPU.)
fn server_cpus() -> Option<std::ops::Range<usize>> {
    if std::env::var_os("BENCH_PIN").is_some_and(|v| v == "0") {
        return None;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then_some(0..n - 1)
}

/// Run task `tid` (0: the calling thread) on `cpus` only.
fn set_affinity(cpus: std::ops::Range<usize>, tid: i32) {
    // SAFETY: a cpu_set_t zeroed and filled by the CPU_* helpers, given
    // to sched_setaffinity with its size.
    let r = unsafe {
        let mut s: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus {
            libc::CPU_SET(c, &mut s);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &s)
    };
    let e = std::io::Error::last_os_error();
    // (A task that ended meanwhile has nothing to pin.)
    assert!(
        r == 0 || e.raw_os_error() == Some(libc::ESRCH),
        "sched_setaffinity({tid}): {e}"
    );
}

/// Debian's cyrus-imspd, on its own data directory (moved aside and put
/// back by `Drop`).
struct Cyrus {
    child: Child,
    port: u16,
    backup: Option<PathBuf>,
}

impl Cyrus {
    fn start() -> Option<Cyrus> {
        // SAFETY: geteuid has no preconditions.
        if !Path::new(CYRUS).exists() || unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let backup = PathBuf::from(format!("{CYRUS_DIR}.bench-backup-{}", std::process::id()));
        let had = Path::new(CYRUS_DIR).exists();
        if had {
            std::fs::rename(CYRUS_DIR, &backup).ok()?;
        }
        std::fs::create_dir_all(Path::new(CYRUS_DIR).join("user")).ok()?;
        let mode = Mode {
            fsync: false,
            journal: false,
        };
        std::fs::write(Path::new(CYRUS_DIR).join("options"), options(mode)).ok()?;
        for u in bench_users() {
            let mut p = Command::new("saslpasswd2")
                .args(["-p", "-c", &u])
                .stdin(Stdio::piped())
                .spawn()
                .ok()?;
            use std::io::Write;
            p.stdin.take()?.write_all(b"benchpw").ok()?;
            p.wait().ok()?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(CYRUS)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let c = Cyrus {
            child,
            port,
            backup: had.then_some(backup),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(c)
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        for (pid, _) in children_of(self.child.id()) {
            // SAFETY: ending processes this run started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(CYRUS_DIR);
        if let Some(b) = &self.backup {
            let _ = std::fs::rename(b, CYRUS_DIR);
        }
    }
}

/// `a` against `b` round by round (the same rounds, each measured close
/// in time, so that a slower minute falls on both).
#[derive(Default)]
struct Paired {
    /// The median of the ratios, and their lower and upper quartiles.
    median: f64,
    lo: f64,
    hi: f64,
    /// A 95% confidence interval for the median ratio, from the order
    /// statistics alone (no assumption about how the noise is spread):
    /// when it holds 1, the two are not shown to differ. `None`: too few
    /// rounds for one.
    ci: Option<(f64, f64)>,
    /// Rounds in which `a` did better.
    ahead: usize,
}

fn paired_ratios(a: &[f64], b: &[f64]) -> Paired {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let n = r.len();
    if n == 0 {
        return Paired::default();
    }
    r.sort_by(f64::total_cmp);
    let at = |q: usize| r[(n - 1) * q / 4];
    Paired {
        median: r[n / 2],
        lo: at(1),
        hi: at(3),
        ci: match median_ci_rank(n) {
            0 => None,
            k => Some((r[k - 1], r[n - k])),
        },
        ahead: r.iter().filter(|&&x| x > 1.0).count(),
    }
}

/// The largest k (1-based) such that the k-th smallest and the k-th
/// largest of n values bound their median with at least 95% confidence:
/// the chance that fewer than k of n fall below the median, Binomial(n,
/// 1/2), is at most 2.5%. 0 when n is too small for any (n < 6).
fn median_ci_rank(n: usize) -> usize {
    // ln C(n, i) - n ln 2, summed as probabilities from i = 0 up.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64;
    let mut below = 0.0f64;
    let mut k = 0;
    for i in 0..n {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        below += (ln_c - ln2n).exp();
        if below > 0.025 {
            break;
        }
        // P(fewer than i + 1 below) <= 2.5%: rank i + 1 bounds it.
        k = i + 1;
    }
    k
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let k = if quick {
        Counts {
            sessions: 100,
            pairs: 300,
            stores: 100,
            big: 100_000,
            per_writer: 50,
        }
    } else {
        Counts {
            sessions: 500,
            pairs: 5_000,
            stores: 500,
            big: 100_000,
            per_writer: 400,
        }
    };
    let k = Counts {
        per_writer: std::env::var("BENCH_PER_WRITER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(k.per_writer),
        ..k
    };
    // The default (fsync on, each change rewrites its file), the same
    // with fsync off, and both with changes journaled (imsp.db.journal).
    let modes = [
        Mode {
            fsync: true,
            journal: false,
        },
        Mode {
            fsync: false,
            journal: false,
        },
        Mode {
            fsync: true,
            journal: true,
        },
        Mode {
            fsync: false,
            journal: true,
        },
    ];
    let base = std::env::var_os("IMSPD_BASE").map(PathBuf::from);
    let runs: Vec<Run> = modes
        .into_iter()
        .filter(|m| {
            let key = format!(
                "{}-{}",
                if m.fsync { "on" } else { "off" },
                if m.journal { "journal" } else { "rewrite" }
            );
            selected("BENCH_MODES", &key)
        })
        .map(|mode| Run { mode, bin: None })
        .chain(base.as_deref().map(|bin| Run {
            mode: Mode {
                fsync: false,
                journal: true,
            },
            bin: Some(bin),
        }))
        .collect();
    // Every server runs from the start to the end, so the measures can
    // take turns between them.
    let servers: Vec<Server> = runs.iter().map(start_imspd).collect();
    let names: Vec<String> = runs
        .iter()
        .map(|r| format!("imspd ({})", r.label()))
        .collect();
    let cyrus = match std::env::var_os("BENCH_NO_CYRUS") {
        Some(_) => None,
        None => Cyrus::start(),
    };
    let mut targets: Vec<Target> = servers
        .iter()
        .zip(&names)
        .map(|(server, name)| Target {
            name,
            port: server.port,
            listener: server.pid(),
            dir: server.dir.clone(),
            password: "benchpw",
        })
        .collect();
    if let Some(c) = &cyrus {
        targets.push(Target {
            name: "cyrus-imspd 1.8",
            port: c.port,
            listener: c.child.id(),
            dir: PathBuf::from(CYRUS_DIR),
            password: "benchpw",
        });
    }
    // (Each round of the 8 writers has its own user, made for as many
    // rounds as this many servers take.)
    assert!(targets.len() <= MOST_TARGETS);
    let cpus = server_cpus();
    let listeners: Vec<u32> = targets.iter().map(|t| t.listener).collect();
    let pinned = cpus.clone().map(|c| pin(c, &listeners));
    if let Some(p) = &pinned {
        eprintln!("pinned: {p}");
    }
    let floor = Floor::start(cpus);
    let (mut figures, floor) = measure_all(&targets, &floor, &k);
    let f_cy = cyrus.as_ref().and_then(|_| figures.pop());
    drop(targets);
    drop(cyrus);
    drop(servers);
    let runs: Vec<(String, Figures)> = runs.iter().map(Run::label).zip(figures).collect();

    let mut t = String::new();
    let mut head = String::from("| measure |");
    for (label, _) in &runs {
        let _ = write!(head, " imspd ({label}) |");
    }
    head.push_str(" cyrus-imspd 1.8 |");
    for (label, _) in &runs {
        let _ = write!(head, " ratio {label} |");
    }
    let _ = writeln!(t, "{head}");
    let _ = writeln!(t, "|---|{}", "---|".repeat(2 * runs.len() + 1));
    let cy = |g: fn(&Figures) -> f64| f_cy.as_ref().map(g);
    let mut row = |name: &str, g: fn(&Figures) -> f64, higher_better: bool, unit: &str| {
        let c = cy(g);
        let mut line = format!("| {name} |");
        for (_, f) in &runs {
            let _ = write!(line, " {:.1} {unit} |", g(f));
        }
        match c {
            Some(c) => {
                let _ = write!(line, " {c:.1} {unit} |");
            }
            None => line.push_str(" not run |"),
        }
        for (_, f) in &runs {
            let r = match (higher_better, c) {
                (true, _) => ratio(g(f), c),
                (false, Some(c)) => ratio(c, Some(g(f))),
                // 1.8 not run: no ratio, not 0.00x.
                (false, None) => "-".into(),
            };
            let _ = write!(line, " {r} |");
        }
        let _ = writeln!(t, "{line}");
    };
    row(
        "sessions/s (connect, LOGIN, LOGOUT)",
        |f| f.sessions,
        true,
        "/s",
    );
    row(
        "SET+GET pairs/s, one connection",
        |f| f.set_get.0,
        true,
        "/s",
    );
    row("SET+GET, session CPU a pair", |f| f.set_get.1, false, "us");
    row("SET+GET, client CPU a pair", |f| f.set_get.2, false, "us");
    row(
        "STOREADDRESS/s, 5,000-entry book",
        |f| f.store_5k,
        true,
        "/s",
    );
    row(
        "STOREADDRESS/s, 10,000-entry book",
        |f| f.store_10k,
        true,
        "/s",
    );
    row(
        "STOREADDRESS/s, 100,000-entry book",
        |f| f.store_100k,
        true,
        "/s",
    );
    row(
        "SEARCHADDRESS 5,000 entries, first in session",
        |f| f.search_5k.0,
        false,
        "ms",
    );
    row(
        "SEARCHADDRESS 5,000 entries, repeated (median)",
        |f| f.search_5k.1,
        false,
        "ms",
    );
    row(
        "SEARCHADDRESS 10,000 entries, first in session",
        |f| f.search_10k.0,
        false,
        "ms",
    );
    row(
        "SEARCHADDRESS 10,000 entries, repeated (median)",
        |f| f.search_10k.1,
        false,
        "ms",
    );
    row(
        "SEARCHADDRESS 100,000 entries, first in session",
        |f| f.search_100k.0,
        false,
        "ms",
    );
    row(
        "SEARCHADDRESS 100,000 entries, repeated (median)",
        |f| f.search_100k.1,
        false,
        "ms",
    );
    row(
        "8 concurrent writers, entries/s",
        |f| f.concurrent.0,
        true,
        "/s",
    );
    row(
        "8 concurrent writers, entries kept/s",
        |f| f.concurrent_kept,
        true,
        "/s",
    );
    row(
        "8 concurrent writers, session CPU a store",
        |f| f.concurrent.2,
        false,
        "us",
    );
    row(
        "8 concurrent writers, client CPU a store",
        |f| f.concurrent_client,
        false,
        "us",
    );
    row("idle session RSS", |f| f.idle_kb as f64, false, "KB");
    let mut kept = format!("\n8 writers x {} entries, kept:", k.per_writer);
    for (label, f) in &runs {
        let _ = write!(kept, " imspd ({label}) {};", f.concurrent.1);
    }
    let _ = write!(
        kept,
        " cyrus-imspd 1.8 {}",
        f_cy.as_ref()
            .map(|f| f.concurrent.1.to_string())
            .unwrap_or_else(|| "not run".into())
    );
    let _ = writeln!(t, "{kept}");
    if floor.0 > 0.0 {
        let _ = writeln!(
            t,
            "(SET+GET floor, a responder doing no work on the servers' CPUs: \
             {:.1} pairs/s, {:.1} us of its CPU a pair)",
            floor.0, floor.1
        );
    }
    if let Some(cy) = f_cy.as_ref().filter(|c| !c.set_get_rounds.is_empty()) {
        let mut line = format!(
            "(SET+GET against 1.8 round by round, the median ratio and the \
             middle half of {} rounds:",
            cy.set_get_rounds.len()
        );
        for (label, f) in &runs {
            let p = paired_ratios(&f.set_get_rounds, &cy.set_get_rounds);
            let ci = match p.ci {
                Some((lo, hi)) => format!("95% interval of the median {lo:.3}x to {hi:.3}x"),
                None => "too few rounds for an interval".into(),
            };
            let _ = write!(
                line,
                " {label} {:.3}x ({:.2}x to {:.2}x; {ci}; imspd ahead in {} rounds);",
                p.median, p.lo, p.hi, p.ahead
            );
        }
        line.pop();
        let _ = writeln!(t, "{line})");
    }
    let _ = writeln!(
        t,
        "(ratios: above 1 means imspd is better; for times and memory, 1.8 / imspd)"
    );
    let _ = writeln!(
        t,
        "(placement: {})",
        pinned.as_deref().unwrap_or("not pinned")
    );
    println!("{t}");
}
