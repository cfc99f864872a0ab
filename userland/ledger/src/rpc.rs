//! The validators' client protocol: what gridctl (and later a node) asks a validator, and
//! the frames both carry it in. Sans-IO: the validator daemon serves it on overlay TCP
//! [`PORT`] (and on its plain TCP listener), gridctl speaks it over its host overlay stack.
//!
//! A frame is a 4-byte little-endian length (of what follows), a kind byte
//! ([`FRAME_CONSENSUS`], [`FRAME_REQUEST`], [`FRAME_RESPONSE`]) and a postcard payload.
//! Nothing a validator answers is trusted by the client: blocks are checked by the
//! [`crate::LightClient`], records by their proofs against a header it accepted; a
//! listing ([`Response::NodeKeys`]) only names what to ask proofs for.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::block::{Genesis, LightBlock};
use crate::crypto::PublicKey;
use crate::smt::{StateKey, StateProof};
use crate::tx::SignedTx;
use crate::{ContractId, BLOCK_BYTES_MAX, TX_BYTES_MAX};

/// Overlay TCP port of a validator's client service.
pub const PORT: u16 = 7072;
/// A consensus message between validators.
pub const FRAME_CONSENSUS: u8 = 0;
/// A client's request.
pub const FRAME_REQUEST: u8 = 1;
/// A validator's response.
pub const FRAME_RESPONSE: u8 = 2;
/// Largest request payload (a transaction and some room).
pub const REQUEST_BYTES_MAX: usize = TX_BYTES_MAX + 1024;
/// Largest response payload.
pub const RESPONSE_BYTES_MAX: usize = BLOCK_BYTES_MAX;
/// Light blocks in one [`Response::LightBlocks`] at most.
pub const LIGHT_BLOCKS_PER_RESPONSE_MAX: u64 = 64;
/// Node keys in one [`Response::NodeKeys`] at most.
pub const NODE_KEYS_PER_RESPONSE_MAX: usize = 256;
/// Contract ids in one [`Response::ContractIds`] at most.
pub const CONTRACT_IDS_PER_RESPONSE_MAX: usize = 256;
/// Bytes of a frame's head: length and kind.
pub const FRAME_HEAD_BYTES: usize = 5;

/// A client's request. Variant order is wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Submit a transaction; answered once it is in a durable decided block.
    Submit(SignedTx),
    /// The last decided height and state root.
    Status,
    /// The decided block at a height, as a light client needs it.
    LightBlock(u64),
    /// A state record with its proof against the last decided block's root.
    Prove(StateKey),
    /// Decided blocks `from..from + count` (at most [`LIGHT_BLOCKS_PER_RESPONSE_MAX`]).
    LightBlocks {
        /// First height.
        from: u64,
        /// How many.
        count: u64,
    },
    /// Registered node keys after `after`, in key order (a listing, not a proof).
    NodeKeys {
        /// Start after this key.
        after: Option<PublicKey>,
    },
    /// The chain's genesis (a node configured with only the chain id checks that it
    /// hashes to it).
    Genesis,
    /// Ids of the active contracts on `node` after `after`, in order (a listing, not a
    /// proof: each contract is then read with [`Request::Prove`]).
    NodeContracts {
        /// The node.
        node: PublicKey,
        /// Start after this id.
        after: Option<ContractId>,
    },
}

