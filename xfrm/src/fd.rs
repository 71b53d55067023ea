//! The one module of ikemesh with unsafe code: registering the netlink event socket with
//! tokio's reactor.
//!
//! tokio's `AsyncFd::register` is `unsafe` because tokio cannot check that the
//! descriptor stays open and the same while registered; its safe predecessor was
//! deprecated as unsound. netlink-sys offers a tokio socket only for sockets it creates
//! itself in the current namespace, and ours are created inside other namespaces.
#![allow(unsafe_code)]

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;

/// Hands `socket` to tokio's reactor. Must run inside a tokio runtime.
pub(crate) fn register(socket: Socket) -> std::io::Result<AsyncFd<Socket>> {
    // SAFETY: `netlink_sys::Socket` owns its descriptor: it is opened in `Socket::new`,
    // closed only by `Socket`'s `Drop`, never replaced, and `as_raw_fd` returns that same
    // descriptor every time. The `AsyncFd` takes the `Socket` by value, so the descriptor
    // stays open and unchanged for as long as it is registered.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}
