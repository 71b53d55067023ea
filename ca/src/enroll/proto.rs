//! The enrollment protocol: one request and one response per TLS connection, each a
//! JSON object in a frame of a 4-byte big-endian length and that many bytes.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use zeroize::Zeroizing;

/// The largest request the service reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The largest response a node reads (a certificate, a bundle of two CAs and a CRL).
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// A request as a node writes it (borrowed, so that the token is not copied).
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum RequestOut<'a> {
    Enroll { token: &'a str, csr: &'a str },
    Renew { csr: &'a str },
}

/// A request as the service reads it. No `Debug`: it holds the token.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum RequestIn {
    Enroll { token: String, csr: String },
    Renew { csr: String },
}

/// A response: the three PEM texts, or an error.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bundle_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) crl_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Response {
    pub(crate) fn error(message: impl Into<String>) -> Self {
        Response { error: Some(message.into()), ..Response::default() }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The length field says more than `max` bytes.
    TooLarge(usize),
    /// The stream failed or ended early.
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "a frame of {n} bytes is over the limit"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads one frame of at most `max` bytes (zeroized on drop: a request holds a token).
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    stream.read_exact(&mut body).await.map_err(FrameError::Io)?;
    Ok(body)
}

/// Writes one frame and flushes.
pub(crate) async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Zeroizing::new(Vec::with_capacity(4 + body.len()));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame).await?;
    stream.flush().await
}
