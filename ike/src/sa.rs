//! The IKE SA state machine (RFC 7296 sections 2.1 to 2.4 and 2.8).
//!
//! One value per IKE SA. The caller feeds it datagrams ([`IkeSa::handle`]) and takes
//! datagrams to send ([`IkeSa::poll_transmit`]) and events ([`IkeSa::poll_event`]) out;
//! randomness comes from the caller's [`Random`]. Its states are an enum whose handlers
//! consume the state and return the next one.
//!
//! Implemented: `IKE_SA_INIT` with the `INVALID_KE_PAYLOAD` retry and COOKIEs (section
//! 2.6), `IKE_AUTH` with the first child SA, retransmission with backoff and give-up and
//! the responder's answer cache (section 2.1), `INFORMATIONAL` deletes of the IKE SA or
//! a child SA, liveness checks and private use status notifications (sections 1.4 and
//! 3.10.1), and `CREATE_CHILD_SA` for new child SAs, child rekeys and IKE SA rekeys
//! (sections 1.3, 2.8, 2.18).
//!
//! Each direction has its own message IDs and our window is one request (section 2.3):
//! what the caller asks while a request is out waits in a queue. Simultaneous rekeys of
//! the same SA are settled as section 2.8.1/2.8.2 say: both exchanges complete, the SA
//! made by the exchange with the lowest of the four nonces is deleted by whoever
//! initiated it, and the other exchange's initiator deletes the old SA. A request that
//! crosses a rekey it would straddle (a child exchange during an IKE SA rekey, or the
//! other way round) is answered `TEMPORARY_FAILURE`, and the refused side asks again
//! after 1 to 3 s. An IKE SA replaced by a rekey is kept, under its own SPIs and keys,
//! until its delete is done.

pub use crate::config::{ChildMode, ChildSa, Config, PeerAuthenticator, Retransmit};
use crate::crypto::Random;
use crate::crypto::dh::{DhError, Group, KeyPair};
use crate::crypto::keys::{IkeKeys, ike_keys, skeyseed};
use crate::crypto::sk::{OpenError, SkKeys, open_parsed, seal};
use crate::error::{Error, Misbehavior};
pub use crate::event::{Event, Role};
use crate::exchange::create_child_sa::{
    self, ChildOffer, Failure, IkeOffer, Request, rekeyed_ike_keys,
};
use crate::exchange::ike_auth::{self, AuthContext};
use crate::exchange::ike_sa_init::{self, Answer, Outcome};
use crate::exchange::informational;
use crate::proposal::{IkeAlgorithms, ike_proposals};
use crate::wire::{
    ExchangeType, Flags, HeaderPacket, HeaderRepr, Message, Payload, PayloadType,
    notify::NotifyType,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Our outstanding request.
struct Pending {
    bytes: Vec<u8>,
    sent: u32,
    wait: Duration,
    deadline: Instant,
    /// When it was first sent.
    since: Instant,
    /// The deadline was brought forward by [`IkeSa::unreachable`] or [`IkeSa::hurry`]:
    /// the send it makes is not one of the tries, and the wait does not grow.
    quick: bool,
    /// Quick sends for [`IkeSa::hurry`] so far (at most [`MAX_QUICK`]).
    quicks: u8,
    /// Quick sends for [`IkeSa::unreachable`] so far.
    closed: u16,
}

/// The last request we answered and our answer, for retransmitted requests. The request
/// is kept as its length and SHA-256 (an `IKE_AUTH` request with a certificate is a
/// kilobyte, held for the life of an idle SA otherwise).
struct Cached {
    request: (usize, [u8; 32]),
    response: Vec<u8>,
}

fn digest(datagram: &[u8]) -> (usize, [u8; 32]) {
    use sha2::Digest as _;
    (datagram.len(), sha2::Sha256::digest(datagram).into())
}

struct Keys {
    algorithms: IkeAlgorithms,
    ike: IkeKeys,
}

impl Keys {
    fn derive(
        algorithms: IkeAlgorithms,
        kp: &KeyPair,
        peer_ke: &[u8],
        (ni, nr): (&[u8], &[u8]),
        spis: (u64, u64),
    ) -> Result<Self, DhError> {
        let g_ir = kp.agree(peer_ke)?;
        let seed = skeyseed(algorithms.prf, ni, nr, &g_ir);
        let c = algorithms.cipher;
        let ike =
            ike_keys(algorithms.prf, &seed, (ni, nr), spis, c.integ_key_len(), c.encr_key_len());
        Ok(Keys { algorithms, ike })
    }

    fn sk(&self, initiator_to_responder: bool) -> SkKeys {
        let (encr, integ) = if initiator_to_responder {
            (&self.ike.sk_ei, &self.ike.sk_ai)
        } else {
            (&self.ike.sk_er, &self.ike.sk_ar)
        };
        SkKeys { cipher: self.algorithms.cipher, encr: encr.clone(), integ: integ.clone() }
    }
}

/// A child SA of this IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Child {
    spi_in: u32,
    spi_out: u32,
    /// Replaced by a rekey, or being deleted: it is not rekeyed again, and a peer's rekey
    /// of it is answered with `TEMPORARY_FAILURE` (section 2.25).
    closing: bool,
}

