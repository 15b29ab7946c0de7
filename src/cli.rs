//! The command line. Flags an admin of cyrus-imspd knows (`-p`, `-d`) keep
//! their meaning.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "imspd",
    version,
    about = "IMSP server (Internet Message Support Protocol)"
)]
pub struct Cli {
    /// TCP port to listen on (0 picks a free one).
    #[arg(short = 'p', long = "port", default_value_t = 406)]
    pub port: u16,

    /// Stay in the foreground and log to stderr as well as syslog.
    #[arg(short = 'd', long = "foreground")]
    pub foreground: bool,

    /// Address to listen on; repeat for several (default: all, IPv6 and IPv4).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<std::net::IpAddr>,

    /// The database directory.
    #[arg(
        long = "data-dir",
        value_name = "DIR",
        default_value = "/var/imsp",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Serve one session on stdin/stdout (inetd, systemd Accept=yes).
    #[arg(long)]
    pub inetd: bool,

    /// Run as this user after binding the port.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Run as this group after binding the port (default: the user's group).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Most sessions served at once; more are refused with `* BYE`.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 256)]
    pub max_connections: usize,

    /// Close sessions idle for this many seconds.
    #[arg(long = "idle-timeout", value_name = "SECS", default_value_t = 1800)]
    pub idle_timeout: u64,

    /// Close sessions that have not logged in after this many seconds.
    #[arg(long = "login-timeout", value_name = "SECS", default_value_t = 120)]
    pub login_timeout: u64,

    /// Close sessions whose client has not taken what the server sends
    /// (a response, or 64 KB of a long one) within this many seconds.
    #[arg(long = "write-timeout", value_name = "SECS", default_value_t = 300)]
    pub write_timeout: u64,

    /// Longest command line, in bytes (literals not counted).
    #[arg(long = "max-line", value_name = "BYTES", default_value_t = 65536)]
    pub max_line: usize,

    /// Largest literal, and the literal budget of one command, in bytes.
    #[arg(long = "max-literal", value_name = "BYTES", default_value_t = 1048576)]
    pub max_literal: u64,

    /// Try it out: port 4406 on 127.0.0.1, in the foreground, with a data
    /// directory `dev-data` in the current directory made from the sample
    /// options and a test user (test / test).
    #[arg(long)]
    pub dev: bool,

    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Set a user's password in the password file, read from the first line
    /// of standard input (the file is made if it is missing).
    Passwd {
        /// The user name.
        user: String,
        /// Remove the user from the password file instead.
        #[arg(long)]
        delete: bool,
    },
    /// List the users: who has a password, a user directory, address
    /// books, and how many bytes of quota they use.
    Users,
    /// Check a data directory: every file parses (damaged lines are shown
    /// as FILE:LINE), no advisory lock is stale, recorded quota usage
    /// matches the files. Exits 1 when problems remain.
    Check {
        /// Fix what is found: drop damaged lines, clear stale locks,
        /// record the real usage.
        #[arg(long)]
        repair: bool,
    },
    /// Show the advisory locks (LOCK OPTION / LOCK ADDRESSBOOK) and
    /// whether their sessions are still alive.
    Locks {
        /// Remove the stale ones.
        #[arg(long)]
        clear: bool,
    },
    /// Write an address book as vCard 4.0 (RFC 6350).
    Export {
        /// The address book, e.g. `fred` or `fred.work`.
        book: String,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store vCards (any version) into an address book, made if missing.
    Import {
        /// The address book, e.g. `fred` or `fred.work`.
        book: String,
        /// Read this file instead of standard input (`-`).
        file: Option<PathBuf>,
    },
    /// Copy the data directory to DEST (missing or empty) while the
    /// daemon runs, each file under its lock.
    Backup { dest: PathBuf },
    /// Restore a backup into the data directory, which must be empty or
    /// missing unless --force is given.
    Restore {
        source: PathBuf,
        /// Replace the data of a directory in use: files of the backup
        /// are written, data files it lacks are removed.
        #[arg(long)]
        force: bool,
    },
}

impl Cli {
    /// The addresses to bind, when given.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listen
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect()
    }
}
