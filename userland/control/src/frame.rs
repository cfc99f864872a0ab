//! Frames: a `u32` little-endian body length, then the body.
//!
//! [`FrameDecoder`] is fed whatever a stream read returned ([`FrameDecoder::push`]) and
//! hands out complete bodies ([`FrameDecoder::pop`]). It holds at most
//! `2 * (max_frame_bytes + FRAME_HEADER_BYTES)` bytes: a caller that pops after each push
//! never reaches that, a caller that does not gets [`FrameError::BufferFull`] instead of
//! unbounded growth. A length above the maximum is an error as soon as its four bytes
//! arrive, before any body is buffered. Errors are sticky: a stream that broke framing
//! once cannot be resynchronised.

use alloc::vec::Vec;

use crate::{FRAME_HEADER_BYTES, MAX_FRAME_BYTES};

/// Why a byte stream is not a frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more than the maximum body length.
    TooLarge {
        /// The announced body length.
        len_bytes: u64,
    },
    /// More bytes were pushed than the decoder holds; pop first.
    BufferFull,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::TooLarge { len_bytes } => {
                write!(f, "frame of {len_bytes} bytes exceeds the {MAX_FRAME_BYTES}-byte maximum")
            }
            FrameError::BufferFull => f.write_str("frame decoder buffer full"),
        }
    }
}

/// Encodes `body` as one frame. A body above [`MAX_FRAME_BYTES`] is encoded all the same
/// (the receiver refuses it); the caller should check sizes first.
pub fn encode(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Incremental, bounded frame decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    max_frame_bytes: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_FRAME_BYTES)
    }
}

/// Buffer capacity kept between frames; more is freed once a frame has been taken.
const RETAINED_CAPACITY_BYTES: usize = 64 << 10;

