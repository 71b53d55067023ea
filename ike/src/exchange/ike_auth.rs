//! `IKE_AUTH` (RFC 7296 section 1.2): identities, certificates and signatures, and the
//! first child SA, all inside the SK payload.
//!
//! ```text
//! Initiator                                       Responder
//! HDR, SK {IDi, CERT, [N(INITIAL_CONTACT),] AUTH, N(USE_TRANSPORT_MODE), SAi2, TSi, TSr}  -->
//!                        <--  HDR, SK {IDr, CERT, AUTH, N(USE_TRANSPORT_MODE), SAr2, TSi, TSr}
//!                        <--  HDR, SK {N(AUTHENTICATION_FAILED)}
//! ```
//!
//! `INITIAL_CONTACT` (section 3.10.1) goes where strongSwan puts it, after our
//! certificates and before AUTH ([`add_initial_contact`]); the responder reports whether
//! the request had it ([`Accepted::initial_contact`]).
//!
//! A mesh protects host-to-host traffic, so each side proposes the two hosts' addresses
//! as selectors; the responder accepts when the proposed selectors include those hosts
//! and answers with exactly them (narrowing, section 2.9).
//!
//! AUTH (RFC 7427 section 4): a side that received `SIGNATURE_HASH_ALGORITHMS` in the
//! peer's `IKE_SA_INIT` message signs with method 14, with a hash the peer announced;
//! otherwise with the classic method of its key, 9 (ECDSA P-256, RFC 4754) or 1 (RSA,
//! PKCS#1 v1.5 with SHA-1). An Ed25519 key has no classic method: such a peer cannot be
//! authenticated to. Methods 1, 9 and 14 are accepted from the peer, each only with a
//! key of its type and an algorithm in [`Config::signature_algorithms`].

use crate::config::{ChildSa, Config};
use crate::crypto::Prf;
use crate::crypto::auth::{
    SigAlg, Signer, Verifier, auth_data, signed_octets, verify_auth_data, verify_signature,
};
use crate::error::{AuthFailure, Error};
use crate::exchange::child::{self, derive_child, has_notify, offered_spi};
use crate::proposal::esp_proposal;
use crate::wire::{
    Message, Payload,
    auth::{AuthMethod, AuthRepr},
    cert::{CertRepr, X509_SIGNATURE},
    id::IdRepr,
    notify::{NotifyRepr, NotifyType},
    ts::TsRepr,
};

/// What both sides need to compute and check AUTH payloads.
pub struct AuthContext<'a> {
    /// The negotiated PRF.
    pub prf: Prf,
    /// Our `SK_p` (`SK_pi` for the initiator).
    pub sk_p_own: &'a [u8],
    /// The peer's `SK_p`.
    pub sk_p_peer: &'a [u8],
    /// Our `IKE_SA_INIT` message as sent.
    pub own_first: &'a [u8],
    /// The peer's `IKE_SA_INIT` message as received.
    pub peer_first: &'a [u8],
    /// Our nonce.
    pub own_nonce: &'a [u8],
    /// The peer's nonce.
    pub peer_nonce: &'a [u8],
}

fn id_body(id: &IdRepr) -> Vec<u8> {
    let mut out = vec![0u8; id.buffer_len()];
    id.emit(&mut crate::wire::Writer::new(&mut out));
    out
}

/// The hash algorithms of the `SIGNATURE_HASH_ALGORITHMS` notification in an
/// `IKE_SA_INIT` message (RFC 7427 section 4), `None` if it has none.
fn hash_algorithms(init_message: &[u8]) -> Option<Vec<u16>> {
    let message = Message::parse(init_message).ok()?;
    message.payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == NotifyType::SignatureHashAlgorithms => {
            Some(n.data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect())
        }
        _ => None,
    })
}

/// A hash of RFC 7427 section 7 by name.
fn hash_name(hash: u16) -> String {
    match hash {
        1 => "SHA-1".into(),
        2 => "SHA2-256".into(),
        3 => "SHA2-384".into(),
        4 => "SHA2-512".into(),
        5 => "Identity".into(),
        other => format!("hash {other}"),
    }
}

/// The signature a classic AUTH method carries (RFC 7296 section 3.8, RFC 4754).
fn classic_algorithm(method: AuthMethod) -> Option<SigAlg> {
    match method {
        AuthMethod::RsaSignature => Some(SigAlg::RsaPkcs1Sha1),
        AuthMethod::EcdsaP256 => Some(SigAlg::EcdsaP256Sha256Fixed),
        _ => None,
    }
}

