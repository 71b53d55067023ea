//! `IKE_SA_INIT` and `IKE_AUTH` as the IKE SA drives them, up to the established SA.

use super::{
    AuthContext, Error, Established, Event, ExchangeType, Group, HeaderRepr, IkeSa, Inbound,
    Instant, KeyPair, Keys, MAX_COOKIE_RETRIES, Message, Misbehavior, OpenError, Outcome, Payload,
    Random, Role, State, ike_auth, ike_proposals, ike_sa_init, open_parsed, random_esp_spi, seal,
};

impl IkeSa {
    pub(super) fn on_init_response(
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
    pub(super) fn open_for(
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

    pub(super) fn on_auth_request(
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

    pub(super) fn on_auth_response(&mut self, inbound: Inbound<'_>, state: State) -> State {
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
