//! The IKE SA state machine (RFC 7296 sections 2.1 to 2.4 and 2.8).
//!
//! One value per IKE SA, driven by the caller through `handle(now, datagram)`,
//! `handle_timeout(now)`, `poll_transmit()`, `poll_timeout()` and `poll()`. It keeps the
//! message IDs of our requests and of the peer's separately, caches the last response so
//! a retransmitted request gets the same bytes back, retransmits our requests with
//! exponential backoff (4 s base, x1.8 per try, 5 tries by default) and gives up after
//! the last, and hands colliding rekeys to the active exchange (section 2.8.1). Its
//! states are an enum whose handlers consume the state and return the next one.