/// How we sign for a peer whose `IKE_SA_INIT` message is `peer_first`: method 14 with
/// our key's algorithm if the peer announced RFC 7427 and that algorithm's hash, the
/// classic method of our key if it announced nothing; a one-line reason otherwise.
fn our_method(signer: &dyn Signer, peer_first: &[u8]) -> Result<(AuthMethod, SigAlg), String> {
    if let Some(hashes) = hash_algorithms(peer_first) {
        let alg = signer.algorithm();
        if hashes.contains(&alg.hash_algorithm()) {
            return Ok((AuthMethod::DigitalSignature, alg));
        }
        let announced: Vec<String> = hashes.into_iter().map(hash_name).collect();
        return Err(format!(
            "the peer's SIGNATURE_HASH_ALGORITHMS [{}] lack {}, which our {alg:?} signatures need",
            announced.join(", "),
            hash_name(alg.hash_algorithm())
        ));
    }
    let key = signer.key_type();
    let alg = key.classic().ok_or_else(|| {
        format!(
            "the peer sent no SIGNATURE_HASH_ALGORITHMS (no RFC 7427 signatures), and an \
             {key:?} key has no classic AUTH method"
        )
    })?;
    let method = match alg {
        SigAlg::RsaPkcs1Sha1 => AuthMethod::RsaSignature,
        SigAlg::EcdsaP256Sha256Fixed => AuthMethod::EcdsaP256,
        other => return Err(format!("no classic AUTH method carries {other:?} signatures")),
    };
    Ok((method, alg))
}

/// Our AUTH payload for our identity `id` (its ID payload).
fn our_auth(signer: &dyn Signer, ctx: &AuthContext<'_>, id: &IdRepr) -> Result<AuthRepr, String> {
    let (method, alg) = our_method(signer, ctx.peer_first)?;
    let octets = signed_octets(ctx.own_first, ctx.peer_nonce, ctx.prf, ctx.sk_p_own, &id_body(id));
    let data = if method == AuthMethod::DigitalSignature {
        auth_data(signer, &octets)
    } else {
        signer.sign_with(alg, &octets)
    };
    let data = data.map_err(|e| format!("cannot sign our AUTH payload: {e}"))?;
    Ok(AuthRepr { method, data })
}

/// Checks the peer's AUTH payload for its identity `id` with its key; the algorithm.
fn check_auth(
    verifier: &dyn Verifier,
    accepted: &[SigAlg],
    ctx: &AuthContext<'_>,
    id: &IdRepr,
    auth: &AuthRepr,
) -> Result<SigAlg, String> {
    let octets = signed_octets(ctx.peer_first, ctx.own_nonce, ctx.prf, ctx.sk_p_peer, &id_body(id));
    let checked = match (auth.method, classic_algorithm(auth.method)) {
        (AuthMethod::DigitalSignature, _) => {
            verify_auth_data(verifier, accepted, &auth.data, &octets)
        }
        (_, Some(alg)) => {
            verify_signature(verifier, accepted, alg, &auth.data, &octets).map(|()| alg)
        }
        (method, None) => return Err(unaccepted(method)),
    };
    checked.map_err(|e| format!("AUTH method {:?}: {e}", auth.method))
}

fn unaccepted(method: AuthMethod) -> String {
    format!(
        "AUTH method {method:?} is not accepted (only RSA (1), ECDSA P-256 (9) and RFC 7427 \
         signatures (14))"
    )
}

/// Our identity (IDi or IDr), certificates and AUTH payload.
fn credentials(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    initiator: bool,
) -> Result<Vec<Payload>, Error> {
    let auth = our_auth(cfg.signer.as_ref(), ctx, &cfg.local_id).map_err(AuthFailure::Ourselves)?;
    let mut out = identity(cfg, initiator);
    out.push(Payload::Auth(auth));
    Ok(out)
}

/// Our identity (IDi or IDr) and certificates.
fn identity(cfg: &Config, initiator: bool) -> Vec<Payload> {
    let id = cfg.local_id.clone();
    let mut out = vec![if initiator { Payload::IdI(id) } else { Payload::IdR(id) }];
    out.extend(
        cfg.certs
            .iter()
            .map(|c| Payload::Cert(CertRepr { encoding: X509_SIGNATURE, data: c.clone() })),
    );
    out
}

