//! Integration tests of the packet layer: cs.packetstream packets (golden vectors captured from
//! the real Python library, see `shared/reference/peers.md` §1), the stream framing and the
//! COBS+CRC serial framing.

use proptest::prelude::*;
use rivulet_core::wire::packet::{FIRST_REQUEST_TAG, TAG_EOF, TAG_ERQ};
use rivulet_core::wire::serial::crc16;
use rivulet_core::wire::stream::{emit_frame, frame_len};
use rivulet_core::wire::{
    Error, FrameDecoder, FrameEncoder, FrameWriter, Framing, Packet, PacketKind, PacketRepr, SerialDecoder,
    SerialFraming, StreamDecoder, StreamFraming, varint,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Hex digits to bytes; whitespace is ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits in {text:?}");
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// Feeds `bytes` to `decoder` the way a driver does (`read_buffer` / `commit` / `next_body`),
/// in reads of the given sizes (cycled; the rest in one read when empty). Returns every body and
/// error in order. A decoder that does not resync stops at its first error.
fn feed<D: FrameDecoder>(decoder: &mut D, bytes: &[u8], reads: &[usize]) -> Vec<Result<Vec<u8>, Error>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = reads.iter().copied().cycle();
    while !rest.is_empty() {
        let want = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let space = decoder.read_buffer();
        assert!(!space.is_empty(), "decoder offers no room after being drained: it would stall the link");
        let n = want.min(space.len());
        space[..n].copy_from_slice(&rest[..n]);
        decoder.commit(n);
        rest = &rest[n..];
        loop {
            match decoder.next_body() {
                Ok(Some(body)) => out.push(Ok(body.to_vec())),
                Ok(None) => break,
                Err(error) => {
                    out.push(Err(error));
                    if !D::RESYNCS {
                        return out;
                    }
                }
            }
        }
    }
    out
}

/// One packet as the capture shows it: its whole frame and what it means.
struct Golden {
    what: &'static str,
    frame: Vec<u8>,
    channel: u64,
    tag: u64,
    kind: PacketKind,
    payload: Vec<u8>,
}

impl Golden {
    fn repr(&self) -> PacketRepr<'_> {
        PacketRepr { channel: self.channel, tag: self.tag, kind: self.kind, payload: &self.payload }
    }
}

fn request(what: &'static str, frame: &str, tag: u64, rq_type: u64, flags: u64, payload: &[u8]) -> Golden {
    Golden {
        what,
        frame: hex(frame),
        channel: 0,
        tag,
        kind: PacketKind::Request { rq_type, flags },
        payload: payload.to_vec(),
    }
}

fn response(what: &'static str, frame: &str, tag: u64, ok: bool, flags: u64, payload: &[u8]) -> Golden {
    Golden {
        what,
        frame: hex(frame),
        channel: 0,
        tag,
        kind: PacketKind::Response { ok, flags },
        payload: payload.to_vec(),
    }
}

fn end_of_requests(what: &'static str) -> Golden {
    Golden { what, frame: hex("03 01 02 00"), channel: 0, tag: 1, kind: PacketKind::EndOfRequests, payload: vec![] }
}

fn end_of_file(what: &'static str) -> Golden {
    Golden { what, frame: hex("03 00 02 00"), channel: 0, tag: 0, kind: PacketKind::EndOfFile, payload: vec![] }
}

