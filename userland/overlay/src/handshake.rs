//! The handshake: mutual authentication by ed25519 signatures over a transcript that contains
//! both ephemeral X25519 keys, and session keys from their Diffie-Hellman (SIGMA-style).
//!
//! ```text
//! I -> R  Init: sender_index_I, pk_I, E_I, timestamp, sig_I, mac1
//!         sig_I = Sign(sk_I, "gridos-overlay v1 init" | pk_R | Init[..80])
//! R -> I  Resp: sender_index_R, sender_index_I, pk_R, E_R, sig_R, mac1
//!         sig_R = Sign(sk_R, "gridos-overlay v1 resp" | H(Init) | Resp[..76])
//! keys    ck  = derive_key("gridos-overlay v1 session", DH(E_I, E_R) | H(Init) | Resp[..140])
//!         i2r = keyed_hash(ck, "initiator to responder"), r2i = keyed_hash(ck, "responder to initiator")
//! ```
//!
//! Each signature names the other party (sig_I covers pk_R, sig_R covers H(Init) which holds
//! pk_I), so neither side can be misled about whom it shares keys with, and both cover both
//! ephemerals (sig_R directly, sig_I through the key derivation that only R's answer to this
//! very E_I can match). Forward secrecy comes from the ephemeral-ephemeral DH alone: static
//! DH would add nothing that the signatures do not already prove. The responder learns that
//! the initiator holds the keys when the first transport packet opens (key confirmation), and
//! only then uses the session for sending.
//!
//! `mac1` = keyed_hash(derive_key("gridos-overlay v1 mac1", pk_receiver), message before mac1)
//! lets a node drop, before any signature check, every handshake message from someone who does
//! not even know its public key (as WireGuard's mac1). The timestamp must grow per initiator,
//! so a replayed Init is refused once a newer one was accepted. Policy (which keys may
//! initiate, rate limits, freshness against the clock) is the `node`'s business.
//!
//! End-to-end sessions (`e2e`) run the same handshake inside routed packets, where the
//! initiator knows only the destination's overlay address, not its key: their initiation
//! binds the responder's *address* instead (`mac1` keyed by the address under its own
//! context, sig_I over "gridos-overlay v1 e2e init" | address | Init[..80]), and the
//! initiator accepts a response only from a key that hashes to that address. The contexts
//! differ, so a link initiation can never pass for an end-to-end one or the reverse.
//!
//! Under load a responder answers an Init that lacks a valid `mac2` with a cookie reply
//! instead of checking its signature (WireGuard's cookie design, section 5.4.7 of its paper):
//!
//! ```text
//! cookie  = keyed_hash(secret_R, source IP)[..16]        secret_R rotates every 2 minutes
//! R -> I  CookieReply: receiver_index = sender_index_I, nonce 24,
//!         XChaCha20-Poly1305(key = derive_key("gridos-overlay v1 cookie", pk_R), nonce,
//!                            cookie, AAD = mac1 of the Init)
//! mac2    = keyed_hash(derive_key("gridos-overlay v1 mac2", cookie), Init[..160])[..16]
//! ```
//!
//! Only a host that receives at the source address learns its cookie, so spoofed floods
//! get no further than a MAC check and a 64-byte reply (smaller than the Init: no
//! amplification); the AAD binds the reply to the Init it answers, so a reply cannot be
//! forged without the Init or replayed onto another.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use ed25519_compact::x25519;

use crate::guard::COOKIE_LEN;

use crate::address::Address;
use crate::identity::{Identity, PublicKey};
use crate::session::SessionKeys;
use crate::wire::{self, CookieReplyRepr, InitRepr, RespRepr, COOKIE_NONCE_LEN, MAC_LEN};

const INIT_CONTEXT: &[u8] = b"gridos-overlay v1 init";
const E2E_INIT_CONTEXT: &[u8] = b"gridos-overlay v1 e2e init";
const RESP_CONTEXT: &[u8] = b"gridos-overlay v1 resp";

/// Why a handshake message was refused. The node answers none of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a well-formed message.
    Malformed,
    /// MAC1 does not match our public key.
    Mac,
    /// The signature does not verify.
    Signature,
    /// The response comes from another key than the one we contacted.
    UnexpectedKey,
    /// The response answers no handshake of ours.
    UnknownIndex,
    /// A low-order or invalid ephemeral key.
    BadEphemeral,
    /// A cookie reply that does not open under our initiation.
    Cookie,
}

