//! The two ends of a connection as state machines over bytes.
//!
//! Server: [`Session::new`] with the node key and a fresh challenge, send
//! [`Session::hello_frame`], feed received bytes to [`Session::push`], which returns the
//! requests whose signature and sequence number check out, and send one
//! [`Session::response_frame`] per request, in order. Any error is final: send
//! [`SessionError::response`] if the stream still works, then close.
//!
//! Client: [`ClientSession::new`], feed received bytes to [`ClientSession::push`] (the
//! first frame must be the hello), send [`ClientSession::request_frame`]s, collect
//! [`ClientSession::poll_response`].

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_compact::{KeyPair, PublicKey, Signature};

use crate::frame::{self, FrameDecoder, FrameError};
use crate::message::{ErrorCode, Request, Response, ServerHello, SignedRequest};
use crate::{signed_message, MAX_FRAME_BYTES, VERSION};

/// A request whose signature and sequence number were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorized {
    /// The key that signed it (who is asking).
    pub owner: [u8; 32],
    /// Its sequence number on the connection.
    pub seq: u64,
    /// The request.
    pub request: Request,
}

/// Why the server ends a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// The byte stream broke framing (oversize frame, flooding).
    Frame(FrameError),
    /// A frame is not a `SignedRequest`.
    Malformed,
    /// The owner key is invalid or the signature does not verify.
    BadSignature,
    /// The sequence number is not the next one (a replay or a reordering).
    Replay {
        /// The number the server expected.
        expected_seq: u64,
        /// The number the request carried.
        got_seq: u64,
    },
    /// The signed bytes are not a `Request`.
    BadRequest,
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SessionError::Frame(e) => write!(f, "framing: {e}"),
            SessionError::Malformed => f.write_str("frame is not a signed request"),
            SessionError::BadSignature => f.write_str("bad request signature"),
            SessionError::Replay { expected_seq, got_seq } => {
                write!(f, "sequence number {got_seq}, expected {expected_seq} (replay?)")
            }
            SessionError::BadRequest => f.write_str("signed bytes are not a request"),
        }
    }
}

impl SessionError {
    /// The last response to send before closing.
    pub fn response(&self) -> Response {
        let code = match self {
            SessionError::BadSignature | SessionError::Replay { .. } => ErrorCode::Unauthorized,
            SessionError::Frame(_) | SessionError::Malformed | SessionError::BadRequest => ErrorCode::BadRequest,
        };
        Response::Error { code, message: alloc::format!("{self}") }
    }
}

/// The server's side of one connection.
#[derive(Debug)]
pub struct Session {
    hello: ServerHello,
    decoder: FrameDecoder,
    next_seq: u64,
    failed: Option<SessionError>,
}

impl Session {
    /// A session for the node `node_key`, with a fresh random `challenge`.
    pub fn new(node_key: [u8; 32], challenge: [u8; 32]) -> Session {
        let hello = ServerHello { version: VERSION, node_key, challenge };
        Session { hello, decoder: FrameDecoder::default(), next_seq: 0, failed: None }
    }

    /// The first frame to send.
    pub fn hello_frame(&self) -> Vec<u8> {
        frame::encode(&postcard::to_allocvec(&self.hello).unwrap_or_default())
    }

    /// Bytes received but not yet part of a complete request (a frame in transit).
    pub fn buffered_bytes(&self) -> usize {
        self.decoder.buffered_bytes()
    }

    /// The size the request in transit announced in its frame header, once that arrived.
    pub fn pending_request_bytes(&self) -> Option<usize> {
        self.decoder.pending_frame_bytes()
    }

    /// Requests authorized so far on this connection.
    pub fn requests_seen(&self) -> u64 {
        self.next_seq
    }

