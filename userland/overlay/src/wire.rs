//! Wire formats: buffer views with checked constructors and parsed representations.
//!
//! Every underlay datagram starts with a one-byte type and three reserved zero bytes; integers
//! are little-endian except routing TLV fields, which are network order like Babel's.
//!
//! ```text
//! HandshakeInit  (176 B): type=1 | rsv 3 | sender_index u32 | initiator ed25519 pk 32
//!                         | initiator ephemeral x25519 pk 32 | timestamp_us u64
//!                         | signature 64 | mac1 16 | mac2 16 (zeros without a cookie)
//! HandshakeResp  (156 B): type=2 | rsv 3 | sender_index u32 | receiver_index u32
//!                         | responder ed25519 pk 32 | responder ephemeral x25519 pk 32
//!                         | signature 64 | mac1 16
//! CookieReply     (64 B): type=3 | rsv 3 | receiver_index u32 | nonce 24
//!                         | XChaCha20-Poly1305(cookie 16) | tag 16     (AAD = the init's mac1)
//! Transport    (>= 32 B): type=4 | rsv 3 | receiver_index u32 | counter u64
//!                         | ChaCha20-Poly1305(ciphertext) | tag 16      (AAD = first 16 bytes)
//! ```
//!
//! Sealed plaintext is one byte of kind then a body:
//!
//! ```text
//! kind 0 keepalive: empty
//! kind 1 routing:   TLVs, each type u8 | length u8 | body
//!                   type 1 Update        body: address 16 | seqno u16 | metric u16
//!                                              | origin key 32 | chain anchor 32
//!                                              | origin signature 64 | chain element 32
//!                   type 2 SeqnoRequest  body: address 16 | seqno u16 | hop_count u8
//!                   unknown types are skipped by their length
//! kind 2 data:      destination 16 | source 16 | hop_limit u8 | end-to-end datagram
//! kind 3 direct:    IPv6 packet
//! ```
//!
//! The end-to-end datagram is an Init, Resp or Transport exactly as above, between the
//! source and the destination (`e2e`); relays forward it unread. Its Transport plaintext is
//! the IPv6 packet (empty: key confirmation). A direct packet goes from one end of a link
//! to the other (source and destination are the link's peers): the link session is then
//! the end-to-end session, and the packet is sealed once (`node`).
//!
//! The checked constructors only guarantee that the buffer is long enough for every accessor,
//! so accessors never panic; what the fields mean (signatures, indices) is checked by
//! `handshake` and `session`. Nothing here allocates except the `emit` helpers.

use alloc::vec::Vec;

use crate::address::Address;
use crate::identity::{PublicKey, SIGNATURE_LEN};
use crate::routing::{Message as RouteMessage, Origin};

/// Why a buffer is not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed part of its type.
    Truncated,
    /// Unknown message type or kind.
    UnknownType,
    /// A reserved field or a length is wrong.
    Malformed,
}

/// Outer datagram types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramType {
    /// First handshake message.
    HandshakeInit,
    /// Second handshake message.
    HandshakeResp,
    /// A responder under load asks for a retry with mac2.
    CookieReply,
    /// Sealed traffic.
    Transport,
}

impl DatagramType {
    /// The type byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            DatagramType::HandshakeInit => 1,
            DatagramType::HandshakeResp => 2,
            DatagramType::CookieReply => 3,
            DatagramType::Transport => 4,
        }
    }

    /// Classifies a datagram by its first byte (and checks the reserved bytes).
    pub fn of(buf: &[u8]) -> Result<DatagramType, WireError> {
        let head = buf.get(..4).ok_or(WireError::Truncated)?;
        if head[1..4] != [0, 0, 0] {
            return Err(WireError::Malformed);
        }
        match head[0] {
            1 => Ok(DatagramType::HandshakeInit),
            2 => Ok(DatagramType::HandshakeResp),
            3 => Ok(DatagramType::CookieReply),
            4 => Ok(DatagramType::Transport),
            _ => Err(WireError::UnknownType),
        }
    }
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    // Callers index only within lengths checked by `new_checked`; `get` keeps this panic-free anyway.
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