/// An IKE SA replaced by a rekey, kept until its delete is done (by us or the peer).
struct Retired {
    keys: Keys,
    spis: (u64, u64),
    role: Role,
    own_next: u32,
    peer_next: u32,
    /// Dropped without a word after this if the peer, whose delete it is, has not sent
    /// it: a peer whose answer to its colliding rekey was lost takes our delete of the
    /// old SA as the end of the collision, and never learns of the SA it should delete
    /// ([`RETIRED_KEPT`]).
    until: Instant,
}

/// An IKE SA made by a rekey, before it takes over.
struct NewIke {
    keys: Keys,
    spis: (u64, u64),
    role: Role,
    /// `Ni` and `Nr` of the exchange that made it, for collisions (section 2.8.2).
    nonces: (Vec<u8>, Vec<u8>),
}

/// Something we want to ask the peer; queued while another request of ours is out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Intent {
    DeleteIke,
    /// By inbound SPI.
    DeleteChild(u32),
    Liveness,
    CreateChild,
    /// By inbound SPI.
    RekeyChild(u32),
    RekeyIke,
    /// The delete of an IKE SA we replaced, by its SPIs.
    DeleteRetired((u64, u64)),
    /// A private use status notification: Notify Message Type and Notification Data.
    Notify(u16, Vec<u8>),
}

/// Our outstanding request.
enum Asked {
    DeleteIke,
    DeleteChild(u32, u32),
    Liveness,
    Notify,
    /// A new child SA or the rekey of one; `tries` counts the times we asked again
    /// (`INVALID_KE_PAYLOAD`, `TEMPORARY_FAILURE`).
    Child {
        offer: ChildOffer,
        tries: u8,
    },
    RekeyIke {
        offer: IkeOffer,
        tries: u8,
    },
    DeleteRetired((u64, u64)),
}

impl Asked {
    fn exchange(&self) -> ExchangeType {
        match self {
            Asked::Child { .. } | Asked::RekeyIke { .. } => ExchangeType::CreateChildSa,
            _ => ExchangeType::Informational,
        }
    }
}

/// An established IKE SA: keys, message IDs, children, our outstanding and queued
/// requests, and the SAs a rekey replaced.
struct Established {
    keys: Keys,
    /// Message ID of our next request.
    own_next: u32,
    /// Message ID we expect for the peer's next request.
    peer_next: u32,
    children: Vec<Child>,
    /// What our outstanding request asks, if any.
    asked: Option<Asked>,
    /// What we will ask next, in order (our window is one request, section 2.3).
    queue: VecDeque<Intent>,
    /// IKE SAs replaced by rekeys, until deleted.
    retired: Vec<Retired>,
    child_collision: Option<ChildCollision>,
    ike_collision: Option<NewIke>,
    /// The queue waits until then: the peer answered `TEMPORARY_FAILURE` (section 2.25),
    /// or it may not have switched to the SA we switched to (`peer_behind`).
    hold: Option<Instant>,
    /// We switched to an IKE SA made by the peer's rekey, and our answer that completes
    /// it for the peer may have been lost: until the peer shows it switched too (a
    /// message on the new SA, or its delete of the old one), a request of ours on the
    /// new SA would be dropped as unknown and lose its tries, so the queue is held.
    peer_behind: bool,
    /// `TEMPORARY_FAILURE`s in a row.
    busy: u8,
}

impl Established {
    fn new(keys: Keys, own_next: u32, peer_next: u32, first: Option<&ChildSa>) -> Box<Self> {
        Box::new(Established {
            keys,
            own_next,
            peer_next,
            children: first
                .map(|c| Child { spi_in: c.spi_in, spi_out: c.spi_out, closing: false })
                .into_iter()
                .collect(),
            asked: None,
            queue: VecDeque::new(),
            retired: Vec::new(),
            child_collision: None,
            ike_collision: None,
            hold: None,
            peer_behind: false,
            busy: 0,
        })
    }