/// Checks the peer's identity, certificates and AUTH payload; the peer's identity.
fn check_peer(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    initiator: bool,
) -> Result<IdRepr, AuthFailure> {
    let id = payloads
        .iter()
        .find_map(|p| match p {
            Payload::IdI(id) if !initiator => Some(id),
            Payload::IdR(id) if initiator => Some(id),
            _ => None,
        })
        .ok_or(AuthFailure::Missing("identification"))?;
    let certs: Vec<Vec<u8>> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert(c) if c.encoding == X509_SIGNATURE => Some(c.data.clone()),
            _ => None,
        })
        .collect();
    let auth = payloads
        .iter()
        .find_map(|p| match p {
            Payload::Auth(a) => Some(a),
            _ => None,
        })
        .ok_or(AuthFailure::Missing("AUTH"))?;
    if auth.method != AuthMethod::DigitalSignature && classic_algorithm(auth.method).is_none() {
        return Err(AuthFailure::Signature(unaccepted(auth.method)));
    }
    let verifier = cfg
        .authenticator
        .authenticate(id, &certs)
        .map_err(|e| AuthFailure::Certificate(e.to_string()))?;
    check_auth(verifier.as_ref(), &cfg.signature_algorithms, ctx, id, auth)
        .map_err(AuthFailure::Signature)?;
    Ok(id.clone())
}

/// The initiator's request payloads; `child_spi` is our inbound ESP SPI. Fails
/// ([`AuthFailure::Ourselves`]) when we cannot authenticate ourselves to this peer (an
/// Ed25519 key and a peer without RFC 7427, or no common hash).
pub fn try_request(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    child_spi: [u8; 4],
) -> Result<Vec<Payload>, Error> {
    let mut out = credentials(cfg, ctx, true)?;
    out.extend(child_request(cfg, child_spi));
    Ok(out)
}

/// [`try_request`] for callers that cannot fail here: when we cannot authenticate
/// ourselves, the request goes without an AUTH payload, the responder refuses it, and
/// [`process_response`] gives our reason.
pub fn request(cfg: &Config, ctx: &AuthContext<'_>, child_spi: [u8; 4]) -> Vec<Payload> {
    try_request(cfg, ctx, child_spi).unwrap_or_else(|_| {
        let mut out = identity(cfg, true);
        out.extend(child_request(cfg, child_spi));
        out
    })
}

/// Adds an `INITIAL_CONTACT` notification (no protocol, no SPI, no data) to the
/// initiator's request payloads made by [`try_request`] or [`request`]: after the
/// identity and certificates, before AUTH, where strongSwan puts it (section 2.5: a
/// receiver must accept the payloads in any order; AUTH does not cover their order).
/// Without an AUTH payload, after the identity and certificates all the same.
pub fn add_initial_contact(request: &mut Vec<Payload>) {
    let at = request
        .iter()
        .position(|p| !matches!(p, Payload::IdI(_) | Payload::Cert(_)))
        .unwrap_or(request.len());
    request.insert(at, Payload::Notify(NotifyRepr::new(NotifyType::InitialContact, Vec::new())));
}

/// The child SA part of the request.
fn child_request(cfg: &Config, child_spi: [u8; 4]) -> Vec<Payload> {
    let policy = &cfg.policy;
    vec![
        Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())),
        Payload::Sa(esp_proposal(&policy.esp_gcm_key_bits, &policy.esp_esn, &[], child_spi)),
        Payload::TsI(TsRepr { selectors: vec![cfg.local_ts()] }),
        Payload::TsR(TsRepr { selectors: vec![cfg.remote_ts()] }),
    ]
}

/// A request the responder accepted.
#[derive(Debug)]
pub struct Accepted {
    /// The response's payloads.
    pub response: Vec<Payload>,
    /// The authenticated initiator.
    pub peer: IdRepr,
    /// The child SA, or why it was refused (the refusal is in `response`).
    pub child: Result<ChildSa, Error>,
    /// Whether the request carried `INITIAL_CONTACT` (section 3.10.1): the initiator
    /// says this is the only IKE SA between the two authenticated identities.
    pub initial_contact: bool,
}

