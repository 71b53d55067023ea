//! Errors, each a single line that says what failed and what to do about it.

use nix::errno::Errno;

/// Why an XFRM operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel has no ESP for this address family.
    #[error(
        "the kernel has no ESP for {family}: build it with {option} or load module {module} \
         (modprobe {module})"
    )]
    EspUnsupported {
        /// "IPv4" or "IPv6".
        family: &'static str,
        /// The kernel option that provides it.
        option: &'static str,
        /// The module that provides it.
        module: &'static str,
    },
    /// The kernel lacks an algorithm the SA asks for.
    #[error("the kernel lacks the ESP algorithm {name}: {hint}")]
    AlgorithmUnsupported {
        /// The kernel's name of the algorithm.
        name: &'static str,
        /// What provides it.
        hint: &'static str,
    },
    /// The kernel has no XFRM netlink interface.
    #[error(
        "the kernel has no XFRM netlink interface: build it with CONFIG_XFRM_USER or load \
         module xfrm_user (modprobe xfrm_user)"
    )]
    XfrmUnsupported,
    /// Not permitted: XFRM needs `CAP_NET_ADMIN`.
    #[error("{op}: permission denied: XFRM needs CAP_NET_ADMIN (run as root or grant it)")]
    PermissionDenied {
        /// What was being done.
        op: String,
    },
    /// The entry to add is there already.
    #[error("{op}: already exists")]
    Exists {
        /// What was being done.
        op: String,
    },
    /// The entry to change, read or delete is not there.
    #[error("{op}: no such entry")]
    NotFound {
        /// What was being done.
        op: String,
    },
    /// Any other refusal by the kernel.
    #[error("{op}: the kernel refused: {errno} ({})", errno.desc())]
    Kernel {
        /// What was being done.
        op: String,
        /// The kernel's error.
        errno: Errno,
    },
    /// The request was malformed before it reached the kernel.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The entry is outside ikemesh's reqid range or priority band, so ikemesh will not
    /// install or touch it.
    #[error("not an ikemesh entry: {0}")]
    NotOurs(String),
    /// The kernel sent something that could not be read.
    #[error("unreadable netlink message from the kernel: {0}")]
    Decode(String),
    /// Socket trouble.
    #[error("XFRM netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Maps a kernel errno for operation `op` to an error.
    pub(crate) fn from_errno(op: impl Into<String>, errno: Errno) -> Self {
        let op = op.into();
        match errno {
            Errno::EEXIST => Error::Exists { op },
            Errno::ENOENT | Errno::ESRCH => Error::NotFound { op },
            Errno::EPERM | Errno::EACCES => Error::PermissionDenied { op },
            errno => Error::Kernel { op, errno },
        }
    }

    /// The errno, when the kernel refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Exists { .. } => Some(Errno::EEXIST),
            Error::NotFound { .. } => Some(Errno::ENOENT),
            Error::PermissionDenied { .. } => Some(Errno::EPERM),
            Error::EspUnsupported { .. } => Some(Errno::EPROTONOSUPPORT),
            Error::AlgorithmUnsupported { .. } => Some(Errno::ENOSYS),
            _ => None,
        }
    }
}

/// The ESP-missing error for a family.
pub(crate) fn esp_missing(v6: bool) -> Error {
    if v6 {
        Error::EspUnsupported { family: "IPv6", option: "CONFIG_INET6_ESP", module: "esp6" }
    } else {
        Error::EspUnsupported { family: "IPv4", option: "CONFIG_INET_ESP", module: "esp4" }
    }
}

/// The algorithm-missing error, with what provides the algorithm.
pub(crate) fn algorithm_missing(name: &'static str) -> Error {
    let hint = match name {
        crate::AEAD_GCM => "build it with CONFIG_CRYPTO_GCM or load module gcm (modprobe gcm)",
        crate::AUTHENC_CBC_SHA256 => {
            "build it with CONFIG_CRYPTO_AUTHENC, CONFIG_CRYPTO_CBC and CONFIG_CRYPTO_SHA256, \
             or load modules authenc cbc sha256_generic"
        }
        crate::AEAD_CHACHA20_POLY1305 => {
            "build it with CONFIG_CRYPTO_CHACHA20POLY1305 or load module chacha20poly1305"
        }
        _ => "the kernel's crypto API does not offer it",
    };
    Error::AlgorithmUnsupported { name, hint }
}