/// Whom an initiation is for: a key (links) or an overlay address (end-to-end sessions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder {
    /// A peer whose key we know.
    Key(PublicKey),
    /// A destination known by its address only; the response must prove a key hashing to it.
    Address(Address),
}

impl Responder {
    fn mac1_key(&self) -> [u8; 32] {
        match self {
            Responder::Key(k) => blake3::derive_key("gridos-overlay v1 mac1", &k.0),
            Responder::Address(a) => blake3::derive_key("gridos-overlay v1 e2e mac1", &a.0),
        }
    }

    fn accepts(&self, key: &PublicKey) -> bool {
        match self {
            Responder::Key(k) => k == key,
            Responder::Address(a) => a.verify(key),
        }
    }
}

fn mac1(receiver: &PublicKey, message: &[u8]) -> [u8; MAC_LEN] {
    mac1_for(&Responder::Key(*receiver), message)
}

fn mac1_for(receiver: &Responder, message: &[u8]) -> [u8; MAC_LEN] {
    let key = receiver.mac1_key();
    let full = blake3::keyed_hash(&key, message);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
    out
}

/// The `mac1` an initiation to `receiver` must carry. Anyone who knows the receiver's
/// public key can compute it: it filters misdirected and random datagrams, it does not
/// authenticate (tests and fuzzers use it to reach the checks behind it).
pub fn init_mac1(receiver: &PublicKey, init: &[u8; wire::INIT_LEN]) -> [u8; MAC_LEN] {
    mac1(receiver, &init[..wire::INIT_MACED_LEN])
}

fn mac2(cookie: &[u8; COOKIE_LEN], message: &[u8]) -> [u8; MAC_LEN] {
    let key = blake3::derive_key("gridos-overlay v1 mac2", cookie);
    let full = blake3::keyed_hash(&key, message);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
    out
}

fn cookie_cipher(responder: &PublicKey) -> XChaCha20Poly1305 {
    let key = blake3::derive_key("gridos-overlay v1 cookie", &responder.0);
    XChaCha20Poly1305::new(Key::from_slice(&key))
}

/// True when the initiation's `mac2` was made with one of `cookies`.
pub fn check_mac2(init_bytes: &[u8], cookies: &[[u8; COOKIE_LEN]]) -> bool {
    let Ok(repr) = InitRepr::parse(init_bytes) else { return false };
    let Some(covered) = init_bytes.get(..wire::INIT_MAC2_OFFSET) else { return false };
    // Every candidate is computed, so timing does not say which secret matched.
    cookies.iter().fold(false, |ok, cookie| ok | macs_equal(&repr.mac2, &mac2(cookie, covered)))
}

/// The responder's cookie reply to `init`, sealed to the initiator.
pub fn cookie_reply(
    own: &PublicKey,
    init: &InitRepr,
    cookie: &[u8; COOKIE_LEN],
    nonce: [u8; COOKIE_NONCE_LEN],
) -> [u8; wire::COOKIE_REPLY_LEN] {
    let mut sealed = [0u8; 32];
    let mut body = *cookie;
    // Encryption of 16 bytes under a fresh nonce cannot fail; a zero tag (refused by every
    // initiator) stands in if it ever did, rather than a panic.
    let tag = cookie_cipher(own).encrypt_in_place_detached(XNonce::from_slice(&nonce), &init.mac1, &mut body).unwrap_or_default();
    sealed[..COOKIE_LEN].copy_from_slice(&body);
    sealed[COOKIE_LEN..].copy_from_slice(&tag);
    CookieReplyRepr { receiver_index: init.sender_index, nonce, sealed }.emit()
}

