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
}

/// An IKE SA made by a rekey, before it takes over.
struct NewIke {
    keys: Keys,
    spis: (u64, u64),
    role: Role,
    /// `Ni` and `Nr` of the exchange that made it, for collisions (section 2.8.2).
    nonces: (Vec<u8>, Vec<u8>),
}

/// The peer's rekey of a child SA that we are rekeying too (section 2.8.1).
struct ChildCollision {
    /// Inbound SPI of the child both sides rekey.
    old: u32,
    /// Inbound SPI of the child the peer's exchange made.
    made: u32,
    /// `Ni` and `Nr` of the peer's exchange.
    nonces: (Vec<u8>, Vec<u8>),
}

/// The lowest nonce of an exchange: of two colliding rekeys, the one with the lowest of
/// the four nonces made the redundant SA (sections 2.8.1 and 2.8.2).
fn lowest(nonces: &(Vec<u8>, Vec<u8>)) -> &[u8] {
    nonces.0.as_slice().min(nonces.1.as_slice())
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
    /// The queue waits until then: the peer answered `TEMPORARY_FAILURE` (section 2.25).
    hold: Option<Instant>,
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
}

/// Retired IKE SAs kept at most (a rekey collision makes two).
const MAX_RETIRED: usize = 3;

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
fn total_wait(r: &Retransmit) -> Duration {
    let mut wait = r.base;
    let mut total = Duration::ZERO;
    for _ in 0..r.tries {
        total += wait;
        wait = wait * r.factor_num / r.factor_den.max(1);
    }
    total
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
        self.transmit.push_back(bytes.clone());
        self.pending = Some(Pending { bytes, sent: 1, wait, deadline: now + wait });
    }

    /// Sends a response and keeps it for a retransmitted request.
    fn send_response(&mut self, request: &[u8], response: Vec<u8>) {
        self.transmit.push_back(response.clone());
        self.cached = Some(Cached { request: digest(request), response });
    }

    /// When [`IkeSa::handle_timeout`] wants to be called next, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held = match &self.state {
            State::Established(e) if !e.queue.is_empty() => e.hold,
            _ => None,
        };
        self.pending.as_ref().map(|p| p.deadline).or(held)
    }

    /// Lets time pass: sends requests held back for a while, retransmits an
    /// unanswered one, or gives the SA up after the last try. (A rekey's delete of the
    /// old IKE SA that goes unanswered only ends that old SA.)
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Random) {
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
            let error = Error::Timeout { sends: p.sent, over: total_wait(&r) };
            self.state = self.fail(error);
            return;
        }
        p.sent += 1;
        p.wait = p.wait * r.factor_num / r.factor_den.max(1);
        p.deadline = now + p.wait;
        self.transmit.push_back(p.bytes.clone());
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

    /// Sends the next queued request if none of ours is outstanding. Intents that no
    /// longer make sense (a child gone or already replaced) are dropped.
    fn pump(&mut self, now: Instant, rng: &mut dyn Random, e: &mut Established) {
        if e.hold.is_some_and(|t| now < t) {
            return;
        }
        e.hold = None;
        while e.asked.is_none() && self.pending.is_none() {
            let Some(intent) = e.queue.pop_front() else { return };
            let (asked, payloads) = match intent {
                Intent::DeleteIke => (Asked::DeleteIke, informational::delete_ike()),
                Intent::DeleteChild(spi_in) => {
                    let Some(c) = e.child(spi_in) else { continue };
                    c.closing = true;
                    let spi_out = c.spi_out;
                    (Asked::DeleteChild(spi_in, spi_out), informational::delete_child(spi_in))
                }
                Intent::Liveness => (Asked::Liveness, informational::liveness()),
                Intent::Notify(kind, data) => (Asked::Notify, informational::notify(kind, data)),
                Intent::CreateChild => {
                    let offer = self.child_offer(None, None, rng);
                    let payloads = offer.request(&self.cfg);
                    (Asked::Child { offer, tries: 0 }, payloads)
                }
                Intent::RekeyChild(spi_in) => {
                    if !e.children.iter().any(|c| c.spi_in == spi_in && !c.closing) {
                        continue;
                    }
                    let offer = self.child_offer(Some(spi_in), None, rng);
                    let payloads = offer.request(&self.cfg);
                    (Asked::Child { offer, tries: 0 }, payloads)
                }
                Intent::RekeyIke => {
                    let offer = self.ike_offer(e.keys.algorithms.group, rng);
                    let payloads = offer.request(&self.cfg.policy);
                    (Asked::RekeyIke { offer, tries: 0 }, payloads)
                }
                Intent::DeleteRetired(spis) => {
                    let Some(r) = e.retired.iter_mut().find(|r| r.spis == spis) else { continue };
                    let id = r.own_next;
                    r.own_next = r.own_next.wrapping_add(1);
                    let header = header_for(r.spis, r.role, ExchangeType::Informational, id, false);
                    let delete = informational::delete_ike();
                    let bytes = seal(&r.keys.sk(r.role == Role::Initiator), &header, &delete, rng);
                    e.asked = Some(Asked::DeleteRetired(spis));
                    self.send_request(now, bytes);
                    return;
                }
            };
            self.send_asked(now, rng, e, asked, &payloads);
        }
    }

    /// Sends our request `asked` on the current SA.
    fn send_asked(
        &mut self,
        now: Instant,
        rng: &mut dyn Random,
        e: &mut Established,
        asked: Asked,
        payloads: &[Payload],
    ) {
        let id = e.own_next;
        e.own_next = e.own_next.wrapping_add(1);
        let header = self.header(asked.exchange(), id, false);
        let bytes = seal(&e.keys.sk(self.role == Role::Initiator), &header, payloads, rng);
        e.asked = Some(asked);
        self.send_request(now, bytes);
    }

    /// The peer is busy with an exchange that collides with ours: ask again after a
    /// while, unless it has been busy too often in a row. Whether we will.
    fn later(now: Instant, rng: &mut dyn Random, e: &mut Established, intent: Intent) -> bool {
        e.busy += 1;
        if e.busy > MAX_TRIES {
            e.busy = 0;
            return false;
        }
        e.queue.push_front(intent);
        e.hold = Some(now + retry_wait(rng));
        true
    }

    fn child_offer(
        &self,
        rekey: Option<u32>,
        group: Option<Group>,
        rng: &mut dyn Random,
    ) -> ChildOffer {
        let pfs = group.or_else(|| self.cfg.policy.pfs_groups.first().copied());
        ChildOffer::new(random_esp_spi(rng), rekey, pfs, NONCE_LEN, rng)
    }

    fn ike_offer(&self, current: Group, rng: &mut dyn Random) -> IkeOffer {
        // The group of the SA we rekey, if we still allow it: the peer took it before.
        let groups = &self.cfg.policy.groups;
        let group = if groups.contains(&current) {
            current
        } else {
            groups.first().copied().unwrap_or(current)
        };
        IkeOffer::new(random_spi(rng), group, NONCE_LEN, rng)
    }

    /// A message for the established SA, or for one it replaced: routed by its SPIs.
    fn on_established(
        &mut self,
        now: Instant,
        inbound: Inbound<'_>,
        rng: &mut dyn Random,
        mut e: Box<Established>,
    ) -> State {
        let spis = (inbound.0.spi_i, inbound.0.spi_r);
        if spis == (self.spi_i, self.spi_r) {
            return self.on_current(now, inbound, rng, e);
        }
        if let Some(i) = e.retired.iter().position(|r| r.spis == spis) {
            self.on_retired(now, inbound, rng, &mut e, i);
        }
        State::Established(e)
    }

    /// A message for the current SA: the answer to our request, or a request of the
    /// peer's (each direction has its own message IDs, section 2.2).
    fn on_current(
        &mut self,
        now: Instant,
        (header, datagram): Inbound<'_>,
        rng: &mut dyn Random,
        mut e: Box<Established>,
    ) -> State {
        let from_initiator = self.role == Role::Responder;
        let opened = match open_parsed(&e.keys.sk(from_initiator), header, datagram) {
            Ok(opened) => opened,
            Err(OpenError::Inner { header, error }) => {
                // Authentic, but not well formed inside: a request gets an error answer.
                if !header.flags.response
                    && header.flags.initiator == from_initiator
                    && header.message_id == e.peer_next
                {
                    e.peer_next = e.peer_next.wrapping_add(1);
                    let error = Error::Malformed { exchange: header.exchange_type, error };
                    let answer = error.refusal();
                    let sk = e.keys.sk(self.role == Role::Initiator);
                    let h = self.header(header.exchange_type, header.message_id, true);
                    let bytes = seal(&sk, &h, &answer, rng);
                    self.send_response(datagram, bytes);
                }
                return State::Established(e);
            }
            Err(_) => return State::Established(e),
        };
        let h = opened.header;
        if h.flags.initiator != from_initiator {
            return State::Established(e);
        }
        if h.flags.response {
            // Only the answer to our outstanding request counts.
            let answers = self.pending.is_some()
                && h.message_id == e.own_next.wrapping_sub(1)
                && e.asked.as_ref().is_some_and(|a| a.exchange() == h.exchange_type);
            if !answers {
                return State::Established(e);
            }
            self.pending = None;
            let Some(asked) = e.asked.take() else { return State::Established(e) };
            let state = self.on_answer(now, rng, e, asked, &opened.payloads);
            return self.pumped(now, rng, state);
        }
        if h.message_id != e.peer_next
            || !matches!(h.exchange_type, ExchangeType::Informational | ExchangeType::CreateChildSa)
        {
            // A retransmission we answered is handled by the cache before this point;
            // anything else out of order, or another exchange, is dropped.
            return State::Established(e);
        }
        e.peer_next = e.peer_next.wrapping_add(1);
        let (answer, then) = if h.exchange_type == ExchangeType::Informational {
            let (answer, closed) = self.informational(&mut e, &opened.payloads);
            (answer, closed.then_some(Then::Close))
        } else {
            self.create_child_sa(&mut e, &opened.payloads, rng)
        };
        let sk = e.keys.sk(self.role == Role::Initiator);
        let bytes = seal(&sk, &self.header(h.exchange_type, h.message_id, true), &answer, rng);
        self.send_response(datagram, bytes);
        match then {
            Some(Then::Close) => {
                self.pending = None;
                self.events.push_back(Event::Closed { error: Error::DeletedByPeer });
                State::Dead
            }
            Some(Then::Switch(new)) => {
                self.switch_to(&mut e, *new);
                self.pumped(now, rng, State::Established(e))
            }
            None => State::Established(e),
        }
    }

    fn pumped(&mut self, now: Instant, rng: &mut dyn Random, state: State) -> State {
        match state {
            State::Established(mut e) => {
                self.pump(now, rng, &mut e);
                State::Established(e)
            }
            other => other,
        }
    }

    /// A message for an IKE SA a rekey replaced: the answer to its delete, or a request
    /// of the peer's sent before it saw the rekey.
    fn on_retired(
        &mut self,
        now: Instant,
        (header, datagram): Inbound<'_>,
        rng: &mut dyn Random,
        est: &mut Established,
        idx: usize,
    ) {
        let old = &est.retired[idx];
        let from_initiator = old.role == Role::Responder;
        let Ok(opened) = open_parsed(&old.keys.sk(from_initiator), header, datagram) else {
            return;
        };
        let hdr = opened.header;
        if hdr.flags.initiator != from_initiator {
            return;
        }
        let ours = matches!(est.asked, Some(Asked::DeleteRetired(s)) if s == old.spis);
        if hdr.flags.response {
            if ours && hdr.message_id == old.own_next.wrapping_sub(1) {
                self.pending = None;
                est.asked = None;
                est.retired.remove(idx);
                self.pump(now, rng, est);
            }
            return;
        }
        if hdr.message_id != old.peer_next {
            return;
        }
        est.retired[idx].peer_next = old.peer_next.wrapping_add(1);
        let (answer, closed) = match hdr.exchange_type {
            ExchangeType::Informational => self.informational(est, &opened.payloads),
            // A rekey that crossed ours, arriving after ours completed (section 2.25).
            ExchangeType::CreateChildSa => (Error::Busy.refusal(), false),
            _ => return,
        };
        let old = &est.retired[idx];
        let header = header_for(old.spis, old.role, hdr.exchange_type, hdr.message_id, true);
        let bytes = seal(&old.keys.sk(old.role == Role::Initiator), &header, &answer, rng);
        self.send_response(datagram, bytes);
        if closed {
            est.retired.remove(idx);
            if ours {
                // Both sides deleted it at once: ours needs no answer any more.
                self.pending = None;
                est.asked = None;
                self.pump(now, rng, est);
            }
        }
    }

    /// The peer's `INFORMATIONAL` request ([`informational`]): our answer, and whether
    /// the peer deleted the IKE SA it came on. Called once per request: a retransmission
    /// is answered from the cache and never comes here.
    fn informational(&mut self, e: &mut Established, payloads: &[Payload]) -> (Vec<Payload>, bool) {
        let request = informational::Request::parse(payloads);
        let mut deleted = Vec::new();
        for item in &request.items {
            match item {
                informational::Item::Notify(kind, data) => {
                    self.events.push_back(Event::PeerNotify { kind: *kind, data: data.clone() });
                }
                // The peer names its inbound SPIs, which are our outbound ones; we answer
                // with our inbound SPIs of the same children.
                informational::Item::DeleteChildren(theirs) => {
                    let mut ours = Vec::new();
                    for theirs in theirs {
                        if let Some(i) = e.children.iter().position(|c| c.spi_out == *theirs) {
                            let c = e.children.remove(i);
                            let (spi_in, spi_out) = (c.spi_in, c.spi_out);
                            self.events.push_back(Event::ChildDown { spi_in, spi_out });
                            ours.push(spi_in.to_be_bytes());
                        }
                    }
                    deleted.push(ours);
                }
            }
        }
        (request.response(deleted), request.delete_ike)
    }

    /// The peer's `CREATE_CHILD_SA` request: our answer, and what to do once it is sent.
    fn create_child_sa(
        &mut self,
        e: &mut Established,
        payloads: &[Payload],
        rng: &mut dyn Random,
    ) -> (Vec<Payload>, Option<Then>) {
        let temporary = || Error::Busy.refusal();
        let request = match create_child_sa::parse_request(payloads) {
            Ok(r) => r,
            Err(refusal) => return (refusal.refusal(), None),
        };
        let prf_d = (e.keys.algorithms.prf, e.keys.ike.sk_d.as_slice());
        match request {
            Request::Ike { sa, ni, ke } => {
                // Only a rekey of our own may cross the peer's; anything else of ours in
                // flight would straddle the two SAs.
                let colliding = matches!(e.asked, Some(Asked::RekeyIke { .. }));
                if e.asked.is_some() && !colliding {
                    return (temporary(), None);
                }
                let spi = random_spi(rng);
                let ans = match create_child_sa::answer_ike(
                    &self.cfg.policy,
                    (sa, ke),
                    spi,
                    (NONCE_LEN, rng),
                ) {
                    Ok(ans) => ans,
                    Err(refusal) => return (refusal.refusal(), None),
                };
                let spis = (ans.spi_i, spi);
                let keys = Keys {
                    algorithms: ans.algorithms,
                    ike: rekeyed_ike_keys(prf_d, ans.algorithms, &ans.g_ir, (ni, &ans.nr), spis),
                };
                let new =
                    NewIke { keys, spis, role: Role::Responder, nonces: (ni.to_vec(), ans.nr) };
                if colliding {
                    e.ike_collision = Some(new);
                    (ans.response, None)
                } else {
                    (ans.response, Some(Then::Switch(Box::new(new))))
                }
            }
            Request::Child { rekey, sa, ni, ke, payloads } => {
                if matches!(e.asked, Some(Asked::RekeyIke { .. })) {
                    return (temporary(), None);
                }
                let old = match rekey {
                    None => None,
                    Some(theirs) => match e.children.iter().find(|c| c.spi_out == theirs) {
                        None => return (Error::ChildSaNotFound(theirs).refusal(), None),
                        Some(c) if c.closing => return (temporary(), None),
                        Some(c) => Some(c.spi_in),
                    },
                };
                let spi = random_esp_spi(rng);
                let ans = match create_child_sa::answer_child(
                    &self.cfg,
                    prf_d,
                    (sa, ni, ke, payloads),
                    spi,
                    (NONCE_LEN, rng),
                ) {
                    Ok(ans) => ans,
                    Err(refusal) => return (refusal.refusal(), None),
                };
                let made = ans.child.spi_in;
                e.children.push(Child { spi_in: made, spi_out: ans.child.spi_out, closing: false });
                match old {
                    None => self.events.push_back(Event::ChildUp(ans.child)),
                    Some(old) => {
                        let ours = matches!(&e.asked,
                            Some(Asked::Child { offer, .. }) if offer.rekey == Some(old));
                        if ours {
                            // Both sides rekey it: settled when our answer comes.
                            let nonces = (ni.to_vec(), ans.nr);
                            e.child_collision = Some(ChildCollision { old, made, nonces });
                        } else {
                            e.close_child(old); // the peer deletes it
                        }
                        self.events
                            .push_back(Event::ChildRekeyed { old_spi_in: old, child: ans.child });
                    }
                }
                (ans.response, None)
            }
        }
    }

    /// The answer to our request.
    fn on_answer(
        &mut self,
        now: Instant,
        rng: &mut dyn Random,
        mut e: Box<Established>,
        asked: Asked,
        payloads: &[Payload],
    ) -> State {
        let busy = payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.kind == NotifyType::TemporaryFailure));
        if !busy {
            e.busy = 0;
        }
        match asked {
            Asked::DeleteIke => {
                self.events.push_back(Event::Closed { error: Error::DeletedByUs });
                return State::Dead;
            }
            Asked::DeleteChild(spi_in, spi_out) => {
                // Gone already if the peer deleted it at the same time.
                if let Some(i) = e.children.iter().position(|c| c.spi_in == spi_in) {
                    e.children.remove(i);
                    self.events.push_back(Event::ChildDown { spi_in, spi_out });
                }
            }
            Asked::Liveness => self.events.push_back(Event::PeerAlive),
            Asked::Notify | Asked::DeleteRetired(_) => {}
            Asked::Child { offer, tries } => {
                self.on_child_answer(now, rng, &mut e, &offer, tries, payloads);
            }
            Asked::RekeyIke { offer, tries } => {
                self.on_ike_rekey_answer(now, rng, &mut e, offer, tries, payloads);
            }
        }
        State::Established(e)
    }

    fn on_child_answer(
        &mut self,
        now: Instant,
        rng: &mut dyn Random,
        e: &mut Established,
        offer: &ChildOffer,
        tries: u8,
        payloads: &[Payload],
    ) {
        let prf_d = (e.keys.algorithms.prf, e.keys.ike.sk_d.as_slice());
        let collision = match offer.rekey {
            Some(old) if e.child_collision.as_ref().is_some_and(|c| c.old == old) => {
                e.child_collision.take()
            }
            _ => None,
        };
        match offer.process_response(&self.cfg, prf_d, payloads) {
            Ok((child, nr)) => {
                let made = child.spi_in;
                e.children.push(Child { spi_in: made, spi_out: child.spi_out, closing: false });
                let Some(old) = offer.rekey else {
                    self.events.push_back(Event::ChildUp(child));
                    return;
                };
                self.events.push_back(Event::ChildRekeyed { old_spi_in: old, child });
                e.close_child(old);
                match collision {
                    // Ours made the redundant child: we delete it, the peer the old one.
                    Some(c) if lowest(&(offer.ni.clone(), nr.clone())) < lowest(&c.nonces) => {
                        e.close_child(made);
                        e.queue.push_front(Intent::DeleteChild(made));
                    }
                    // The peer's is redundant: it deletes that one, and we the old one.
                    Some(c) => {
                        e.close_child(c.made);
                        e.queue.push_front(Intent::DeleteChild(old));
                    }
                    None => e.queue.push_front(Intent::DeleteChild(old)),
                }
            }
            // The peer refused ours because it rekeyed the child itself: its rekey stands.
            Err(Failure::Temporary | Failure::NotFound) if collision.is_some() => {
                if let Some(old) = offer.rekey {
                    e.close_child(old);
                }
            }
            Err(Failure::RetryWithGroup(g)) if tries < MAX_TRIES => {
                let offer = self.child_offer(offer.rekey, Some(g), rng);
                let payloads = offer.request(&self.cfg);
                self.send_asked(now, rng, e, Asked::Child { offer, tries: tries + 1 }, &payloads);
            }
            Err(Failure::Temporary)
                if Self::later(
                    now,
                    rng,
                    e,
                    offer.rekey.map_or(Intent::CreateChild, Intent::RekeyChild),
                ) => {}
            Err(f) => {
                let error = f.into_error();
                self.events.push_back(Event::ChildFailed { rekey: offer.rekey, error });
            }
        }
    }

    fn on_ike_rekey_answer(
        &mut self,
        now: Instant,
        rng: &mut dyn Random,
        e: &mut Established,
        offer: IkeOffer,
        tries: u8,
        payloads: &[Payload],
    ) {
        let collision = e.ike_collision.take();
        match offer.process_response(&self.cfg.policy, payloads) {
            Ok(ans) => {
                let prf_d = (e.keys.algorithms.prf, e.keys.ike.sk_d.as_slice());
                let spis = (offer.spi, ans.spi_r);
                let keys = Keys {
                    algorithms: ans.algorithms,
                    ike: rekeyed_ike_keys(
                        prf_d,
                        ans.algorithms,
                        &ans.g_ir,
                        (&offer.ni, &ans.nr),
                        spis,
                    ),
                };
                let ours = NewIke { keys, spis, role: Role::Initiator, nonces: (offer.ni, ans.nr) };
                match collision {
                    // Ours is redundant: the peer's SA takes over and the peer deletes the
                    // old one; we delete ours.
                    Some(theirs) if lowest(&ours.nonces) < lowest(&theirs.nonces) => {
                        let redundant = ours.spis;
                        Self::retire(e, ours);
                        self.switch_to(e, theirs);
                        e.queue.push_front(Intent::DeleteRetired(redundant));
                    }
                    // Theirs is redundant (the peer deletes it): ours takes over and we
                    // delete the old one.
                    Some(theirs) => {
                        let old = (self.spi_i, self.spi_r);
                        Self::retire(e, theirs);
                        self.switch_to(e, ours);
                        e.queue.push_front(Intent::DeleteRetired(old));
                    }
                    None => {
                        let old = (self.spi_i, self.spi_r);
                        self.switch_to(e, ours);
                        e.queue.push_front(Intent::DeleteRetired(old));
                    }
                }
            }
            // Refused because the peer rekeyed at the same time: its SA takes over.
            Err(Failure::Temporary) if collision.is_some() => {
                if let Some(theirs) = collision {
                    self.switch_to(e, theirs);
                }
            }
            Err(Failure::RetryWithGroup(g)) if tries < MAX_TRIES => {
                let offer = IkeOffer::new(random_spi(rng), g, NONCE_LEN, rng);
                let payloads = offer.request(&self.cfg.policy);
                self.send_asked(
                    now,
                    rng,
                    e,
                    Asked::RekeyIke { offer, tries: tries + 1 },
                    &payloads,
                );
            }
            Err(Failure::Temporary) if Self::later(now, rng, e, Intent::RekeyIke) => {}
            Err(f) => {
                self.events.push_back(Event::IkeRekeyFailed { error: f.into_error() });
            }
        }
    }

    /// Keeps an IKE SA that lost a rekey collision until its delete.
    fn retire(e: &mut Established, sa: NewIke) {
        e.retired.push(Retired {
            keys: sa.keys,
            spis: sa.spis,
            role: sa.role,
            own_next: 0,
            peer_next: 0,
        });
        if e.retired.len() > MAX_RETIRED {
            e.retired.remove(0);
        }
    }

    /// Makes a new IKE SA the current one; the current one is retired until deleted.
    fn switch_to(&mut self, e: &mut Established, new: NewIke) {
        let algorithms = new.keys.algorithms;
        let old = Retired {
            keys: std::mem::replace(&mut e.keys, new.keys),
            spis: (self.spi_i, self.spi_r),
            role: self.role,
            own_next: e.own_next,
            peer_next: e.peer_next,
        };
        e.retired.push(old);
        if e.retired.len() > MAX_RETIRED {
            e.retired.remove(0);
        }
        (self.spi_i, self.spi_r) = new.spis;
        self.role = new.role;
        // Section 2.18: the new IKE SA's message IDs start at zero.
        e.own_next = 0;
        e.peer_next = 0;
        self.events.push_back(Event::IkeRekeyed { spis: new.spis, algorithms });
    }

    fn on_init_response(
        &mut self,
        now: Instant,
        (header, datagram): Inbound<'_>,
        rng: &mut dyn Random,
        (group, kp, ni, request, cookies): (Group, KeyPair, Vec<u8>, Vec<u8>, u8),
    ) -> State {
        let Ok(msg) = Message::parse_payloads(header, datagram) else {
            return State::InitSent { group, kp, ni, request, cookies };
        };
        let h = &msg.header;
        if h.spi_i != self.spi_i
            || !h.flags.response
            || h.flags.initiator
            || h.exchange_type != ExchangeType::IkeSaInit
            || h.message_id != 0
        {
            return State::InitSent { group, kp, ni, request, cookies };
        }
        match ike_sa_init::process_response(&self.cfg.policy, group, &msg) {
            Outcome::RetryWithGroup(g) => self.send_init(now, g, rng),
            // A responder under load asks for a cookie: the same request again, the
            // cookie first (section 2.6). A few times at most, against a loop.
            Outcome::Cookie(_) if cookies >= MAX_COOKIE_RETRIES => {
                self.fail(Misbehavior::CookieLoop.into())
            }
            Outcome::Cookie(cookie) => {
                let p = &self.cfg.policy;
                let offer = ike_proposals(&p.ciphers, &p.prfs, &p.groups, &[]);
                let request = ike_sa_init::request(self.spi_i, &offer, &kp, &ni, Some(&cookie));
                self.send_request(now, request.clone());
                State::InitSent { group, kp, ni, request, cookies: cookies + 1 }
            }
            Outcome::Failed(error) => self.fail(error),
            Outcome::Accepted { algorithms, spi_r, ke, nr } => {
                self.spi_r = spi_r;
                let keys = match Keys::derive(algorithms, &kp, &ke, (&ni, &nr), (self.spi_i, spi_r))
                {
                    Ok(k) => k,
                    Err(e) => return self.fail(Misbehavior::InvalidKe(e).into()),
                };
                let child_spi = random_esp_spi(rng);
                let ctx = AuthContext {
                    prf: algorithms.prf,
                    sk_p_own: &keys.ike.sk_pi,
                    sk_p_peer: &keys.ike.sk_pr,
                    own_first: &request,
                    peer_first: datagram,
                    own_nonce: &ni,
                    peer_nonce: &nr,
                };
                let payloads = match ike_auth::try_request(&self.cfg, &ctx, child_spi) {
                    Ok(mut p) => {
                        if self.want_initial_contact {
                            ike_auth::add_initial_contact(&mut p);
                            self.initial_contact = true;
                        }
                        p
                    }
                    // Nothing we could sign would be accepted: say so rather than send an
                    // IKE_AUTH the peer must refuse.
                    Err(error) => return self.fail(error),
                };
                let bytes = seal(
                    &keys.sk(true),
                    &self.header(ExchangeType::IkeAuth, 1, false),
                    &payloads,
                    rng,
                );
                self.send_request(now, bytes);
                State::AuthSent {
                    keys,
                    ni,
                    nr,
                    first: request,
                    peer_first: datagram.to_vec(),
                    child_spi,
                }
            }
        }
    }

    /// Opens, once, a protected message for this SA of the given exchange, ID and
    /// direction: its payloads; `Err(Some(_))` if it is authentic and of that exchange,
    /// ID and direction but malformed inside; `Err(None)` if it is not for us at all.
    fn open_for(
        &self,
        keys: &Keys,
        (header, datagram): Inbound<'_>,
        exchange: ExchangeType,
        id: u32,
        response: bool,
    ) -> Result<Vec<Payload>, Option<crate::wire::Error>> {
        let from_initiator = self.role == Role::Responder;
        let expected = |h: &HeaderRepr| {
            h.exchange_type == exchange
                && h.message_id == id
                && h.flags.response == response
                && h.flags.initiator == from_initiator
        };
        match open_parsed(&keys.sk(from_initiator), header, datagram) {
            Ok(o) if expected(&o.header) && (o.header.spi_i, o.header.spi_r) == self.spis() => {
                Ok(o.payloads)
            }
            Err(OpenError::Inner { header, error }) if expected(&header) => Err(Some(error)),
            _ => Err(None),
        }
    }

    fn on_auth_request(
        &mut self,
        inbound: Inbound<'_>,
        rng: &mut dyn Random,
        state: State,
    ) -> State {
        let State::InitAnswered { keys, ni, nr, first, peer_first } = state else { return state };
        let datagram = inbound.1;
        let payloads = match self.open_for(&keys, inbound, ExchangeType::IkeAuth, 1, false) {
            Ok(payloads) => payloads,
            // An authentic IKE_AUTH request that is malformed inside ends the SA, with an
            // answer that says why (section 2.21.2).
            Err(Some(error)) => {
                let error = Error::Malformed { exchange: ExchangeType::IkeAuth, error };
                let h = self.header(ExchangeType::IkeAuth, 1, true);
                let bytes = seal(&keys.sk(false), &h, &error.refusal(), rng);
                self.send_response(datagram, bytes);
                return self.fail(error);
            }
            Err(None) => return State::InitAnswered { keys, ni, nr, first, peer_first },
        };
        let ctx = AuthContext {
            prf: keys.algorithms.prf,
            sk_p_own: &keys.ike.sk_pr,
            sk_p_peer: &keys.ike.sk_pi,
            own_first: &first,
            peer_first: &peer_first,
            own_nonce: &nr,
            peer_nonce: &ni,
        };
        let child_spi = random_esp_spi(rng);
        let header = self.header(ExchangeType::IkeAuth, 1, true);
        match ike_auth::process_request(
            &self.cfg,
            &ctx,
            &payloads,
            (&keys.ike.sk_d, &ni, &nr),
            child_spi,
        ) {
            Ok(ike_auth::Accepted { response, peer, child, initial_contact }) => {
                let bytes = seal(&keys.sk(false), &header, &response, rng);
                self.send_response(datagram, bytes);
                self.initial_contact = initial_contact;
                self.events.push_back(Event::IkeUp { peer, algorithms: keys.algorithms });
                // The initiator's requests so far were 0 and 1; the responder made none.
                let e = Established::new(keys, 0, 2, child.as_ref().ok());
                match child {
                    Ok(c) => self.events.push_back(Event::ChildUp(c)),
                    Err(error) => self.events.push_back(Event::ChildFailed { rekey: None, error }),
                }
                State::Established(e)
            }
            Err(error) => {
                let bytes = seal(&keys.sk(false), &header, &error.refusal(), rng);
                self.send_response(datagram, bytes);
                self.fail(error)
            }
        }
    }

    fn on_auth_response(&mut self, inbound: Inbound<'_>, state: State) -> State {
        let State::AuthSent { keys, ni, nr, first, peer_first, child_spi } = state else {
            return state;
        };
        let Ok(payloads) = self.open_for(&keys, inbound, ExchangeType::IkeAuth, 1, true) else {
            return State::AuthSent { keys, ni, nr, first, peer_first, child_spi };
        };
        let ctx = AuthContext {
            prf: keys.algorithms.prf,
            sk_p_own: &keys.ike.sk_pi,
            sk_p_peer: &keys.ike.sk_pr,
            own_first: &first,
            peer_first: &peer_first,
            own_nonce: &ni,
            peer_nonce: &nr,
        };
        match ike_auth::process_response(
            &self.cfg,
            &ctx,
            &payloads,
            (&keys.ike.sk_d, &ni, &nr),
            child_spi,
        ) {
            Ok((peer, child)) => {
                self.pending = None;
                self.events.push_back(Event::IkeUp { peer, algorithms: keys.algorithms });
                let e = Established::new(keys, 2, 0, child.as_ref().ok());
                match child {
                    Ok(c) => self.events.push_back(Event::ChildUp(c)),
                    Err(error) => self.events.push_back(Event::ChildFailed { rekey: None, error }),
                }
                State::Established(e)
            }
            Err(error) => self.fail(error),
        }
    }
}