/// A validator's answer. Variant order is wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The transaction is in the durable block at this height.
    Committed(u64),
    /// The request was refused (why).
    Refused(String),
    /// Last decided height and root.
    Status {
        /// Height.
        height: u64,
        /// State root.
        state_root: [u8; 32],
    },
    /// The block at the asked height, if decided.
    LightBlock(Option<Box<LightBlock>>),
    /// The proof at `height`.
    Proof {
        /// Height of the root it is against.
        height: u64,
        /// The record and proof.
        proof: StateProof,
    },
    /// Decided blocks from the asked height on (fewer, or none, past the last one).
    LightBlocks(Vec<LightBlock>),
    /// Node keys in order; `more` when the listing goes on.
    NodeKeys {
        /// The keys.
        keys: Vec<PublicKey>,
        /// Whether more follow.
        more: bool,
    },
    /// The genesis.
    Genesis(Box<Genesis>),
    /// Contract ids in order; `more` when the listing goes on.
    ContractIds {
        /// The ids.
        ids: Vec<ContractId>,
        /// Whether more follow.
        more: bool,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is zero or above the bound for this direction.
    Length(usize),
    /// The kind byte is not the expected one.
    Kind(u8),
    /// The payload does not decode.
    Decode,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Length(n) => write!(f, "frame length {n} out of bounds"),
            FrameError::Kind(k) => write!(f, "unexpected frame kind {k}"),
            FrameError::Decode => f.write_str("frame payload does not decode"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// One frame of `kind` around `payload`.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEAD_BYTES);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// A whole frame in a buffer: kind, payload, bytes used.
pub type SplitFrame<'a> = (u8, &'a [u8], usize);

/// The frame at the start of `buf`, if whole: (kind, payload, bytes used). A length of
/// zero or above `payload_bytes_max + 1` is an error at once, before the bytes arrive.
pub fn split_frame(buf: &[u8], payload_bytes_max: usize) -> Result<Option<SplitFrame<'_>>, FrameError> {
    let Some(len) = frame_len(buf, payload_bytes_max)? else { return Ok(None) };
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    Ok(Some((body[0], &body[1..], 4 + len)))
}

/// The length field at the start of `buf` (kind and payload), once its 4 bytes are in; a
/// length of zero or above `payload_bytes_max + 1` is an error.
fn frame_len(buf: &[u8], payload_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(head) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > payload_bytes_max + 1 {
        return Err(FrameError::Length(len));
    }
    Ok(Some(len))
}

/// A request frame.
pub fn request_frame(request: &Request) -> Vec<u8> {
    frame(FRAME_REQUEST, &postcard::to_allocvec(request).unwrap_or_default())
}

/// A response frame.
pub fn response_frame(response: &Response) -> Vec<u8> {
    frame(FRAME_RESPONSE, &postcard::to_allocvec(response).unwrap_or_default())
}

/// The request at the start of `buf`, if whole: (request, bytes used).
pub fn take_request(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
    take(buf, FRAME_REQUEST, REQUEST_BYTES_MAX)
}

/// The response at the start of `buf`, if whole: (response, bytes used).
pub fn take_response(buf: &[u8]) -> Result<Option<(Response, usize)>, FrameError> {
    take(buf, FRAME_RESPONSE, RESPONSE_BYTES_MAX)
}

/// One response frame read from a byte stream in pieces, bounded: the frame's length is
/// checked against `payload_bytes_max` as soon as its 4-byte head is in (before any of
/// its payload is buffered), [`ResponseReader::want`] never asks for bytes past the frame
/// (a validator answers a request with exactly one frame), and anything else (a zero or
/// oversized length, another kind, a payload that does not decode) is an error.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    payload_bytes_max: usize,
}

impl ResponseReader {
    /// A reader of frames whose payload is at most `payload_bytes_max` bytes.
    pub fn new(payload_bytes_max: usize) -> ResponseReader {
        ResponseReader { buf: Vec::new(), payload_bytes_max: payload_bytes_max.min(RESPONSE_BYTES_MAX) }
    }

    /// The whole frame's size in bytes, once its head is in.
    pub fn frame_bytes(&self) -> Result<Option<usize>, FrameError> {
        Ok(frame_len(&self.buf, self.payload_bytes_max)?.map(|len| 4 + len))
    }

    /// How many bytes to read next at most (0 once the frame is whole).
    pub fn want(&self) -> Result<usize, FrameError> {
        Ok(match self.frame_bytes()? {
            None => 4 - self.buf.len(),
            Some(total) => total - self.buf.len(),
        })
    }