    fn child(&mut self, spi_in: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.spi_in == spi_in)
    }

    fn close_child(&mut self, spi_in: u32) {
        if let Some(c) = self.child(spi_in) {
            c.closing = true;
        }
    }

    fn keep_retired(&mut self, r: Retired) {
        self.retired.push(r);
        if self.retired.len() > MAX_RETIRED {
            self.retired.remove(0);
        }
    }

    /// Drops the retired SAs kept past their time, but never the one our outstanding
    /// delete is about (that one ends with its answer or its last retransmission).
    fn drop_stale_retired(&mut self, now: Instant) {
        let asked = match self.asked {
            Some(Asked::DeleteRetired(spis)) => Some(spis),
            _ => None,
        };
        self.retired.retain(|r| now < r.until || Some(r.spis) == asked);
    }
}

/// Retired IKE SAs kept at most (a rekey collision makes two).
const MAX_RETIRED: usize = 3;
/// How long a retired IKE SA is kept for the peer's delete, in retransmission
/// schedules: twice the time the peer takes to give its delete up.
const RETIRED_KEPT: u32 = 2;

/// Times we ask again after `INVALID_KE_PAYLOAD` or `TEMPORARY_FAILURE`.
const MAX_TRIES: u8 = 3;

/// The most Notification Data [`IkeSa::notify`] sends, in bytes.
pub const MAX_NOTIFY_DATA: usize = 256;

enum State {
    /// Initiator: `IKE_SA_INIT` sent (`cookies`: how many COOKIE challenges so far).
    InitSent { group: Group, kp: KeyPair, ni: Vec<u8>, request: Vec<u8>, cookies: u8 },
    /// Initiator: `IKE_AUTH` sent.
    AuthSent {
        keys: Keys,
        ni: Vec<u8>,
        nr: Vec<u8>,
        first: Vec<u8>,
        peer_first: Vec<u8>,
        child_spi: [u8; 4],
    },
    /// Responder: `IKE_SA_INIT` answered.
    InitAnswered { keys: Keys, ni: Vec<u8>, nr: Vec<u8>, first: Vec<u8>, peer_first: Vec<u8> },
    /// Both authenticated.
    Established(Box<Established>),
    /// Failed; nothing more happens.
    Dead,
}

/// One IKE SA.
pub struct IkeSa {
    role: Role,
    cfg: Arc<Config>,
    spi_i: u64,
    spi_r: u64,
    state: State,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    pending: Option<Pending>,
    cached: Option<Cached>,
    /// Initiator: [`IkeSa::set_initial_contact`] was called in time; our `IKE_AUTH`
    /// request is to carry `INITIAL_CONTACT`.
    want_initial_contact: bool,
    /// `INITIAL_CONTACT` was in this SA's `IKE_AUTH` request: sent by us (initiator) or
    /// by the peer (responder, once it is authenticated).
    initial_contact: bool,
    /// This SA's share (per mille) of the retransmission jitter for a request's first
    /// wait (drawn once: a request is sent where no randomness is at hand).
    jitter: u16,
    /// Requests sent again, for the daemon's counters.
    retransmissions: u32,
}

impl std::fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSa")
            .field("role", &self.role)
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .finish_non_exhaustive()
    }
}