mod field {
    pub const INIT_SENDER: usize = 4;
    pub const INIT_STATIC: usize = 8;
    pub const INIT_EPHEMERAL: usize = 40;
    pub const INIT_TIMESTAMP: usize = 72;
    pub const INIT_SIGNATURE: usize = 80;
    pub const INIT_MAC1: usize = 144;
    pub const INIT_MAC2: usize = 160;
    pub const INIT_LEN: usize = 176;

    pub const RESP_SENDER: usize = 4;
    pub const RESP_RECEIVER: usize = 8;
    pub const RESP_STATIC: usize = 12;
    pub const RESP_EPHEMERAL: usize = 44;
    pub const RESP_SIGNATURE: usize = 76;
    pub const RESP_MAC1: usize = 140;
    pub const RESP_LEN: usize = 156;

    pub const COOKIE_RECEIVER: usize = 4;
    pub const COOKIE_NONCE: usize = 8;
    pub const COOKIE_SEALED: usize = 32;
    pub const COOKIE_LEN: usize = 64;

    pub const TRANSPORT_RECEIVER: usize = 4;
    pub const TRANSPORT_COUNTER: usize = 8;
    pub const TRANSPORT_HEADER_LEN: usize = 16;
}

/// Bytes of a handshake initiation.
pub const INIT_LEN: usize = field::INIT_LEN;
/// Bytes of a handshake response.
pub const RESP_LEN: usize = field::RESP_LEN;
/// Bytes of the transport header (the AEAD's associated data).
pub const TRANSPORT_HEADER_LEN: usize = field::TRANSPORT_HEADER_LEN;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes of a MAC1 field.
pub const MAC_LEN: usize = 16;
/// Offset of the signature in an initiation (everything before it is signed).
pub const INIT_SIGNED_LEN: usize = field::INIT_SIGNATURE;
/// Offset of MAC1 in an initiation (everything before it is MACed).
pub const INIT_MACED_LEN: usize = field::INIT_MAC1;
/// Offset of MAC2 in an initiation (everything before it is covered by MAC2).
pub const INIT_MAC2_OFFSET: usize = field::INIT_MAC2;
/// Bytes of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = field::COOKIE_LEN;
/// Bytes of a cookie reply's XChaCha20 nonce.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Offset of the signature in a response.
pub const RESP_SIGNED_LEN: usize = field::RESP_SIGNATURE;
/// Offset of MAC1 in a response.
pub const RESP_MACED_LEN: usize = field::RESP_MAC1;

const _: () = assert!(field::INIT_MAC1 + MAC_LEN == field::INIT_MAC2);
const _: () = assert!(field::INIT_MAC2 + MAC_LEN == field::INIT_LEN);
const _: () = assert!(field::COOKIE_NONCE + COOKIE_NONCE_LEN == field::COOKIE_SEALED);
const _: () = assert!(field::COOKIE_SEALED + 16 + TAG_LEN == field::COOKIE_LEN);
const _: () = assert!(field::INIT_SIGNATURE + SIGNATURE_LEN == field::INIT_MAC1);
const _: () = assert!(field::RESP_MAC1 + MAC_LEN == field::RESP_LEN);
const _: () = assert!(field::RESP_SIGNATURE + SIGNATURE_LEN == field::RESP_MAC1);

/// A parsed handshake initiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitRepr {
    /// The initiator's session index (the responder addresses transport packets to it).
    pub sender_index: u32,
    /// The initiator's identity.
    pub static_key: PublicKey,
    /// The initiator's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Initiator's clock, strictly increasing per initiator.
    pub timestamp_us: u64,
    /// Signature by `static_key` over the bytes before it, prefixed by a context (see handshake).
    pub signature: [u8; SIGNATURE_LEN],
    /// MAC keyed by the responder's public key over the bytes before it.
    pub mac1: [u8; MAC_LEN],
    /// MAC keyed by a cookie from the responder over the bytes before it (zeros without one).
    pub mac2: [u8; MAC_LEN],
}

