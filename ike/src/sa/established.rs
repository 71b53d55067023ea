//! The established IKE SA: sending our queued requests one at a time and handling
//! their answers, answering the peer's `INFORMATIONAL` and `CREATE_CHILD_SA` requests,
//! and switching to the IKE SA a rekey made.

use super::{
    Asked, Child, ChildCollision, ChildOffer, Error, Established, Event, ExchangeType, Failure,
    Group, IkeOffer, IkeSa, Inbound, Instant, Intent, Keys, MAX_TRIES, NONCE_LEN, NewIke,
    NotifyType, OpenError, Payload, Random, Request, Retired, Role, State, Then, collision,
    create_child_sa, header_for, informational, open_parsed, random_esp_spi, random_spi,
    rekeyed_ike_keys, retired_until, retry_wait, seal,
};

impl IkeSa {
    /// Sends the next queued request if none of ours is outstanding. Intents that no
    /// longer make sense (a child gone or already replaced) are dropped.
    pub(super) fn pump(&mut self, now: Instant, rng: &mut dyn Random, e: &mut Established) {
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
    pub(super) fn send_asked(
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

    /// We switched to an SA the peer's rekey made, and the peer may not have our answer
    /// yet: hold our requests until it shows it switched, or would have given up.
    pub(super) fn wait_for_peer(&self, now: Instant, e: &mut Established) {
        e.peer_behind = true;
        e.hold = Some(now + self.cfg.retransmit.total_wait());
    }

    /// The peer showed it uses the current SA: our held requests may go. Whether they
    /// were held for that.
    pub(super) fn peer_caught_up(e: &mut Established) -> bool {
        if !e.peer_behind {
            return false;
        }
        e.peer_behind = false;
        e.hold = None;
        true
    }

    /// The peer is busy with an exchange that collides with ours: ask again after a
    /// while, unless it has been busy too often in a row. Whether we will.
    pub(super) fn later(
        now: Instant,
        rng: &mut dyn Random,
        e: &mut Established,
        intent: Intent,
    ) -> bool {
        e.busy += 1;
        if e.busy > MAX_TRIES {
            e.busy = 0;
            return false;
        }
        e.queue.push_front(intent);
        e.hold = Some(now + retry_wait(rng));
        true
    }

    pub(super) fn child_offer(
        &self,
        rekey: Option<u32>,
        group: Option<Group>,
        rng: &mut dyn Random,
    ) -> ChildOffer {
        let pfs = group.or_else(|| self.cfg.policy.pfs_groups.first().copied());
        ChildOffer::new(random_esp_spi(rng), rekey, pfs, NONCE_LEN, rng)
    }

    pub(super) fn ike_offer(&self, current: Group, rng: &mut dyn Random) -> IkeOffer {
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
    pub(super) fn on_established(
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
    pub(super) fn on_current(
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
        let caught_up = Self::peer_caught_up(&mut e);
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
            return if caught_up {
                self.pumped(now, rng, State::Established(e))
            } else {
                State::Established(e)
            };
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
            Some(Then::Close) if e.ike_collision.is_some() => {
                // Both sides rekeyed this IKE SA (section 2.8.2) and the peer, whose SA
                // won, deleted this one before the answer to our rekey came: that answer
                // was lost or is late, and this SA is gone at the peer, so our rekey is
                // abandoned. The peer's SA takes over; the peer drops the one our
                // exchange made in time (`Retired::until`).
                self.pending = None;
                e.asked = None;
                if let Some(theirs) = e.ike_collision.take() {
                    self.switch_to(now, &mut e, theirs);
                    e.retired.pop();
                }
                self.pumped(now, rng, State::Established(e))
            }
            Some(Then::Close) => {
                self.pending = None;
                self.events.push_back(Event::Closed { error: Error::DeletedByPeer });
                State::Dead
            }
            Some(Then::Switch(new)) => {
                self.switch_to(now, &mut e, *new);
                self.wait_for_peer(now, &mut e);
                State::Established(e)
            }
            None if caught_up => self.pumped(now, rng, State::Established(e)),
            None => State::Established(e),
        }
    }

    pub(super) fn pumped(&mut self, now: Instant, rng: &mut dyn Random, state: State) -> State {
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
    pub(super) fn on_retired(
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
            // The peer deletes an old SA only once it uses the new one.
            if Self::peer_caught_up(est) && !ours {
                self.pump(now, rng, est);
            }
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
    pub(super) fn informational(
        &mut self,
        e: &mut Established,
        payloads: &[Payload],
    ) -> (Vec<Payload>, bool) {
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
    pub(super) fn create_child_sa(
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
                        self.events.push_back(Event::ChildRekeyed {
                            old_spi_in: old,
                            child: ans.child,
                            initiated: false,
                        });
                    }
                }
                (ans.response, None)
            }
        }
    }

    /// The answer to our request.
    pub(super) fn on_answer(
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

    pub(super) fn on_child_answer(
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
                self.events.push_back(Event::ChildRekeyed {
                    old_spi_in: old,
                    child,
                    initiated: true,
                });
                e.close_child(old);
                let nonces = (offer.ni.clone(), nr);
                collision::settle_child_rekey(e, (old, made), &nonces, collision);
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

    pub(super) fn on_ike_rekey_answer(
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
                self.settle_ike_rekey(now, e, ours, collision);
            }
            // Refused because the peer rekeyed at the same time: its SA takes over.
            Err(Failure::Temporary) if collision.is_some() => {
                if let Some(theirs) = collision {
                    self.switch_to(now, e, theirs);
                    self.wait_for_peer(now, e);
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

    /// Makes a new IKE SA the current one; the current one is retired until deleted.
    pub(super) fn switch_to(&mut self, now: Instant, e: &mut Established, new: NewIke) {
        let algorithms = new.keys.algorithms;
        let keys = std::mem::replace(&mut e.keys, new.keys);
        e.keep_retired(Retired {
            keys,
            spis: (self.spi_i, self.spi_r),
            role: self.role,
            own_next: e.own_next,
            peer_next: e.peer_next,
            until: retired_until(now, &self.cfg.retransmit),
        });
        (self.spi_i, self.spi_r) = new.spis;
        self.role = new.role;
        // Section 2.18: the new IKE SA's message IDs start at zero.
        e.own_next = 0;
        e.peer_next = 0;
        self.events.push_back(Event::IkeRekeyed { spis: new.spis, algorithms });
    }
}