/// The 1024 payload bytes of the large request. peers.md shows only the header (`88 03 07 02 02`);
/// the content is arbitrary, so any 1024 bytes exercise the same framing.
fn big_payload() -> Vec<u8> {
    (0..1024u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// peers.md §1 "Captured session", client to server, in capture order.
fn client_to_server() -> Vec<Golden> {
    let mut big_frame = hex("88 03 07 02 02");
    big_frame.extend(big_payload());
    vec![
        request("echo hello", "08 02 02 01 68656c6c6f", 2, 0, 0, b"hello"),
        request("reverse abcdef", "09 03 02 02 616263646566", 3, 1, 0, b"abcdef"),
        request("failing request", "04 04 02 03 78", 4, 2, 0, b"x"),
        request("flags request", "08 05 16 04 3132333435", 5, 3, 5, b"12345"),
        request("empty request", "03 06 02 01", 6, 0, 0, b""),
        Golden {
            what: "1024-byte request",
            frame: big_frame,
            channel: 0,
            tag: 7,
            kind: PacketKind::Request { rq_type: 1, flags: 0 },
            payload: big_payload(),
        },
        end_of_requests("client ERQ"),
        end_of_file("client EOF"),
    ]
}

/// peers.md §1 "Captured session", server to client, in capture order.
fn server_to_client() -> Vec<Golden> {
    vec![
        response("echo reply", "07 02 04 68656c6c6f", 2, true, 0, b"hello"),
        response("reverse reply", "08 03 04 666564636261", 3, true, 0, b"fedcba"),
        response(
            "exception reply",
            "1a 04 00 657863657074696f6e20647572696e672068616e646c6572",
            4,
            false,
            0,
            b"exception during handler",
        ),
        response("flags reply", "03 05 34 35", 5, true, 6, b"5"),
        response("empty reply", "02 06 04", 6, true, 0, b""),
        end_of_requests("server ERQ"),
        end_of_file("server EOF"),
    ]
}

fn all_golden() -> Vec<Golden> {
    let mut all = client_to_server();
    all.extend(server_to_client());
    all
}

fn session_bytes(packets: &[Golden]) -> Vec<u8> {
    packets.iter().flat_map(|p| p.frame.iter().copied()).collect()
}

fn session_bodies(packets: &[Golden]) -> Vec<Result<Vec<u8>, Error>> {
    packets.iter().map(|p| Ok(p.frame[varint::decode(&p.frame).unwrap().1..].to_vec())).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Golden vectors
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_frames_decode_to_their_meaning_and_reencode_exactly() {
    for golden in all_golden() {
        let what = golden.what;
        let mut storage = [0u8; 2048];
        let mut decoder = StreamDecoder::new(&mut storage);
        assert_eq!(decoder.push(&golden.frame), golden.frame.len(), "{what}: push");
        let body = decoder.next_body().unwrap().unwrap_or_else(|| panic!("{what}: no body")).to_vec();
        assert_eq!(decoder.next_body(), Ok(None), "{what}: one frame, one body");
        assert_eq!(decoder.buffered(), 0, "{what}: the frame is consumed entirely");

        let repr = PacketRepr::parse_bytes(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(repr, golden.repr(), "{what}: decoded fields");

        let mut out = [0u8; 2048];
        let n = emit_frame(&repr, &mut out).unwrap();
        assert_eq!(&out[..n], &golden.frame[..], "{what}: re-encoding");
        assert_eq!(frame_len(&repr), Ok(n), "{what}: frame_len");
        assert_eq!(repr.buffer_len(), Ok(body.len()), "{what}: buffer_len");
        assert_eq!(repr.is_end_marker(), matches!(repr.kind, PacketKind::EndOfFile | PacketKind::EndOfRequests));
    }
}

#[test]
fn golden_frames_raw_header_fields() {
    // The wire-level view: fields exactly as cs.packetstream writes them, offsets not undone.
    let cases: &[(&str, u64, bool, u64, u64, usize)] = &[
        // frame, tag, is_request, wire flags, wire rq_type, header length
        ("08 02 02 01 68656c6c6f", 2, true, 0, 1, 3),
        ("07 02 04 68656c6c6f", 2, false, 1, 0, 2),
        ("1a 04 00 657863657074696f6e20647572696e672068616e646c6572", 4, false, 0, 0, 2),
        ("08 05 16 04 3132333435", 5, true, 5, 4, 3),
        ("03 05 34 35", 5, false, 13, 0, 2),
        ("02 06 04", 6, false, 1, 0, 2),
        ("03 01 02 00", 1, true, 0, 0, 3),
        ("03 00 02 00", 0, true, 0, 0, 3),
    ];
    for &(frame, tag, is_request, wire_flags, wire_rq_type, header_len) in cases {
        let frame = hex(frame);
        let body = &frame[1..];
        let packet = Packet::new_checked(body).unwrap();
        assert_eq!(packet.tag(), tag);
        assert_eq!(packet.channel(), 0);
        assert_eq!(packet.is_request(), is_request);
        assert_eq!(packet.wire_flags(), wire_flags);
        assert_eq!(packet.wire_rq_type(), wire_rq_type);
        assert_eq!(packet.header_len(), header_len);
        assert_eq!(packet.payload(), &body[header_len..]);
        assert_eq!(packet.into_inner(), body);
    }
}

#[test]
fn golden_big_request_has_two_byte_length_prefix() {
    let big = client_to_server().into_iter().find(|p| p.what == "1024-byte request").unwrap();
    assert_eq!(&big.frame[..2], &[0x88, 0x03]);
    assert_eq!(varint::decode(&big.frame).unwrap(), (1027, 2));
    assert_eq!(big.frame.len(), 2 + 1027);
}

#[test]
fn golden_failure_reason_is_utf8() {
    let reply = server_to_client().into_iter().find(|p| p.what == "exception reply").unwrap();
    let repr = PacketRepr::parse_bytes(&reply.frame[1..]).unwrap();
    assert_eq!(repr.kind, PacketKind::Response { ok: false, flags: 0 });
    assert_eq!(core::str::from_utf8(repr.payload), Ok("exception during handler"));
}

#[test]
fn end_markers_constants_are_the_wire_packets() {
    let mut out = [0u8; 8];
    let n = emit_frame(&PacketRepr::EOF, &mut out).unwrap();
    assert_eq!(&out[..n], &[0x03, 0x00, 0x02, 0x00]);
    let n = emit_frame(&PacketRepr::ERQ, &mut out).unwrap();
    assert_eq!(&out[..n], &[0x03, 0x01, 0x02, 0x00]);
    assert!(PacketRepr::EOF.is_end_marker() && PacketRepr::ERQ.is_end_marker());
    assert!(!PacketRepr::request(0, 2, 0, 0, b"").is_end_marker());
    assert!(!PacketRepr::response(0, 0, true, 0, b"").is_end_marker());
    assert_eq!((TAG_EOF, TAG_ERQ, FIRST_REQUEST_TAG), (0, 1, 2));
}

// ---------------------------------------------------------------------------------------------
// 2. StreamDecoder
// ---------------------------------------------------------------------------------------------

#[test]
fn stream_session_byte_by_byte_yields_every_packet_in_order() {
    for packets in [client_to_server(), server_to_client()] {
        let bytes = session_bytes(&packets);
        let mut storage = [0u8; 1100];
        let mut decoder = StreamDecoder::new(&mut storage);
        let mut bodies = Vec::new();
        for byte in &bytes {
            assert_eq!(decoder.push(core::slice::from_ref(byte)), 1);
            while let Some(body) = decoder.next_body().unwrap() {
                bodies.push(Ok(body.to_vec()));
            }
        }
        assert_eq!(bodies, session_bodies(&packets));
        assert_eq!(decoder.buffered(), 0);
        for (body, golden) in bodies.iter().zip(&packets) {
            assert_eq!(PacketRepr::parse_bytes(body.as_ref().unwrap()), Ok(golden.repr()), "{}", golden.what);
        }
    }
}

#[test]
fn stream_session_in_one_read() {
    let packets = client_to_server();
    let mut storage = [0u8; 4096];
    let mut decoder = StreamDecoder::new(&mut storage);
    assert_eq!(feed(&mut decoder, &session_bytes(&packets), &[]), session_bodies(&packets));
}

#[test]
fn stream_frame_exactly_the_buffer_size_fits_and_one_more_byte_does_not() {
    let repr = PacketRepr::request(0, 9, 4, 0, &[0x5a; 40]);
    let mut frame = [0u8; 64];
    let n = emit_frame(&repr, &mut frame).unwrap();
    let frame = &frame[..n];

    let mut storage = vec![0u8; n];
    let mut decoder = StreamDecoder::new(&mut storage);
    assert_eq!(decoder.capacity(), n);
    let out = feed(&mut decoder, frame, &[7]);
    assert_eq!(out, vec![Ok(frame[1..].to_vec())]);

    let mut storage = vec![0u8; n - 1];
    let mut decoder = StreamDecoder::new(&mut storage);
    assert_eq!(decoder.push(frame), n - 1);
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
}

#[test]
fn stream_oversize_is_sticky_until_reset() {
    let mut storage = [0u8; 16];
    let mut decoder = StreamDecoder::new(&mut storage);
    let mut frame = [0u8; 64];
    emit_frame(&PacketRepr::request(0, 2, 0, 0, &[1u8; 30]), &mut frame).unwrap();
    decoder.push(&frame[..4]);
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
    // More bytes, even a whole valid small frame, do not bring the link back.
    decoder.push(&[0x03, 0x06, 0x02, 0x01]);
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
    assert_eq!(decoder.next_body(), Err(Error::Oversize));

    // A new link starts clean.
    decoder.reset();
    assert_eq!(decoder.buffered(), 0);
    assert_eq!(decoder.push(&[0x03, 0x06, 0x02, 0x01]), 4);
    assert_eq!(decoder.next_body(), Ok(Some(&[0x06, 0x02, 0x01][..])));
    assert_eq!(decoder.next_body(), Ok(None));
}

#[test]
fn stream_buffer_smaller_than_the_length_prefix_reports_oversize() {
    // `88 03` alone does not fit a 1-byte buffer; the decoder must not sit on a full buffer.
    let mut storage = [0u8; 1];
    let mut decoder = StreamDecoder::new(&mut storage);
    assert_eq!(decoder.push(&[0x88, 0x03]), 1);
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
}

#[test]
fn stream_length_prefix_overflowing_u64_is_an_error() {
    let overflowing: &[&[u8]] = &[
        // 2^64 exactly.
        &[0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        // Continuation bytes forever.
        &[0xff; 32],
        // Redundant leading groups that never end within the longest u64.
        &[0x80; 12],
    ];
    for bytes in overflowing {
        let mut storage = [0u8; 64];
        let mut decoder = StreamDecoder::new(&mut storage);
        decoder.push(bytes);
        assert_eq!(decoder.next_body(), Err(Error::Malformed), "{bytes:02x?}");
        assert_eq!(decoder.next_body(), Err(Error::Malformed), "sticky: {bytes:02x?}");
    }
    // u64::MAX fits the integer but not the buffer.
    let mut storage = [0u8; 64];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(&[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(decoder.next_body(), Err(Error::Oversize));
}

#[test]
fn stream_accepts_redundant_leading_groups_in_the_length() {
    // cs.packetstream's parser accepts `80` padding; so do we.
    let mut storage = [0u8; 64];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(&[0x80, 0x80, 0x03, 0x06, 0x02, 0x01]);
    assert_eq!(decoder.next_body(), Ok(Some(&[0x06, 0x02, 0x01][..])));
}

#[test]
fn stream_empty_frame_is_an_empty_body_and_an_invalid_packet() {
    let mut storage = [0u8; 8];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(&[0x00, 0x02, 0x06, 0x04]);
    assert_eq!(decoder.next_body(), Ok(Some(&[][..])));
    assert_eq!(PacketRepr::parse_bytes(&[]), Err(Error::Truncated));
    assert_eq!(decoder.next_body(), Ok(Some(&[0x06, 0x04][..])));
    assert_eq!(decoder.next_body(), Ok(None));
}

#[test]
fn stream_partial_frame_waits_for_the_rest() {
    let mut storage = [0u8; 32];
    let mut decoder = StreamDecoder::new(&mut storage);
    decoder.push(&hex("08 02 02 01 68 65"));
    assert_eq!(decoder.next_body(), Ok(None));
    assert_eq!(decoder.buffered(), 6);
    decoder.push(&hex("6c 6c 6f 03"));
    assert_eq!(decoder.next_body(), Ok(Some(&hex("02 02 01 68656c6c6f")[..])));
    assert_eq!(decoder.next_body(), Ok(None));
    assert_eq!(decoder.buffered(), 1);
}

proptest! {
    #[test]
    fn stream_session_in_random_reads(
        reads in proptest::collection::vec(1usize..80, 1..20),
        capacity in 1029usize..1300,
    ) {
        for packets in [client_to_server(), server_to_client()] {
            let mut storage = vec![0u8; capacity];
            let mut decoder = StreamDecoder::new(&mut storage);
            let out = feed(&mut decoder, &session_bytes(&packets), &reads);
            prop_assert_eq!(out, session_bodies(&packets));
        }
    }

    #[test]
    fn stream_random_frames_in_random_reads(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..12),
        reads in proptest::collection::vec(1usize..64, 1..10),
    ) {
        let mut bytes = Vec::new();
        let mut bodies = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            let repr = PacketRepr::request(i as u64, 2 + i as u64, 3, i as u64, payload);
            let mut frame = [0u8; 256];
            let n = emit_frame(&repr, &mut frame).unwrap();
            bytes.extend_from_slice(&frame[..n]);
            bodies.push(Ok(frame[n - repr.buffer_len().unwrap()..n].to_vec()));
        }
        let mut storage = [0u8; 256];
        let mut decoder = StreamDecoder::new(&mut storage);
        prop_assert_eq!(feed(&mut decoder, &bytes, &reads), bodies);
    }

    /// Whatever the bytes, the decoder neither panics nor stalls (room to read after draining),
    /// and every body it yields lies within the buffer.
    #[test]
    fn stream_byte_soup_never_panics_or_stalls(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        capacity in 1usize..80,
        reads in proptest::collection::vec(1usize..40, 1..5),
    ) {
        let mut storage = vec![0u8; capacity];
        let mut decoder = StreamDecoder::new(&mut storage);
        let out = feed(&mut decoder, &bytes, &reads);
        for (i, item) in out.iter().enumerate() {
            match item {
                Ok(body) => prop_assert!(body.len() < capacity),
                Err(_) => prop_assert_eq!(i, out.len() - 1, "a stream decoder stops at its first error"),
            }
            if let Ok(body) = item {
                let _ = PacketRepr::parse_bytes(body);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. PacketRepr
// ---------------------------------------------------------------------------------------------

/// A repr with its payload owned, so proptest can generate it.
#[derive(Debug, Clone)]
struct OwnedRepr {
    channel: u64,
    tag: u64,
    kind: PacketKind,
    payload: Vec<u8>,
}

impl OwnedRepr {
    fn repr(&self) -> PacketRepr<'_> {
        PacketRepr { channel: self.channel, tag: self.tag, kind: self.kind, payload: &self.payload }
    }
}

fn wide_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..300, any::<u64>()]
}

/// Every packet that can be written: request flags below 2^62, response flags below 2^61, user
/// rq_type below u64::MAX, exact EOF/ERQ. Requests may use tags 0 and 1 too: only wire rq_type 0
/// makes EOF/ERQ.
fn representable_repr() -> impl Strategy<Value = OwnedRepr> {
    let payload = proptest::collection::vec(any::<u8>(), 0..300);
    let request = (wide_u64(), wide_u64(), 0u64..u64::MAX, prop_oneof![0u64..64, 0u64..1 << 62], payload.clone())
        .prop_map(|(channel, tag, rq_type, flags, payload)| OwnedRepr {
            channel,
            tag,
            kind: PacketKind::Request { rq_type, flags },
            payload,
        });
    let response = (wide_u64(), wide_u64(), any::<bool>(), prop_oneof![0u64..64, 0u64..1 << 61], payload).prop_map(
        |(channel, tag, ok, flags, payload)| OwnedRepr {
            channel,
            tag,
            kind: PacketKind::Response { ok, flags },
            payload,
        },
    );
    prop_oneof![
        4 => request,
        4 => response,
        1 => Just(OwnedRepr { channel: 0, tag: TAG_EOF, kind: PacketKind::EndOfFile, payload: vec![] }),
        1 => Just(OwnedRepr { channel: 0, tag: TAG_ERQ, kind: PacketKind::EndOfRequests, payload: vec![] }),
    ]
}

proptest! {
    #[test]
    fn repr_round_trip(owned in representable_repr()) {
        let repr = owned.repr();
        let mut buf = [0u8; 512];
        let n = repr.emit(&mut buf).unwrap();
        prop_assert_eq!(repr.buffer_len(), Ok(n));
        prop_assert_eq!(PacketRepr::parse_bytes(&buf[..n]), Ok(repr));

        let packet = Packet::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(packet.tag(), repr.tag);
        prop_assert_eq!(packet.channel(), repr.channel);
        prop_assert_eq!(packet.is_request(), !matches!(repr.kind, PacketKind::Response { .. }));
        prop_assert_eq!(packet.payload(), repr.payload);
        prop_assert_eq!(packet.header_len() + repr.payload.len(), n);
        match repr.kind {
            PacketKind::Request { rq_type, flags } => {
                prop_assert_eq!(packet.wire_rq_type(), rq_type + 1);
                prop_assert_eq!(packet.wire_flags(), flags);
            }
            PacketKind::Response { ok, flags } => {
                prop_assert_eq!(packet.wire_rq_type(), 0);
                prop_assert_eq!(packet.wire_flags(), (flags << 1) | u64::from(ok));
            }
            PacketKind::EndOfFile | PacketKind::EndOfRequests => {
                prop_assert_eq!((packet.wire_rq_type(), packet.wire_flags()), (0, 0));
            }
        }

        // Framed: frame_len is exact and a decoder gives the body back.
        let mut frame = [0u8; 600];
        let framed = emit_frame(&repr, &mut frame).unwrap();
        prop_assert_eq!(frame_len(&repr), Ok(framed));
        prop_assert_eq!(&frame[framed - n..framed], &buf[..n]);
        let mut storage = [0u8; 600];
        let mut decoder = StreamDecoder::new(&mut storage);
        decoder.push(&frame[..framed]);
        let body = decoder.next_body().unwrap().unwrap();
        prop_assert_eq!(PacketRepr::parse_bytes(body), Ok(repr));
    }

    #[test]
    fn repr_emit_into_short_buffers_is_buffer_too_small(owned in representable_repr()) {
        let repr = owned.repr();
        let needed = repr.buffer_len().unwrap();
        let framed = frame_len(&repr).unwrap();
        let mut buf = vec![0u8; framed];
        for len in 0..needed {
            prop_assert_eq!(repr.emit(&mut buf[..len]), Err(Error::BufferTooSmall), "len {}", len);
        }
        for len in 0..framed {
            prop_assert_eq!(emit_frame(&repr, &mut buf[..len]), Err(Error::BufferTooSmall), "frame len {}", len);
        }
        prop_assert_eq!(repr.emit(&mut buf[..needed]), Ok(needed));
        prop_assert_eq!(emit_frame(&repr, &mut buf[..framed]), Ok(framed));
    }

    /// Arbitrary bytes never panic, and whatever parses re-emits to a canonical form (no longer
    /// than the input) that parses to the same meaning.
    #[test]
    fn parse_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(packet) = Packet::new_checked(&bytes[..]) {
            prop_assert!(packet.header_len() <= bytes.len());
            prop_assert_eq!(packet.payload(), &bytes[packet.header_len()..]);
        }
        if let Ok(repr) = PacketRepr::parse_bytes(&bytes) {
            let mut out = [0u8; 128];
            let n = repr.emit(&mut out).unwrap();
            prop_assert!(n <= bytes.len());
            prop_assert_eq!(PacketRepr::parse_bytes(&out[..n]), Ok(repr));
        }
    }

    /// A request with wire rq_type 0 is EOF or ERQ exactly, or malformed (cs.packetstream ends its
    /// receive loop on it).
    #[test]
    fn wire_rq_type_zero_is_eof_erq_or_malformed(
        channel in prop_oneof![Just(0u64), 0u64..4, any::<u64>()],
        explicit_channel in any::<bool>(),
        tag in prop_oneof![0u64..4, any::<u64>()],
        flags in prop_oneof![Just(0u64), 0u64..4, 0u64..1 << 62],
        payload in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut body = [0u8; 64];
        let mut at = 0;
        let has_channel = channel != 0 || explicit_channel;
        let flagword = (flags << 2) | 0x02 | u64::from(has_channel);
        at += varint::encode(tag, &mut body[at..]).unwrap();
        at += varint::encode(flagword, &mut body[at..]).unwrap();
        if has_channel {
            at += varint::encode(channel, &mut body[at..]).unwrap();
        }
        at += varint::encode(0, &mut body[at..]).unwrap();
        body[at..at + payload.len()].copy_from_slice(&payload);
        let body = &body[..at + payload.len()];

        let expected = match (channel, tag, flags, payload.is_empty()) {
            (0, 0, 0, true) => Ok(PacketRepr::EOF),
            (0, 1, 0, true) => Ok(PacketRepr::ERQ),
            _ => Err(Error::Malformed),
        };
        prop_assert_eq!(PacketRepr::parse_bytes(body), expected);
    }
}

#[test]
fn malformed_and_truncated_bodies() {
    let cases: &[(&str, Error)] = &[
        ("", Error::Truncated),
        ("02", Error::Truncated),                                  // flagword missing
        ("02 81", Error::Truncated),                               // flagword mid-number
        ("02 03", Error::Truncated),                               // channel announced, missing
        ("02 02", Error::Truncated),                               // request without rq_type
        ("02 03 05", Error::Truncated),                            // request on channel 5 without rq_type
        ("02 02 00", Error::Malformed),                            // wire rq_type 0 on an ordinary tag
        ("00 02 00 ff", Error::Malformed),                         // EOF with a payload
        ("01 06 00", Error::Malformed),                            // ERQ with flags
        ("00 03 05 00", Error::Malformed),                         // EOF on channel 5
        ("82 80 80 80 80 80 80 80 80 00 02 01", Error::Malformed), // tag overflows u64
    ];
    for &(body, error) in cases {
        assert_eq!(PacketRepr::parse_bytes(&hex(body)), Err(error), "{body}");
    }
    // Tags 0 and 1 are EOF/ERQ only with wire rq_type 0 (cs.packetstream compares whole packets);
    // with any other rq_type they are ordinary requests.
    assert_eq!(PacketRepr::parse_bytes(&hex("00 02 01")), Ok(PacketRepr::request(0, TAG_EOF, 0, 0, b"")));
    assert_eq!(PacketRepr::parse_bytes(&hex("01 02 05 78")), Ok(PacketRepr::request(0, TAG_ERQ, 4, 0, b"x")));
    assert_eq!(PacketRepr::parse_bytes(&hex("00 03 05 01")), Ok(PacketRepr::request(5, 0, 0, 0, b"")));
    assert_eq!(PacketRepr::parse_bytes(&hex("01 04")), Ok(PacketRepr::response(0, 1, true, 0, b"")));
    // An explicit channel 0 means channel 0: this is EOF.
    assert_eq!(PacketRepr::parse_bytes(&hex("00 03 00 00")), Ok(PacketRepr::EOF));
}

#[test]
fn unrepresentable_values() {
    let cases: &[PacketRepr<'_>] = &[
        PacketRepr::request(0, 2, 0, 1 << 62, b""),
        PacketRepr::request(0, 2, 0, u64::MAX, b""),
        PacketRepr::request(0, 2, u64::MAX, 0, b""),
        PacketRepr::response(0, 2, true, 1 << 61, b""),
        PacketRepr::response(0, 2, false, u64::MAX, b""),
        // EOF/ERQ other than the exact packets would be a malformed EOF to the peer.
        PacketRepr { channel: 0, tag: 5, kind: PacketKind::EndOfFile, payload: b"" },
        PacketRepr { channel: 3, tag: 0, kind: PacketKind::EndOfFile, payload: b"" },
        PacketRepr { channel: 0, tag: 0, kind: PacketKind::EndOfFile, payload: b"x" },
        PacketRepr { channel: 0, tag: 0, kind: PacketKind::EndOfRequests, payload: b"" },
        PacketRepr { channel: 0, tag: 1, kind: PacketKind::EndOfRequests, payload: b"\0" },
    ];
    for repr in cases {
        let mut buf = [0u8; 64];
        assert_eq!(repr.emit(&mut buf), Err(Error::Unrepresentable), "{repr:?}");
        assert_eq!(repr.buffer_len(), Err(Error::Unrepresentable), "{repr:?}");
        assert_eq!(emit_frame(repr, &mut buf), Err(Error::Unrepresentable), "{repr:?}");
        assert_eq!(frame_len(repr), Err(Error::Unrepresentable), "{repr:?}");
    }
    // The largest representable values still round-trip.
    for repr in [
        PacketRepr::request(u64::MAX, u64::MAX, u64::MAX - 1, (1 << 62) - 1, b"p"),
        PacketRepr::response(u64::MAX, u64::MAX, true, (1 << 61) - 1, b"p"),
        PacketRepr::request(1, 0, 0, 0, b""),
        PacketRepr::request(0, TAG_EOF, 0, 0, b""),
        PacketRepr::request(0, TAG_ERQ, 5, 0, b"x"),
    ] {
        let mut buf = [0u8; 64];
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(PacketRepr::parse_bytes(&buf[..n]), Ok(repr));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Serial framing
// ---------------------------------------------------------------------------------------------

/// Seals `body` with `framing` in the tightest transmit buffer its headroom and tailroom allow
/// (filled with junk first); returns the frame. Consecutive calls on one `framing` give
/// consecutive sequence numbers.
fn serial_frame(framing: &mut SerialFraming, body: &[u8]) -> Vec<u8> {
    let mut capacity = body.len() + framing.tailroom();
    while framing.headroom(capacity) + body.len() + framing.tailroom() > capacity {
        capacity += 1;
    }
    let headroom = framing.headroom(capacity);
    let mut buf = vec![0xa5u8; capacity];
    buf[headroom..headroom + body.len()].copy_from_slice(body);
    let range = framing.seal(&mut buf, headroom, body.len()).unwrap();
    buf[range].to_vec()
}

/// The frames of `bodies` sealed one after another by one `SerialFraming` (sequence numbers
/// 0, 1, 2, …).
fn serial_frames<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<Vec<u8>> {
    let mut framing = SerialFraming::new();
    bodies.iter().map(|body| serial_frame(&mut framing, body.as_ref())).collect()
}

/// The sequence number a frame carries, read with the reference COBS decoder.
fn serial_seq(frame: &[u8]) -> u8 {
    let (_, encoded) = frame.split_last().unwrap();
    reference_cobs_decode(encoded).unwrap()[0]
}

/// An independent COBS decoder (frame without its delimiter).
fn reference_cobs_decode(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < frame.len() {
        let code = usize::from(frame[at]);
        if code == 0 || at + code > frame.len() {
            return None;
        }
        out.extend_from_slice(&frame[at + 1..at + code]);
        at += code;
        if code < 0xff && at < frame.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// An independent COBS encoder in the minimal form (no trailing `01` after a final 254-byte
/// run), as most other implementations write it.
fn reference_cobs_encode(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    let mut code_at = 0;
    let mut code = 1u8;
    for (i, &byte) in data.iter().enumerate() {
        if byte == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(byte);
            code += 1;
            if code == 0xff && i + 1 < data.len() {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out
}

/// Positions of the COBS code bytes in an encoded frame (without its delimiter).
fn cobs_code_positions(frame: &[u8]) -> Vec<usize> {
    let mut positions = Vec::new();
    let mut at = 0;
    while at < frame.len() {
        positions.push(at);
        at += usize::from(frame[at]).max(1);
    }
    positions
}

/// What a serial frame COBS-encodes: `seq ++ body ++ crc16_be(seq ++ body)`.
fn with_seq_crc(seq: u8, body: &[u8]) -> Vec<u8> {
    let mut data = vec![seq];
    data.extend_from_slice(body);
    let crc = crc16(&data);
    data.extend_from_slice(&crc.to_be_bytes());
    data
}

fn serial_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..600),
        proptest::collection::vec(Just(0u8), 0..600),
        // Long runs without zeros cross the 254-byte COBS block boundaries.
        (240usize..800).prop_flat_map(|n| proptest::collection::vec(1u8..=255, n)),
    ]
}

#[test]
fn crc16_check_value() {
    assert_eq!(crc16(b"123456789"), 0x29b1);
    assert_eq!(crc16(b""), 0xffff);
}

#[test]
fn serial_frame_shape_and_every_length_near_cobs_boundaries() {
    // One framing for all frames: the sequence number counts up and wraps (3300 frames) while
    // each frame is checked on its own, with a fresh decoder.
    let mut framing = SerialFraming::new();
    let mut seq = 0u8;
    for len in 0..1100 {
        for body in [
            (0..len).map(|i| (i % 255 + 1) as u8).collect::<Vec<u8>>(),
            vec![0u8; len],
            (0..len).map(|i| if i % 3 == 0 { 0 } else { 0xff }).collect(),
        ] {
            let frame = serial_frame(&mut framing, &body);
            let (last, encoded) = frame.split_last().unwrap();
            assert_eq!(*last, 0, "frames end with the delimiter");
            assert!(!encoded.contains(&0), "no zero inside a frame (len {len})");
            let data_len = 1 + body.len() + 2;
            assert!(encoded.len() <= data_len + data_len / 254 + 1, "COBS overhead (len {len})");
            assert_eq!(reference_cobs_decode(encoded), Some(with_seq_crc(seq, &body)), "len {len} seq {seq}");
            seq = seq.wrapping_add(1);

            let mut storage = vec![0u8; frame.len()];
            let mut decoder = SerialDecoder::new(&mut storage);
            assert_eq!(decoder.push(&frame), frame.len());
            assert_eq!(decoder.next_body(), Ok(Some(&body[..])), "len {len}");
            assert_eq!(decoder.next_body(), Ok(None));
        }
    }
}

#[test]
fn serial_decoder_accepts_minimal_cobs_from_other_encoders() {
    // Lengths put `seq ++ body ++ crc` (body + 3 bytes) on and around the 254-byte COBS blocks,
    // where the minimal form drops the trailing `01` our encoder writes.
    let lens = [0, 1, 2, 249, 250, 251, 252, 253, 254, 504, 505, 506, 507, 508, 700];
    let mut minimal_differs = 0;
    for len in lens {
        for body in [(0..len).map(|i| (i % 255 + 1) as u8).collect::<Vec<u8>>(), vec![0u8; len]] {
            for seq in [0u8, 1, 0x7f, 0xfe, 0xff] {
                let data = with_seq_crc(seq, &body);
                let mut frame = reference_cobs_encode(&data);
                frame.push(0);
                assert_eq!(reference_cobs_decode(&frame[..frame.len() - 1]), Some(data), "len {len} seq {seq}");
                let mut framing = SerialFraming::new();
                for _ in 0..seq {
                    framing.seal(&mut [0u8; 8], 2, 0).unwrap();
                }
                if serial_frame(&mut framing, &body) != frame {
                    minimal_differs += 1;
                }
                let mut storage = vec![0u8; frame.len() + 4];
                let mut decoder = SerialDecoder::new(&mut storage);
                decoder.push(&frame);
                assert_eq!(decoder.next_body(), Ok(Some(&body[..])), "len {len} seq {seq}");
                assert_eq!(decoder.next_body(), Ok(None));
            }
        }
    }
    assert!(minimal_differs > 0, "some frames exercise the minimal form");

    // A run of frames from such an encoder, numbered consecutively, decodes in one decoder.
    let mut bytes = Vec::new();
    let mut bodies = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        let body: Vec<u8> = (0..*len).map(|j| (j % 255 + 1) as u8).collect();
        bytes.extend(reference_cobs_encode(&with_seq_crc(250u8.wrapping_add(i as u8), &body)));
        bytes.push(0);
        bodies.push(Ok(body));
    }
    let mut storage = [0u8; 1024];
    let mut decoder = SerialDecoder::new(&mut storage);
    assert_eq!(feed(&mut decoder, &bytes, &[]), bodies);
}

#[test]
fn serial_seal_rejects_short_buffers() {
    let mut framing = SerialFraming::new();
    // Headroom: the COBS code bytes for the whole capacity, plus the sequence number.
    assert_eq!(framing.headroom(12), 2);
    assert_eq!(framing.headroom(253), 2);
    assert_eq!(framing.headroom(254), 3);
    assert_eq!(framing.headroom(400), 3);
    assert_eq!(framing.tailroom(), 3);

    let body = [7u8; 300];
    let mut buf = [0u8; 400];
    buf[3..303].copy_from_slice(&body);
    // 303 bytes to encode (seq, body, CRC) need two code bytes in front of the seq.
    assert_eq!(framing.seal(&mut buf, 2, 300), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut buf, 1, 300), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut buf, 0, 300), Err(Error::BufferTooSmall));
    // No room for the CRC, or for the delimiter.
    let mut buf = [0u8; 303];
    assert_eq!(framing.seal(&mut buf, 3, 300), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut [1u8; 11], 2, 8), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut [1u8; 11], 2, 7), Err(Error::BufferTooSmall));
    // No room for the sequence number and a code byte both.
    assert_eq!(framing.seal(&mut [1u8; 12], 1, 7), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut buf, usize::MAX, 2), Err(Error::BufferTooSmall));

    // headroom 2 + body 7 + tailroom 3. Failed seals used no sequence number: this is frame 0.
    let mut buf = [1u8; 12];
    assert_eq!(framing.seal(&mut buf, 2, 7), Ok(0..12));
    assert_eq!(reference_cobs_decode(&buf[..11]), Some(with_seq_crc(0, &[1u8; 7])));
    assert_eq!(buf[11], 0);
    let mut buf = [1u8; 12];
    assert_eq!(framing.seal(&mut buf, 2, 7), Ok(0..12));
    assert_eq!(reference_cobs_decode(&buf[..11]), Some(with_seq_crc(1, &[1u8; 7])));
    // A failure after successes does not advance the counter either.
    assert_eq!(framing.seal(&mut [1u8; 11], 2, 7), Err(Error::BufferTooSmall));

    // The 300-byte body with enough headroom: frame 2.
    let mut buf = [0u8; 400];
    buf[3..303].copy_from_slice(&body);
    let range = framing.seal(&mut buf, 3, 300).unwrap();
    assert_eq!(range.start, 0);
    assert_eq!(buf[range.end - 1], 0);
    assert_eq!(reference_cobs_decode(&buf[..range.end - 1]), Some(with_seq_crc(2, &body)));
}

#[test]
fn serial_back_to_back_frames_in_one_push() {
    let bodies: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![], vec![0, 0, 0], vec![0x42; 300], b"last".to_vec()];
    // Leading and doubled delimiters are idle line, not frames.
    let mut bytes = vec![0, 0];
    for frame in serial_frames(&bodies) {
        bytes.extend(frame);
        bytes.push(0);
    }
    let mut storage = [0u8; 1024];
    let mut decoder = SerialDecoder::new(&mut storage);
    assert_eq!(decoder.push(&bytes), bytes.len());
    for body in &bodies {
        assert_eq!(decoder.next_body(), Ok(Some(&body[..])));
    }
    assert_eq!(decoder.next_body(), Ok(None));
}

/// Every single-byte corruption of the middle frame is reported for that frame alone; the
/// frames around it decode.
#[test]
fn serial_corrupt_byte_is_dropped_and_the_next_frame_decodes() {
    let mut framing = SerialFraming::new();
    let before = serial_frame(&mut framing, b"before");
    for body in [b"hello, world".to_vec(), vec![0u8; 5], (0..=255u8).cycle().take(600).collect()] {
        // Frames 0, 1, 2 in order: only the corruption can make the middle one fail.
        let mut next = framing;
        let frame = serial_frame(&mut next, &body);
        let after = serial_frame(&mut next, b"after");
        let intact = [before.clone(), frame.clone(), after.clone()].concat();
        let mut storage = [0u8; 700];
        let out = feed(&mut SerialDecoder::new(&mut storage), &intact, &[]);
        assert_eq!(out, vec![Ok(b"before".to_vec()), Ok(body.clone()), Ok(b"after".to_vec())]);
        for at in 0..frame.len() - 1 {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = frame.clone();
                bad[at] ^= flip;
                if bad[at] == 0 {
                    continue; // a new delimiter: two frames, tested below
                }
                let bytes = [before.clone(), bad, after.clone()].concat();
                let mut storage = [0u8; 700];
                let mut decoder = SerialDecoder::new(&mut storage);
                let out = feed(&mut decoder, &bytes, &[]);
                assert_eq!(out.len(), 3, "at {at} flip {flip:#x}: {out:?}");
                assert_eq!(out[0], Ok(b"before".to_vec()));
                assert!(
                    matches!(out[1], Err(Error::Checksum | Error::Malformed | Error::Truncated)),
                    "at {at} flip {flip:#x}: {:?}",
                    out[1]
                );
                assert_eq!(out[2], Ok(b"after".to_vec()));
            }
        }
    }
}