impl InitRepr {
    /// Parses an initiation; the length must be exact.
    pub fn parse(buf: &[u8]) -> Result<InitRepr, WireError> {
        if DatagramType::of(buf)? != DatagramType::HandshakeInit {
            return Err(WireError::UnknownType);
        }
        if buf.len() != field::INIT_LEN {
            return Err(if buf.len() < field::INIT_LEN { WireError::Truncated } else { WireError::Malformed });
        }
        Ok(InitRepr {
            sender_index: u32::from_le_bytes(array(buf, field::INIT_SENDER)),
            static_key: PublicKey(array(buf, field::INIT_STATIC)),
            ephemeral: array(buf, field::INIT_EPHEMERAL),
            timestamp_us: u64::from_le_bytes(array(buf, field::INIT_TIMESTAMP)),
            signature: array(buf, field::INIT_SIGNATURE),
            mac1: array(buf, field::INIT_MAC1),
            mac2: array(buf, field::INIT_MAC2),
        })
    }

    /// Writes the message into a fresh buffer of `INIT_LEN` bytes.
    pub fn emit(&self) -> [u8; INIT_LEN] {
        let mut buf = [0u8; INIT_LEN];
        buf[0] = DatagramType::HandshakeInit.code();
        buf[field::INIT_SENDER..field::INIT_STATIC].copy_from_slice(&self.sender_index.to_le_bytes());
        buf[field::INIT_STATIC..field::INIT_EPHEMERAL].copy_from_slice(&self.static_key.0);
        buf[field::INIT_EPHEMERAL..field::INIT_TIMESTAMP].copy_from_slice(&self.ephemeral);
        buf[field::INIT_TIMESTAMP..field::INIT_SIGNATURE].copy_from_slice(&self.timestamp_us.to_le_bytes());
        buf[field::INIT_SIGNATURE..field::INIT_MAC1].copy_from_slice(&self.signature);
        buf[field::INIT_MAC1..field::INIT_MAC2].copy_from_slice(&self.mac1);
        buf[field::INIT_MAC2..].copy_from_slice(&self.mac2);
        buf
    }
}

/// A parsed handshake response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespRepr {
    /// The responder's session index.
    pub sender_index: u32,
    /// The initiator's session index, echoed.
    pub receiver_index: u32,
    /// The responder's identity.
    pub static_key: PublicKey,
    /// The responder's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Signature by `static_key` over the initiation's hash and the bytes before it.
    pub signature: [u8; SIGNATURE_LEN],
    /// MAC keyed by the initiator's public key over the bytes before it.
    pub mac1: [u8; MAC_LEN],
}

impl RespRepr {
    /// Parses a response; the length must be exact.
    pub fn parse(buf: &[u8]) -> Result<RespRepr, WireError> {
        if DatagramType::of(buf)? != DatagramType::HandshakeResp {
            return Err(WireError::UnknownType);
        }
        if buf.len() != field::RESP_LEN {
            return Err(if buf.len() < field::RESP_LEN { WireError::Truncated } else { WireError::Malformed });
        }
        Ok(RespRepr {
            sender_index: u32::from_le_bytes(array(buf, field::RESP_SENDER)),
            receiver_index: u32::from_le_bytes(array(buf, field::RESP_RECEIVER)),
            static_key: PublicKey(array(buf, field::RESP_STATIC)),
            ephemeral: array(buf, field::RESP_EPHEMERAL),
            signature: array(buf, field::RESP_SIGNATURE),
            mac1: array(buf, field::RESP_MAC1),
        })
    }