fn macs_equal(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    // Constant time: the difference is accumulated over every byte.
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bytes sig_I covers: a context naming the kind of handshake, the responder (key, or
/// address padded with zeros), the initiation before its signature.
fn signed_init_message(responder: &Responder, init: &[u8; wire::INIT_LEN]) -> [u8; 26 + 32 + wire::INIT_SIGNED_LEN] {
    let mut m = [0u8; 26 + 32 + wire::INIT_SIGNED_LEN];
    match responder {
        Responder::Key(k) => {
            m[..22].copy_from_slice(INIT_CONTEXT);
            m[26..58].copy_from_slice(&k.0);
        }
        Responder::Address(a) => {
            m[..26].copy_from_slice(E2E_INIT_CONTEXT);
            m[26..42].copy_from_slice(&a.0);
        }
    }
    m[58..].copy_from_slice(&init[..wire::INIT_SIGNED_LEN]);
    m
}

fn signed_resp_message(init_hash: &[u8; 32], resp: &[u8; wire::RESP_LEN]) -> [u8; 22 + 32 + wire::RESP_SIGNED_LEN] {
    let mut m = [0u8; 22 + 32 + wire::RESP_SIGNED_LEN];
    m[..22].copy_from_slice(RESP_CONTEXT);
    m[22..54].copy_from_slice(init_hash);
    m[54..].copy_from_slice(&resp[..wire::RESP_SIGNED_LEN]);
    m
}

const _: () = assert!(INIT_CONTEXT.len() == 22 && RESP_CONTEXT.len() == 22 && E2E_INIT_CONTEXT.len() == 26);

fn session_keys(dh: &[u8; 32], init_hash: &[u8; 32], resp: &[u8; wire::RESP_LEN], initiator: bool) -> SessionKeys {
    let mut material = [0u8; 64 + wire::RESP_MACED_LEN];
    material[..32].copy_from_slice(dh);
    material[32..64].copy_from_slice(init_hash);
    material[64..].copy_from_slice(&resp[..wire::RESP_MACED_LEN]);
    let ck = blake3::derive_key("gridos-overlay v1 session", &material);
    let i2r = *blake3::keyed_hash(&ck, b"initiator to responder").as_bytes();
    let r2i = *blake3::keyed_hash(&ck, b"responder to initiator").as_bytes();
    debug_assert_ne!(i2r, r2i);
    if initiator {
        SessionKeys { send: i2r, recv: r2i }
    } else {
        SessionKeys { send: r2i, recv: i2r }
    }
}

fn ephemeral(secret: [u8; 32]) -> (x25519::SecretKey, [u8; 32]) {
    let sk = x25519::SecretKey::new(secret);
    // Recovering the public key of a clamped scalar cannot fail; fall back to zeros (which
    // every peer rejects as low order) rather than panic.
    let pk = sk.recover_public_key().map(|pk| *pk).unwrap_or([0; 32]);
    (sk, pk)
}

fn dh(secret: &x25519::SecretKey, public: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
    // `dh` refuses an all-zero result, i.e. low-order points.
    let out = x25519::PublicKey::new(*public).dh(secret).map_err(|_| HandshakeError::BadEphemeral)?;
    Ok(*out)
}

/// An initiation in flight, waiting for its response.
pub struct Initiator {
    /// Whom we expect to answer.
    pub responder: Responder,
    /// Our index, echoed in the response.
    pub sender_index: u32,
    ephemeral_secret: x25519::SecretKey,
    init_hash: [u8; 32],
    mac1: [u8; MAC_LEN],
}

impl Initiator {
    /// Builds an initiation to `responder`. `ephemeral_seed` must be fresh randomness;
    /// `cookie`, when the responder sent one recently, fills `mac2`.
    pub fn start(
        identity: &Identity,
        responder: PublicKey,
        ephemeral_seed: [u8; 32],
        sender_index: u32,
        timestamp_us: u64,
        cookie: Option<&[u8; COOKIE_LEN]>,
    ) -> (Initiator, [u8; wire::INIT_LEN]) {
        Initiator::start_for(identity, Responder::Key(responder), ephemeral_seed, sender_index, timestamp_us, cookie)
    }

    /// Builds an end-to-end initiation to whoever holds the key of `destination`.
    pub fn start_e2e(
        identity: &Identity,
        destination: Address,
        ephemeral_seed: [u8; 32],
        sender_index: u32,
        timestamp_us: u64,
    ) -> (Initiator, [u8; wire::INIT_LEN]) {
        Initiator::start_for(identity, Responder::Address(destination), ephemeral_seed, sender_index, timestamp_us, None)
    }

    fn start_for(
        identity: &Identity,
        responder: Responder,
        ephemeral_seed: [u8; 32],
        sender_index: u32,
        timestamp_us: u64,
        cookie: Option<&[u8; COOKIE_LEN]>,
    ) -> (Initiator, [u8; wire::INIT_LEN]) {
        let (ephemeral_secret, ephemeral_public) = ephemeral(ephemeral_seed);
        let mut repr = InitRepr {
            sender_index,
            static_key: identity.public_key(),
            ephemeral: ephemeral_public,
            timestamp_us,
            signature: [0; 64],
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let unsigned = repr.emit();
        repr.signature = identity.sign(&signed_init_message(&responder, &unsigned));
        let unmaced = repr.emit();
        repr.mac1 = mac1_for(&responder, &unmaced[..wire::INIT_MACED_LEN]);
        if let Some(cookie) = cookie {
            let covered = repr.emit();
            repr.mac2 = mac2(cookie, &covered[..wire::INIT_MAC2_OFFSET]);
        }
        let bytes = repr.emit();
        let init_hash = *blake3::hash(&bytes).as_bytes();
        (Initiator { responder, sender_index, ephemeral_secret, init_hash, mac1: repr.mac1 }, bytes)
    }

    /// Opens a cookie reply to this initiation: returns the cookie for the next one.
    pub fn open_cookie(&self, reply: &[u8]) -> Result<[u8; COOKIE_LEN], HandshakeError> {
        let repr = CookieReplyRepr::parse(reply).map_err(|_| HandshakeError::Malformed)?;
        if repr.receiver_index != self.sender_index {
            return Err(HandshakeError::UnknownIndex);
        }
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&repr.sealed[..COOKIE_LEN]);
        let tag = Tag::from_slice(&repr.sealed[COOKIE_LEN..]);
        let Responder::Key(responder) = self.responder else { return Err(HandshakeError::Cookie) };
        cookie_cipher(&responder)
            .decrypt_in_place_detached(XNonce::from_slice(&repr.nonce), &self.mac1, &mut cookie, tag)
            .map_err(|_| HandshakeError::Cookie)?;
        Ok(cookie)
    }

    /// Checks a response and derives the session keys; returns them and the responder's index.
    pub fn finish(&self, own: &PublicKey, resp_bytes: &[u8]) -> Result<(SessionKeys, u32), HandshakeError> {
        let repr = RespRepr::parse(resp_bytes).map_err(|_| HandshakeError::Malformed)?;
        let mut resp = [0u8; wire::RESP_LEN];
        resp.copy_from_slice(resp_bytes.get(..wire::RESP_LEN).ok_or(HandshakeError::Malformed)?);
        if !macs_equal(&repr.mac1, &mac1(own, &resp[..wire::RESP_MACED_LEN])) {
            return Err(HandshakeError::Mac);
        }
        if repr.receiver_index != self.sender_index {
            return Err(HandshakeError::UnknownIndex);
        }
        if !self.responder.accepts(&repr.static_key) {
            return Err(HandshakeError::UnexpectedKey);
        }
        if !repr.static_key.verify(&signed_resp_message(&self.init_hash, &resp), &repr.signature) {
            return Err(HandshakeError::Signature);
        }
        let shared = dh(&self.ephemeral_secret, &repr.ephemeral)?;
        Ok((session_keys(&shared, &self.init_hash, &resp, true), repr.sender_index))
    }
}

/// Cheap first check of an initiation addressed to `own`: format and MAC1 (no signature yet).
pub fn check_init_mac(own: &PublicKey, init_bytes: &[u8]) -> Result<InitRepr, HandshakeError> {
    check_init_mac_for(&Responder::Key(*own), init_bytes)
}

/// Cheap first check of an end-to-end initiation addressed to our address `own`.
pub fn check_e2e_init_mac(own: &Address, init_bytes: &[u8]) -> Result<InitRepr, HandshakeError> {
    check_init_mac_for(&Responder::Address(*own), init_bytes)
}

fn check_init_mac_for(own: &Responder, init_bytes: &[u8]) -> Result<InitRepr, HandshakeError> {
    let repr = InitRepr::parse(init_bytes).map_err(|_| HandshakeError::Malformed)?;
    let maced = init_bytes.get(..wire::INIT_MACED_LEN).ok_or(HandshakeError::Malformed)?;
    if !macs_equal(&repr.mac1, &mac1_for(own, maced)) {
        return Err(HandshakeError::Mac);
    }
    Ok(repr)
}

/// Verifies the initiator's signature (expensive; call after policy and rate checks).
pub fn check_init_signature(own: &PublicKey, repr: &InitRepr) -> Result<(), HandshakeError> {
    check_init_signature_for(&Responder::Key(*own), repr)
}

/// Verifies an end-to-end initiator's signature over our address `own`.
pub fn check_e2e_init_signature(own: &Address, repr: &InitRepr) -> Result<(), HandshakeError> {
    check_init_signature_for(&Responder::Address(*own), repr)
}

fn check_init_signature_for(own: &Responder, repr: &InitRepr) -> Result<(), HandshakeError> {
    let bytes = repr.emit();
    if repr.static_key.verify(&signed_init_message(own, &bytes), &repr.signature) {
        Ok(())
    } else {
        Err(HandshakeError::Signature)
    }
}

/// Answers a checked initiation: returns the response and the responder's session keys.
pub fn respond(
    identity: &Identity,
    init: &InitRepr,
    ephemeral_seed: [u8; 32],
    sender_index: u32,
) -> Result<([u8; wire::RESP_LEN], SessionKeys), HandshakeError> {
    let (ephemeral_secret, ephemeral_public) = ephemeral(ephemeral_seed);
    let shared = dh(&ephemeral_secret, &init.ephemeral)?;
    let init_hash = *blake3::hash(&init.emit()).as_bytes();
    let mut repr = RespRepr {
        sender_index,
        receiver_index: init.sender_index,
        static_key: identity.public_key(),
        ephemeral: ephemeral_public,
        signature: [0; 64],
        mac1: [0; MAC_LEN],
    };
    repr.signature = identity.sign(&signed_resp_message(&init_hash, &repr.emit()));
    let unmaced = repr.emit();
    repr.mac1 = mac1(&init.static_key, &unmaced[..wire::RESP_MACED_LEN]);
    let resp = repr.emit();
    Ok((resp, session_keys(&shared, &init_hash, &resp, false)))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn both_sides_agree_on_crossed_keys() {
        let i = Identity::from_seed([1; 32]);
        let r = Identity::from_seed([2; 32]);
        let (state, init) = Initiator::start(&i, r.public_key(), [3; 32], 77, 1000, None);
        let repr = check_init_mac(&r.public_key(), &init).unwrap();
        check_init_signature(&r.public_key(), &repr).unwrap();
        let (resp, rkeys) = respond(&r, &repr, [4; 32], 88).unwrap();
        let (ikeys, remote) = state.finish(&i.public_key(), &resp).unwrap();
        assert_eq!(remote, 88);
        assert_eq!(ikeys.send, rkeys.recv);
        assert_eq!(ikeys.recv, rkeys.send);
    }

    #[test]
    fn cookie_reply_round_trip_and_binding() {
        let i = Identity::from_seed([1; 32]);
        let r = Identity::from_seed([2; 32]);
        let (state, init) = Initiator::start(&i, r.public_key(), [3; 32], 77, 1000, None);
        assert!(!check_mac2(&init, &[[7; COOKIE_LEN]]), "no cookie, no mac2");
        let repr = check_init_mac(&r.public_key(), &init).unwrap();
        let reply = cookie_reply(&r.public_key(), &repr, &[7; COOKIE_LEN], [9; 24]);
        let cookie = state.open_cookie(&reply).unwrap();
        assert_eq!(cookie, [7; COOKIE_LEN]);
        let (_, retry) = Initiator::start(&i, r.public_key(), [4; 32], 78, 1001, Some(&cookie));
        assert!(check_mac2(&retry, &[[1; COOKIE_LEN], [7; COOKIE_LEN]]));
        assert!(!check_mac2(&retry, &[[8; COOKIE_LEN]]));
        check_init_mac(&r.public_key(), &retry).unwrap();
        // Every flipped byte, a reply sealed by another key, or to another init is refused.
        for b in 4..reply.len() {
            let mut bad = reply;
            bad[b] ^= 1;
            assert!(state.open_cookie(&bad).is_err(), "flipped byte {b}");
        }
        let mallory = Identity::from_seed([9; 32]);
        assert_eq!(state.open_cookie(&cookie_reply(&mallory.public_key(), &repr, &[7; 16], [9; 24])), Err(HandshakeError::Cookie));
        let (other, _) = Initiator::start(&i, r.public_key(), [5; 32], 77, 1002, None);
        assert_eq!(other.open_cookie(&reply), Err(HandshakeError::Cookie));
    }

    #[test]
    fn end_to_end_handshake_binds_the_address_and_is_not_a_link_handshake() {
        let i = Identity::from_seed([1; 32]);
        let r = Identity::from_seed([2; 32]);
        let mallory = Identity::from_seed([9; 32]);
        let r_address = Address::from_public_key(&r.public_key());
        let (state, init) = Initiator::start_e2e(&i, r_address, [3; 32], 77, 1000);
        let repr = check_e2e_init_mac(&r_address, &init).unwrap();
        check_e2e_init_signature(&r_address, &repr).unwrap();
        // Not valid as a link initiation to r, and a link initiation is not valid end to end.
        assert_eq!(check_init_mac(&r.public_key(), &init).err(), Some(HandshakeError::Mac));
        let (_, link_init) = Initiator::start(&i, r.public_key(), [3; 32], 77, 1000, None);
        assert_eq!(check_e2e_init_mac(&r_address, &link_init).err(), Some(HandshakeError::Mac));
        // Only a key hashing to the address may answer.
        let (forged, _) = respond(&mallory, &repr, [4; 32], 88).unwrap();
        assert_eq!(state.finish(&i.public_key(), &forged).err(), Some(HandshakeError::UnexpectedKey));
        let (resp, rkeys) = respond(&r, &repr, [4; 32], 88).unwrap();
        let (ikeys, remote) = state.finish(&i.public_key(), &resp).unwrap();
        assert_eq!((remote, ikeys.send, ikeys.recv), (88, rkeys.recv, rkeys.send));
        // Another address's responder cannot check the signature as its own.
        let m_address = Address::from_public_key(&mallory.public_key());
        assert!(check_e2e_init_mac(&m_address, &init).is_err());
        assert_eq!(check_e2e_init_signature(&m_address, &repr), Err(HandshakeError::Signature));
    }

    #[test]
    fn forged_or_misdirected_messages_are_refused() {
        let i = Identity::from_seed([1; 32]);
        let r = Identity::from_seed([2; 32]);
        let mallory = Identity::from_seed([9; 32]);
        let (state, init) = Initiator::start(&i, r.public_key(), [3; 32], 77, 1000, None);
        // addressed to r: mallory's MAC check fails
        assert_eq!(check_init_mac(&mallory.public_key(), &init).err(), Some(HandshakeError::Mac));
        // mallory claims i's key but cannot sign: re-MACed so that only the signature fails
        let mut forged = InitRepr::parse(&init).unwrap();
        forged.ephemeral = [5; 32];
        let unmaced = forged.emit();
        forged.mac1 = mac1(&r.public_key(), &unmaced[..wire::INIT_MACED_LEN]);
        let forged_bytes = forged.emit();
        let repr = check_init_mac(&r.public_key(), &forged_bytes).unwrap();
        assert_eq!(check_init_signature(&r.public_key(), &repr), Err(HandshakeError::Signature));
        // mallory answers in r's place with her own key
        let repr = check_init_mac(&r.public_key(), &init).unwrap();
        let (resp, _) = respond(&mallory, &repr, [4; 32], 88).unwrap();
        assert_eq!(state.finish(&i.public_key(), &resp).err(), Some(HandshakeError::UnexpectedKey));
        // mallory replays r's key in the response but cannot sign for it
        let (mut good, _) = respond(&r, &repr, [4; 32], 88).unwrap();
        good[50] ^= 1; // ephemeral changed: signature no longer matches (re-MAC it)
        let mut resp_repr = RespRepr::parse(&good).unwrap();
        resp_repr.mac1 = mac1(&i.public_key(), &good[..wire::RESP_MACED_LEN]);
        assert_eq!(state.finish(&i.public_key(), &resp_repr.emit()).err(), Some(HandshakeError::Signature));
    }
}