fn random_vec(rng: &mut dyn Random, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn random_spi(rng: &mut dyn Random) -> u64 {
    let mut b = [0u8; 8];
    // Zero means "unknown" in the header: never use it.
    while b == [0; 8] {
        rng.fill(&mut b);
    }
    u64::from_be_bytes(b)
}

fn random_esp_spi(rng: &mut dyn Random) -> [u8; 4] {
    let mut b = [0u8; 4];
    // 0-255 are reserved (RFC 4303).
    while u32::from_be_bytes(b) < 256 {
        rng.fill(&mut b);
    }
    b
}

/// The whole time from the first send to giving up.
/// `wait` shortened by `share` (0 to 1,000 per mille) of `jitter` percent.
fn shorten(wait: Duration, jitter: u8, share: u16) -> Duration {
    let cut = u32::from(jitter.min(100)) * u32::from(share.min(1000));
    wait.saturating_sub(wait * cut / 100_000)
}

/// A random share, 0 to 1,000 per mille.
fn draw_share(rng: &mut dyn Random) -> u16 {
    let mut b = [0u8; 2];
    rng.fill(&mut b);
    u16::from_be_bytes(b) % 1001
}

/// Until when an IKE SA retired now is kept for the peer's delete.
fn retired_until(now: Instant, r: &Retransmit) -> Instant {
    now + r.total_wait() * RETIRED_KEPT
}

/// How long to wait before asking again after `TEMPORARY_FAILURE`: 1 to 3 s, at random
/// so that two peers that keep colliding drift apart.
fn retry_wait(rng: &mut dyn Random) -> Duration {
    let mut b = [0u8; 2];
    rng.fill(&mut b);
    Duration::from_millis(1000 + u64::from(u16::from_be_bytes(b)) % 2000)
}

/// A header for one of our IKE SAs.
fn header_for(
    (spi_i, spi_r): (u64, u64),
    role: Role,
    exchange: ExchangeType,
    message_id: u32,
    response: bool,
) -> HeaderRepr {
    HeaderRepr {
        spi_i,
        spi_r,
        next_payload: PayloadType::NoNextPayload,
        minor_version: 0,
        exchange_type: exchange,
        flags: Flags { initiator: role == Role::Initiator, version: false, response },
        message_id,
        payload_len: 0,
    }
}

/// A datagram from the peer and its header, parsed once.
type Inbound<'a> = (HeaderRepr, &'a [u8]);

/// What to do after answering a peer's request.
enum Then {
    /// The peer deleted the IKE SA.
    Close,
    /// The peer rekeyed the IKE SA: the new one takes over.
    Switch(Box<NewIke>),
}

/// How soon an `IKE_SA_INIT` request goes again after the network reported the
/// peer's port closed, the first [`CLOSED_STEP`] times (see [`IkeSa::unreachable`]).
pub const QUICK_RETRY: Duration = Duration::from_millis(500);

/// After this many reports of a closed port for one request, the next quick send waits
/// twice as long, up to 4 x [`QUICK_RETRY`].
pub const CLOSED_STEP: u16 = 8;

/// Quick sends of one request at most for [`IkeSa::hurry`] (a knock's pinhole that may
/// have opened after the request arrived).
pub const MAX_QUICK: u8 = 8;

/// COOKIE challenges an initiator answers before giving up.
const MAX_COOKIE_RETRIES: u8 = 3;

/// Nonce length: twice the strength of our strongest PRF's key, within RFC 7296's bounds.
const NONCE_LEN: usize = 32;

impl IkeSa {
    /// Starts an IKE SA as initiator: the `IKE_SA_INIT` request is ready to send, with a
    /// KE for our first group.
    pub fn initiate(cfg: Arc<Config>, now: Instant, rng: &mut dyn Random) -> Self {
        let spi_i = random_spi(rng);
        let group = cfg.policy.groups.first().copied().unwrap_or(Group::Curve25519);
        let mut sa = IkeSa::new(Role::Initiator, cfg, (spi_i, 0));
        sa.jitter = draw_share(rng);
        sa.state = sa.send_init(now, group, rng);
        sa
    }

    fn new(role: Role, cfg: Arc<Config>, (spi_i, spi_r): (u64, u64)) -> Self {
        IkeSa {
            role,
            cfg,
            spi_i,
            spi_r,
            state: State::Dead,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            pending: None,
            cached: None,
            want_initial_contact: false,
            initial_contact: false,
            jitter: 0,
            retransmissions: 0,
        }
    }

    fn send_init(&mut self, now: Instant, group: Group, rng: &mut dyn Random) -> State {
        let kp = KeyPair::generate(group, rng);
        let ni = random_vec(rng, NONCE_LEN);
        let p = &self.cfg.policy;
        let offer = ike_proposals(&p.ciphers, &p.prfs, &p.groups, &[]);
        let request = ike_sa_init::request(self.spi_i, &offer, &kp, &ni, None);
        self.send_request(now, request.clone());
        State::InitSent { group, kp, ni, request, cookies: 0 }
    }

    /// Sends a request and arms its retransmission.
    fn send_request(&mut self, now: Instant, bytes: Vec<u8>) {
        let wait = self.cfg.retransmit.base;
        let first = shorten(wait, self.cfg.retransmit.jitter, self.jitter);
        self.transmit.push_back(bytes.clone());
        self.pending = Some(Pending {
            bytes,
            sent: 1,
            wait,
            deadline: now + first,
            since: now,
            quick: false,
            quicks: 0,
            closed: 0,
        });
    }