/// The responder's handling of a request. A request refused as a whole is answered
/// with the error's notification ([`Error::notify_payload`]).
pub fn process_request(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    (sk_d, ni, nr): (&[u8], &[u8], &[u8]),
    child_spi: [u8; 4],
) -> Result<Accepted, Error> {
    let peer = check_peer(cfg, ctx, payloads, false)?;
    let mut out = credentials(cfg, ctx, false)?;
    // The IKE SA stands from here; a child that cannot be had is refused on its own.
    let sa = payloads.iter().find_map(|p| if let Payload::Sa(s) = p { Some(s) } else { None });
    let (local, remote) = (cfg.local_ts(), cfg.remote_ts());
    let child = match child::choose(cfg, payloads, sa, None, child_spi) {
        Ok((algs, chosen)) => {
            let peer_spi = sa.map(|sa| offered_spi(sa, &chosen).to_vec()).unwrap_or_default();
            let child = derive_child(
                cfg,
                (ctx.prf, sk_d, None),
                (ni, nr),
                algs,
                (child_spi, &peer_spi),
                false,
            );
            out.push(Payload::Notify(NotifyRepr::new(NotifyType::UseTransportMode, Vec::new())));
            out.push(Payload::Sa(chosen));
            out.push(Payload::TsI(TsRepr { selectors: vec![remote] }));
            out.push(Payload::TsR(TsRepr { selectors: vec![local] }));
            Ok(child)
        }
        Err(e) => {
            out.extend(e.refusal());
            Err(e)
        }
    };
    let initial_contact = has_notify(payloads, NotifyType::InitialContact);
    Ok(Accepted { response: out, peer, child, initial_contact })
}

