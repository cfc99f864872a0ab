//! Sealed transport: ChaCha20-Poly1305 with an explicit 64-bit counter nonce and replay window.
//!
//! A `Session` holds one direction's key each way, the next send counter and the receive
//! window. The nonce is 4 zero bytes followed by the little-endian counter (as WireGuard's);
//! keys are never reused across sessions because each comes from a fresh handshake, and a
//! session refuses to seal once `REJECT_AFTER_MESSAGES` is reached. Opening authenticates
//! first and only then records the counter, so forged packets change nothing.

use alloc::vec::Vec;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};

use crate::replay::ReplayWindow;
use crate::time::Instant;
use crate::wire::{self, TransportPacket, TAG_LEN};

/// A session refuses to seal more messages than this (well below 2^64 nonces).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);

/// Why sealing or opening failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// The send counter is used up: rekey.
    Exhausted,
    /// The counter was seen before or is older than the window.
    Replay,
    /// The tag does not verify (wrong key, tampering, truncation).
    Authentication,
}

/// Directional keys from a handshake.
#[derive(Clone)]
pub struct SessionKeys {
    /// Key for what we send.
    pub send: [u8; 32],
    /// Key for what we receive.
    pub recv: [u8; 32],
}

/// One established session with a peer.
pub struct Session {
    /// Our index: the peer addresses transport packets to it.
    pub local_index: u32,
    /// The peer's index, written into what we send.
    pub remote_index: u32,
    /// Whether we initiated the handshake.
    pub initiator: bool,
    /// When the handshake completed.
    pub created_at: Instant,
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    send_counter: u64,
    window: ReplayWindow,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

impl Session {
    /// A session from handshake output.
    pub fn new(keys: &SessionKeys, local_index: u32, remote_index: u32, initiator: bool, now: Instant) -> Session {
        assert!(keys.send != keys.recv, "directional keys must differ");
        Session {
            local_index,
            remote_index,
            initiator,
            created_at: now,
            send: ChaCha20Poly1305::new(Key::from_slice(&keys.send)),
            recv: ChaCha20Poly1305::new(Key::from_slice(&keys.recv)),
            send_counter: 0,
            window: ReplayWindow::new(),
        }
    }

    /// Messages sealed so far.
    pub fn sent_count(&self) -> u64 {
        self.send_counter
    }

    /// Seals `plaintext` into a complete transport datagram.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.seal_parts(&[], plaintext)
    }

    /// Seals `prefix` followed by `body` (one plaintext) into a complete transport datagram,
    /// copying each once into the datagram and encrypting it there.
    pub fn seal_parts(&mut self, prefix: &[u8], body: &[u8]) -> Result<Vec<u8>, SessionError> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        let plain_len = prefix.len() + body.len();
        let mut out = Vec::with_capacity(wire::TRANSPORT_HEADER_LEN + plain_len + TAG_LEN);
        wire::emit_transport_header(&mut out, self.remote_index, counter);
        out.extend_from_slice(prefix);
        out.extend_from_slice(body);
        let (header, plain) = out.split_at_mut(wire::TRANSPORT_HEADER_LEN);
        let tag = self
            .send
            .encrypt_in_place_detached(&nonce(counter), header, plain)
            .map_err(|_| SessionError::Exhausted)?;
        out.extend_from_slice(&tag);
        debug_assert_eq!(out.len(), wire::TRANSPORT_HEADER_LEN + plain_len + TAG_LEN);
        Ok(out)
    }

    /// Authenticates and decrypts a transport packet addressed to this session.
    pub fn open(&mut self, packet: &TransportPacket<'_>) -> Result<Vec<u8>, SessionError> {
        debug_assert_eq!(packet.receiver_index(), self.local_index);
        let counter = packet.counter();
        if !self.window.check(counter) {
            return Err(SessionError::Replay);
        }
        let sealed = packet.sealed();
        let split = sealed.len().checked_sub(TAG_LEN).ok_or(SessionError::Authentication)?;
        let (ciphertext, tag) = sealed.split_at(split);
        let mut plain = ciphertext.to_vec();
        self.recv
            .decrypt_in_place_detached(&nonce(counter), packet.header(), &mut plain, Tag::from_slice(tag))
            .map_err(|_| SessionError::Authentication)?;
        if !self.window.accept(counter) {
            return Err(SessionError::Replay);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn pair() -> (Session, Session) {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let now = Instant::ZERO;
        let a = Session::new(&SessionKeys { send: k1, recv: k2 }, 10, 20, true, now);
        let b = Session::new(&SessionKeys { send: k2, recv: k1 }, 20, 10, false, now);
        (a, b)
    }

    #[test]
    fn seal_open_roundtrip_replay_and_tamper() {
        let (mut a, mut b) = pair();
        let d1 = a.seal(b"hello overlay").unwrap();
        let d2 = a.seal(b"").unwrap();
        let p1 = TransportPacket::new_checked(&d1).unwrap();
        assert_eq!(p1.receiver_index(), 20);
        assert_eq!(b.open(&TransportPacket::new_checked(&d2).unwrap()).unwrap(), b"");
        assert_eq!(b.open(&p1).unwrap(), b"hello overlay");
        assert_eq!(b.open(&p1), Err(SessionError::Replay));
        for i in 0..d1.len() {
            let mut t = a.seal(b"hello overlay").unwrap();
            t[i] ^= 0x40;
            let Ok(p) = TransportPacket::new_checked(&t) else { continue };
            if p.receiver_index() != 20 {
                continue;
            }
            assert!(b.open(&p).is_err(), "flip at byte {i} must be rejected");
        }
        // the window was not moved by the forgeries: a fresh packet still opens
        let d3 = a.seal(b"x").unwrap();
        assert_eq!(b.open(&TransportPacket::new_checked(&d3).unwrap()).unwrap(), b"x");
        // reflecting our own packet back does not open (directional keys)
        let d4 = b.seal(b"y").unwrap();
        let mut reflected = d4.clone();
        reflected[4..8].copy_from_slice(&20u32.to_le_bytes());
        reflected[8..16].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(b.open(&TransportPacket::new_checked(&reflected).unwrap()), Err(SessionError::Authentication));
    }
}
