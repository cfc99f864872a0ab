//! The compile service's wire protocol (`gridos-compiler`, `userland/compiler`): a client
//! sends a wasm module and the engine fingerprint of the node it deploys to, the service
//! answers with a bundle of native code attested by its key
//! (`workloads::artifact::attest`), or with the reason it refuses.
//!
//! **Transport.** One TCP connection to [`COMPILE_PORT`] (7071) on the service's overlay
//! address; the service's overlay key is also its attestation key, so a client that
//! reached it over the overlay knows which key must have signed the bundle (and checks
//! with `workloads::artifact::verify`).
//!
//! **Messages.** Frames as in [`crate::frame`] (a `u32` LE length, then a postcard body).
//! The client sends one [`CompileRequest`] frame of at most [`COMPILE_REQUEST_MAX_BYTES`];
//! the service answers with one [`CompileResponse`] frame of at most
//! [`crate::MAX_FRAME_BYTES`] and closes the connection. Nothing is signed by the client:
//! compiling is open to anyone who can reach the service, which bounds what each request
//! may cost (module size, connections, time).

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::{frame, FrameDecoder, FrameError, FRAME_HEADER_BYTES, MAX_FRAME_BYTES};

/// TCP port of the compile service on its overlay address.
pub const COMPILE_PORT: u16 = 7071;
/// Largest module the service compiles.
pub const COMPILE_MODULE_MAX_BYTES: usize = 4 << 20;
/// Largest request frame body: the module plus the fingerprint and postcard lengths.
pub const COMPILE_REQUEST_MAX_BYTES: usize = COMPILE_MODULE_MAX_BYTES + 64;
/// Largest refusal reason sent.
pub const REFUSAL_MAX_BYTES: usize = 1024;

const _: () = assert!(COMPILE_REQUEST_MAX_BYTES <= MAX_FRAME_BYTES);

/// What a client asks the compile service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileRequest {
    /// The wasm module, at most [`COMPILE_MODULE_MAX_BYTES`].
    pub module: Vec<u8>,
    /// `workloads::artifact::engine_fingerprint()` of the node the code is for.
    pub engine: [u8; 32],
}

/// The compile service's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompileResponse {
    /// A v2 bundle attested by the service's key.
    Compiled {
        /// `workloads::artifact` bundle bytes.
        bundle: Vec<u8>,
    },
    /// The service will not compile this request.
    Refused {
        /// Why, for the user (at most [`REFUSAL_MAX_BYTES`]).
        reason: String,
    },
}

/// Why a compile-protocol frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileProtocolError {
    /// The byte stream is not frames within the size limit.
    Frame(FrameError),
    /// A frame did not decode as the expected message.
    Malformed,
}

impl core::fmt::Display for CompileProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CompileProtocolError::Frame(e) => write!(f, "bad framing: {e}"),
            CompileProtocolError::Malformed => f.write_str("malformed message"),
        }
    }
}

impl From<FrameError> for CompileProtocolError {
    fn from(e: FrameError) -> Self {
        CompileProtocolError::Frame(e)
    }
}

/// The request as one frame.
pub fn request_frame(request: &CompileRequest) -> Vec<u8> {
    frame::encode(&postcard::to_allocvec(request).unwrap_or_default())
}

/// The response as one frame; a refusal reason is cut to [`REFUSAL_MAX_BYTES`].
pub fn response_frame(response: &CompileResponse) -> Vec<u8> {
    let response = match response {
        CompileResponse::Refused { reason } if reason.len() > REFUSAL_MAX_BYTES => {
            let mut end = REFUSAL_MAX_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            CompileResponse::Refused { reason: reason[..end].into() }
        }
        other => other.clone(),
    };
    frame::encode(&postcard::to_allocvec(&response).unwrap_or_default())
}

/// A decoder for the service side: frames up to [`COMPILE_REQUEST_MAX_BYTES`].
pub fn request_decoder() -> FrameDecoder {
    FrameDecoder::new(COMPILE_REQUEST_MAX_BYTES)
}

/// A decoder for the client side: frames up to [`MAX_FRAME_BYTES`].
pub fn response_decoder() -> FrameDecoder {
    FrameDecoder::new(MAX_FRAME_BYTES)
}

/// Decodes a whole body as one `T`; trailing bytes are malformed too.
fn exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CompileProtocolError> {
    match postcard::take_from_bytes(body) {
        Ok((t, [])) => Ok(t),
        _ => Err(CompileProtocolError::Malformed),
    }
}

