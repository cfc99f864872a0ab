//! Fuzz targets for the control protocol's decoders (proptest: short in `cargo test`,
//! long with `GRIDOS_FUZZ_CASES=N`, see the README's "Fuzzing" section).
//!
//! - the frame decoder: any byte stream, cut anywhere, never panics, never holds more
//!   than its bound, never returns a body above the maximum, and once it fails it stays
//!   failed with the same typed error; valid frames come back exactly;
//! - the server session: hostile bytes never panic and are never authorized; a signed
//!   request comes back exactly, and no change to its frame authorizes anything else;
//! - the client session: hostile server bytes never panic and never make a response
//!   appear that nobody asked for.

use control::frame::{encode, FrameDecoder, FrameError};
use control::{ClientError, ClientSession, Payload, Request, Session, SessionError, FRAME_HEADER_BYTES};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn keypair(seed: u8) -> ed25519_compact::KeyPair {
    workloads::manifest::key_pair_from_seed([seed; 32])
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (bytes(64), bytes(64), bytes(64), any::<bool>()).prop_map(|(signed_manifest, module, bundle, oci)| Request::Deploy {
            signed_manifest,
            payload: if oci { Payload::OciTar(module) } else { Payload::Wasm(module) },
            bundle,
        }),
        Just(Request::List),
        any::<u64>().prop_map(|id| Request::Status { id }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, from_line)| Request::Logs { id, from_line }),
        any::<u64>().prop_map(|id| Request::Stop { id }),
        any::<u64>().prop_map(|id| Request::Remove { id }),
        Just(Request::NodeInfo),
    ]
}

/// Server and client after the hello.
fn connected(seed: u8) -> (Session, ClientSession) {
    let server = Session::new([0xaa; 32], [0x55; 32]);
    let mut client = ClientSession::new(keypair(seed), Some([0xaa; 32]));
    client.push(&server.hello_frame()).expect("hello");
    (server, client)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn frame_decoder_is_bounded_typed_and_sticky(
        chunks in proptest::collection::vec(bytes(80), 0..32),
        max in 0usize..64,
        pop_every in 1usize..4,
    ) {
        let mut d = FrameDecoder::new(max);
        let mut failed: Option<FrameError> = None;
        for (i, chunk) in chunks.iter().enumerate() {
            match d.push(chunk) {
                Ok(()) => prop_assert!(failed.is_none(), "a failed decoder took bytes"),
                Err(e) => {
                    prop_assert!(failed.is_none_or(|f| f == e), "error changed: {failed:?} then {e:?}");
                    failed = Some(e);
                }
            }
            if i % pop_every == 0 {
                loop {
                    match d.pop() {
                        Ok(Some(body)) => prop_assert!(body.len() <= max),
                        Ok(None) => break,
                        Err(e) => {
                            prop_assert!(failed.is_none_or(|f| f == e));
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            prop_assert!(d.buffered_bytes() <= 2 * (max + FRAME_HEADER_BYTES));
        }
        if let Some(e) = failed {
            prop_assert_eq!(d.push(b"more"), Err(e));
            prop_assert_eq!(d.pop(), Err(e));
        }
    }

    #[test]
    fn frames_round_trip_through_any_split(bodies in proptest::collection::vec(bytes(300), 0..8), cut in 1usize..400) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| encode(b)).collect();
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for piece in stream.chunks(cut) {
            d.push(piece).expect("valid frames");
            while let Some(body) = d.pop().expect("valid frames") {
                out.push(body);
            }
        }
        prop_assert_eq!(out, bodies);
        prop_assert_eq!(d.buffered_bytes(), 0);
    }

    #[test]
    fn hostile_bytes_never_authorize_a_request(chunks in proptest::collection::vec(bytes(200), 0..12), framed in any::<bool>()) {
        let mut server = Session::new([0xaa; 32], [0x55; 32]);
        for chunk in chunks {
            // Half the time wrap the junk in a valid frame, to reach the decoders behind it.
            let chunk = if framed { encode(&chunk) } else { chunk };
            match server.push(&chunk) {
                Ok(authorized) => prop_assert!(authorized.is_empty(), "junk was authorized: {authorized:?}"),
                Err(e) => {
                    // Replay and BadRequest need a valid signature first: junk never gets there.
                    let before_signature = matches!(e, SessionError::Frame(_) | SessionError::Malformed | SessionError::BadSignature);
                    prop_assert!(before_signature, "{:?}", e);
                    break;
                }
            }
        }
    }

    #[test]
    fn signed_requests_round_trip_and_tampering_authorizes_nothing_else(
        req in request(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in 1usize..64,
    ) {
        let (mut server, mut client) = connected(3);
        let frame = client.request_frame(&req).expect("fits a frame");
        let mut got = Vec::new();
        for piece in frame.chunks(cut) {
            got.extend(server.push(piece).expect("a valid request"));
        }
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(&got[0].request, &req);
        prop_assert_eq!(got[0].owner, *keypair(3).pk);
        // The same request, one bit changed, on a fresh connection with the same challenge.
        let (mut server, mut client) = connected(3);
        let mut frame = client.request_frame(&req).expect("fits a frame");
        let at = flip.index(frame.len());
        frame[at] ^= 1 << bit;
        if let Ok(authorized) = server.push(&frame) {
            prop_assert!(authorized.is_empty(), "a changed frame was authorized: {authorized:?}");
        }
    }

    #[test]
    fn hostile_server_bytes_never_produce_an_unasked_response(
        hello_first in any::<bool>(),
        chunks in proptest::collection::vec(bytes(200), 0..12),
        framed in any::<bool>(),
    ) {
        let server = Session::new([0xaa; 32], [0x55; 32]);
        let mut client = ClientSession::new(keypair(4), Some([0xaa; 32]));
        if hello_first {
            client.push(&server.hello_frame()).expect("hello");
        }
        for chunk in chunks {
            let chunk = if framed { encode(&chunk) } else { chunk };
            if let Err(e) = client.push(&chunk) {
                let decoding_error = !matches!(e, ClientError::TooLarge | ClientError::NotReady);
                prop_assert!(decoding_error, "{:?}", e);
                break;
            }
            prop_assert_eq!(client.poll_response(), None);
        }
        prop_assert_eq!(client.poll_response(), None);
    }
}