    /// Sends a response and keeps it for a retransmitted request.
    fn send_response(&mut self, request: &[u8], response: Vec<u8>) {
        self.transmit.push_back(response.clone());
        self.cached = Some(Cached { request: digest(request), response });
    }

    /// When [`IkeSa::handle_timeout`] wants to be called next, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (held, retired) = match &self.state {
            State::Established(e) => {
                (e.hold.filter(|_| !e.queue.is_empty()), e.retired.iter().map(|r| r.until).min())
            }
            _ => (None, None),
        };
        let next = self.pending.as_ref().map(|p| p.deadline).or(held);
        next.into_iter().chain(retired).min()
    }

    /// Lets time pass: sends requests held back for a while, retransmits an
    /// unanswered one, or gives the SA up after the last try. (A rekey's delete of the
    /// old IKE SA that goes unanswered only ends that old SA.)
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Random) {
        if let State::Established(e) = &mut self.state {
            e.drop_stale_retired(now);
        }
        let Some(p) = self.pending.as_mut() else {
            // Requests held back after TEMPORARY_FAILURE may go now.
            let state = std::mem::replace(&mut self.state, State::Dead);
            self.state = self.pumped(now, rng, state);
            return;
        };
        if now < p.deadline {
            return;
        }
        let r = self.cfg.retransmit;
        if p.quick {
            // Sent again early because the peer's port was closed: the tries and the
            // wait stay as they were.
            p.quick = false;
            self.retransmissions += 1;
            p.deadline = now + shorten(p.wait, r.jitter, draw_share(rng));
            self.transmit.push_back(p.bytes.clone());
            return;
        }
        if p.sent >= r.tries {
            if let State::Established(e) = &mut self.state
                && let Some(Asked::DeleteRetired(spis)) = e.asked
            {
                e.asked = None;
                e.retired.retain(|x| x.spis != spis);
                self.pending = None;
                let state = std::mem::replace(&mut self.state, State::Dead);
                self.state = self.pumped(now, rng, state);
                return;
            }
            let error = Error::Timeout { sends: p.sent, over: r.total_wait() };
            self.state = self.fail(error);
            return;
        }
        p.sent += 1;
        self.retransmissions += 1;
        p.wait = p.wait * r.factor_num / r.factor_den.max(1);
        p.deadline = now + shorten(p.wait, r.jitter, draw_share(rng));
        self.transmit.push_back(p.bytes.clone());
    }

    /// The network reported the peer's port closed for a datagram we sent (ICMP port
    /// unreachable): its daemon is not listening yet, or is restarting. The request
    /// never arrived, so it goes again soon, not after the rest of the retransmission
    /// wait: within [`QUICK_RETRY`], twice that after [`CLOSED_STEP`] reports, four
    /// times after twice as many, for as long as the usual tries would have taken
    /// (a peer that starts any time in that span is reached within 2 s of it). These
    /// sends are not tries, and they do not use up [`IkeSa::hurry`]'s. `false` when
    /// nothing changed.
    pub fn unreachable(&mut self, now: Instant, rng: &mut dyn Random) -> bool {
        let over = self.cfg.retransmit.total_wait();
        let Some(p) = self.pending.as_ref() else { return false };
        if now.saturating_duration_since(p.since) >= over {
            return false;
        }
        let within = QUICK_RETRY * (1 << (p.closed / CLOSED_STEP).min(2));
        let brought = self.bring_forward(now, within, rng);
        if brought && let Some(p) = self.pending.as_mut() {
            p.closed = p.closed.saturating_add(1);
        }
        brought
    }

    /// Before the peer's first answer, sends the request again within `within`
    /// (shortened by the jitter) instead of after the rest of the retransmission wait,
    /// when the daemon has reason to think the first send was lost: a knock's pinhole
    /// may not have been open yet when it arrived. At most [`MAX_QUICK`] times per
    /// request; such a send is not one of the tries, and after it the usual wait starts
    /// over, so a peer that never answers still ends the SA in the usual time, give or
    /// take the quick sends. `false` when nothing changed.
    pub fn hurry(&mut self, now: Instant, within: Duration, rng: &mut dyn Random) -> bool {
        if self.pending.as_ref().is_none_or(|p| p.quicks >= MAX_QUICK) {
            return false;
        }
        let brought = self.bring_forward(now, within, rng);
        if brought && let Some(p) = self.pending.as_mut() {
            p.quicks += 1;
        }
        brought
    }

    /// Brings the first request's next send forward to within `within`, unless one is
    /// due sooner already.
    fn bring_forward(&mut self, now: Instant, within: Duration, rng: &mut dyn Random) -> bool {
        if !matches!(self.state, State::InitSent { .. }) {
            return false;
        }
        let jitter = self.cfg.retransmit.jitter;
        let Some(p) = self.pending.as_mut() else { return false };
        let soon = now + shorten(within, jitter, draw_share(rng));
        if p.quick || soon >= p.deadline {
            return false;
        }
        p.deadline = soon;
        p.quick = true;
        true
    }

    /// Requests of this SA sent again since it was made.
    #[must_use]
    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// Answers an `IKE_SA_INIT` request as responder. Returns the new SA (with its
    /// response ready to send), or `None` when the datagram is dropped; a refusal that
    /// keeps no state (`NO_PROPOSAL_CHOSEN`, `INVALID_KE_PAYLOAD`) is returned in the
    /// second element.
    pub fn respond(
        cfg: Arc<Config>,
        datagram: &[u8],
        rng: &mut dyn Random,
    ) -> (Option<Self>, Option<Vec<u8>>) {
        let msg = match Message::parse(datagram) {
            Ok(msg) => msg,
            // An IKE_SA_INIT request we cannot read is answered without keeping state
            // (sections 2.5 and 2.21.1); anything else is dropped.
            Err(error) => {
                let refusal = HeaderPacket::new_checked(datagram)
                    .ok()
                    .and_then(|p| HeaderRepr::parse(&p).ok())
                    .filter(|h| {
                        h.exchange_type == ExchangeType::IkeSaInit
                            && h.flags.initiator
                            && !h.flags.response
                            && h.message_id == 0
                            && h.spi_r == 0
                    })
                    .and_then(|h| {
                        let e = Error::Malformed { exchange: ExchangeType::IkeSaInit, error };
                        ike_sa_init::refusal(h.spi_i, &e)
                    });
                return (None, refusal);
            }
        };
        match ike_sa_init::process_request(&cfg.policy, &msg) {
            None => (None, None),
            Some(Answer::Refuse(error)) => (None, ike_sa_init::refusal(msg.header.spi_i, &error)),
            Some(Answer::Accept { algorithms, chosen, ke, ni }) => {
                let spi_r = random_spi(rng);
                let kp = KeyPair::generate(algorithms.group, rng);
                let nr = random_vec(rng, NONCE_LEN);
                let spis = (msg.header.spi_i, spi_r);
                let Ok(keys) = Keys::derive(algorithms, &kp, &ke, (&ni, &nr), spis) else {
                    let refusal = Error::InvalidKe(algorithms.group);
                    return (None, ike_sa_init::refusal(msg.header.spi_i, &refusal));
                };
                let response = ike_sa_init::response(spis.0, spi_r, &chosen, &kp, &nr);
                let mut sa = IkeSa::new(Role::Responder, cfg, (spis.0, spi_r));
                sa.jitter = draw_share(rng);
                sa.state = State::InitAnswered {
                    keys,
                    ni,
                    nr,
                    first: response.clone(),
                    peer_first: datagram.to_vec(),
                };
                sa.send_response(datagram, response);
                (Some(sa), None)
            }
        }
    }

    /// Makes our `IKE_AUTH` request carry an `INITIAL_CONTACT` notification (RFC 7296
    /// section 3.10.1): we assert that this IKE SA is the only one between our identity
    /// and the peer's, typically after a restart, and the peer may delete any others it
    /// has with us without waiting for them to time out.
    ///
    /// Only an initiator sends it, and only until its `IKE_AUTH` request is built, which
    /// happens when the `IKE_SA_INIT` response arrives: call it right after
    /// [`IkeSa::initiate`] (or [`Endpoint::connect`](crate::endpoint::Endpoint::connect)).
    /// It holds through an `INVALID_KE_PAYLOAD` retry or a COOKIE challenge of
    /// `IKE_SA_INIT`. Later calls, and calls on a responder, have no effect.
    pub fn set_initial_contact(&mut self) {
        // Only an initiator is ever in `InitSent`.
        if matches!(self.state, State::InitSent { .. }) {
            self.want_initial_contact = true;
        }
    }

    /// Whether this IKE SA's `IKE_AUTH` request carried `INITIAL_CONTACT` (section
    /// 3.10.1): as initiator, once we sent it ([`IkeSa::set_initial_contact`]); as
    /// responder, once the peer's request carrying it is authenticated and answered. Both
    /// ends of an established IKE SA agree, from [`Event::IkeUp`] on.
    ///
    /// It describes the original authentication: a rekey of the IKE SA (section 2.18),
    /// which carries no such notification, leaves it as it was.
    pub fn initial_contact(&self) -> bool {
        self.initial_contact
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The initiator's and responder's SPIs.
    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    /// Our SPIs: this IKE SA's, and those of SAs a rekey replaced until they are
    /// deleted. A datagram whose header names one of them belongs here.
    pub fn local_spis(&self) -> Vec<u64> {
        let ours = |(i, r): (u64, u64), role: Role| if role == Role::Initiator { i } else { r };
        let mut v = vec![ours((self.spi_i, self.spi_r), self.role)];
        if let State::Established(e) = &self.state {
            v.extend(e.retired.iter().map(|r| ours(r.spis, r.role)));
        }
        v
    }

    /// Whether the SA is over (failed, or deleted): nothing more will happen to it once
    /// its last datagrams are sent.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Dead)
    }

    /// Whether the IKE SA is established.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. })
    }

    /// The negotiated algorithms, once established.
    pub fn algorithms(&self) -> Option<IkeAlgorithms> {
        match &self.state {
            State::Established(e) => Some(e.keys.algorithms),
            _ => None,
        }
    }

    /// Next datagram to send to the peer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let next = self.transmit.pop_front();
        if next.is_none() {
            // An idle SA keeps no queue capacity (thousands of SAs sit idle).
            self.transmit = VecDeque::new();
        }
        next
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let next = self.events.pop_front();
        if next.is_none() {
            self.events = VecDeque::new();
        }
        next
    }

    fn fail(&mut self, error: Error) -> State {
        self.pending = None;
        self.events.push_back(Event::Failed { error });
        State::Dead
    }

    fn header(&self, exchange: ExchangeType, message_id: u32, response: bool) -> HeaderRepr {
        header_for((self.spi_i, self.spi_r), self.role, exchange, message_id, response)
    }

    /// Feeds a datagram from the peer. Datagrams that are not for this SA, malformed, or
    /// fail their integrity check are dropped (section 2.21: no answer to an
    /// unauthenticated message).
    ///
    /// A request we answered already, received again, gets the same answer again
    /// (section 2.1), without being processed twice.
    pub fn handle(&mut self, now: Instant, datagram: &[u8], rng: &mut dyn Random) {
        let header =
            HeaderPacket::new_checked(datagram).ok().and_then(|p| HeaderRepr::parse(&p).ok());
        if let Some(header) = header {
            self.handle_parsed(now, header, datagram, rng);
        }
    }

    /// [`IkeSa::handle`] of a datagram whose header the caller parsed already (the
    /// endpoint, to route it): the header is parsed once, and the SK payload opened once.
    pub(crate) fn handle_parsed(
        &mut self,
        now: Instant,
        header: HeaderRepr,
        datagram: &[u8],
        rng: &mut dyn Random,
    ) {
        if let Some(c) = &self.cached
            && c.request.0 == datagram.len()
            && c.request == digest(datagram)
        {
            self.transmit.push_back(c.response.clone());
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Dead);
        self.state = match state {
            State::InitSent { group, kp, ni, request, cookies } => {
                let inbound = (header, datagram);
                self.on_init_response(now, inbound, rng, (group, kp, ni, request, cookies))
            }
            State::AuthSent { keys, ni, nr, first, peer_first, child_spi } => self
                .on_auth_response(
                    (header, datagram),
                    State::AuthSent { keys, ni, nr, first, peer_first, child_spi },
                ),
            State::InitAnswered { keys, ni, nr, first, peer_first } => self.on_auth_request(
                (header, datagram),
                rng,
                State::InitAnswered { keys, ni, nr, first, peer_first },
            ),
            State::Established(e) => self.on_established(now, (header, datagram), rng, e),
            State::Dead => State::Dead,
        };
    }

    /// Asks the peer to delete the whole IKE SA (and so its children): `INFORMATIONAL`
    /// with `Delete(IKE)`, ahead of anything else we meant to ask. `false` if the SA is
    /// not established or its delete is already asked.
    pub fn delete(&mut self, now: Instant, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::DeleteIke)
    }

    /// Asks the peer to delete one child SA, named by its inbound SPI. `false` if there
    /// is no such child or its delete is already asked.
    pub fn delete_child(&mut self, now: Instant, spi_in: u32, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::DeleteChild(spi_in))
    }

    /// Checks that the peer is alive: an empty `INFORMATIONAL` request. An answer gives
    /// [`Event::PeerAlive`]; silence through all retransmissions fails the SA.
    pub fn check_liveness(&mut self, now: Instant, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::Liveness)
    }

    /// Asks for one more child SA between the two hosts (`CREATE_CHILD_SA`, with PFS
    /// when the policy has PFS groups): [`Event::ChildUp`] or [`Event::ChildFailed`].
    pub fn create_child(&mut self, now: Instant, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::CreateChild)
    }

    /// Rekeys a child SA, named by its inbound SPI (section 2.8): [`Event::ChildRekeyed`]
    /// with the new child, then [`Event::ChildDown`] for the old one. `false` if there is
    /// no such child, or it is already being replaced or deleted.
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::RekeyChild(spi_in))
    }

    /// Rekeys the IKE SA itself, always with a new D-H exchange (section 2.18):
    /// [`Event::IkeRekeyed`] or [`Event::IkeRekeyFailed`].
    pub fn rekey_ike(&mut self, now: Instant, rng: &mut dyn Random) -> bool {
        self.ask(now, rng, Intent::RekeyIke)
    }

    /// Sends the peer a private use status notification (section 3.10.1): an
    /// `INFORMATIONAL` request with one Notify payload (no protocol, no SPI) of Notify
    /// Message Type `kind` and Notification Data `data`. The peer gets it as
    /// [`Event::PeerNotify`], once. Like our other requests it waits its turn behind
    /// those asked before (our window is one request) and is retransmitted until
    /// answered; silence through all retransmissions fails the SA. Each call sends its
    /// own request, in order: nothing is merged.
    ///
    /// `false` if `kind` is not a private use status type (40960..=65535), `data` is
    /// longer than [`MAX_NOTIFY_DATA`], or the SA is not established.
    pub fn notify(&mut self, now: Instant, kind: u16, data: Vec<u8>, rng: &mut dyn Random) -> bool {
        NotifyType::from(kind).is_private_use_status()
            && data.len() <= MAX_NOTIFY_DATA
            && self.ask(now, rng, Intent::Notify(kind, data))
    }

    /// Queues `intent` and sends it if our window is free.
    fn ask(&mut self, now: Instant, rng: &mut dyn Random, intent: Intent) -> bool {
        let mut e = match std::mem::replace(&mut self.state, State::Dead) {
            State::Established(e) => e,
            // Not established: nothing to ask, and the SA goes on as it was.
            other => {
                self.state = other;
                return false;
            }
        };
        let valid = match intent {
            Intent::DeleteChild(spi) => e.children.iter().any(|c| c.spi_in == spi),
            Intent::RekeyChild(spi) => e.children.iter().any(|c| c.spi_in == spi && !c.closing),
            _ => true,
        };
        // Notifications are each sent, even the same one twice; other asks are made once.
        let already = !matches!(intent, Intent::Notify(..))
            && (e.queue.contains(&intent)
                || match (&e.asked, &intent) {
                    (Some(Asked::DeleteIke), Intent::DeleteIke)
                    | (Some(Asked::Liveness), Intent::Liveness)
                    | (Some(Asked::RekeyIke { .. }), Intent::RekeyIke) => true,
                    (Some(Asked::DeleteChild(a, _)), Intent::DeleteChild(b)) => a == b,
                    (Some(Asked::Child { offer, .. }), Intent::RekeyChild(b)) => {
                        offer.rekey == Some(*b)
                    }
                    _ => false,
                });
        let queued = valid && !already;
        if queued {
            if intent == Intent::DeleteIke {
                e.queue.push_front(intent);
            } else {
                e.queue.push_back(intent);
            }
            self.pump(now, rng, &mut e);
        }
        self.state = State::Established(e);
        queued
    }
}

// Simultaneous rekeys (RFC 7296 sections 2.8.1 and 2.8.2).
mod collision;
use collision::ChildCollision;
// The established SA: our requests and their answers, the peer's requests, rekeys.
mod established;
// IKE_SA_INIT and IKE_AUTH, up to the established SA.
mod handshake;

#[cfg(test)]
mod rekey_tests;

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod notify_tests;