    /// Feeds received bytes; returns the complete requests in them, each checked. On an
    /// error, requests decoded from the same call are dropped too (the connection is
    /// about to close) and every later call fails the same way.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Authorized>, SessionError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.push_inner(bytes);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn push_inner(&mut self, bytes: &[u8]) -> Result<Vec<Authorized>, SessionError> {
        self.decoder.push(bytes).map_err(SessionError::Frame)?;
        let mut out = Vec::new();
        while let Some(body) = self.decoder.pop().map_err(SessionError::Frame)? {
            out.push(self.check(&body)?);
        }
        Ok(out)
    }

    fn check(&mut self, body: &[u8]) -> Result<Authorized, SessionError> {
        let signed: SignedRequest = postcard::from_bytes(body).map_err(|_| SessionError::Malformed)?;
        let key = PublicKey::from_slice(&signed.owner).map_err(|_| SessionError::BadSignature)?;
        let signature = Signature::from_slice(&signed.signature).map_err(|_| SessionError::BadSignature)?;
        let message = signed_message(&self.hello.challenge, signed.seq, &signed.request);
        key.verify(&message, &signature).map_err(|_| SessionError::BadSignature)?;
        // Checked after the signature, so an unauthenticated frame learns nothing.
        if signed.seq != self.next_seq {
            return Err(SessionError::Replay { expected_seq: self.next_seq, got_seq: signed.seq });
        }
        let request: Request = postcard::from_bytes(&signed.request).map_err(|_| SessionError::BadRequest)?;
        self.next_seq += 1;
        Ok(Authorized { owner: signed.owner, seq: signed.seq, request })
    }

    /// The frame carrying `response`.
    pub fn response_frame(&self, response: &Response) -> Vec<u8> {
        match postcard::to_allocvec(response) {
            Ok(body) if body.len() <= MAX_FRAME_BYTES => frame::encode(&body),
            _ => {
                let e = Response::error(ErrorCode::Internal, "response too large");
                frame::encode(&postcard::to_allocvec(&e).unwrap_or_default())
            }
        }
    }
}

/// Why the client gives up on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The byte stream broke framing.
    Frame(FrameError),
    /// The first frame is not a hello.
    BadHello,
    /// The server speaks another protocol version.
    Version(u32),
    /// The server is not the node we meant to reach.
    WrongNode {
        /// The key it announced.
        node_key: [u8; 32],
    },
    /// A frame is not a response.
    BadResponse,
    /// A response arrived that no request asked for.
    UnexpectedResponse,
    /// No hello received yet.
    NotReady,
    /// The request does not fit a frame.
    TooLarge,
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientError::Frame(e) => write!(f, "framing: {e}"),
            ClientError::BadHello => f.write_str("the server's first message is not a gridos control hello"),
            ClientError::Version(v) => write!(f, "the server speaks control protocol version {v}, we speak {VERSION}"),
            ClientError::WrongNode { node_key } => {
                let mut hex = String::new();
                for b in node_key {
                    let _ = core::fmt::Write::write_fmt(&mut hex, format_args!("{b:02x}"));
                }
                write!(f, "the server's node key is {hex}, not the key asked for")
            }
            ClientError::BadResponse => f.write_str("the server sent something that is not a response"),
            ClientError::UnexpectedResponse => f.write_str("the server sent a response nobody asked for"),
            ClientError::NotReady => f.write_str("no hello from the server yet"),
            ClientError::TooLarge => write!(f, "request larger than the {MAX_FRAME_BYTES}-byte frame limit"),
        }
    }
}

/// The client's side of one connection.
pub struct ClientSession {
    keypair: KeyPair,
    expected_node_key: Option<[u8; 32]>,
    hello: Option<ServerHello>,
    decoder: FrameDecoder,
    next_seq: u64,
    awaiting: usize,
    responses: VecDeque<Response>,
    failed: Option<ClientError>,
}

impl ClientSession {
    /// A client signing with `keypair`; when `expected_node_key` is given, a hello from any
    /// other key is refused.
    pub fn new(keypair: KeyPair, expected_node_key: Option<[u8; 32]>) -> ClientSession {
        ClientSession {
            keypair,
            expected_node_key,
            hello: None,
            decoder: FrameDecoder::default(),
            next_seq: 0,
            awaiting: 0,
            responses: VecDeque::new(),
            failed: None,
        }
    }

    /// The server's hello, once received.
    pub fn hello(&self) -> Option<&ServerHello> {
        self.hello.as_ref()
    }

    /// Requests sent whose response has not been received.
    pub fn awaiting(&self) -> usize {
        self.awaiting
    }

