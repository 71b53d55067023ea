//! The control socket, client side: one blocking request and its answer.
//!
//! [`call`] connects to the daemon's socket, writes the request as one JSON line, reads
//! the one-line answer and returns it. Every failure is a [`ClientError`] whose message
//! is one line that says what to do.

use super::proto::{Request, Response};
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest answer read: a status of thousands of peers fits many times over.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No socket file.
    #[error("meshd is not running (no control socket at {path})")]
    NotRunning {
        /// The socket's path.
        path: String,
    },
    /// A socket file nobody accepts on (meshd died without removing it).
    #[error("meshd is not running (nothing accepts on the control socket {path}; start meshd)")]
    Stale {
        /// The socket's path.
        path: String,
    },
    /// The socket's mode keeps us out.
    #[error(
        "permission denied on {path}: run meshctl as root (or as a member of the socket's group)"
    )]
    PermissionDenied {
        /// The socket's path.
        path: String,
    },
    /// No answer in time.
    #[error(
        "meshd did not answer on {path} within {} s; it may be stuck, check its log",
        .timeout.as_secs()
    )]
    Timeout {
        /// The socket's path.
        path: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// An answer that is not a [`Response`].
    #[error("meshd answered badly on {path} ({detail}); are meshctl and meshd the same version?")]
    BadAnswer {
        /// The socket's path.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Any other failure of the socket.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket's path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

impl ClientError {
    /// Whether the daemon is simply not running (no socket, or a stale one).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. } | ClientError::Stale { .. })
    }
}

/// Sends `request` to the daemon listening on `path` and returns its answer, waiting at
/// most `timeout` for the whole exchange (connecting to a Unix socket does not wait).
pub fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let shown = || path.display().to_string();
    let deadline = Instant::now() + timeout;
    let io_error = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::Timeout { path: shown(), timeout }
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path: shown() },
        _ => ClientError::Io { path: shown(), source: e },
    };
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NotRunning { path: shown() },
        io::ErrorKind::ConnectionRefused => ClientError::Stale { path: shown() },
        _ => io_error(e),
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Io {
        path: shown(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    line.push(b'\n');
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1)))).map_err(io_error)?;
    stream.write_all(&line).map_err(io_error)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout { path: shown(), timeout });
        }
        stream.set_read_timeout(Some(left)).map_err(io_error)?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.len() > MAX_RESPONSE {
            return Err(ClientError::BadAnswer {
                path: shown(),
                detail: format!("an answer longer than {MAX_RESPONSE} bytes"),
            });
        }
        if answer.contains(&b'\n') {
            break;
        }
    }
    let bad = |detail: String| ClientError::BadAnswer { path: shown(), detail };
    let end = answer.iter().position(|&b| b == b'\n').unwrap_or(answer.len());
    let text = answer[..end].trim_ascii();
    if text.is_empty() {
        return Err(bad("it closed the connection without an answer".into()));
    }
    serde_json::from_slice(text).map_err(|e| bad(format!("not a response: {e}")))
}
