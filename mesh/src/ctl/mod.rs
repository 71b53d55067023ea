//! `meshctl`'s commands: [`run`] carries out parsed [`MeshctlArgs`].
//!
//! Daemon commands are one call on the control socket
//! ([`control::client::call`](crate::control::client::call)), printed as a
//! [`table`] or, with `-o json`, as the daemon's reply. The `ca` commands work on a CA
//! directory through `ca::Authority`, `enroll` talks to the enrollment service.
//!
//! What a command prints goes to stdout; only a failure goes to stderr, as one line
//! prefixed `meshctl: `, with exit status 1 (clap's usage errors exit with 2).

mod ca;
mod enroll;
mod files;
pub mod table;

use crate::cli::{MeshctlArgs, MeshctlCommand, Output, PeerCommand, RolloutCommand};
use crate::control::client;
use crate::control::proto::{Reply, Request, Response};
use clap::CommandFactory as _;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long `meshctl` waits for the daemon: a little longer than the daemon's own limit
/// for answering, so that its one-line timeout message is what the operator sees.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(35);

/// Runs `meshctl` with `args`: 0 on success, 1 when the daemon or an operation refused
/// or failed (after one line on stderr).
pub fn run(args: &MeshctlArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = dispatch(args, &mut out).and_then(|()| out.flush().map_err(Failure::from));
    match result {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("meshctl: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// One line for stderr.
    Message(String),
    /// Whoever reads our output went away (`meshctl status | head -1`): not a failure.
    Closed,
}

impl Failure {
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        Failure::Message(message.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Message(message) => f.write_str(message),
            Failure::Closed => f.write_str("the output was closed"),
        }
    }
}

/// For writes to the output only; files say which file failed themselves.
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Message(format!("cannot write the output: {e}"))
        }
    }
}

fn dispatch(args: &MeshctlArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let socket = args.socket_path();
    let output = args.output;
    match &args.command {
        MeshctlCommand::Status => read(&socket, &Request::Status, output, out),
        MeshctlCommand::Peer(PeerCommand::List) => read(&socket, &Request::PeerList, output, out),
        MeshctlCommand::Peer(PeerCommand::Add { name, addresses, dry_run }) => {
            let request = Request::PeerAdd {
                name: name.clone(),
                addresses: addresses.clone(),
                dry_run: *dry_run,
            };
            change(&socket, &request, *dry_run, output, out)
        }
        MeshctlCommand::Peer(PeerCommand::Rm { name, dry_run }) => {
            let request = Request::PeerRemove { name: name.clone(), dry_run: *dry_run };
            change(&socket, &request, *dry_run, output, out)
        }
        MeshctlCommand::Rollout(RolloutCommand::Set { level, peer, clear, dry_run }) => {
            let request = Request::RolloutSet {
                // With --clear the level does not matter; the protocol wants one.
                level: level.map(Into::into).unwrap_or_default(),
                peer: peer.clone(),
                clear: *clear,
                dry_run: *dry_run,
            };
            change(&socket, &request, *dry_run, output, out)
        }
        MeshctlCommand::Rollout(RolloutCommand::Status) => {
            read(&socket, &Request::RolloutStatus, output, out)
        }
        MeshctlCommand::Reload => change(&socket, &Request::Reload, false, output, out),
        MeshctlCommand::Ca(command) => ca::run(command, output, out),
        MeshctlCommand::Enroll(enroll) => enroll::run(enroll, &socket, out),
        MeshctlCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut MeshctlArgs::command(), "meshctl", out);
            Ok(())
        }
        MeshctlCommand::Man { out_dir: None } => {
            clap_mangen::Man::new(MeshctlArgs::command()).render(out)?;
            Ok(())
        }
        MeshctlCommand::Man { out_dir: Some(dir) } => {
            // meshctl's pages (one per subcommand) and meshd's, for packagers.
            let failed = |e: std::io::Error| {
                Failure::new(format!("cannot write the man pages to {}: {e}", dir.display()))
            };
            clap_mangen::generate_to(MeshctlArgs::command(), dir).map_err(failed)?;
            clap_mangen::generate_to(crate::cli::MeshdArgs::command(), dir).map_err(failed)?;
            writeln!(out, "wrote the man pages of meshctl and meshd to {}", dir.display())?;
            Ok(())
        }
    }
}

/// Asks the daemon; its refusal or our failure to reach it as a [`Failure`].
fn ask(socket: &Path, request: &Request) -> Result<Reply, Failure> {
    match client::call(socket, request, CALL_TIMEOUT) {
        Ok(Response::Ok { reply }) => Ok(reply),
        Ok(Response::Error { message }) => Err(Failure::new(message)),
        Err(e) => Err(Failure::new(e)),
    }
}

/// A read command: the table, or the reply as JSON.
fn read(
    socket: &Path,
    request: &Request,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let reply = ask(socket, request)?;
    if output == Output::Json {
        return json(&reply, out);
    }
    let wide = output == Output::Wide;
    let text = match (request, &reply) {
        (Request::Status, Reply::Status(status)) => table::status(status, wide, unix_now()),
        (Request::PeerList, Reply::Peers { peers }) => table::peers(peers),
        (Request::RolloutStatus, Reply::Rollout(report)) => table::rollout(report, wide),
        _ => return Err(unexpected(request, &reply)),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A command that changes something: what changed, one line each.
fn change(
    socket: &Path,
    request: &Request,
    dry_run: bool,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let reply = ask(socket, request)?;
    let Reply::Done { changes } = &reply else { return Err(unexpected(request, &reply)) };
    if output == Output::Json {
        return json(&reply, out);
    }
    out.write_all(table::changes(changes, dry_run).as_bytes())?;
    Ok(())
}

pub(crate) fn json(value: &impl serde::Serialize, out: &mut dyn Write) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(format!("cannot encode the answer as JSON: {e}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}

fn unexpected(request: &Request, reply: &Reply) -> Failure {
    let name = |v: serde_json::Result<serde_json::Value>, tag: &str| {
        v.ok().and_then(|v| v.get(tag).and_then(|t| t.as_str().map(str::to_owned)))
    };
    Failure::new(format!(
        "meshd answered a '{}' request with a '{}' reply; are meshctl and meshd the same version?",
        name(serde_json::to_value(request), "op").unwrap_or_default(),
        name(serde_json::to_value(reply), "kind").unwrap_or_default(),
    ))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