    /// Feeds received bytes. Errors are final.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.push_inner(bytes);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn push_inner(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.decoder.push(bytes).map_err(ClientError::Frame)?;
        while let Some(body) = self.decoder.pop().map_err(ClientError::Frame)? {
            if self.hello.is_none() {
                let hello: ServerHello = postcard::from_bytes(&body).map_err(|_| ClientError::BadHello)?;
                if hello.version != VERSION {
                    return Err(ClientError::Version(hello.version));
                }
                if self.expected_node_key.is_some_and(|k| k != hello.node_key) {
                    return Err(ClientError::WrongNode { node_key: hello.node_key });
                }
                self.hello = Some(hello);
                continue;
            }
            let response: Response = postcard::from_bytes(&body).map_err(|_| ClientError::BadResponse)?;
            if self.awaiting == 0 {
                return Err(ClientError::UnexpectedResponse);
            }
            self.awaiting -= 1;
            self.responses.push_back(response);
        }
        Ok(())
    }

    /// Signs `request` with the session's key and frames it.
    pub fn request_frame(&mut self, request: &Request) -> Result<Vec<u8>, ClientError> {
        let keypair = self.keypair.clone();
        self.request_frame_signed_by(&keypair, request)
    }

    /// Signs `request` with another key (a connection may carry several signers).
    pub fn request_frame_signed_by(&mut self, keypair: &KeyPair, request: &Request) -> Result<Vec<u8>, ClientError> {
        let challenge = self.hello.as_ref().ok_or(ClientError::NotReady)?.challenge;
        let body = postcard::to_allocvec(request).map_err(|_| ClientError::TooLarge)?;
        let seq = self.next_seq;
        let signature = keypair.sk.sign(signed_message(&challenge, seq, &body), None);
        let signed = SignedRequest { owner: *keypair.pk, seq, request: body, signature: signature.to_vec() };
        let frame_body = postcard::to_allocvec(&signed).map_err(|_| ClientError::TooLarge)?;
        if frame_body.len() > MAX_FRAME_BYTES {
            return Err(ClientError::TooLarge);
        }
        self.next_seq += 1;
        self.awaiting += 1;
        Ok(frame::encode(&frame_body))
    }

    /// The next response, in request order.
    pub fn poll_response(&mut self) -> Option<Response> {
        self.responses.pop_front()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::Payload;
    use alloc::vec;

    fn keypair(seed: u8) -> KeyPair {
        workloads::manifest::key_pair_from_seed([seed; 32])
    }

    fn connected(seed: u8) -> (Session, ClientSession) {
        let server = Session::new([0xaa; 32], [0x55; 32]);
        let mut client = ClientSession::new(keypair(seed), Some([0xaa; 32]));
        client.push(&server.hello_frame()).unwrap();
        assert!(client.hello().is_some());
        (server, client)
    }

    #[test]
    fn requests_round_trip_in_order_with_owner() {
        let (mut server, mut client) = connected(1);
        let mut bytes = client.request_frame(&Request::List).unwrap();
        bytes.extend(client.request_frame(&Request::Status { id: 7 }).unwrap());
        let got = server.push(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].owner, *keypair(1).pk);
        assert_eq!((got[0].seq, &got[0].request), (0, &Request::List));
        assert_eq!((got[1].seq, &got[1].request), (1, &Request::Status { id: 7 }));
        let mut replies = server.response_frame(&Response::Stopped);
        replies.extend(server.response_frame(&Response::Removed));
        client.push(&replies).unwrap();
        assert_eq!(client.poll_response(), Some(Response::Stopped));
        assert_eq!(client.poll_response(), Some(Response::Removed));
        assert_eq!(client.poll_response(), None);
    }

    #[test]
    fn big_deploy_request_passes() {
        let (mut server, mut client) = connected(1);
        let deploy = Request::Deploy { signed_manifest: vec![1; 100], payload: Payload::Wasm(vec![2; 3 << 20]), bundle: vec![3; 5 << 20] };
        let bytes = client.request_frame(&deploy).unwrap();
        let mut got = Vec::new();
        for chunk in bytes.chunks(1400) {
            got.extend(server.push(chunk).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].request, deploy);
    }

    #[test]
    fn replayed_frame_is_rejected() {
        let (mut server, mut client) = connected(1);
        let frame = client.request_frame(&Request::List).unwrap();
        server.push(&frame).unwrap();
        let e = server.push(&frame).unwrap_err();
        assert_eq!(e, SessionError::Replay { expected_seq: 1, got_seq: 0 });
        assert!(matches!(e.response(), Response::Error { code: ErrorCode::Unauthorized, .. }));
        // Final: even a good next request is refused now, with the same error.
        assert_eq!(server.push(&client.request_frame(&Request::List).unwrap()), Err(e));
    }

    #[test]
    fn skipped_sequence_number_is_rejected() {
        let (mut server, mut client) = connected(1);
        let _lost = client.request_frame(&Request::List).unwrap();
        let second = client.request_frame(&Request::List).unwrap();
        assert_eq!(server.push(&second), Err(SessionError::Replay { expected_seq: 0, got_seq: 1 }));
    }

    #[test]
    fn request_for_another_connection_is_rejected() {
        // Signed under a different challenge: a recorded request cannot be replayed on a
        // new connection.
        let (_, mut client) = connected(1);
        let frame = client.request_frame(&Request::List).unwrap();
        let mut other = Session::new([0xaa; 32], [0x56; 32]);
        assert_eq!(other.push(&frame), Err(SessionError::BadSignature));
    }

    #[test]
    fn tampered_owner_request_or_signature_is_rejected() {
        let (_, mut client) = connected(1);
        let frame = client.request_frame(&Request::Stop { id: 1 }).unwrap();
        let body = &frame[4..];
        let signed: SignedRequest = postcard::from_bytes(body).unwrap();
        let mut cases = Vec::new();
        let mut t = signed.clone();
        t.owner = *keypair(2).pk;
        cases.push(t);
        let mut t = signed.clone();
        t.request = postcard::to_allocvec(&Request::Stop { id: 2 }).unwrap();
        cases.push(t);
        let mut t = signed.clone();
        t.signature[10] ^= 1;
        cases.push(t);
        let mut t = signed.clone();
        t.signature.truncate(63);
        cases.push(t);
        let mut t = signed.clone();
        t.owner = [0; 32];
        cases.push(t);
        for (i, t) in cases.into_iter().enumerate() {
            let mut server = Session::new([0xaa; 32], [0x55; 32]);
            let bytes = frame::encode(&postcard::to_allocvec(&t).unwrap());
            assert_eq!(server.push(&bytes), Err(SessionError::BadSignature), "case {i}");
        }
    }

    #[test]
    fn several_signers_on_one_connection() {
        let (mut server, mut client) = connected(1);
        let a = client.request_frame(&Request::List).unwrap();
        let b = client.request_frame_signed_by(&keypair(2), &Request::List).unwrap();
        let got = server.push(&[a, b].concat()).unwrap();
        assert_eq!(got[0].owner, *keypair(1).pk);
        assert_eq!(got[1].owner, *keypair(2).pk);
    }

    #[test]
    fn garbage_and_signed_garbage() {
        let mut server = Session::new([0; 32], [0; 32]);
        assert_eq!(server.push(&frame::encode(b"not a request")), Err(SessionError::Malformed));
        let (mut server, mut client) = connected(1);
        // A valid signature over bytes that are not a Request.
        let challenge = client.hello().unwrap().challenge;
        let kp = keypair(1);
        let junk = vec![0xff; 9];
        let sig = kp.sk.sign(signed_message(&challenge, 0, &junk), None);
        let signed = SignedRequest { owner: *kp.pk, seq: 0, request: junk, signature: sig.to_vec() };
        assert_eq!(server.push(&frame::encode(&postcard::to_allocvec(&signed).unwrap())), Err(SessionError::BadRequest));
        let _ = client.request_frame(&Request::List);
        let mut server = Session::new([0; 32], [0; 32]);
        assert!(matches!(server.push(&[0xff; 8]), Err(SessionError::Frame(FrameError::TooLarge { .. }))));
    }

    #[test]
    fn client_checks_hello_and_responses() {
        let server = Session::new([0xaa; 32], [0x55; 32]);
        let mut client = ClientSession::new(keypair(1), Some([0xab; 32]));
        assert!(matches!(client.push(&server.hello_frame()), Err(ClientError::WrongNode { .. })));
        let mut client = ClientSession::new(keypair(1), None);
        assert_eq!(client.request_frame(&Request::List), Err(ClientError::NotReady));
        let wrong_version = ServerHello { version: 99, node_key: [0; 32], challenge: [0; 32] };
        assert_eq!(client.push(&frame::encode(&postcard::to_allocvec(&wrong_version).unwrap())), Err(ClientError::Version(99)));
        let mut client = ClientSession::new(keypair(1), None);
        assert_eq!(client.push(&frame::encode(b"")), Err(ClientError::BadHello));
        let mut client = ClientSession::new(keypair(1), None);
        client.push(&server.hello_frame()).unwrap();
        assert_eq!(client.push(&server.response_frame(&Response::Stopped)), Err(ClientError::UnexpectedResponse));
        let mut client = ClientSession::new(keypair(1), None);
        client.push(&server.hello_frame()).unwrap();
        client.request_frame(&Request::List).unwrap();
        assert_eq!(client.push(&frame::encode(&[0xff, 0xff, 0xff])), Err(ClientError::BadResponse));
    }

    proptest::proptest! {
        #[test]
        fn server_session_never_panics_on_random_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..16),
        ) {
            let mut server = Session::new([1; 32], [2; 32]);
            for c in &chunks {
                if let Ok(got) = server.push(c) {
                    // Random bytes cannot carry a valid signature.
                    proptest::prop_assert!(got.is_empty());
                }
            }
        }

        #[test]
        fn client_session_never_panics_on_random_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..16),
        ) {
            let mut client = ClientSession::new(keypair(1), None);
            for c in &chunks {
                let _ = client.push(c);
                let _ = client.poll_response();
            }
        }
    }
}