    /// Writes the message into a fresh buffer of `RESP_LEN` bytes.
    pub fn emit(&self) -> [u8; RESP_LEN] {
        let mut buf = [0u8; RESP_LEN];
        buf[0] = DatagramType::HandshakeResp.code();
        buf[field::RESP_SENDER..field::RESP_RECEIVER].copy_from_slice(&self.sender_index.to_le_bytes());
        buf[field::RESP_RECEIVER..field::RESP_STATIC].copy_from_slice(&self.receiver_index.to_le_bytes());
        buf[field::RESP_STATIC..field::RESP_EPHEMERAL].copy_from_slice(&self.static_key.0);
        buf[field::RESP_EPHEMERAL..field::RESP_SIGNATURE].copy_from_slice(&self.ephemeral);
        buf[field::RESP_SIGNATURE..field::RESP_MAC1].copy_from_slice(&self.signature);
        buf[field::RESP_MAC1..].copy_from_slice(&self.mac1);
        buf
    }
}

/// A parsed cookie reply (still sealed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieReplyRepr {
    /// The initiator's index from the initiation this answers.
    pub receiver_index: u32,
    /// XChaCha20 nonce.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// Encrypted cookie followed by its tag.
    pub sealed: [u8; 32],
}

impl CookieReplyRepr {
    /// Parses a cookie reply; the length must be exact.
    pub fn parse(buf: &[u8]) -> Result<CookieReplyRepr, WireError> {
        if DatagramType::of(buf)? != DatagramType::CookieReply {
            return Err(WireError::UnknownType);
        }
        if buf.len() != field::COOKIE_LEN {
            return Err(if buf.len() < field::COOKIE_LEN { WireError::Truncated } else { WireError::Malformed });
        }
        Ok(CookieReplyRepr {
            receiver_index: u32::from_le_bytes(array(buf, field::COOKIE_RECEIVER)),
            nonce: array(buf, field::COOKIE_NONCE),
            sealed: array(buf, field::COOKIE_SEALED),
        })
    }

    /// Writes the message into a fresh buffer of `COOKIE_REPLY_LEN` bytes.
    pub fn emit(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut buf = [0u8; COOKIE_REPLY_LEN];
        buf[0] = DatagramType::CookieReply.code();
        buf[field::COOKIE_RECEIVER..field::COOKIE_NONCE].copy_from_slice(&self.receiver_index.to_le_bytes());
        buf[field::COOKIE_NONCE..field::COOKIE_SEALED].copy_from_slice(&self.nonce);
        buf[field::COOKIE_SEALED..].copy_from_slice(&self.sealed);
        buf
    }
}

/// A view of a transport datagram whose header is known to be present.
#[derive(Clone, Copy, Debug)]
pub struct TransportPacket<'a> {
    buf: &'a [u8],
}

impl<'a> TransportPacket<'a> {
    /// Checks type, reserved bytes and room for header and tag.
    pub fn new_checked(buf: &'a [u8]) -> Result<TransportPacket<'a>, WireError> {
        if DatagramType::of(buf)? != DatagramType::Transport {
            return Err(WireError::UnknownType);
        }
        if buf.len() < field::TRANSPORT_HEADER_LEN + TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(TransportPacket { buf })
    }

    /// The receiver's session index.
    pub fn receiver_index(&self) -> u32 {
        u32::from_le_bytes(array(self.buf, field::TRANSPORT_RECEIVER))
    }

    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(array(self.buf, field::TRANSPORT_COUNTER))
    }

    /// The associated data (the header).
    pub fn header(&self) -> &'a [u8] {
        self.buf.get(..field::TRANSPORT_HEADER_LEN).unwrap_or(&[])
    }

    /// Ciphertext followed by the tag.
    pub fn sealed(&self) -> &'a [u8] {
        self.buf.get(field::TRANSPORT_HEADER_LEN..).unwrap_or(&[])
    }
}

/// Writes a transport header into `out` (which must be empty).
pub fn emit_transport_header(out: &mut Vec<u8>, receiver_index: u32, counter: u64) {
    debug_assert!(out.is_empty());
    out.extend_from_slice(&[DatagramType::Transport.code(), 0, 0, 0]);
    out.extend_from_slice(&receiver_index.to_le_bytes());
    out.extend_from_slice(&counter.to_le_bytes());
    debug_assert_eq!(out.len(), field::TRANSPORT_HEADER_LEN);
}

