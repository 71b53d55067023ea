//! Stateless cookies for a responder under load (RFC 7296 section 2.6).
//!
//! When too many IKE SAs are half open, the daemon puts [`Cookies::gate`] in front of
//! [`crate::sa::IkeSa::respond`]: a request without a valid cookie is answered with
//! `N(COOKIE)` and no state is created, so spoofed sources cost nothing but one reply.
//!
//! ```text
//! Cookie = VersionIDofSecret (4 bytes) | prf(secret, Ni | IPi | SPIi) (32 bytes)
//! ```
//! The secret is rotated now and then ([`Cookies::rotate`]); cookies made with the
//! previous secret are still accepted, so a rotation never strands an initiator.

use crate::crypto::{Prf, Random, Secret};
use crate::exchange::ike_sa_init;
use crate::wire::{
    Message, Payload,
    notify::{NotifyRepr, NotifyType},
};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// The cookie secrets: current and previous.
pub struct Cookies {
    version: u32,
    current: Secret,
    previous: Option<(u32, Secret)>,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies").field("version", &self.version).finish_non_exhaustive()
    }
}

/// What to do with an `IKE_SA_INIT` request.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go on: create the SA.
    Pass,
    /// Answer with this datagram (`N(COOKIE)`) and keep nothing.
    Challenge(Vec<u8>),
    /// Drop it: not an `IKE_SA_INIT` request.
    Drop,
}

impl Cookies {
    /// Fresh secrets.
    pub fn new(rng: &mut dyn Random) -> Self {
        let mut current = Secret::new(vec![0; 32]);
        rng.fill(&mut current);
        Self { version: 1, current, previous: None }
    }

    /// Makes a new secret current; the old one stays valid until the next rotation.
    pub fn rotate(&mut self, rng: &mut dyn Random) {
        let mut next = Secret::new(vec![0; 32]);
        rng.fill(&mut next);
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((self.version, old));
        self.version = self.version.wrapping_add(1);
    }

    fn make(version: u32, secret: &[u8], ni: &[u8], peer: IpAddr, spi_i: u64) -> Vec<u8> {
        let addr = match peer {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mac = Prf::HmacSha256.prf(secret, &[ni, &addr, &spi_i.to_be_bytes()]);
        [&version.to_be_bytes()[..], &mac].concat()
    }

    /// Checks a request from `peer`. With `required` false everything passes (the
    /// responder is not under load); with `required` true the request must begin with a
    /// cookie we made for this initiator's nonce, address and SPI.
    pub fn gate(&self, datagram: &[u8], peer: IpAddr, required: bool) -> Gate {
        if !required {
            return Gate::Pass;
        }
        let Ok(msg) = Message::parse(datagram) else { return Gate::Drop };
        let h = &msg.header;
        if h.exchange_type != crate::wire::ExchangeType::IkeSaInit
            || h.flags.response
            || h.message_id != 0
        {
            return Gate::Drop;
        }
        let Some(ni) = msg
            .payloads
            .iter()
            .find_map(|p| if let Payload::Nonce(n) = p { Some(&n.0) } else { None })
        else {
            return Gate::Drop;
        };
        if let Some(Payload::Notify(n)) = msg.payloads.first()
            && n.kind == NotifyType::Cookie
            && n.data.len() == 36
        {
            let version = u32::from_be_bytes([n.data[0], n.data[1], n.data[2], n.data[3]]);
            let secret = if version == self.version {
                Some(&self.current)
            } else {
                self.previous.as_ref().filter(|(v, _)| *v == version).map(|(_, s)| s)
            };
            if let Some(secret) = secret
                && bool::from(Self::make(version, secret, ni, peer, h.spi_i).ct_eq(&n.data))
            {
                return Gate::Pass;
            }
        }
        let cookie = Self::make(self.version, &self.current, ni, peer, h.spi_i);
        Gate::Challenge(ike_sa_init::notification(
            h.spi_i,
            NotifyRepr::new(NotifyType::Cookie, cookie),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::dh::{Group, KeyPair};
    use crate::crypto::tests::TestRng;
    use crate::proposal::{Policy, ike_proposals};

    fn request(rng: &mut TestRng, cookie: Option<&[u8]>) -> Vec<u8> {
        let p = Policy::default();
        let kp = KeyPair::generate(Group::Curve25519, rng);
        let offer = ike_proposals(&p.ciphers, &p.prfs, &p.groups, &[]);
        ike_sa_init::request(0x1111, &offer, &kp, &[7; 32], cookie)
    }

    fn cookie_of(gate: Gate) -> Vec<u8> {
        let Gate::Challenge(bytes) = gate else { panic!("expected a challenge") };
        match &Message::parse(&bytes).unwrap().payloads[0] {
            Payload::Notify(n) if n.kind == NotifyType::Cookie => n.data.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cookies_bind_the_address_and_survive_one_rotation() {
        let mut rng = TestRng::new(1);
        let mut cookies = Cookies::new(&mut rng);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let plain = request(&mut rng, None);
        assert_eq!(cookies.gate(&plain, a, false), Gate::Pass, "not under load");
        let cookie = cookie_of(cookies.gate(&plain, a, true));
        assert_eq!(cookie.len(), 36);
        let with = request(&mut rng, Some(&cookie));
        assert_eq!(cookies.gate(&with, a, true), Gate::Pass);
        assert!(matches!(cookies.gate(&with, b, true), Gate::Challenge(_)), "another address");
        let mut forged = cookie.clone();
        forged[10] ^= 1;
        assert!(matches!(
            cookies.gate(&request(&mut rng, Some(&forged)), a, true),
            Gate::Challenge(_)
        ));
        cookies.rotate(&mut rng);
        assert_eq!(cookies.gate(&with, a, true), Gate::Pass, "the previous secret still counts");
        cookies.rotate(&mut rng);
        assert!(matches!(cookies.gate(&with, a, true), Gate::Challenge(_)), "two rotations ago");
        assert_eq!(cookies.gate(b"not ike", a, true), Gate::Drop);
        assert!(!format!("{cookies:?}").contains("current"));
    }
}
