use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use imspd::cli::{Cli, Cmd};
use imspd::config::Settings;
use imspd::daemon;

/// The sample options file, used to make the `--dev` data directory.
const SAMPLE_OPTIONS: &str = include_str!("../etc/options.sample");

/// Become `user` (`--user`), with `group` (`--group`, default the user's
/// own) as primary group and, as `login` and systemd's `User=` do, the
/// supplementary groups `/etc/group` gives the user: membership of `sasl`
/// (saslauthd's socket) or `shadow` (/etc/shadow, unix_chkpwd) is how the
/// `saslauthd` and `unix` backends work without root.
fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    use nix::unistd::{Group, User, initgroups, setgid, setuid};
    let Some(user) = user else {
        if group.is_some() {
            return Err("--group needs --user".into());
        }
        return Ok(());
    };
    let u = User::from_name(user)
        .map_err(|e| format!("user {user}: {e}"))?
        .ok_or_else(|| format!("no such user: {user}"))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| format!("group {g}: {e}"))?
                .ok_or_else(|| format!("no such group: {g}"))?
                .gid
        }
        None => u.gid,
    };
    let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    initgroups(&name, gid).map_err(|e| format!("initgroups: {e}"))?;
    setgid(gid).map_err(|e| format!("setgid: {e}"))?;
    setuid(u.uid).map_err(|e| format!("setuid: {e}"))?;
    Ok(())
}

/// Make the `--dev` data directory if it is not there yet.
fn prepare_dev(cli: &mut Cli) -> Result<(), String> {
    cli.port = if cli.port == 406 { 4406 } else { cli.port };
    cli.foreground = true;
    if cli.listen.is_empty() {
        cli.listen.push([127, 0, 0, 1].into());
    }
    if cli.data_dir == std::path::Path::new("/var/imsp") {
        cli.data_dir = "dev-data".into();
    }
    let dir = &cli.data_dir;
    if !dir.join("options").exists() {
        std::fs::create_dir_all(dir.join("user")).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("options"), SAMPLE_OPTIONS)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        imspd::auth::file::set_password(&dir.join("passwd"), "test", b"test")?;
        eprintln!(
            "imspd: made {} from etc/options.sample, with user test (password test)",
            dir.display()
        );
    }
    Ok(())
}

/// `imspd passwd USER`: the password comes from the first line of stdin.
fn passwd(cli: &Cli, user: &str, delete: bool) -> Result<(), String> {
    imspd::store::names::check_user(user.as_bytes()).map_err(|e| e.to_string())?;
    // Run as root: write as the data directory's owner, for the daemon.
    imspd::admin::become_owner(&cli.data_dir)?;
    let store_options = cli.data_dir.join("options");
    let mut store = imspd::store::Store::open(&cli.data_dir);
    let global = if store_options.exists() {
        Some(store.global_options().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let auth = imspd::auth::Auth::new(&cli.data_dir);
    let path = match &global {
        Some(g) => auth.password_file(g),
        None => cli.data_dir.join("passwd"),
    };
    if delete {
        return imspd::auth::file::set_hash(&path, user, None);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("empty password".into());
    }
    imspd::auth::file::set_password(&path, user, password.as_bytes())
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(cmd) = &cli.command
        && !matches!(cmd, Cmd::Passwd { .. })
    {
        return imspd::admin::run(&cli.data_dir, cmd);
    }
    if let Some(Cmd::Passwd { user, delete }) = &cli.command {
        return match passwd(&cli, user, *delete) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("imspd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.dev
        && let Err(e) = prepare_dev(&mut cli)
    {
        eprintln!("imspd: {e}");
        return ExitCode::FAILURE;
    }
    imspd::log::init(cli.foreground);
    imspd::log::log_panics();

    let mut settings = Settings::new(cli.data_dir.clone());
    settings.idle_timeout = Duration::from_secs(cli.idle_timeout.max(1));
    settings.login_timeout = Duration::from_secs(cli.login_timeout.max(1));
    settings.write_timeout = Duration::from_secs(cli.write_timeout.max(1));
    settings.limits.max_line = cli.max_line.max(256);
    settings.limits.max_literal = cli.max_literal;

    if cli.inetd {
        if let Err(e) = drop_privileges(cli.user.as_deref(), cli.group.as_deref()) {
            imspd::log_error!("{e}");
            return ExitCode::FAILURE;
        }
        daemon::serve_inetd(&settings);
        return ExitCode::SUCCESS;
    }

    let addresses = cli.addresses();
    let bound = if addresses.is_empty() {
        daemon::bind_default(cli.port)
    } else {
        daemon::bind(&addresses)
    };
    let listeners = match bound {
        Ok(l) => l,
        Err(e) => {
            eprintln!("imspd: cannot listen on port {}: {e}", cli.port);
            imspd::log_error!("cannot listen on port {}: {e}", cli.port);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = drop_privileges(cli.user.as_deref(), cli.group.as_deref()) {
        eprintln!("imspd: {e}");
        imspd::log_error!("{e}");
        return ExitCode::FAILURE;
    }
    if !cli.foreground
        && let Err(e) = daemon::daemonize()
    {
        eprintln!("imspd: cannot detach: {e}");
        return ExitCode::FAILURE;
    }
    match daemon::run(listeners, cli.max_connections.max(1), &settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            imspd::log_error!("listener failed: {e}");
            ExitCode::FAILURE
        }
    }
}