/// The initiator's handling of the response: the peer's identity and the child SA (or
/// why the child was refused), or why the whole exchange failed.
pub fn process_response(
    cfg: &Config,
    ctx: &AuthContext<'_>,
    payloads: &[Payload],
    (sk_d, ni, nr): (&[u8], &[u8], &[u8]),
    child_spi: [u8; 4],
) -> Result<(IdRepr, Result<ChildSa, Error>), Error> {
    // Our request had no AUTH payload if we could not sign for this peer (`request`).
    our_method(cfg.signer.as_ref(), ctx.peer_first).map_err(AuthFailure::Ourselves)?;
    if has_notify(payloads, NotifyType::AuthenticationFailed) {
        return Err(AuthFailure::Refused.into());
    }
    let peer = check_peer(cfg, ctx, payloads, true)?;
    let child = (|| {
        if let Some(kind) = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
            _ => None,
        }) {
            return Err(Error::PeerRefused(kind));
        }
        // The answer's proposal carries the number of the one we offered.
        let offered =
            esp_proposal(&cfg.policy.esp_gcm_key_bits, &cfg.policy.esp_esn, &[], child_spi);
        let (algs, peer_spi) =
            child::check_answer(cfg, payloads, child_spi, None, offered.proposals[0].num)?;
        Ok(derive_child(cfg, (ctx.prf, sk_d, None), (ni, nr), algs, (child_spi, peer_spi), true))
    })();
    Ok((peer, child))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PeerAuthenticator, Retransmit};
    use crate::crypto::auth::tests::vectors::{
        ED25519_PKCS8, ED25519_SPKI, P256_PKCS8, P256_SPKI, RSA2048_PKCS8, RSA2048_SPKI,
    };
    use crate::crypto::auth::{KeyType, signer_from_pkcs8, verifier_from_spki};
    use crate::exchange::ike_sa_init::{self, HASH_ALGORITHMS};
    use crate::wire::{id::IdType, nonce::NonceRepr};
    use std::sync::Arc;

    /// An `IKE_SA_INIT` message, with `SIGNATURE_HASH_ALGORITHMS` if `hashes` is given.
    fn init(initiator: bool, hashes: Option<&[u8]>) -> Vec<u8> {
        let mut payloads = vec![Payload::Nonce(NonceRepr(vec![u8::from(initiator); 32]))];
        if let Some(h) = hashes {
            payloads.push(Payload::Notify(NotifyRepr::new(
                NotifyType::SignatureHashAlgorithms,
                h.to_vec(),
            )));
        }
        let spi_r = if initiator { 0 } else { 2 };
        Message { header: ike_sa_init::header(1, spi_r, initiator, !initiator), payloads }.emit()
    }

    /// The two `IKE_SA_INIT` messages of an exchange.
    struct Inits {
        request: Vec<u8>,
        response: Vec<u8>,
    }

    impl Inits {
        fn new(request_hashes: Option<&[u8]>, response_hashes: Option<&[u8]>) -> Self {
            Inits { request: init(true, request_hashes), response: init(false, response_hashes) }
        }

        /// One side's view of the exchange.
        fn ctx(&self, initiator: bool) -> AuthContext<'_> {
            const SK_PI: &[u8] = &[1; 32];
            const SK_PR: &[u8] = &[2; 32];
            const NI: &[u8] = &[3; 32];
            const NR: &[u8] = &[4; 32];
            let (own, peer) = if initiator {
                (&self.request, &self.response)
            } else {
                (&self.response, &self.request)
            };
            AuthContext {
                prf: Prf::HmacSha256,
                sk_p_own: if initiator { SK_PI } else { SK_PR },
                sk_p_peer: if initiator { SK_PR } else { SK_PI },
                own_first: own,
                peer_first: peer,
                own_nonce: if initiator { NI } else { NR },
                peer_nonce: if initiator { NR } else { NI },
            }
        }
    }

    fn fqdn(name: &str) -> IdRepr {
        IdRepr { id_type: IdType::Fqdn, data: name.as_bytes().to_vec() }
    }

    /// The three kinds of key, from OpenSSL's PKCS#8 and SPKI.
    fn keys() -> [(Arc<dyn Signer + Send + Sync>, &'static [u8]); 3] {
        [
            (signer_from_pkcs8(ED25519_PKCS8).unwrap(), ED25519_SPKI),
            (signer_from_pkcs8(P256_PKCS8).unwrap(), P256_SPKI),
            (signer_from_pkcs8(RSA2048_PKCS8).unwrap(), RSA2048_SPKI),
        ]
    }

    /// A verifier for another key of type `key`.
    fn other_key(key: KeyType) -> Box<dyn Verifier + Send + Sync> {
        use crate::crypto::auth::{
            EcdsaP256Signer, EcdsaP256Verifier, Ed25519Signer, Ed25519Verifier, RsaVerifier,
        };
        use aws_lc_rs::signature::KeyPair as _;
        match key {
            KeyType::Ed25519 => Box::new(
                Ed25519Verifier::from_bytes(&Ed25519Signer::from_seed(&[5; 32]).public_key())
                    .unwrap(),
            ),
            KeyType::EcdsaP256 => Box::new(
                EcdsaP256Verifier::from_sec1(
                    &EcdsaP256Signer::from_bytes(&[5; 32]).unwrap().public_key(),
                )
                .unwrap(),
            ),
            KeyType::Rsa => {
                let size = aws_lc_rs::rsa::KeySize::Rsa2048;
                let pair = aws_lc_rs::rsa::KeyPair::generate(size).unwrap();
                Box::new(RsaVerifier::from_pkcs1(pair.public_key().as_ref()).unwrap())
            }
        }
    }

    #[test]
    fn the_method_follows_the_peers_signature_hash_algorithms() {
        let announced = init(false, Some(&HASH_ALGORITHMS));
        let silent = init(false, None);
        let [(ed, _), (ec, _), (rsa, _)] = keys();
        for signer in [&ed, &ec, &rsa] {
            assert_eq!(
                our_method(signer.as_ref(), &announced),
                Ok((AuthMethod::DigitalSignature, signer.algorithm()))
            );
        }
        assert_eq!(
            our_method(ec.as_ref(), &silent),
            Ok((AuthMethod::EcdsaP256, SigAlg::EcdsaP256Sha256Fixed))
        );
        assert_eq!(
            our_method(rsa.as_ref(), &silent),
            Ok((AuthMethod::RsaSignature, SigAlg::RsaPkcs1Sha1))
        );
        assert_eq!(
            our_method(ed.as_ref(), &silent).unwrap_err(),
            "the peer sent no SIGNATURE_HASH_ALGORITHMS (no RFC 7427 signatures), and an \
             Ed25519 key has no classic AUTH method"
        );
        // Method 14 only with a hash the peer announced.
        let sha384 = init(false, Some(&[0, 3]));
        assert_eq!(
            our_method(ec.as_ref(), &sha384).unwrap_err(),
            "the peer's SIGNATURE_HASH_ALGORITHMS [SHA2-384] lack SHA2-256, which our \
             EcdsaP256Sha256 signatures need"
        );
        let no_identity = init(false, Some(&[0, 2]));
        assert!(our_method(ed.as_ref(), &no_identity).unwrap_err().contains("lack Identity"));
        assert!(our_method(ec.as_ref(), &no_identity).is_ok());
    }

    #[test]
    fn every_method_round_trips_both_ways() {
        let (alice, bob) = (fqdn("alice"), fqdn("bob"));
        for hashes in [Some(&HASH_ALGORITHMS[..]), None] {
            let inits = Inits::new(hashes, hashes);
            for (signer, spki) in keys() {
                let verifier = verifier_from_spki(spki).unwrap();
                let key = signer.key_type();
                let Ok(auth) = our_auth(signer.as_ref(), &inits.ctx(true), &alice) else {
                    assert!(hashes.is_none() && key == KeyType::Ed25519);
                    continue;
                };
                let expected = match (hashes, key) {
                    (Some(_), _) => (AuthMethod::DigitalSignature, signer.algorithm()),
                    (None, KeyType::EcdsaP256) => {
                        (AuthMethod::EcdsaP256, SigAlg::EcdsaP256Sha256Fixed)
                    }
                    (None, _) => (AuthMethod::RsaSignature, SigAlg::RsaPkcs1Sha1),
                };
                assert_eq!(auth.method, expected.0);
                let bob_ctx = inits.ctx(false);
                let check = |auth: &AuthRepr, id: &IdRepr| {
                    check_auth(verifier.as_ref(), &SigAlg::ALL, &bob_ctx, id, auth)
                };
                assert_eq!(check(&auth, &alice), Ok(expected.1));
                // The responder's AUTH, checked by the initiator.
                let answer = our_auth(signer.as_ref(), &bob_ctx, &bob).unwrap();
                assert_eq!(
                    check_auth(verifier.as_ref(), &SigAlg::ALL, &inits.ctx(true), &bob, &answer),
                    Ok(expected.1)
                );
                // Tampering, another identity, the other side's octets.
                let mut tampered = auth.clone();
                let last = tampered.data.len() - 1;
                tampered.data[last] ^= 1;
                assert!(check(&tampered, &alice).is_err(), "{expected:?}");
                assert!(check(&auth, &bob).unwrap_err().contains("does not verify"));
                assert!(check(&answer, &bob).unwrap_err().contains("does not verify"));
                // Another key of the same type does not verify it.
                let other = other_key(key);
                let why = check_auth(other.as_ref(), &SigAlg::ALL, &bob_ctx, &alice, &auth);
                assert!(why.unwrap_err().contains("does not verify"));
            }
        }
    }

    #[test]
    fn each_method_needs_its_kind_of_key_and_acceptance() {
        let inits = Inits::new(None, None);
        let (alice_ctx, bob_ctx) = (inits.ctx(true), inits.ctx(false));
        let alice = fqdn("alice");
        let [(_, edwards), (ec, nist), (rsa, rsa_spki)] = keys();
        let edwards_key = verifier_from_spki(edwards).unwrap();
        let nist_key = verifier_from_spki(nist).unwrap();
        let rsa_key = verifier_from_spki(rsa_spki).unwrap();
        let method_9 = our_auth(ec.as_ref(), &alice_ctx, &alice).unwrap();
        let method_1 = our_auth(rsa.as_ref(), &alice_ctx, &alice).unwrap();
        assert_eq!(
            (method_9.method, method_1.method),
            (AuthMethod::EcdsaP256, AuthMethod::RsaSignature)
        );
        let all = &SigAlg::ALL;
        for (auth, wrong) in
            [(&method_9, &rsa_key), (&method_9, &edwards_key), (&method_1, &nist_key)]
        {
            let why = check_auth(wrong.as_ref(), all, &bob_ctx, &alice, auth).unwrap_err();
            assert!(why.contains("cannot come from the peer's"), "{why}");
        }
        // Classic methods are accepted only when their algorithm is.
        let modern = &SigAlg::ALL[..4];
        for (auth, key) in [(&method_9, &nist_key), (&method_1, &rsa_key)] {
            assert!(check_auth(key.as_ref(), all, &bob_ctx, &alice, auth).is_ok());
            let why = check_auth(key.as_ref(), modern, &bob_ctx, &alice, auth).unwrap_err();
            assert!(why.ends_with("unsupported signature algorithm"), "{why}");
        }
        // A method-9 signature is not a method-1 or method-14 one, and other methods are
        // not accepted at all.
        let as_14 = AuthRepr { method: AuthMethod::DigitalSignature, ..method_9.clone() };
        assert!(check_auth(nist_key.as_ref(), all, &bob_ctx, &alice, &as_14).is_err());
        let shared_key = AuthRepr { method: AuthMethod::SharedKey, ..method_9.clone() };
        let why = check_auth(nist_key.as_ref(), all, &bob_ctx, &alice, &shared_key).unwrap_err();
        assert!(why.starts_with("AUTH method SharedKey is not accepted"), "{why}");
    }

    /// Test stand-in for the `ca` crate: the "certificate" is a `SubjectPublicKeyInfo`.
    struct SpkiCerts;

    impl PeerAuthenticator for SpkiCerts {
        fn authenticate(
            &self,
            _: &IdRepr,
            certs: &[Vec<u8>],
        ) -> Result<Box<dyn Verifier>, Box<dyn std::error::Error + Send + Sync>> {
            let verifier = verifier_from_spki(certs.first().ok_or("no certificate")?)?;
            Ok(verifier)
        }
    }

    fn config(pkcs8: &[u8], spki: &[u8], name: &str) -> Config {
        Config {
            policy: crate::proposal::Policy::default(),
            local_id: fqdn(name),
            certs: vec![spki.to_vec()],
            signer: signer_from_pkcs8(pkcs8).unwrap(),
            authenticator: Arc::new(SpkiCerts),
            signature_algorithms: SigAlg::ALL.to_vec(),
            retransmit: Retransmit::default(),
            local_addr: "192.0.2.1".parse().unwrap(),
            remote_addr: "192.0.2.2".parse().unwrap(),
        }
    }

    #[test]
    fn an_ed25519_key_fails_clearly_with_a_peer_without_rfc_7427() {
        let keys = ([0; 32].as_slice(), [0; 32].as_slice(), [0; 32].as_slice());
        let ed = config(ED25519_PKCS8, ED25519_SPKI, "ed");
        let ec = config(P256_PKCS8, P256_SPKI, "ec");
        let reason = "IKE_AUTH: cannot authenticate ourselves: the peer sent no \
                      SIGNATURE_HASH_ALGORITHMS (no RFC 7427 signatures), and an Ed25519 key \
                      has no classic AUTH method";
        // As initiator: the responder announced nothing.
        let inits = Inits::new(Some(&HASH_ALGORITHMS), None);
        let ctx = inits.ctx(true);
        assert!(matches!(
            try_request(&ed, &ctx, [0, 0, 0, 1]),
            Err(Error::Authentication(AuthFailure::Ourselves(why))) if why.contains("Ed25519 key")
        ));
        let request = request(&ed, &ctx, [0, 0, 0, 1]);
        assert!(!request.iter().any(|p| matches!(p, Payload::Auth(_))));
        // The responder (a P-256 key) refuses it; the initiator says why.
        let refused = process_request(&ec, &inits.ctx(false), &request, keys, [0, 0, 0, 2])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused, Error::Authentication(AuthFailure::Missing("AUTH")));
        assert_eq!(refused.to_string(), "IKE_AUTH: peer not authenticated: no AUTH payload");
        let why = process_response(&ed, &ctx, &refused.refusal(), keys, [0, 0, 0, 1]).unwrap_err();
        assert_eq!(why.to_string(), reason);
        // As responder: the initiator announced nothing; its method-9 AUTH is fine, ours
        // cannot be made.
        let inits = Inits::new(None, Some(&HASH_ALGORITHMS));
        let request = try_request(&ec, &inits.ctx(true), [0, 0, 0, 1]).unwrap();
        let refused = process_request(&ed, &inits.ctx(false), &request, keys, [0, 0, 0, 2])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused.to_string(), reason);
        assert!(matches!(
            &refused.refusal()[..],
            [Payload::Notify(n)] if n.kind == NotifyType::AuthenticationFailed
        ));
        // With RFC 7427 on both sides, both authenticate.
        let inits = Inits::new(Some(&HASH_ALGORITHMS), Some(&HASH_ALGORITHMS));
        let request = try_request(&ec, &inits.ctx(true), [0, 0, 0, 1]).unwrap();
        let accepted =
            process_request(&ed, &inits.ctx(false), &request, keys, [0, 0, 0, 2]).unwrap();
        assert_eq!(accepted.peer, fqdn("ec"));
        let (peer, _) =
            process_response(&ec, &inits.ctx(true), &accepted.response, keys, [0, 0, 0, 1])
                .unwrap();
        assert_eq!(peer, fqdn("ed"));
    }
}