/// Decodes a request body (one frame's body).
pub fn decode_request(body: &[u8]) -> Result<CompileRequest, CompileProtocolError> {
    let r: CompileRequest = exact(body)?;
    if r.module.len() > COMPILE_MODULE_MAX_BYTES {
        return Err(CompileProtocolError::Frame(FrameError::TooLarge { len_bytes: r.module.len() as u64 }));
    }
    Ok(r)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<CompileResponse, CompileProtocolError> {
    exact(body)
}

/// Header plus body bytes of the largest request frame.
pub const COMPILE_REQUEST_FRAME_MAX_BYTES: usize = COMPILE_REQUEST_MAX_BYTES + FRAME_HEADER_BYTES;

#[cfg(test)]
mod test {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn one_frame(d: &mut FrameDecoder, bytes: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        d.push(bytes)?;
        d.pop()
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let r = CompileRequest { module: b"\0asm\x01\0\0\0".to_vec(), engine: [7; 32] };
        let mut d = request_decoder();
        let body = one_frame(&mut d, &request_frame(&r)).unwrap().unwrap();
        assert_eq!(decode_request(&body).unwrap(), r);
        let mut d = response_decoder();
        for resp in [CompileResponse::Compiled { bundle: vec![1, 2, 3] }, CompileResponse::Refused { reason: "no".into() }] {
            let body = one_frame(&mut d, &response_frame(&resp)).unwrap().unwrap();
            assert_eq!(decode_response(&body).unwrap(), resp);
        }
    }

    #[test]
    fn the_biggest_module_fits_and_one_byte_more_is_refused() {
        let max = CompileRequest { module: vec![0; COMPILE_MODULE_MAX_BYTES], engine: [0; 32] };
        let frame = request_frame(&max);
        assert!(frame.len() <= COMPILE_REQUEST_FRAME_MAX_BYTES);
        let mut d = request_decoder();
        let body = one_frame(&mut d, &frame).unwrap().unwrap();
        assert_eq!(decode_request(&body).unwrap().module.len(), COMPILE_MODULE_MAX_BYTES);
        // One more byte fits the frame limit (which leaves room for the encoding) but is
        // refused when decoded.
        let over = CompileRequest { module: vec![0; COMPILE_MODULE_MAX_BYTES + 1], engine: [0; 32] };
        let mut d = request_decoder();
        let body = one_frame(&mut d, &request_frame(&over)).unwrap().unwrap();
        assert!(matches!(decode_request(&body), Err(CompileProtocolError::Frame(FrameError::TooLarge { .. }))));
        // A frame one byte over the limit is refused from its header alone.
        let mut d = request_decoder();
        let header = u32::try_from(COMPILE_REQUEST_MAX_BYTES + 1).unwrap().to_le_bytes();
        assert!(matches!(d.push(&header), Err(FrameError::TooLarge { .. })));
        // A header claiming 4 GiB is refused before any body is buffered.
        let mut d = request_decoder();
        assert!(matches!(d.push(&u32::MAX.to_le_bytes()), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for junk in [&[][..], &[0xff; 3], &[1, 2, 3, 4, 5, 6, 7, 8], &[0x80; 40], &[1, 1, b'x', 0]] {
            assert!(decode_request(junk).is_err());
            assert!(decode_response(junk).is_err());
        }
        // Every prefix of a valid request body is refused cleanly.
        let body = postcard::to_allocvec(&CompileRequest { module: vec![9; 100], engine: [1; 32] }).unwrap();
        for n in 0..body.len() {
            assert_eq!(decode_request(&body[..n]), Err(CompileProtocolError::Malformed), "{n}");
        }
    }

    #[test]
    fn long_refusals_are_cut_at_a_character_boundary() {
        let long = "é".repeat(REFUSAL_MAX_BYTES);
        let f = response_frame(&CompileResponse::Refused { reason: long });
        let mut d = response_decoder();
        let body = one_frame(&mut d, &f).unwrap().unwrap();
        match decode_response(&body).unwrap() {
            CompileResponse::Refused { reason } => {
                assert!(reason.len() <= REFUSAL_MAX_BYTES && reason.len() >= REFUSAL_MAX_BYTES - 1);
                assert!(reason.chars().all(|c| c == 'é'), "{}", reason.to_string());
            }
            other => panic!("{other:?}"),
        }
    }
}