/// Kind byte of a keepalive plaintext.
pub const KIND_KEEPALIVE: u8 = 0;
/// Kind byte of a routing plaintext.
pub const KIND_ROUTING: u8 = 1;
/// Kind byte of a data plaintext.
pub const KIND_DATA: u8 = 2;
/// Kind byte of a direct plaintext: an IPv6 packet between the link's two ends.
pub const KIND_DIRECT: u8 = 3;
/// Bytes of the data header after the kind byte.
pub const DATA_HEADER_LEN: usize = 33;

const TLV_UPDATE: u8 = 1;
const TLV_SEQNO_REQUEST: u8 = 2;
const UPDATE_BODY_LEN: u8 = 180;
const SEQNO_REQUEST_BODY_LEN: u8 = 19;
/// Bytes one encoded Update TLV takes.
pub const UPDATE_TLV_LEN: usize = 2 + UPDATE_BODY_LEN as usize;

/// A decrypted payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// Nothing but proof of life.
    Keepalive,
    /// Routing TLVs (iterate with `RoutingTlvs`).
    Routing(RoutingTlvs<'a>),
    /// An overlay data packet.
    Data(DataRepr<'a>),
    /// An IPv6 packet from the link's peer to us, sealed once under the link session.
    Direct(&'a [u8]),
}

/// The header and payload of a data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRepr<'a> {
    /// Final destination.
    pub destination: Address,
    /// Origin as claimed by the sender (checked at the destination against the end-to-end
    /// session that opens the payload).
    pub source: Address,
    /// Hops left; a forwarder drops the packet when this would reach zero.
    pub hop_limit: u8,
    /// The end-to-end datagram.
    pub payload: &'a [u8],
}

impl<'a> Inner<'a> {
    /// Parses a decrypted plaintext.
    pub fn parse(plain: &'a [u8]) -> Result<Inner<'a>, WireError> {
        let (&kind, body) = plain.split_first().ok_or(WireError::Truncated)?;
        match kind {
            KIND_KEEPALIVE if body.is_empty() => Ok(Inner::Keepalive),
            KIND_KEEPALIVE => Err(WireError::Malformed),
            KIND_ROUTING => Ok(Inner::Routing(RoutingTlvs { rest: body })),
            KIND_DATA => {
                if body.len() < DATA_HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                Ok(Inner::Data(DataRepr {
                    destination: Address(array(body, 0)),
                    source: Address(array(body, 16)),
                    hop_limit: body.get(32).copied().unwrap_or(0),
                    payload: body.get(DATA_HEADER_LEN..).unwrap_or(&[]),
                }))
            }
            KIND_DIRECT => Ok(Inner::Direct(body)),
            _ => Err(WireError::UnknownType),
        }
    }
}

impl DataRepr<'_> {
    /// Appends kind byte, header and payload to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header());
        out.extend_from_slice(self.payload);
    }

    /// The kind byte and header, without the payload.
    pub fn header(&self) -> [u8; 1 + DATA_HEADER_LEN] {
        let mut h = [0u8; 1 + DATA_HEADER_LEN];
        h[0] = KIND_DATA;
        h[1..17].copy_from_slice(&self.destination.0);
        h[17..33].copy_from_slice(&self.source.0);
        h[33] = self.hop_limit;
        h
    }
}

/// Bytes of a fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Most bytes a packet grows by on the underlay: an IPv6 and a UDP header, then the link's
/// transport header and tag around the kind byte and routed header, around the end-to-end
/// transport header and tag (a direct packet grows less: no routed header, no end-to-end
/// layer).
pub const ENCAPSULATION_MAX_BYTES: usize =
    IPV6_HEADER_LEN + 8 + TRANSPORT_HEADER_LEN + TAG_LEN + 1 + DATA_HEADER_LEN + TRANSPORT_HEADER_LEN + TAG_LEN;