#[test]
fn serial_inserted_delimiter_loses_only_that_frame() {
    let mut framing = SerialFraming::new();
    let frame = serial_frame(&mut framing, b"a frame that breaks");
    let mut bytes = frame[..8].to_vec();
    bytes.push(0);
    bytes.extend(&frame[8..]);
    bytes.extend(serial_frame(&mut framing, b"next"));
    let mut storage = [0u8; 128];
    let mut decoder = SerialDecoder::new(&mut storage);
    let out = feed(&mut decoder, &bytes, &[3]);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out[0].is_err() && out[1].is_err());
    assert_eq!(out[2], Ok(b"next".to_vec()));
}

#[test]
fn serial_short_frames_are_truncated() {
    let mut storage = [0u8; 16];
    let mut decoder = SerialDecoder::new(&mut storage);
    // One data byte: shorter than a CRC.
    decoder.push(&[0x02, 0x41, 0x00]);
    assert_eq!(decoder.next_body(), Err(Error::Truncated));
    // A code byte pointing past the end of the frame.
    decoder.push(&[0x09, 0x41, 0x00]);
    assert_eq!(decoder.next_body(), Err(Error::Malformed));
    // A CRC without a sequence number: the CRC of nothing (`ff ff`) matches, yet it is too short.
    assert_eq!(crc16(&[]).to_be_bytes(), [0xff, 0xff]);
    decoder.push(&[0x03, 0xff, 0xff, 0x00]);
    assert_eq!(decoder.next_body(), Err(Error::Truncated));
    // A sequence number and its CRC alone: an empty body.
    let mut framing = SerialFraming::new();
    decoder.push(&serial_frame(&mut framing, b""));
    assert_eq!(decoder.next_body(), Ok(Some(&b""[..])));
    let frame = serial_frame(&mut framing, b"ok");
    decoder.push(&frame);
    assert_eq!(decoder.next_body(), Ok(Some(&b"ok"[..])));
}