    /// Takes `bytes` (the head, then at most [`ResponseReader::want`]); the response once
    /// the frame is whole.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Option<Response>, FrameError> {
        if self.buf.len() < 4 {
            let n = (4 - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if let Some(total) = self.frame_bytes()? {
                // Room for the whole frame at once, now that its (checked) size is known.
                self.buf.reserve_exact(total - self.buf.len());
            }
        }
        let want = self.want()?;
        if bytes.len() > want {
            return Err(FrameError::Length(self.buf.len() + bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
        if self.want()? > 0 {
            return Ok(None);
        }
        let taken = take_response(&self.buf);
        self.buf = Vec::new();
        match taken? {
            Some((response, _)) => Ok(Some(response)),
            None => Err(FrameError::Decode),
        }
    }

    /// Bytes buffered now.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}

fn take<T: serde::de::DeserializeOwned>(buf: &[u8], want: u8, max: usize) -> Result<Option<(T, usize)>, FrameError> {
    let Some((kind, payload, used)) = split_frame(buf, max)? else { return Ok(None) };
    if kind != want {
        return Err(FrameError::Kind(kind));
    }
    let value = postcard::from_bytes(payload).map_err(|_| FrameError::Decode)?;
    Ok(Some((value, used)))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn response_reader_is_bounded_and_takes_one_frame_in_any_pieces() {
        let response = Response::ContractIds { ids: alloc::vec![1, 2, 3], more: true };
        let bytes = response_frame(&response);
        // Byte by byte, never asked for more than the frame.
        let mut r = ResponseReader::new(1024);
        for (i, b) in bytes.iter().enumerate() {
            assert!(r.want().expect("want") >= 1);
            let got = r.push(&[*b]).expect("push");
            assert_eq!(got.is_some(), i + 1 == bytes.len());
            if let Some(got) = got {
                assert_eq!(got, response);
            }
        }
        // An oversized length is refused from the head alone, before any payload is kept.
        let mut r = ResponseReader::new(1024);
        assert_eq!(r.push(&2000u32.to_le_bytes()), Err(FrameError::Length(2000)));
        let mut r = ResponseReader::new(1024);
        assert_eq!(r.push(&u32::MAX.to_le_bytes()[..3]), Ok(None));
        assert!(r.push(&[0xff]).is_err());
        assert!(r.buffered_bytes() <= 4);
        // A zero length, another kind, bytes past the frame, garbage: refused.
        assert_eq!(ResponseReader::new(1024).push(&[0, 0, 0, 0]), Err(FrameError::Length(0)));
        let request = request_frame(&Request::Status);
        assert_eq!(ResponseReader::new(1024).push(&request), Err(FrameError::Kind(FRAME_REQUEST)));
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert!(ResponseReader::new(1024).push(&two).is_err());
        assert_eq!(ResponseReader::new(1024).push(&frame(FRAME_RESPONSE, &[0xff; 8])), Err(FrameError::Decode));
        // The bound cannot be raised past the protocol's.
        let r = ResponseReader::new(usize::MAX);
        let mut huge = ResponseReader { buf: ((RESPONSE_BYTES_MAX + 2) as u32).to_le_bytes().to_vec(), ..r };
        assert!(huge.frame_bytes().is_err() && huge.push(&[0]).is_err());
    }

    #[test]
    fn frames_round_trip_and_refuse_bad_heads() {
        let request = Request::NodeKeys { after: Some([3; 32]) };
        let mut bytes = request_frame(&request);
        bytes.extend_from_slice(&request_frame(&Request::Status));
        let (first, used) = take_request(&bytes).expect("ok").expect("whole");
        assert_eq!(first, request);
        assert_eq!(take_request(&bytes[used..]).expect("ok").map(|(r, _)| r), Some(Request::Status));
        // Partial frames wait; every prefix is either "not yet" or the frame.
        for cut in 0..used {
            assert_eq!(take_request(&bytes[..cut]), Ok(None));
        }
        assert_eq!(take_request(&[0, 0, 0, 0, 1]), Err(FrameError::Length(0)));
        assert!(matches!(take_request(&u32::MAX.to_le_bytes()), Err(FrameError::Length(_))));
        assert_eq!(take_response(&bytes), Err(FrameError::Kind(FRAME_REQUEST)));
        assert_eq!(take_request(&frame(FRAME_REQUEST, &[0xff; 8])).map(|r| r.map(|x| x.1)), Err(FrameError::Decode));
    }
}
