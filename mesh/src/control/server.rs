//! The control socket, daemon side: [`bind`] makes the socket, [`serve`] answers on it.
//!
//! # Who may use the socket
//!
//! Two gates, both required:
//!
//! 1. The socket file's mode, checked by the kernel at `connect` (which needs write
//!    permission on the file). [`bind`] makes it 0600, owned by the daemon's user, or
//!    0660 with a group when the operator names one: then members of that group may
//!    connect.
//! 2. The peer's credentials (`SO_PEERCRED`), checked by [`serve`] on every connection:
//!    uid 0 and the daemon's own effective uid are always allowed; any other uid only
//!    while the socket file is group-writable, i.e. when the operator made it
//!    group-accessible, in which case the file mode (gate 1) is what decides and the
//!    kernel has already let only group members in. A socket left at 0600 therefore
//!    refuses every other uid even if someone loosened the directory around it.
//!
//! Between `bind` and the `chmod` that follows it the socket file briefly has the mode
//! the umask gives it. With a umask that removes group and other write permission (022,
//! or systemd's `UMask=0077`) nobody else can connect in that window.
//!
//! # The exchange
//!
//! One request per connection: the client writes one JSON line (a
//! [`Request`], at most [`MAX_REQUEST`] bytes, within [`READ_TIMEOUT`]), the server
//! hands it to the daemon over a channel with a oneshot for the answer, writes the
//! [`Response`] as one JSON line and closes. A line that is not a request, a timeout
//! of the daemon ([`ANSWER_TIMEOUT`]) or a refused uid gets a [`Response::Error`] of
//! one line.

use super::proto::{Request, Response};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The longest request line, without its newline.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client has to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon has to answer a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request and where its answer goes: what [`serve`] sends the daemon.
pub type Call = (Request, oneshot::Sender<Response>);

/// Serves the control socket forever: each connection in its own task, checked,
/// read, answered by whoever receives on `requests`, and closed. See the
/// [module documentation](self).
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Call>) {
    let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let own_uid = effective_uid();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let requests = requests.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    connection(stream, &requests, path.as_deref(), own_uid).await;
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                tracing::warn!(target: "meshd::control", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection: credentials, one request, one answer.
async fn connection(
    mut stream: UnixStream,
    requests: &mpsc::Sender<Call>,
    path: Option<&Path>,
    own_uid: Option<u32>,
) {
    let response = match authorize(&stream, path, own_uid) {
        Err(message) => {
            tracing::warn!(target: "meshd::control", "{message}");
            Response::Error { message }
        }
        Ok(()) => match read_request(&mut stream).await {
            // The client went away without a word (e.g. `bind` probing a socket).
            Ok(None) => return,
            Ok(Some(request)) => ask(requests, request).await,
            Err(message) => Response::Error { message },
        },
    };
    let mut line = match serde_json::to_vec(&response) {
        Ok(line) => line,
        Err(e) => {
            tracing::warn!(target: "meshd::control", error = %e, "answer not encoded");
            return;
        }
    };
    line.push(b'\n');
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!(target: "meshd::control", "client left before the answer");
    }
}

/// Checks the peer's uid (see the module documentation).
fn authorize(stream: &UnixStream, path: Option<&Path>, own_uid: Option<u32>) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read the caller's credentials ({e}); refused"))?;
    let uid = cred.uid();
    if uid == 0 || Some(uid) == own_uid || path.is_some_and(group_accessible) {
        return Ok(());
    }
    Err(format!(
        "uid {uid} may not use meshd's control socket; run meshctl as root (or have the \
         socket made group-accessible)"
    ))
}

/// Whether the socket file is group-writable: the operator made it group-accessible.
fn group_accessible(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.permissions().mode() & 0o020 != 0)
}

/// Reads the request line: `None` when the client sent nothing at all.
async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, String> {
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
    let mut reader = BufReader::new(stream).take(limit);
    let mut line = Vec::new();
    match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(format!(
                "no complete request line within {} s; send one JSON line",
                READ_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("request not read: {e}")),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {} KiB refused", MAX_REQUEST / 1024));
    }
    let text = std::str::from_utf8(&line).map_err(|_| "bad request: not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("empty request; send one JSON request line".into());
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| one_line(&format!("bad request: {e}; see meshctl for the requests")))
}

/// Hands the request to the daemon and waits for its answer.
async fn ask(requests: &mpsc::Sender<Call>, request: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
        if requests.send((request, tx)).await.is_err() {
            return Response::Error { message: "meshd is shutting down; try again".into() };
        }
        rx.await.unwrap_or_else(|_| Response::Error {
            message: "meshd dropped the request (an internal error); see its log".into(),
        })
    })
    .await;
    answered.unwrap_or_else(|_| Response::Error {
        message: format!(
            "meshd did not answer within {} s; it may be stuck, see its log",
            ANSWER_TIMEOUT.as_secs()
        ),
    })
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Makes the control socket at `path` and listens on it. Must be called within a Tokio
/// runtime.
///
/// Creates the parent directory (mode 0755) if missing. A socket file already at `path`
/// is removed if nothing accepts on it (a daemon that died), and refused ("another
/// meshd is listening on PATH") if something does; any other kind of file there is
/// refused. The socket gets mode 0600, or 0660 and the group `group` (which must exist;
/// changing to it needs root or membership).
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    let gid = group.map(group_id).transpose()?;
    let context = |what: &str, e: &io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another meshd is listening on {}", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    fs::remove_file(path)
                        .map_err(|e| context("cannot remove the stale socket", &e))?;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot tell whether a meshd listens on {} ({e}); remove the \
                             file if none runs",
                            path.display()
                        ),
                    ));
                }
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("cannot look at", &e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| context("cannot listen on", &e))?;
    let secured = (|| {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| context("cannot give its group to", &e))?;
        }
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| context("cannot set the mode of", &e))
    })();
    if let Err(e) = secured {
        // Leave no socket behind with a mode we did not mean.
        drop(listener);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// The gid of `name` (or a number), through NSS (so LDAP groups work too).
fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown group '{name}' for the control socket; create it or fix the name"),
        )),
        Err(e) => Err(io::Error::other(format!("cannot look up group '{name}': {e}"))),
    }
}

/// Our effective uid.
#[allow(clippy::unnecessary_wraps)] // the caller treats "unknown" as a possibility
fn effective_uid() -> Option<u32> {
    Some(nix::unistd::geteuid().as_raw())
}