#[test]
fn serial_garbage_longer_than_the_buffer_is_oversize_once() {
    let mut storage = [0u8; 64];
    let mut decoder = SerialDecoder::new(&mut storage);
    let garbage: Vec<u8> = (0..500u32).map(|i| (i % 254 + 1) as u8).collect();
    let mut bytes = garbage;
    bytes.push(0);
    let frames: Vec<Vec<u8>> = vec![b"first".to_vec(), vec![0; 40], b"third".to_vec()];
    for frame in serial_frames(&frames) {
        bytes.extend(frame);
    }
    for reads in [&[][..], &[1][..], &[17, 5][..], &[64][..]] {
        decoder.reset();
        let out = feed(&mut decoder, &bytes, reads);
        let mut expected = vec![Err(Error::Oversize)];
        expected.extend(frames.iter().cloned().map(Ok));
        assert_eq!(out, expected, "reads {reads:?}");
    }
}

#[test]
fn serial_reset_forgets_a_partial_frame() {
    let mut storage = [0u8; 64];
    let mut decoder = SerialDecoder::new(&mut storage);
    let frame = serial_frame(&mut SerialFraming::new(), b"whole");
    decoder.push(&frame[..4]);
    assert_eq!(decoder.next_body(), Ok(None));
    decoder.reset();
    decoder.push(&frame);
    assert_eq!(decoder.next_body(), Ok(Some(&b"whole"[..])));
}