/// The overlay's MTU: the largest IPv6 packet that still fits a 1500-byte underlay (IPv6
/// or IPv4) without fragmentation however it is carried, rounded down to 8 bytes.
pub const OVERLAY_MTU_BYTES: usize = (1500 - ENCAPSULATION_MAX_BYTES) / 8 * 8;
const _: () = assert!(OVERLAY_MTU_BYTES >= 1280 && OVERLAY_MTU_BYTES + ENCAPSULATION_MAX_BYTES <= 1500);

/// A minimal IPv6 packet (next header 59, "no next header") from `source` to `destination`
/// carrying `payload`: what simulations and benches send through `Node::send`, since a
/// node delivers only packets whose IPv6 header matches the overlay header.
pub fn ipv6_packet(source: Address, destination: Address, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(IPV6_HEADER_LEN + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(&[59, 64]);
    p.extend_from_slice(&source.0);
    p.extend_from_slice(&destination.0);
    p.extend_from_slice(payload);
    p
}

/// An iterator over routing TLVs; yields `Err` once and stops on a malformed TLV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTlvs<'a> {
    rest: &'a [u8],
}

impl Iterator for RoutingTlvs<'_> {
    type Item = Result<RouteMessage, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Bounded: each step consumes at least two bytes.
        while !self.rest.is_empty() {
            let (tlv_type, len) = match self.rest {
                [t, l, ..] => (*t, *l as usize),
                _ => {
                    self.rest = &[];
                    return Some(Err(WireError::Truncated));
                }
            };
            let Some(body) = self.rest.get(2..2 + len) else {
                self.rest = &[];
                return Some(Err(WireError::Truncated));
            };
            self.rest = self.rest.get(2 + len..).unwrap_or(&[]);
            match (tlv_type, len as u8) {
                (TLV_UPDATE, UPDATE_BODY_LEN) => {
                    return Some(Ok(RouteMessage::Update {
                        destination: Address(array(body, 0)),
                        seqno: u16::from_be_bytes(array(body, 16)),
                        metric: u16::from_be_bytes(array(body, 18)),
                        origin: Origin { key: array(body, 20), anchor: array(body, 52), signature: array(body, 84), element: array(body, 148) },
                    }))
                }
                (TLV_SEQNO_REQUEST, SEQNO_REQUEST_BODY_LEN) => {
                    return Some(Ok(RouteMessage::SeqnoRequest {
                        destination: Address(array(body, 0)),
                        seqno: u16::from_be_bytes(array(body, 16)),
                        hop_count: body.get(18).copied().unwrap_or(0),
                    }))
                }
                (TLV_UPDATE | TLV_SEQNO_REQUEST, _) => {
                    self.rest = &[];
                    return Some(Err(WireError::Malformed));
                }
                _ => continue, // unknown TLV: skip, as Babel does
            }
        }
        None
    }
}