impl FrameDecoder {
    /// A decoder refusing bodies above `max_frame_bytes` (at most [`MAX_FRAME_BYTES`]).
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        let max_frame_bytes = max_frame_bytes.min(MAX_FRAME_BYTES);
        FrameDecoder { buf: Vec::new(), start: 0, max_frame_bytes, failed: None }
    }

    /// Bytes held and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    fn capacity_bytes(&self) -> usize {
        2 * (self.max_frame_bytes + FRAME_HEADER_BYTES)
    }

    /// Appends stream bytes. Fails when the decoder already failed, when the next
    /// frame's length is too large, or when the bytes do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.buffered_bytes() + bytes.len() > self.capacity_bytes() {
            self.failed = Some(FrameError::BufferFull);
            return Err(FrameError::BufferFull);
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.check_header().map(|_| ())
    }

    /// The body length the next frame announced, once its header is complete (and not
    /// too large): what a receiver may budget time for.
    pub fn pending_frame_bytes(&self) -> Option<usize> {
        let header = self.buf.get(self.start..self.start + FRAME_HEADER_BYTES)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        (self.failed.is_none() && len <= self.max_frame_bytes).then_some(len)
    }

    /// The announced body length of the next frame, once its header is complete.
    fn check_header(&mut self) -> Result<Option<usize>, FrameError> {
        let Some(header) = self.buf.get(self.start..self.start + FRAME_HEADER_BYTES) else { return Ok(None) };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if len as usize > self.max_frame_bytes {
            let e = FrameError::TooLarge { len_bytes: u64::from(len) };
            self.failed = Some(e);
            return Err(e);
        }
        Ok(Some(len as usize))
    }

    /// The next complete frame body, if one is buffered.
    pub fn pop(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let Some(len) = self.check_header()? else { return Ok(None) };
        let body_start = self.start + FRAME_HEADER_BYTES;
        let Some(body) = self.buf.get(body_start..body_start + len) else { return Ok(None) };
        let body = body.to_vec();
        self.start = body_start + len;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            // After a large frame, give the memory back instead of keeping the capacity.
            if self.buf.capacity() > RETAINED_CAPACITY_BYTES {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
        }
        // Fail early on the following header, so an oversize frame is refused even if
        // the caller only pops once.
        self.check_header()?;
        Ok(Some(body))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        bodies.iter().flat_map(|b| encode(b)).collect()
    }

    #[test]
    fn pending_frame_bytes_is_the_announced_length_once_the_header_is_in() {
        let mut d = FrameDecoder::new(100);
        assert_eq!(d.pending_frame_bytes(), None);
        d.push(&[50, 0]).unwrap();
        assert_eq!(d.pending_frame_bytes(), None);
        d.push(&[0, 0, 1, 2]).unwrap();
        assert_eq!(d.pending_frame_bytes(), Some(50));
        let mut d = FrameDecoder::new(100);
        assert!(d.push(&[101, 0, 0, 0]).is_err());
        assert_eq!(d.pending_frame_bytes(), None);
    }

    fn drain(d: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.pop().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn merged_frames_come_out_one_by_one() {
        let bytes = frames(&[b"one", b"", b"three"]);
        let mut d = FrameDecoder::default();
        d.push(&bytes).unwrap();
        assert_eq!(drain(&mut d), vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let bytes = frames(&[b"hello", b"world!", &[7; 300]]);
        for chunk in 1..bytes.len() {
            let mut d = FrameDecoder::default();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece).unwrap();
                out.extend(drain(&mut d));
            }
            assert_eq!(out, vec![b"hello".to_vec(), b"world!".to_vec(), vec![7; 300]], "chunk {chunk}");
        }
    }

    #[test]
    fn oversize_length_fails_before_the_body_and_stays_failed() {
        let mut d = FrameDecoder::new(16);
        d.push(&encode(&[1; 16])).unwrap();
        assert_eq!(d.pop().unwrap(), Some(vec![1; 16]));
        assert_eq!(d.push(&17u32.to_le_bytes()), Err(FrameError::TooLarge { len_bytes: 17 }));
        assert_eq!(d.pop(), Err(FrameError::TooLarge { len_bytes: 17 }));
        assert_eq!(d.push(b"x"), Err(FrameError::TooLarge { len_bytes: 17 }));
        // Default maximum: a garbage header of 0xffffffff is refused without allocating.
        let mut d = FrameDecoder::default();
        assert_eq!(d.push(&[0xff; 4]), Err(FrameError::TooLarge { len_bytes: u64::from(u32::MAX) }));
        let mut d = FrameDecoder::default();
        let too_big = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
        assert!(matches!(d.push(&too_big), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn oversize_header_after_a_good_frame_is_caught_on_pop() {
        let mut d = FrameDecoder::new(8);
        let mut bytes = encode(b"ok");
        bytes.extend_from_slice(&100u32.to_le_bytes());
        // The push sees the first header only.
        d.push(&bytes).unwrap();
        assert_eq!(d.pop(), Err(FrameError::TooLarge { len_bytes: 100 }));
    }

    #[test]
    fn a_caller_that_never_pops_hits_the_bound() {
        let mut d = FrameDecoder::new(8);
        let frame = encode(&[0; 8]);
        d.push(&frame).unwrap();
        d.push(&frame).unwrap();
        assert_eq!(d.push(&frame), Err(FrameError::BufferFull));
        assert!(d.buffered_bytes() <= 2 * (8 + FRAME_HEADER_BYTES));
    }

    #[test]
    fn max_size_frame_passes() {
        let mut d = FrameDecoder::new(1000);
        d.push(&encode(&[9; 1000])).unwrap();
        assert_eq!(d.pop().unwrap().map(|b| b.len()), Some(1000));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..32),
            max in 0usize..64,
        ) {
            let mut d = FrameDecoder::new(max);
            for c in &chunks {
                if d.push(c).is_err() {
                    break;
                }
                while let Ok(Some(f)) = d.pop() {
                    proptest::prop_assert!(f.len() <= max);
                }
                proptest::prop_assert!(d.buffered_bytes() <= 2 * (max + FRAME_HEADER_BYTES));
            }
        }

        #[test]
        fn any_split_of_valid_frames_round_trips(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0..8),
            cut in 1usize..50,
        ) {
            let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
            let bytes = frames(&refs);
            let mut d = FrameDecoder::new(64);
            let mut out = Vec::new();
            for piece in bytes.chunks(cut) {
                d.push(piece).unwrap();
                out.extend(drain(&mut d));
            }
            proptest::prop_assert_eq!(out, bodies);
        }
    }
}