/// Bodies of several shapes for the sequence tests (one longer than a COBS block).
fn sequence_bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("frame {i}").into_bytes(),
            1 => vec![],
            2 => vec![0; i],
            _ => (0..300).map(|j| (i + j) as u8).collect(),
        })
        .collect()
}

/// Read patterns the sequence tests run under.
const SEQUENCE_READS: [&[usize]; 4] = [&[], &[1], &[7, 3], &[64]];

/// A frame lost whole (bytes and delimiter) makes the next frame out of sequence; that frame is
/// dropped and the one after it decodes, and so does everything after.
#[test]
fn serial_lost_frame_is_a_sequence_error_then_resyncs() {
    let bodies = sequence_bodies(6);
    let frames = serial_frames(&bodies);
    for lost in 0..frames.len() {
        // One frame lost, or several in a row: still one error.
        for count in 1..=3.min(frames.len() - lost) {
            let gap = lost..lost + count;
            let bytes: Vec<u8> =
                frames.iter().enumerate().filter(|(i, _)| !gap.contains(i)).flat_map(|(_, f)| f.clone()).collect();
            let mut expected = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                if gap.contains(&i) {
                    continue;
                }
                if i == gap.end && lost > 0 {
                    // The frame after the gap: out of sequence. When the gap is at the start, the
                    // decoder has seen nothing yet and takes it.
                    expected.push(Err(Error::Sequence));
                } else {
                    expected.push(Ok(body.clone()));
                }
            }
            for reads in SEQUENCE_READS {
                let mut storage = [0u8; 512];
                let mut decoder = SerialDecoder::new(&mut storage);
                assert_eq!(feed(&mut decoder, &bytes, reads), expected, "lost {gap:?}, reads {reads:?}");
            }
        }
    }
}