/// Appends one routing TLV to `out`.
pub fn emit_route_message(message: &RouteMessage, out: &mut Vec<u8>) {
    match *message {
        RouteMessage::Update { destination, seqno, metric, origin } => {
            out.extend_from_slice(&[TLV_UPDATE, UPDATE_BODY_LEN]);
            out.extend_from_slice(&destination.0);
            out.extend_from_slice(&seqno.to_be_bytes());
            out.extend_from_slice(&metric.to_be_bytes());
            out.extend_from_slice(&origin.key);
            out.extend_from_slice(&origin.anchor);
            out.extend_from_slice(&origin.signature);
            out.extend_from_slice(&origin.element);
        }
        RouteMessage::SeqnoRequest { destination, seqno, hop_count } => {
            out.extend_from_slice(&[TLV_SEQNO_REQUEST, SEQNO_REQUEST_BODY_LEN]);
            out.extend_from_slice(&destination.0);
            out.extend_from_slice(&seqno.to_be_bytes());
            out.push(hop_count);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static INIT_BYTES: [u8; INIT_LEN] = {
        let mut b = [0x5au8; INIT_LEN];
        b[0] = 1;
        b[1] = 0;
        b[2] = 0;
        b[3] = 0;
        b
    };

    #[test]
    fn init_roundtrip_and_truncation() {
        let repr = InitRepr::parse(&INIT_BYTES).unwrap();
        assert_eq!(repr.sender_index, 0x5a5a5a5a);
        assert_eq!(repr.emit(), INIT_BYTES);
        for len in 0..INIT_LEN {
            assert!(InitRepr::parse(&INIT_BYTES[..len]).is_err());
        }
        let mut long = INIT_BYTES.to_vec();
        long.push(0);
        assert_eq!(InitRepr::parse(&long), Err(WireError::Malformed));
        let mut reserved = INIT_BYTES;
        reserved[2] = 1;
        assert_eq!(InitRepr::parse(&reserved), Err(WireError::Malformed));
    }

    #[test]
    fn resp_roundtrip() {
        let repr = RespRepr {
            sender_index: 1,
            receiver_index: 2,
            static_key: PublicKey([3; 32]),
            ephemeral: [4; 32],
            signature: [5; 64],
            mac1: [6; 16],
        };
        let bytes = repr.emit();
        assert_eq!(RespRepr::parse(&bytes), Ok(repr));
        assert!(RespRepr::parse(&bytes[..RESP_LEN - 1]).is_err());
        assert!(InitRepr::parse(&bytes).is_err());
    }

    #[test]
    fn transport_view_checks_length() {
        let mut out = Vec::new();
        emit_transport_header(&mut out, 7, 9);
        assert!(TransportPacket::new_checked(&out).is_err());
        out.extend_from_slice(&[0; TAG_LEN]);
        let p = TransportPacket::new_checked(&out).unwrap();
        assert_eq!((p.receiver_index(), p.counter()), (7, 9));
        assert_eq!(p.sealed().len(), TAG_LEN);
    }

    #[test]
    fn routing_tlvs_roundtrip_skip_unknown_and_stop_on_garbage() {
        let a = Address([0xfd; 16]);
        let msgs = [
            RouteMessage::Update { destination: a, seqno: 3, metric: 0xffff, origin: Origin { key: [7; 32], anchor: [6; 32], signature: [8; 64], element: [5; 32] } },
            RouteMessage::SeqnoRequest { destination: a, seqno: 4, hop_count: 9 },
        ];
        let mut out = alloc::vec![KIND_ROUTING];
        emit_route_message(&msgs[0], &mut out);
        out.extend_from_slice(&[99, 3, 1, 2, 3]); // unknown TLV
        emit_route_message(&msgs[1], &mut out);
        let Ok(Inner::Routing(tlvs)) = Inner::parse(&out) else { panic!("not routing") };
        let parsed: Vec<_> = tlvs.collect();
        assert_eq!(parsed, alloc::vec![Ok(msgs[0]), Ok(msgs[1])]);
        out.extend_from_slice(&[1, 200]);
        let Ok(Inner::Routing(tlvs)) = Inner::parse(&out) else { panic!("not routing") };
        assert_eq!(tlvs.last(), Some(Err(WireError::Truncated)));
    }

    #[test]
    fn data_roundtrip() {
        let repr = DataRepr { destination: Address([1; 16]), source: Address([2; 16]), hop_limit: 5, payload: b"ip" };
        let mut out = Vec::new();
        repr.emit(&mut out);
        assert_eq!(Inner::parse(&out), Ok(Inner::Data(repr)));
        assert_eq!(Inner::parse(&out[..10]), Err(WireError::Truncated));
        assert_eq!(Inner::parse(&[]), Err(WireError::Truncated));
        assert_eq!(Inner::parse(&[0, 1]), Err(WireError::Malformed));
        assert_eq!(Inner::parse(&[9]), Err(WireError::UnknownType));
    }
}