#[cfg(test)]
mod rekey_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::auth::{EcdsaP256Signer, EcdsaP256Verifier, Ed25519Signer, Ed25519Verifier};
    use crate::crypto::auth::{SigAlg, Signer, Verifier};
    use crate::crypto::sk::SkCipher;
    use crate::crypto::sk::open;
    use crate::crypto::tests::TestRng;
    use crate::error::AuthFailure;
    use crate::proposal::Policy;
    use crate::wire::id::IdRepr;
    use crate::wire::id::IdType;
    use crate::wire::notify::NotifyRepr;
    use crate::wire::{delete::DeleteRepr, sa::ProtocolId};
    use std::net::IpAddr;

    /// Test stand-in for the `ca` crate: the "certificate" is the raw public key, and
    /// the identity must be the one expected.
    struct RawKeys {
        expect: IdRepr,
        ed25519: Option<[u8; 32]>,
        p256: Option<Vec<u8>>,
        /// An RSA key's `SubjectPublicKeyInfo`.
        rsa: Option<Vec<u8>>,
    }

    impl PeerAuthenticator for RawKeys {
        fn authenticate(
            &self,
            id: &IdRepr,
            certs: &[Vec<u8>],
        ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>> {
            if *id != self.expect {
                return Err(format!(
                    "identity {:?} is not the expected peer",
                    String::from_utf8_lossy(&id.data)
                )
                .into());
            }
            let cert = certs.first().ok_or("no certificate")?;
            match (&self.ed25519, &self.p256, &self.rsa) {
                (Some(k), _, _) if cert.as_slice() == k => {
                    Ok(Box::new(Ed25519Verifier::from_bytes(k).ok_or("bad key")?))
                }
                (_, Some(k), _) if cert == k => {
                    Ok(Box::new(EcdsaP256Verifier::from_sec1(k).ok_or("bad key")?))
                }
                (_, _, Some(k)) if cert == k => Ok(crate::crypto::auth::verifier_from_spki(k)?),
                _ => Err("certificate does not match the peer's key".into()),
            }
        }
    }

    pub(super) fn fqdn(name: &str) -> IdRepr {
        IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() }
    }

    pub(super) struct Side {
        signer: Arc<dyn Signer + Send + Sync>,
        cert: Vec<u8>,
        ed25519: Option<[u8; 32]>,
        p256: Option<Vec<u8>>,
        rsa: Option<Vec<u8>>,
    }

    pub(super) fn side(ecdsa: bool, seed: u8) -> Side {
        if ecdsa {
            let s = EcdsaP256Signer::from_bytes(&[seed; 32]).unwrap();
            let pk = s.public_key();
            Side { signer: Arc::new(s), cert: pk.clone(), ed25519: None, p256: Some(pk), rsa: None }
        } else {
            let s = Ed25519Signer::from_seed(&[seed; 32]);
            let pk = s.public_key();
            Side {
                signer: Arc::new(s),
                cert: pk.to_vec(),
                ed25519: Some(pk),
                p256: None,
                rsa: None,
            }
        }
    }

    /// A side with the 2048-bit RSA test key (RSA-PSS with SHA-256 under RFC 7427).
    pub(super) fn rsa_side() -> Side {
        use crate::crypto::auth::tests::vectors::{RSA2048_PKCS8, RSA2048_SPKI};
        let s = crate::crypto::auth::RsaSigner::from_pkcs8(RSA2048_PKCS8).unwrap();
        let spki = RSA2048_SPKI.to_vec();
        Side { signer: Arc::new(s), cert: spki.clone(), ed25519: None, p256: None, rsa: Some(spki) }
    }

    pub(super) fn config(
        me: &Side,
        my_name: &str,
        peer: &Side,
        peer_name: &str,
        policy: Policy,
        addrs: (&str, &str),
    ) -> Arc<Config> {
        Arc::new(Config {
            policy,
            local_id: fqdn(my_name),
            certs: vec![me.cert.clone()],
            signer: me.signer.clone(),
            authenticator: Arc::new(RawKeys {
                expect: fqdn(peer_name),
                ed25519: peer.ed25519,
                p256: peer.p256.clone(),
                rsa: peer.rsa.clone(),
            }),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit::default(),
            local_addr: addrs.0.parse().unwrap(),
            remote_addr: addrs.1.parse().unwrap(),
        })
    }

    /// Runs the exchanges between a fresh initiator and the responder its first request
    /// creates, passing every datagram through `tamper`; returns both and the count of
    /// datagrams exchanged.
    pub(super) fn run(
        i_cfg: Arc<Config>,
        r_cfg: &Arc<Config>,
        rng: &mut TestRng,
        tamper: &mut dyn FnMut(usize, &mut Vec<u8>),
    ) -> (IkeSa, Option<IkeSa>, usize) {
        let now = Instant::now();
        let mut initiator = IkeSa::initiate(i_cfg, now, rng);
        let mut responder: Option<IkeSa> = None;
        let mut count = 0;
        for _ in 0..20 {
            let mut moved = false;
            while let Some(mut d) = initiator.poll_transmit() {
                tamper(count, &mut d);
                count += 1;
                moved = true;
                if let Some(r) = responder.as_mut() {
                    r.handle(now, &d, rng);
                } else {
                    let (sa, refusal) = IkeSa::respond(r_cfg.clone(), &d, rng);
                    responder = sa;
                    if let Some(mut answer) = refusal {
                        tamper(count, &mut answer);
                        count += 1;
                        initiator.handle(now, &answer, rng);
                    }
                }
            }
            if let Some(r) = responder.as_mut() {
                while let Some(mut d) = r.poll_transmit() {
                    tamper(count, &mut d);
                    count += 1;
                    moved = true;
                    initiator.handle(now, &d, rng);
                }
            }
            if !moved {
                break;
            }
        }
        (initiator, responder, count)
    }

    pub(super) fn events(sa: &mut IkeSa) -> Vec<Event> {
        std::iter::from_fn(|| sa.poll_event()).collect()
    }

    pub(super) fn child(events: &[Event]) -> &ChildSa {
        events
            .iter()
            .find_map(|e| if let Event::ChildUp(c) = e { Some(c) } else { None })
            .expect("a child SA")
    }

    #[test]
    fn every_group_and_signature_algorithm_establishes_ike_and_child_sas() {
        let mut rng = TestRng::new(11);
        for group in [Group::Curve25519, Group::Ecp256, Group::Modp2048] {
            for key in ["Ed25519", "ECDSA P-256", "RSA-PSS"] {
                let (alice, bob) = match key {
                    "RSA-PSS" => (rsa_side(), rsa_side()),
                    _ => (side(key != "Ed25519", 1), side(key != "Ed25519", 2)),
                };
                let policy = Policy { groups: vec![group], ..Policy::default() };
                let i_cfg = config(
                    &alice,
                    "a.mesh",
                    &bob,
                    "b.mesh",
                    policy.clone(),
                    ("10.0.0.1", "10.0.0.2"),
                );
                let r_cfg =
                    config(&bob, "b.mesh", &alice, "a.mesh", policy, ("10.0.0.2", "10.0.0.1"));
                let (mut init, resp, count) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
                let mut resp = resp.expect("responder created");
                assert_eq!(count, 4, "{group:?}/{key}: two exchanges");
                assert!(init.is_established() && resp.is_established(), "{group:?}/{key}");
                assert_eq!(init.algorithms().unwrap().group, group);
                let (ie, re) = (events(&mut init), events(&mut resp));
                assert!(
                    matches!(&ie[0], Event::IkeUp { peer, .. } if peer.data == b"b.mesh"),
                    "{ie:?}"
                );
                assert!(
                    matches!(&re[0], Event::IkeUp { peer, .. } if peer.data == b"a.mesh"),
                    "{re:?}"
                );
                let (ic, rc) = (child(&ie), child(&re));
                assert_eq!((ic.spi_out, ic.spi_in), (rc.spi_in, rc.spi_out), "SPIs pair up");
                assert_eq!(
                    (ic.key_out.as_slice(), ic.key_in.as_slice()),
                    (rc.key_in.as_slice(), rc.key_out.as_slice()),
                    "keys pair up"
                );
                assert_ne!(ic.key_in.as_slice(), ic.key_out.as_slice());
                assert_eq!(ic.key_out.len(), 36, "AES-256 key and salt");
                assert_eq!((ic.local, ic.remote), (rc.remote, rc.local));
                assert!(ic.algorithms.esn && ic.algorithms.gcm_key_bits == 256);
            }
        }
    }

    #[test]
    fn a_ke_of_the_wrong_group_is_retried_with_the_group_the_responder_wants() {
        let mut rng = TestRng::new(12);
        let (alice, bob) = (side(false, 1), side(false, 2));
        let i_policy =
            Policy { groups: vec![Group::Curve25519, Group::Ecp256], ..Policy::default() };
        let r_policy = Policy { groups: vec![Group::Ecp256], ..Policy::default() };
        let i_cfg = config(&alice, "a.mesh", &bob, "b.mesh", i_policy, ("10.0.0.1", "10.0.0.2"));
        let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
        let mut seen = Vec::new();
        let (init, resp, count) = run(i_cfg, &r_cfg, &mut rng, &mut |_, d| seen.push(d.clone()));
        assert!(init.is_established() && resp.unwrap().is_established());
        assert_eq!(count, 6, "request, INVALID_KE_PAYLOAD, request again, response, IKE_AUTH x2");
        let refusal = Message::parse(&seen[1]).unwrap();
        assert!(
            matches!(&refusal.payloads[0], Payload::Notify(n) if n.kind == NotifyType::InvalidKePayload && n.data == [0, 19])
        );
        assert_eq!(init.algorithms().unwrap().group, Group::Ecp256);
    }

    #[test]
    fn no_common_proposal_fails_cleanly() {
        let mut rng = TestRng::new(13);
        let (alice, bob) = (side(false, 1), side(false, 2));
        let r_policy = Policy {
            ciphers: vec![SkCipher::AesCbcHmacSha256 { key_bits: 256 }],
            ..Policy::default()
        };
        let i_cfg =
            config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
        let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
        let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
        assert!(resp.is_none(), "the responder keeps no state");
        let ev = events(&mut init);
        assert!(
            matches!(
                &ev[..],
                [Event::Failed { error: Error::PeerRefused(NotifyType::NoProposalChosen) }]
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn a_wrong_key_or_identity_ends_in_authentication_failed() {
        let mut rng = TestRng::new(14);
        let (alice, bob, mallory) = (side(false, 1), side(false, 2), side(false, 3));
        // The responder expects a.mesh with a's key; mallory presents itself as a.mesh.
        let i_cfg =
            config(&mallory, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
        let r_cfg =
            config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1"));
        let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
        let mut resp = resp.unwrap();
        let (ie, re) = (events(&mut init), events(&mut resp));
        assert!(
            matches!(&re[..], [Event::Failed { error }] if error.to_string().contains("does not match")),
            "{re:?}"
        );
        assert!(
            matches!(
                &ie[..],
                [Event::Failed { error: Error::Authentication(AuthFailure::Refused) }]
            ),
            "{ie:?}"
        );
        assert!(!init.is_established() && !resp.is_established());
        // The initiator refuses a responder that is not who it expects.
        let i_cfg =
            config(&alice, "a.mesh", &bob, "c.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2"));
        let r_cfg =
            config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1"));
        let (mut init, _, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
        let ie = events(&mut init);
        assert!(
            matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("not the expected peer")),
            "{ie:?}"
        );
    }

    #[test]
    fn tampered_datagrams_are_dropped_and_the_real_ones_still_work() {
        let mut rng = TestRng::new(15);
        let (alice, bob) = (side(true, 1), side(true, 2));
        let i_cfg =
            config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("fd00::1", "fd00::2"));
        let r_cfg =
            config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("fd00::2", "fd00::1"));
        let now = Instant::now();
        let mut initiator = IkeSa::initiate(i_cfg, now, &mut rng);
        let first = initiator.poll_transmit().unwrap();
        let (r, _) = IkeSa::respond(r_cfg, &first, &mut rng);
        let mut responder = r.unwrap();
        let answer = responder.poll_transmit().unwrap();
        initiator.handle(now, &answer, &mut rng);
        let auth = initiator.poll_transmit().unwrap();
        for i in [30, auth.len() / 2, auth.len() - 1] {
            let mut forged = auth.clone();
            forged[i] ^= 0x80;
            responder.handle(now, &forged, &mut rng);
            assert!(responder.poll_transmit().is_none() && !responder.is_established(), "byte {i}");
        }
        responder.handle(now, &auth, &mut rng);
        let reply = responder.poll_transmit().unwrap();
        let mut forged = reply.clone();
        forged[40] ^= 1;
        initiator.handle(now, &forged, &mut rng);
        assert!(!initiator.is_established());
        initiator.handle(now, &reply, &mut rng);
        assert!(initiator.is_established() && responder.is_established());
        let ie = events(&mut initiator);
        assert_eq!(child(&ie).local.start, "fd00::1".parse::<IpAddr>().unwrap());
    }

    /// How the in-memory network mistreats datagrams, by their running number.
    #[derive(Clone, Copy)]
    struct Network {
        drop_every: usize,
        duplicate_every: usize,
        reorder: bool,
        /// Drop everything the responder sends.
        silent_responder: bool,
    }

    /// Runs both ends over a lossy network in virtual time (10 ms latency, +-5 ms when
    /// reordering) until nothing is in flight and no timer is armed; returns both ends,
    /// the virtual time taken and the datagrams the initiator sent.
    fn run_lossy(
        i_cfg: Arc<Config>,
        r_cfg: &Arc<Config>,
        rng: &mut TestRng,
        net: Network,
    ) -> (IkeSa, Option<IkeSa>, Duration, usize) {
        let start = Instant::now();
        let mut now = start;
        let mut initiator = IkeSa::initiate(i_cfg, now, rng);
        let mut responder: Option<IkeSa> = None;
        // (deliver at, to the responder?, bytes)
        let mut flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
        let mut sent = 0usize;
        let mut initiator_sent = 0usize;
        for _ in 0..10_000 {
            let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
            while let Some(d) = initiator.poll_transmit() {
                out.push((true, d));
            }
            if let Some(r) = responder.as_mut() {
                while let Some(d) = r.poll_transmit() {
                    out.push((false, d));
                }
            }
            for (to_responder, d) in out {
                sent += 1;
                initiator_sent += usize::from(to_responder);
                if (!to_responder && net.silent_responder)
                    || (net.drop_every > 0 && sent.is_multiple_of(net.drop_every))
                {
                    continue;
                }
                let jitter = if net.reorder && sent.is_multiple_of(2) { 15 } else { 5 };
                let copies = if net.duplicate_every > 0 && sent.is_multiple_of(net.duplicate_every)
                {
                    2
                } else {
                    1
                };
                for c in 0..copies {
                    flight.push((
                        now + Duration::from_millis(jitter + 10 * c),
                        to_responder,
                        d.clone(),
                    ));
                }
            }
            flight.sort_by_key(|f| f.0);
            let next_delivery = flight.first().map(|f| f.0);
            let next_timer = initiator.poll_timeout();
            let wake = match (next_delivery, next_timer) {
                (Some(d), Some(t)) => d.min(t),
                (Some(d), None) => d,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            now = wake;
            if next_delivery == Some(wake) {
                let (_, to_responder, d) = flight.remove(0);
                if to_responder {
                    if let Some(r) = responder.as_mut() {
                        r.handle(now, &d, rng);
                    } else {
                        let (sa, refusal) = IkeSa::respond(r_cfg.clone(), &d, rng);
                        responder = sa;
                        if let Some(answer) = refusal {
                            flight.push((now + Duration::from_millis(10), false, answer));
                        }
                    }
                } else {
                    initiator.handle(now, &d, rng);
                }
            } else {
                initiator.handle_timeout(now, rng);
            }
        }
        (initiator, responder, now - start, initiator_sent)
    }

    pub(crate) fn pair_configs(rng_seed: u8) -> (Arc<Config>, Arc<Config>) {
        let (alice, bob) = (side(false, rng_seed), side(false, rng_seed + 1));
        (
            config(&alice, "a.mesh", &bob, "b.mesh", Policy::default(), ("10.0.0.1", "10.0.0.2")),
            config(&bob, "b.mesh", &alice, "a.mesh", Policy::default(), ("10.0.0.2", "10.0.0.1")),
        )
    }

    #[test]
    fn a_lossy_network_still_converges() {
        let mut rng = TestRng::new(16);
        // Dropping every 2nd datagram would drop every response forever: each request is
        // followed by exactly one answer.
        for (drop_every, duplicate_every, reorder) in
            [(3, 0, false), (3, 2, true), (0, 1, true), (5, 3, true)]
        {
            let (i_cfg, r_cfg) = pair_configs(1);
            let net = Network { drop_every, duplicate_every, reorder, silent_responder: false };
            let (mut init, resp, took, sent) = run_lossy(i_cfg, &r_cfg, &mut rng, net);
            let mut resp = resp.expect("responder created");
            assert!(
                init.is_established() && resp.is_established(),
                "drop {drop_every} dup {duplicate_every} reorder {reorder}"
            );
            let (ie, re) = (events(&mut init), events(&mut resp));
            // Each side reports the IKE SA and its child exactly once, duplicates or not.
            assert_eq!(ie.iter().filter(|e| matches!(e, Event::IkeUp { .. })).count(), 1);
            assert_eq!(re.iter().filter(|e| matches!(e, Event::ChildUp(_))).count(), 1);
            assert_eq!(child(&ie).spi_out, child(&re).spi_in);
            assert!(init.poll_timeout().is_none(), "nothing left to retransmit");
            assert!(took < Duration::from_secs(60), "took {took:?} with {sent} datagrams");
        }
    }

    #[test]
    fn a_silent_peer_is_given_up_after_the_last_retransmission() {
        let mut rng = TestRng::new(17);
        let (i_cfg, r_cfg) = pair_configs(1);
        let net =
            Network { drop_every: 0, duplicate_every: 0, reorder: false, silent_responder: true };
        let (mut init, _, took, sent) = run_lossy(i_cfg, &r_cfg, &mut rng, net);
        let ie = events(&mut init);
        assert!(
            matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer (5 sends")),
            "{ie:?}"
        );
        assert_eq!(sent, 5, "the request went out five times");
        // 4 + 7.2 + 12.96 + 23.33 + 41.99 s of waiting, less the sub-ms rounding.
        assert!(took > Duration::from_secs(89) && took < Duration::from_secs(90), "{took:?}");
        assert!(init.poll_timeout().is_none() && !init.is_established());
    }

    /// An established pair (initiator, responder) with their set-up events drained.
    pub(super) fn established(rng: &mut TestRng) -> (IkeSa, IkeSa) {
        let (i_cfg, r_cfg) = pair_configs(1);
        let (mut init, resp, _) = run(i_cfg, &r_cfg, rng, &mut |_, _| {});
        let mut resp = resp.unwrap();
        assert!(init.is_established() && resp.is_established());
        let _ = (events(&mut init), events(&mut resp));
        (init, resp)
    }

    /// Moves datagrams both ways until none is left; how many moved.
    pub(super) fn shuttle(a: &mut IkeSa, b: &mut IkeSa, now: Instant, rng: &mut TestRng) -> usize {
        let mut moved = 0;
        loop {
            let mut any = false;
            while let Some(d) = a.poll_transmit() {
                b.handle(now, &d, rng);
                moved += 1;
                any = true;
            }
            while let Some(d) = b.poll_transmit() {
                a.handle(now, &d, rng);
                moved += 1;
                any = true;
            }
            if !any {
                return moved;
            }
        }
    }

    #[test]
    fn either_side_deletes_the_ike_sa() {
        let mut rng = TestRng::new(18);
        let now = Instant::now();
        for initiator_deletes in [true, false] {
            let (mut init, mut resp) = established(&mut rng);
            let (del, other) =
                if initiator_deletes { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
            assert!(del.delete(now, &mut rng));
            assert!(!del.delete(now, &mut rng), "one request at a time");
            assert_eq!(shuttle(del, other, now, &mut rng), 2);
            let (de, oe) = (events(del), events(other));
            assert!(matches!(&de[..], [Event::Closed { error: Error::DeletedByUs }]), "{de:?}");
            assert!(matches!(&oe[..], [Event::Closed { error: Error::DeletedByPeer }]), "{oe:?}");
            assert!(!del.is_established() && !other.is_established());
            assert!(del.poll_timeout().is_none());
        }
    }

    #[test]
    fn a_child_sa_is_deleted_and_both_sides_name_the_same_spis() {
        let mut rng = TestRng::new(19);
        let now = Instant::now();
        let (i_cfg, r_cfg) = pair_configs(1);
        let (mut init, resp, _) = run(i_cfg, &r_cfg, &mut rng, &mut |_, _| {});
        let mut resp = resp.unwrap();
        let (ie, re) = (events(&mut init), events(&mut resp));
        let (ic, rc) = (child(&ie), child(&re));
        assert!(!init.delete_child(now, 12345, &mut rng), "no such child");
        assert!(resp.delete_child(now, rc.spi_in, &mut rng));
        assert_eq!(shuttle(&mut resp, &mut init, now, &mut rng), 2);
        let (ie2, re2) = (events(&mut init), events(&mut resp));
        assert!(
            matches!(&ie2[..], [Event::ChildDown { spi_in, spi_out }] if *spi_in == ic.spi_in && *spi_out == ic.spi_out),
            "{ie2:?}"
        );
        assert!(
            matches!(&re2[..], [Event::ChildDown { spi_in, spi_out }] if *spi_in == rc.spi_in && *spi_out == rc.spi_out),
            "{re2:?}"
        );
        assert!(init.is_established() && resp.is_established(), "the IKE SA stays");
        assert!(!resp.delete_child(now, rc.spi_in, &mut rng), "gone already");
    }

    #[test]
    fn liveness_checks_are_answered_and_a_dead_peer_is_found() {
        let mut rng = TestRng::new(20);
        let mut now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        for _ in 0..3 {
            assert!(init.check_liveness(now, &mut rng));
            assert!(resp.check_liveness(now, &mut rng), "each side has its own window");
            shuttle(&mut init, &mut resp, now, &mut rng);
            assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
            assert!(matches!(&events(&mut resp)[..], [Event::PeerAlive]));
        }
        // The responder goes silent: the initiator's check is retransmitted, then fails.
        assert!(init.check_liveness(now, &mut rng));
        let mut sends = 0;
        while let Some(deadline) = init.poll_timeout() {
            while init.poll_transmit().is_some() {
                sends += 1;
            }
            now = deadline;
            init.handle_timeout(now, &mut rng);
        }
        let ie = events(&mut init);
        assert_eq!(sends, 5);
        assert!(
            matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer")),
            "{ie:?}"
        );
    }

    #[test]
    fn a_retransmitted_delete_is_answered_again_but_acted_on_once() {
        let mut rng = TestRng::new(21);
        let now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        assert!(init.delete(now, &mut rng));
        let request = init.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        let first = resp.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        let again = resp.poll_transmit().unwrap();
        assert_eq!(first, again, "the same bytes");
        assert_eq!(events(&mut resp).len(), 1, "closed once");
        init.handle(now, &again, &mut rng);
        init.handle(now, &first, &mut rng);
        assert_eq!(events(&mut init).len(), 1);
    }

    #[test]
    fn a_responder_under_load_asks_for_a_cookie_and_the_initiator_retries() {
        use crate::cookie::{Cookies, Gate};
        let mut rng = TestRng::new(22);
        let now = Instant::now();
        let (i_cfg, r_cfg) = pair_configs(1);
        let cookies = Cookies::new(&mut rng);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        let first = init.poll_transmit().unwrap();
        let Gate::Challenge(challenge) = cookies.gate(&first, peer, true) else {
            panic!("no challenge")
        };
        init.handle(now, &challenge, &mut rng);
        let second = init.poll_transmit().unwrap();
        assert!(
            matches!(Message::parse(&second).unwrap().payloads[0], Payload::Notify(ref n) if n.kind == NotifyType::Cookie)
        );
        assert_eq!(cookies.gate(&second, peer, true), Gate::Pass);
        let (r, _) = IkeSa::respond(r_cfg, &second, &mut rng);
        let mut resp = r.unwrap();
        let moved = shuttle(&mut resp, &mut init, now, &mut rng);
        assert_eq!(moved, 3, "IKE_SA_INIT response, then IKE_AUTH both ways");
        assert!(init.is_established() && resp.is_established());
    }

    /// The private use status notifications among `events`, as (type, data).
    fn peer_notifies(events: &[Event]) -> Vec<(u16, Vec<u8>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::PeerNotify { kind, data } => Some((*kind, data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Sends `payloads` as `sa`'s next request, as if it had asked `asked`.
    fn send_raw(sa: &mut IkeSa, asked: Asked, payloads: &[Payload], rng: &mut TestRng) {
        let State::Established(mut e) = std::mem::replace(&mut sa.state, State::Dead) else {
            panic!("not established")
        };
        sa.send_asked(Instant::now(), rng, &mut e, asked, payloads);
        sa.state = State::Established(e);
    }

    /// The payloads of `datagram`, a response to `to`'s request.
    fn response_payloads(to: &IkeSa, datagram: &[u8]) -> Vec<Payload> {
        let State::Established(e) = &to.state else { panic!("not established") };
        let opened = open(&e.keys.sk(to.role == Role::Responder), datagram).unwrap();
        assert!(opened.header.flags.response);
        opened.payloads
    }

    fn first_child(sa: &IkeSa) -> u32 {
        let State::Established(e) = &sa.state else { panic!("not established") };
        e.children[0].spi_in
    }

    #[test]
    fn a_private_notify_is_delivered_once_each_way_with_its_type_and_data() {
        let mut rng = TestRng::new(70);
        let now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        let cases: [(u16, Vec<u8>); 3] =
            [(40960, b"use".to_vec()), (65535, Vec::new()), (50000, vec![0xa5; MAX_NOTIFY_DATA])];
        for by_initiator in [true, false] {
            let (x, y) = if by_initiator { (&mut init, &mut resp) } else { (&mut resp, &mut init) };
            for (kind, data) in &cases {
                assert!(x.notify(now, *kind, data.clone(), &mut rng));
                let request = x.poll_transmit().unwrap();
                assert!(x.poll_transmit().is_none(), "one request");
                // On the wire: one Notify payload, no protocol, no SPI.
                let State::Established(e) = &y.state else { panic!() };
                let opened = open(&e.keys.sk(y.role == Role::Responder), &request).unwrap();
                assert_eq!(opened.header.exchange_type, ExchangeType::Informational);
                assert!(matches!(&opened.payloads[..], [Payload::Notify(n)]
                    if n.protocol.is_none() && n.spi.is_empty()
                        && u16::from(n.kind) == *kind && n.data == *data));
                y.handle(now, &request, &mut rng);
                let answer = y.poll_transmit().unwrap();
                assert!(response_payloads(x, &answer).is_empty(), "an empty answer");
                x.handle(now, &answer, &mut rng);
                assert_eq!(peer_notifies(&events(y)), [(*kind, data.clone())]);
                assert!(events(x).is_empty(), "no event for our own notify's answer");
                assert!(x.poll_timeout().is_none(), "answered: nothing to retransmit");
            }
        }
        assert!(init.is_established() && resp.is_established());
    }

    #[test]
    fn a_retransmitted_notify_is_answered_again_but_raises_one_event() {
        let mut rng = TestRng::new(71);
        let mut now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        // A duplicate on the wire.
        assert!(init.notify(now, 41000, b"require".to_vec(), &mut rng));
        let request = init.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        let first = resp.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        assert_eq!(resp.poll_transmit().unwrap(), first, "answered from the cache");
        assert_eq!(peer_notifies(&events(&mut resp)), [(41000, b"require".to_vec())]);
        init.handle(now, &first, &mut rng);
        init.handle(now, &first, &mut rng);
        assert!(events(&mut init).is_empty() && init.poll_timeout().is_none());
        // A retransmission by the sender, whose first answer was lost.
        assert!(resp.notify(now, 41001, b"use".to_vec(), &mut rng));
        let request = resp.poll_transmit().unwrap();
        init.handle(now, &request, &mut rng);
        let _lost = init.poll_transmit().unwrap();
        now = resp.poll_timeout().unwrap();
        resp.handle_timeout(now, &mut rng);
        let again = resp.poll_transmit().expect("retransmitted");
        assert_eq!(again, request);
        init.handle(now, &again, &mut rng);
        shuttle(&mut init, &mut resp, now, &mut rng);
        assert_eq!(peer_notifies(&events(&mut init)), [(41001, b"use".to_vec())]);
        assert!(events(&mut resp).is_empty() && resp.poll_timeout().is_none());
        // A late duplicate of an older request, after a newer one was answered: dropped.
        assert!(resp.notify(now, 41002, Vec::new(), &mut rng));
        shuttle(&mut init, &mut resp, now, &mut rng);
        assert_eq!(peer_notifies(&events(&mut init)), [(41002, Vec::new())]);
        init.handle(now, &request, &mut rng);
        assert!(init.poll_transmit().is_none() && events(&mut init).is_empty());
    }

    #[test]
    fn notifies_on_a_lossy_network_arrive_once_each_and_in_order() {
        for (seed, drop_every) in [(72, 3), (73, 4), (74, 7)] {
            let mut rng = TestRng::new(seed);
            let now = Instant::now();
            let (mut init, mut resp) = established(&mut rng);
            let sent: Vec<(u16, Vec<u8>)> =
                (0..6u16).map(|i| (40960 + i, vec![u8::try_from(i).unwrap(); 3])).collect();
            for (kind, data) in &sent {
                assert!(init.notify(now, *kind, data.clone(), &mut rng));
                assert!(resp.notify(now, *kind + 100, data.clone(), &mut rng));
            }
            super::rekey_tests::drive_lossy(&mut init, &mut resp, now, &mut rng, drop_every);
            let (ie, re) = (events(&mut init), events(&mut resp));
            assert_eq!(peer_notifies(&re), sent, "drop every {drop_every}");
            let from_resp: Vec<_> = sent.iter().map(|(k, d)| (k + 100, d.clone())).collect();
            assert_eq!(peer_notifies(&ie), from_resp, "drop every {drop_every}");
            assert!(init.is_established() && resp.is_established(), "{ie:?} {re:?}");
        }
    }

    #[test]
    fn a_notify_queued_behind_another_request_is_sent_after_it() {
        let mut rng = TestRng::new(75);
        let now = Instant::now();
        // Behind a liveness check, and another notify.
        let (mut init, mut resp) = established(&mut rng);
        assert!(init.check_liveness(now, &mut rng));
        assert!(init.notify(now, 40961, b"one".to_vec(), &mut rng));
        assert!(init.notify(now, 40961, b"one".to_vec(), &mut rng), "the same again is sent");
        assert!(init.notify(now, 40962, b"two".to_vec(), &mut rng));
        let check = init.poll_transmit().unwrap();
        assert!(init.poll_transmit().is_none(), "our window is one request");
        resp.handle(now, &check, &mut rng);
        assert!(events(&mut resp).is_empty(), "the liveness check first");
        assert_eq!(shuttle(&mut resp, &mut init, now, &mut rng), 7);
        assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
        let one = (40961, b"one".to_vec());
        assert_eq!(peer_notifies(&events(&mut resp)), [one.clone(), one, (40962, b"two".to_vec())]);
        // Behind a child rekey (and the delete of the old child that follows it).
        let old = first_child(&init);
        assert!(init.rekey_child(now, old, &mut rng));
        assert!(init.notify(now, 40963, b"three".to_vec(), &mut rng));
        assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 6);
        let re = events(&mut resp);
        assert!(
            matches!(&re[..], [Event::ChildRekeyed { .. }, Event::ChildDown { .. }, Event::PeerNotify { kind: 40963, data }] if data == b"three"),
            "{re:?}"
        );
        let ie = events(&mut init);
        assert!(matches!(&ie[..], [Event::ChildRekeyed { .. }, Event::ChildDown { .. }]), "{ie:?}");
        // Behind an IKE SA rekey: it goes on the new IKE SA.
        let before = resp.spis();
        assert!(resp.rekey_ike(now, &mut rng));
        assert!(resp.notify(now, 40964, b"four".to_vec(), &mut rng));
        shuttle(&mut resp, &mut init, now, &mut rng);
        let ie = events(&mut init);
        assert!(
            matches!(&ie[..], [Event::IkeRekeyed { spis, .. }, Event::PeerNotify { kind: 40964, .. }] if *spis != before),
            "{ie:?}"
        );
        assert!(matches!(&events(&mut resp)[..], [Event::IkeRekeyed { .. }]));
        assert_eq!(init.local_spis().len(), 1, "the old IKE SA is deleted");
    }

    #[test]
    fn a_non_private_type_or_oversize_data_is_refused() {
        let mut rng = TestRng::new(76);
        let now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        for kind in [0, 1, 43, 16384, 16390, 40959] {
            assert!(!init.notify(now, kind, Vec::new(), &mut rng), "type {kind}");
        }
        assert!(!init.notify(now, 40960, vec![0; MAX_NOTIFY_DATA + 1], &mut rng), "too long");
        assert!(init.poll_transmit().is_none() && init.poll_timeout().is_none());
        assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 0);
        assert!(events(&mut resp).is_empty());
    }

    #[test]
    fn a_notify_on_an_sa_that_is_not_established_is_refused() {
        let mut rng = TestRng::new(77);
        let now = Instant::now();
        let (i_cfg, r_cfg) = pair_configs(1);
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        let first = init.poll_transmit().unwrap();
        assert!(!init.notify(now, 40960, Vec::new(), &mut rng), "IKE_SA_INIT sent");
        let (r, _) = IkeSa::respond(r_cfg, &first, &mut rng);
        let mut resp = r.unwrap();
        assert!(!resp.notify(now, 40960, Vec::new(), &mut rng), "IKE_SA_INIT answered");
        init.handle(now, &resp.poll_transmit().unwrap(), &mut rng);
        assert!(!init.notify(now, 40960, Vec::new(), &mut rng), "IKE_AUTH sent");
        assert!(!init.check_liveness(now, &mut rng), "no other request either");
        // The refusals left the handshake as it was: it completes.
        assert_eq!(shuttle(&mut init, &mut resp, now, &mut rng), 2, "IKE_AUTH both ways");
        assert!(init.is_established() && resp.is_established());
        // Deleted: over.
        let (mut init, mut resp) = established(&mut rng);
        assert!(init.delete(now, &mut rng));
        shuttle(&mut init, &mut resp, now, &mut rng);
        assert!(!init.notify(now, 40960, Vec::new(), &mut rng));
        assert!(!resp.notify(now, 40960, Vec::new(), &mut rng));
        assert!(init.poll_transmit().is_none() && resp.poll_transmit().is_none());
    }

    #[test]
    fn a_notify_to_a_silent_peer_fails_the_sa_like_a_liveness_check() {
        let mut rng = TestRng::new(78);
        let mut now = Instant::now();
        let (mut init, _resp) = established(&mut rng);
        assert!(init.notify(now, 40960, b"use".to_vec(), &mut rng));
        let mut sends = 0;
        while let Some(deadline) = init.poll_timeout() {
            while init.poll_transmit().is_some() {
                sends += 1;
            }
            now = deadline;
            init.handle_timeout(now, &mut rng);
        }
        assert_eq!(sends, 5);
        let ie = events(&mut init);
        assert!(
            matches!(&ie[..], [Event::Failed { error }] if error.to_string().contains("did not answer")),
            "{ie:?}"
        );
        assert!(!init.is_established());
    }

    #[test]
    fn only_private_use_notifies_raise_events_and_deletes_beside_them_are_answered() {
        let mut rng = TestRng::new(79);
        let now = Instant::now();
        let (mut init, mut resp) = established(&mut rng);
        // Other notifications in an INFORMATIONAL request: ignored as before.
        let others = [
            Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, Vec::new())),
            Payload::Notify(NotifyRepr::new(NotifyType::from(40959), b"x".to_vec())),
            Payload::Notify(NotifyRepr::new(NotifyType::InvalidSyntax, Vec::new())),
        ];
        send_raw(&mut init, Asked::Liveness, &others, &mut rng);
        let request = init.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        let answer = resp.poll_transmit().unwrap();
        assert!(response_payloads(&init, &answer).is_empty());
        assert!(events(&mut resp).is_empty());
        init.handle(now, &answer, &mut rng);
        assert!(matches!(&events(&mut init)[..], [Event::PeerAlive]));
        // Two private use notifications around a child SA's delete: both raised, in
        // order, and the delete answered as usual.
        let (ci, co) = {
            let State::Established(e) = &init.state else { panic!() };
            (e.children[0].spi_in, e.children[0].spi_out)
        };
        let payloads = [
            Payload::Notify(NotifyRepr::new(NotifyType::from(50000), b"a".to_vec())),
            Payload::Delete(DeleteRepr { protocol: ProtocolId::Esp, spis: vec![ci.to_be_bytes()] }),
            Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, Vec::new())),
            Payload::Notify(NotifyRepr::new(NotifyType::from(50001), b"b".to_vec())),
        ];
        send_raw(&mut init, Asked::DeleteChild(ci, co), &payloads, &mut rng);
        let request = init.poll_transmit().unwrap();
        resp.handle(now, &request, &mut rng);
        let answer = resp.poll_transmit().unwrap();
        assert!(matches!(&response_payloads(&init, &answer)[..],
            [Payload::Delete(d)] if d.protocol == ProtocolId::Esp && d.spis == [co.to_be_bytes()]));
        let re = events(&mut resp);
        assert!(
            matches!(&re[..], [Event::PeerNotify { kind: 50000, .. }, Event::ChildDown { spi_in, .. }, Event::PeerNotify { kind: 50001, .. }] if *spi_in == co),
            "{re:?}"
        );
        assert_eq!(peer_notifies(&re), [(50000, b"a".to_vec()), (50001, b"b".to_vec())]);
        resp.handle(now, &request, &mut rng);
        assert_eq!(resp.poll_transmit().unwrap(), answer);
        assert!(events(&mut resp).is_empty(), "a retransmission raises nothing again");
        init.handle(now, &answer, &mut rng);
        let ie = events(&mut init);
        assert!(matches!(&ie[..], [Event::ChildDown { spi_in, .. }] if *spi_in == ci), "{ie:?}");
    }

    /// Whether `payloads` hold an `INITIAL_CONTACT` notification, checked to be bare.
    fn has_initial_contact(payloads: &[Payload]) -> bool {
        let found: Vec<_> = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) if u16::from(n.kind) == 16384 => Some(n),
                _ => None,
            })
            .collect();
        assert!(found.len() <= 1, "one at most: {payloads:?}");
        found.iter().all(|n| n.protocol.is_none() && n.spi.is_empty() && n.data.is_empty())
            && !found.is_empty()
    }

    /// Completes the handshake that `init`'s accepted `IKE_SA_INIT` request `first`
    /// starts: the responder, and the payloads of the initiator's `IKE_AUTH` request as
    /// they went on the wire. `late` is called on both once that request is sent.
    fn complete(
        init: &mut IkeSa,
        first: &[u8],
        r_cfg: Arc<Config>,
        rng: &mut TestRng,
        late: impl FnOnce(&mut IkeSa, &mut IkeSa),
    ) -> (IkeSa, Vec<Payload>) {
        let now = Instant::now();
        let (r, refusal) = IkeSa::respond(r_cfg, first, rng);
        assert!(refusal.is_none());
        let mut resp = r.expect("accepted");
        init.handle(now, &resp.poll_transmit().unwrap(), rng);
        let request = init.poll_transmit().expect("the IKE_AUTH request");
        let State::InitAnswered { keys, .. } = &resp.state else { panic!("not answered") };
        let opened = open(&keys.sk(true), &request).unwrap();
        assert_eq!(opened.header.exchange_type, ExchangeType::IkeAuth);
        late(init, &mut resp);
        assert!(!resp.initial_contact(), "nothing received yet");
        resp.handle(now, &request, rng);
        init.handle(now, &resp.poll_transmit().unwrap(), rng);
        assert!(init.is_established() && resp.is_established());
        for sa in [&mut *init, &mut resp] {
            assert!(matches!(&events(sa)[..], [Event::IkeUp { .. }, Event::ChildUp(_)]));
        }
        (resp, opened.payloads)
    }

    #[test]
    fn initial_contact_is_sent_before_auth_and_both_sides_report_it() {
        let mut rng = TestRng::new(80);
        let now = Instant::now();
        for set in [true, false] {
            let (i_cfg, r_cfg) = pair_configs(1);
            let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
            if set {
                init.set_initial_contact();
                init.set_initial_contact(); // twice is once
            }
            assert!(!init.initial_contact(), "not sent yet");
            let first = init.poll_transmit().unwrap();
            let sa_init = Message::parse(&first).unwrap();
            assert!(!has_initial_contact(&sa_init.payloads), "not in IKE_SA_INIT");
            let (resp, payloads) = complete(&mut init, &first, r_cfg, &mut rng, |_, _| {});
            assert_eq!(has_initial_contact(&payloads), set);
            assert_eq!((init.initial_contact(), resp.initial_contact()), (set, set));
            // Where it goes: after IDi and CERT, before AUTH and the child SA's payloads.
            let kinds: Vec<PayloadType> = payloads.iter().map(Payload::kind).collect();
            let mut expected = vec![PayloadType::IdInitiator, PayloadType::Certificate];
            if set {
                expected.push(PayloadType::Notify);
            }
            expected.extend([
                PayloadType::Authentication,
                PayloadType::Notify,
                PayloadType::SecurityAssociation,
                PayloadType::TrafficSelectorInitiator,
                PayloadType::TrafficSelectorResponder,
            ]);
            assert_eq!(kinds, expected);
        }
    }

    #[test]
    fn initial_contact_set_too_late_or_on_a_responder_changes_nothing() {
        let mut rng = TestRng::new(81);
        let now = Instant::now();
        // On the responder, before the IKE_AUTH request arrives; on the initiator, once
        // its IKE_AUTH request is out.
        let (i_cfg, r_cfg) = pair_configs(1);
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        let first = init.poll_transmit().unwrap();
        let (mut resp, payloads) = complete(&mut init, &first, r_cfg, &mut rng, |i, r| {
            i.set_initial_contact();
            r.set_initial_contact();
        });
        assert!(!has_initial_contact(&payloads));
        assert!(!init.initial_contact() && !resp.initial_contact());
        // Established: nothing is sent, nothing changes.
        init.set_initial_contact();
        resp.set_initial_contact();
        assert!(init.poll_transmit().is_none() && resp.poll_transmit().is_none());
        assert!(!init.initial_contact() && !resp.initial_contact());
        // Dead.
        assert!(init.delete(now, &mut rng));
        shuttle(&mut init, &mut resp, now, &mut rng);
        init.set_initial_contact();
        assert!(init.is_closed() && !init.initial_contact());
    }

    #[test]
    fn initial_contact_survives_an_invalid_ke_payload_retry_and_a_cookie() {
        use crate::cookie::{Cookies, Gate};
        let mut rng = TestRng::new(82);
        let now = Instant::now();
        // INVALID_KE_PAYLOAD: the responder wants the initiator's second group.
        let (alice, bob) = (side(false, 1), side(false, 2));
        let i_policy =
            Policy { groups: vec![Group::Curve25519, Group::Ecp256], ..Policy::default() };
        let r_policy = Policy { groups: vec![Group::Ecp256], ..Policy::default() };
        let i_cfg = config(&alice, "a.mesh", &bob, "b.mesh", i_policy, ("10.0.0.1", "10.0.0.2"));
        let r_cfg = config(&bob, "b.mesh", &alice, "a.mesh", r_policy, ("10.0.0.2", "10.0.0.1"));
        let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
        init.set_initial_contact();
        let first = init.poll_transmit().unwrap();
        let (none, refusal) = IkeSa::respond(r_cfg.clone(), &first, &mut rng);
        assert!(none.is_none());
        let refusal = refusal.expect("INVALID_KE_PAYLOAD");
        assert!(matches!(&Message::parse(&refusal).unwrap().payloads[..],
            [Payload::Notify(n)] if n.kind == NotifyType::InvalidKePayload));
        init.handle(now, &refusal, &mut rng);
        let second = init.poll_transmit().expect("IKE_SA_INIT again");
        let (resp, payloads) = complete(&mut init, &second, r_cfg, &mut rng, |_, _| {});
        assert_eq!(init.algorithms().unwrap().group, Group::Ecp256);
        assert!(has_initial_contact(&payloads));
        assert!(init.initial_contact() && resp.initial_contact());
        // A COOKIE challenge; set between the challenge and the answer to it, too.
        let (i_cfg, r_cfg) = pair_configs(1);
        let cookies = Cookies::new(&mut rng);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for set_after_challenge in [false, true] {
            let mut init = IkeSa::initiate(i_cfg.clone(), now, &mut rng);
            if !set_after_challenge {
                init.set_initial_contact();
            }
            let first = init.poll_transmit().unwrap();
            let Gate::Challenge(challenge) = cookies.gate(&first, peer, true) else {
                panic!("no challenge")
            };
            init.handle(now, &challenge, &mut rng);
            if set_after_challenge {
                init.set_initial_contact();
            }
            let second = init.poll_transmit().expect("IKE_SA_INIT with the cookie");
            assert_eq!(cookies.gate(&second, peer, true), Gate::Pass);
            let (resp, payloads) = complete(&mut init, &second, r_cfg.clone(), &mut rng, |_, _| {});
            assert!(has_initial_contact(&payloads));
            assert!(init.initial_contact() && resp.initial_contact());
        }
    }

    #[test]
    fn initial_contact_outlives_an_ike_sa_rekey() {
        let mut rng = TestRng::new(83);
        let now = Instant::now();
        for set in [true, false] {
            let (i_cfg, r_cfg) = pair_configs(1);
            let mut init = IkeSa::initiate(i_cfg, now, &mut rng);
            if set {
                init.set_initial_contact();
            }
            let first = init.poll_transmit().unwrap();
            let (mut resp, _) = complete(&mut init, &first, r_cfg, &mut rng, |_, _| {});
            for rekeyer_is_initiator in [true, false] {
                let before = init.spis();
                let (x, y) = if rekeyer_is_initiator {
                    (&mut init, &mut resp)
                } else {
                    (&mut resp, &mut init)
                };
                assert!(x.rekey_ike(now, &mut rng));
                shuttle(x, y, now, &mut rng);
                assert_ne!(init.spis(), before, "rekeyed");
                assert!(matches!(&events(&mut init)[..], [Event::IkeRekeyed { .. }]));
                assert!(matches!(&events(&mut resp)[..], [Event::IkeRekeyed { .. }]));
                assert_eq!((init.initial_contact(), resp.initial_contact()), (set, set));
            }
        }
    }
}