/// A frame received twice: the repeat is out of sequence and dropped; the next frame decodes.
#[test]
fn serial_repeated_frame_is_a_sequence_error_then_resyncs() {
    let bodies = sequence_bodies(6);
    let frames = serial_frames(&bodies);
    for repeated in 0..frames.len() {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (i, (frame, body)) in frames.iter().zip(&bodies).enumerate() {
            bytes.extend(frame);
            expected.push(Ok(body.clone()));
            if i == repeated {
                bytes.extend(frame);
                expected.push(Err(Error::Sequence));
            }
        }
        for reads in SEQUENCE_READS {
            let mut storage = [0u8; 512];
            let mut decoder = SerialDecoder::new(&mut storage);
            assert_eq!(feed(&mut decoder, &bytes, reads), expected, "repeated {repeated}, reads {reads:?}");
        }
    }
    // Repeated three times: the first repeat is an error, the second is taken as a new start.
    let bytes = [frames[0].clone(), frames[0].clone(), frames[0].clone(), frames[1].clone()].concat();
    let mut storage = [0u8; 512];
    let mut decoder = SerialDecoder::new(&mut storage);
    assert_eq!(
        feed(&mut decoder, &bytes, &[]),
        vec![Ok(bodies[0].clone()), Err(Error::Sequence), Ok(bodies[0].clone()), Ok(bodies[1].clone())]
    );
}

/// The sequence number is a u8 that wraps: 300 frames in a row decode without an error, from a
/// `SerialFraming` and from a `FrameWriter`.
#[test]
fn serial_sequence_number_wraps() {
    let bodies: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let frames = serial_frames(&bodies);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(serial_seq(frame), i as u8, "frame {i}");
    }
    let bytes = frames.concat();
    let expected: Vec<_> = bodies.iter().cloned().map(Ok).collect();
    for reads in SEQUENCE_READS {
        let mut storage = [0u8; 64];
        let mut decoder = SerialDecoder::new(&mut storage);
        assert_eq!(feed(&mut decoder, &bytes, reads), expected, "reads {reads:?}");
    }
    // The gap detection works across the wrap too: losing frame 255 makes frame 256 (seq 0)
    // out of sequence.
    let bytes: Vec<u8> = frames.iter().enumerate().filter(|(i, _)| *i != 255).flat_map(|(_, f)| f.clone()).collect();
    let mut expected: Vec<_> = bodies.iter().cloned().map(Ok).collect();
    assert_eq!(expected.remove(255), Ok(bodies[255].clone()));
    expected[255] = Err(Error::Sequence);
    let mut storage = [0u8; 64];
    let mut decoder = SerialDecoder::new(&mut storage);
    assert_eq!(feed(&mut decoder, &bytes, &[]), expected);

    // A FrameWriter numbers its frames across pushes and across partial writes (`consume`).
    let reprs: Vec<PacketRepr<'_>> =
        bodies.iter().enumerate().map(|(i, body)| PacketRepr::request(0, 2 + i as u64, 1, 0, body)).collect();
    let mut tx = [0u8; 128];
    let mut writer = FrameWriter::new(&mut tx, Framing::Serial);
    let mut storage = [0u8; 64];
    let mut decoder = SerialDecoder::new(&mut storage);
    let mut wire = Vec::new();
    let mut out = Vec::new();
    for (i, repr) in reprs.iter().enumerate() {
        writer.push_repr(repr).unwrap();
        if i % 5 == 4 || i == reprs.len() - 1 {
            // Written out in two pieces, the first cutting a frame.
            let half = writer.pending().len() / 2;
            wire.extend_from_slice(&writer.pending()[..half]);
            out.extend(feed(&mut decoder, &writer.pending()[..half], &[]));
            writer.consume(half);
            wire.extend_from_slice(writer.pending());
            out.extend(feed(&mut decoder, writer.pending(), &[]));
            writer.consume(writer.pending().len());
            assert!(writer.is_empty());
        }
    }
    assert_eq!(out.len(), reprs.len());
    for (body, repr) in out.iter().zip(&reprs) {
        assert_eq!(PacketRepr::parse_bytes(body.as_ref().unwrap()), Ok(*repr));
    }
    let written: Vec<u8> = wire.split_inclusive(|&b| b == 0).map(serial_seq).collect();
    let counted: Vec<u8> = (0..reprs.len()).map(|i| i as u8).collect();
    assert_eq!(written, counted);
}

/// After `reset` the decoder takes any sequence number, as on its first frame.
#[test]
fn serial_reset_takes_any_sequence_number() {
    let frames = serial_frames(&sequence_bodies(8));
    let bodies = sequence_bodies(8);
    let mut storage = [0u8; 512];
    let mut decoder = SerialDecoder::new(&mut storage);
    assert_eq!(feed(&mut decoder, &frames[..3].concat(), &[]), bodies[..3].iter().cloned().map(Ok).collect::<Vec<_>>());
    // Without a reset, frame 6 after frame 2 is out of sequence, and so is frame 0 again.
    assert_eq!(feed(&mut decoder, &frames[6], &[]), vec![Err(Error::Sequence)]);
    assert_eq!(feed(&mut decoder, &frames[7], &[]), vec![Ok(bodies[7].clone())]);
    assert_eq!(feed(&mut decoder, &frames[0], &[]), vec![Err(Error::Sequence)]);
    assert_eq!(feed(&mut decoder, &frames[1], &[]), vec![Ok(bodies[1].clone())]);

    // After a reset: frame 6 after frame 1, and then frame 7.
    decoder.reset();
    assert_eq!(feed(&mut decoder, &frames[6..8].concat(), &[]), vec![Ok(bodies[6].clone()), Ok(bodies[7].clone())]);
    // Back to frame 0 (a peer that restarted its counter).
    decoder.reset();
    assert_eq!(feed(&mut decoder, &frames[..2].concat(), &[]), vec![Ok(bodies[0].clone()), Ok(bodies[1].clone())]);
    // The same frame again: a reset in between makes it a first frame, not a repeat.
    decoder.reset();
    assert_eq!(feed(&mut decoder, &frames[1], &[]), vec![Ok(bodies[1].clone())]);
    // A reset in the middle of a frame: the partial frame is forgotten and any seq is taken.
    decoder.push(&frames[2][..3]);
    assert_eq!(decoder.next_body(), Ok(None));
    decoder.reset();
    assert_eq!(feed(&mut decoder, &frames[5], &[]), vec![Ok(bodies[5].clone())]);
}

/// Every kind of bad frame starts the sequence over: the next frame is taken whatever its number.
#[test]
fn serial_any_error_restarts_the_sequence() {
    let bodies = sequence_bodies(8);
    let frames = serial_frames(&bodies);
    let mut corrupt = frames[1].clone();
    corrupt[2] ^= 0x10;
    let bad: [(&[u8], Error); 5] = [
        (&corrupt, Error::Checksum),
        (&[0x02, 0x41, 0x00], Error::Truncated),
        (&[0x09, 0x41, 0x00], Error::Malformed),
        (&[0x7f; 600], Error::Oversize),
        (&frames[4], Error::Sequence),
    ];
    for (garbage, error) in bad {
        // Frame 0, a bad frame, then frame 6: not 1, yet taken, and frame 7 after it.
        let bytes = [&frames[0][..], garbage, &[0], &frames[6], &frames[7]].concat();
        let mut storage = [0u8; 512];
        let mut decoder = SerialDecoder::new(&mut storage);
        assert_eq!(
            feed(&mut decoder, &bytes, &[]),
            vec![Ok(bodies[0].clone()), Err(error), Ok(bodies[6].clone()), Ok(bodies[7].clone())],
            "{error:?}"
        );
    }
}

proptest! {
    #[test]
    fn serial_round_trip(
        body in serial_body(),
        reads in proptest::collection::vec(1usize..300, 0..4),
        earlier in any::<u8>(),
    ) {
        // `earlier` frames sealed before this one: it carries that sequence number, and a fresh
        // decoder takes it whatever it is.
        let mut framing = SerialFraming::new();
        for _ in 0..earlier {
            serial_frame(&mut framing, b"earlier");
        }
        let frame = serial_frame(&mut framing, &body);
        prop_assert_eq!(frame.last(), Some(&0));
        prop_assert!(!frame[..frame.len() - 1].contains(&0));
        prop_assert_eq!(reference_cobs_decode(&frame[..frame.len() - 1]), Some(with_seq_crc(earlier, &body)));
        let mut storage = vec![0u8; frame.len()];
        let mut decoder = SerialDecoder::new(&mut storage);
        prop_assert_eq!(feed(&mut decoder, &frame, &reads), vec![Ok(body)]);
    }

    #[test]
    fn serial_many_frames_in_random_reads(
        bodies in proptest::collection::vec(serial_body(), 0..6),
        reads in proptest::collection::vec(1usize..700, 0..6),
    ) {
        let bytes: Vec<u8> = serial_frames(&bodies).concat();
        let mut storage = [0u8; 900];
        let mut decoder = SerialDecoder::new(&mut storage);
        let expected: Vec<_> = bodies.into_iter().map(Ok).collect();
        prop_assert_eq!(feed(&mut decoder, &bytes, &reads), expected);
    }

    /// A corrupted data byte (not a COBS code byte, not turned into a delimiter) always fails the
    /// CRC, and the next frame still decodes.
    #[test]
    fn serial_corrupt_data_byte_fails_the_crc(
        body in serial_body(),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut framing = SerialFraming::new();
        let frame = serial_frame(&mut framing, &body);
        let encoded = &frame[..frame.len() - 1];
        let codes = cobs_code_positions(encoded);
        let data: Vec<usize> = (0..encoded.len()).filter(|i| !codes.contains(i) && encoded[*i] != flip).collect();
        prop_assume!(!data.is_empty());
        let at = data[pick.index(data.len())];
        let mut bad = frame.clone();
        bad[at] ^= flip;
        let bytes = [bad, serial_frame(&mut framing, b"next")].concat();
        let mut storage = [0u8; 900];
        let mut decoder = SerialDecoder::new(&mut storage);
        prop_assert_eq!(feed(&mut decoder, &bytes, &[]), vec![Err(Error::Checksum), Ok(b"next".to_vec())]);
    }

    /// Byte soup never panics or stalls the decoder, and after it a delimiter and a valid frame
    /// always get through: the link always recovers.
    #[test]
    fn serial_byte_soup_never_panics_and_resyncs(
        soup in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..1500),
        capacity in 1usize..300,
        reads in proptest::collection::vec(1usize..200, 0..5),
    ) {
        let mut storage = vec![0u8; capacity];
        let mut decoder = SerialDecoder::new(&mut storage);
        for item in feed(&mut decoder, &soup, &reads).iter().flatten() {
            prop_assert!(item.len() + 3 < capacity);
        }
        // The soup may hold a frame that passes its CRC, with any sequence number: the first
        // frame after it may then be out of sequence, and the one after that is taken whatever.
        let frames = serial_frames(&[b"ok", b"OK"]);
        if frames.iter().all(|frame| frame.len() <= capacity) {
            let out = feed(&mut decoder, &[&[0][..], &frames[0], &frames[1]].concat(), &reads);
            prop_assert!(out.len() >= 2);
            let first = &out[out.len() - 2];
            prop_assert!(*first == Ok(b"ok".to_vec()) || *first == Err(Error::Sequence), "{:?}", first);
            prop_assert_eq!(out.last(), Some(&Ok(b"OK".to_vec())));
        }
    }

    #[test]
    fn serial_seal_never_panics(len in 0usize..64, headroom in 0usize..80, body_len in 0usize..80) {
        let mut buf = vec![0x11u8; len];
        if let Ok(range) = SerialFraming::new().seal(&mut buf, headroom, body_len) {
            prop_assert!(range.end <= len);
            prop_assert_eq!(buf[range.end - 1], 0);
        }
        let mut buf = vec![0x11u8; len];
        if let Ok(range) = StreamFraming.seal(&mut buf, headroom, body_len) {
            prop_assert!(range.end <= len);
            prop_assert_eq!(range.end, headroom + body_len);
        }
    }

    /// `StreamFraming::seal` over a body emitted at the headroom writes exactly `emit_frame`'s bytes.
    #[test]
    fn stream_seal_matches_emit_frame(owned in representable_repr(), capacity in 400usize..20_000) {
        let repr = owned.repr();
        let mut framing = StreamFraming;
        let headroom = framing.headroom(capacity);
        prop_assert_eq!(framing.tailroom(), 0);
        let mut buf = vec![0xeeu8; capacity];
        let body_len = repr.emit(&mut buf[headroom..]).unwrap();
        let range = framing.seal(&mut buf, headroom, body_len).unwrap();

        let mut expected = vec![0u8; capacity];
        let n = emit_frame(&repr, &mut expected).unwrap();
        prop_assert_eq!(&buf[range], &expected[..n]);
    }
}

#[test]
fn stream_seal_rejects_short_buffers() {
    let mut framing = StreamFraming;
    let mut buf = [0u8; 200];
    // A 150-byte body needs a 2-byte prefix.
    assert_eq!(framing.seal(&mut buf, 1, 150), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut buf, 2, 150), Ok(0..152));
    assert_eq!(&buf[..2], &[0x81, 0x16]);
    assert_eq!(framing.seal(&mut buf, 2, 199), Err(Error::BufferTooSmall));
    assert_eq!(framing.seal(&mut buf, usize::MAX, 1), Err(Error::BufferTooSmall));
}

// ---------------------------------------------------------------------------------------------
// FrameWriter: many framed packets in one transmit buffer
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_writer_batches_packets_each_framing_reads_back() {
    let packets = client_to_server();
    let small: Vec<&Golden> = packets.iter().filter(|p| p.payload.len() < 100).collect();

    let mut tx = [0u8; 256];
    let mut writer = FrameWriter::new(&mut tx, Framing::Stream);
    assert!(writer.is_empty());
    for p in &small {
        writer.push_repr(&p.repr()).unwrap();
    }
    let expected: Vec<u8> = small.iter().flat_map(|p| p.frame.iter().copied()).collect();
    assert_eq!(writer.pending(), &expected[..], "stream framing writes the captured bytes");

    // Partial writes: what was written leaves the front.
    writer.consume(5);
    assert_eq!(writer.pending(), &expected[5..]);
    writer.clear();
    assert!(writer.is_empty());

    let mut tx = [0u8; 256];
    let mut writer = FrameWriter::new(&mut tx, Framing::Serial);
    for p in &small {
        writer.push_repr(&p.repr()).unwrap();
    }
    let mut storage = [0u8; 256];
    let mut decoder = SerialDecoder::new(&mut storage);
    let bodies = feed(&mut decoder, writer.pending(), &[]);
    let reprs: Vec<PacketRepr<'_>> = small.iter().map(|p| p.repr()).collect();
    assert_eq!(bodies.len(), reprs.len());
    for (body, repr) in bodies.iter().zip(&reprs) {
        assert_eq!(PacketRepr::parse_bytes(body.as_ref().unwrap()), Ok(*repr));
    }
}

#[test]
fn frame_writer_packet_that_does_not_fit_changes_nothing() {
    for framing in [Framing::Stream, Framing::Serial] {
        let mut tx = [0u8; 40];
        let mut writer = FrameWriter::new(&mut tx, framing);
        assert_eq!(writer.framing(), framing);
        writer.push_repr(&PacketRepr::request(0, 2, 0, 0, b"hello")).unwrap();
        let before = writer.pending().to_vec();
        assert_eq!(writer.push_repr(&PacketRepr::request(0, 3, 0, 0, &[9; 40])), Err(Error::BufferTooSmall));
        assert_eq!(writer.pending(), &before[..], "{framing:?}");
        assert_eq!(writer.push_repr(&PacketRepr::request(0, 3, 0, 1 << 62, b"")), Err(Error::Unrepresentable));
        assert_eq!(writer.pending(), &before[..], "{framing:?}");
        writer.push_repr(&PacketRepr::ERQ).unwrap();
        assert!(writer.pending().len() > before.len());
    }
}

/// Output dropped by `clear` (a new link on the same line) does not leave a gap in the serial
/// sequence: the peer takes the next frame as the continuation of what it received.
#[test]
fn serial_clear_continues_the_sequence_from_what_went_out() {
    let mut tx = [0u8; 256];
    let mut writer = FrameWriter::new(&mut tx, Framing::Serial);
    for tag in 2..5 {
        writer.push_repr(&PacketRepr::request(0, tag, 9, 0, b"x")).unwrap();
    }
    let first_frame_len = writer.pending().iter().position(|&b| b == 0).unwrap() + 1;
    let mut line = writer.pending()[..first_frame_len].to_vec();
    writer.consume(first_frame_len);
    writer.clear(); // frames 1 and 2 never leave
    writer.push_repr(&PacketRepr::request(0, 7, 9, 0, b"y")).unwrap();
    line.extend_from_slice(writer.pending());

    let mut rx = [0u8; 256];
    let mut decoder = SerialDecoder::new(&mut rx);
    decoder.push(&line);
    let first = decoder.next_body().unwrap().unwrap().to_vec();
    assert_eq!(PacketRepr::parse_bytes(&first).unwrap().tag, 2);
    let next = decoder.next_body().expect("no sequence gap after clear").unwrap().to_vec();
    assert_eq!(PacketRepr::parse_bytes(&next).unwrap().tag, 7);
}

// ---------------------------------------------------------------------------------------------
// The fuzz targets on stable (fuzz/, docs/RELIABILITY.md "Fuzzing")
// ---------------------------------------------------------------------------------------------

/// The harnesses of the fuzz targets `packet`, `stream_frames` and `serial_frames`: the same
/// files `cargo +nightly fuzz` builds, run here on the committed seed corpora, on random bytes
/// and on seeds with random edits.
#[allow(dead_code)]
#[path = "../../fuzz/src"]
mod fuzz {
    pub mod corpus;
    pub mod input;
    pub mod packet;
    pub mod serial_frames;
    pub mod stream_frames;
}

/// Edits for [`fuzz::corpus::mutate`]: (position, operation, byte).
fn fuzz_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

#[test]
fn fuzz_packet_seed_corpus() {
    for seed in fuzz::corpus::seeds("packet") {
        fuzz::packet::run(&seed);
    }
}

#[test]
fn fuzz_stream_frames_seed_corpus() {
    for seed in fuzz::corpus::seeds("stream_frames") {
        fuzz::stream_frames::run(&seed);
    }
}

#[test]
fn fuzz_serial_frames_seed_corpus() {
    for seed in fuzz::corpus::seeds("serial_frames") {
        fuzz::serial_frames::run(&seed);
    }
}

proptest! {
    #[test]
    fn fuzz_packet_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzz::packet::run(&bytes);
    }

    #[test]
    fn fuzz_packet_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("packet");
        fuzz::packet::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }

    #[test]
    fn fuzz_stream_frames_random_bytes(
        header in proptest::collection::vec(any::<u8>(), 0..6),
        stream in proptest::collection::vec(prop_oneof![Just(0x80u8), 0u8..8, any::<u8>()], 0..600),
    ) {
        fuzz::stream_frames::run(&[header, stream].concat());
    }

    #[test]
    fn fuzz_stream_frames_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("stream_frames");
        fuzz::stream_frames::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }

    #[test]
    fn fuzz_serial_frames_random_bytes(
        header in proptest::collection::vec(any::<u8>(), 0..6),
        line in proptest::collection::vec(prop_oneof![Just(0u8), 1u8..4, any::<u8>()], 0..1200),
    ) {
        fuzz::serial_frames::run(&[header, line].concat());
    }

    #[test]
    fn fuzz_serial_frames_edited_seeds(pick in any::<prop::sample::Index>(), edits in fuzz_edits()) {
        let seeds = fuzz::corpus::seeds("serial_frames");
        fuzz::serial_frames::run(&fuzz::corpus::mutate(&seeds[pick.index(seeds.len())], &edits));
    }
}

/// Found by the `stream_frames` fuzz target: a length prefix longer than `MAX_LEN` bytes
/// (redundant `80` groups) was taken when it arrived in one read, but refused as malformed when
/// its first ten bytes arrived first. It is malformed however it arrives now.
#[test]
fn stream_length_prefix_longer_than_ten_bytes_is_malformed_in_any_reads() {
    let mut bytes = vec![0x80; 10];
    bytes.extend(hex("03 06 02 01"));
    for reads in [&[][..], &[1], &[10, 4], &[11]] {
        let mut storage = [0u8; 64];
        let mut decoder = StreamDecoder::new(&mut storage);
        assert_eq!(feed(&mut decoder, &bytes, reads), vec![Err(Error::Malformed)], "reads {reads:?}");
    }
    // Ten bytes are still a length.
    let mut storage = [0u8; 64];
    let mut decoder = StreamDecoder::new(&mut storage);
    assert_eq!(feed(&mut decoder, &[&[0x80; 9][..], &hex("03 06 02 01")].concat(), &[]), vec![Ok(hex("06 02 01"))]);
    // The input the fuzzer found (capacity 64, reads of 129 bytes, a 48-byte prefix).
    fuzz::stream_frames::run(&[&[0x3f, 0x3f][..], &[0x80; 62], &hex("07 01 02 16 01")].concat());
}
