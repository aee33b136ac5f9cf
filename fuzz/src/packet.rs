//! Target `packet`: the whole input is one packet body.
//!
//! Asserts: the checked view ([`Packet::new_checked`]) and [`PacketRepr::parse_bytes`] agree;
//! a view's payload is the input after its header; whatever parses re-emits (its `buffer_len`
//! exactly) to a canonical body no longer than the input that parses to the same meaning, and is
//! the input byte for byte when as long; a buffer one byte short is `BufferTooSmall`; and the
//! packet goes through both framings (`FrameWriter` + decoder, stream and serial) unchanged.

use rivulet_core::wire::{
    Error, FrameDecoder, FrameWriter, Framing, Packet, PacketKind, PacketRepr, SerialDecoder, StreamDecoder,
};

pub fn run(data: &[u8]) {
    let checked = Packet::new_checked(data);
    match &checked {
        Ok(packet) => {
            assert!(packet.header_len() <= data.len());
            assert_eq!(packet.payload(), &data[packet.header_len()..]);
            if !packet.is_request() {
                assert_eq!(packet.wire_rq_type(), 0);
            }
        }
        Err(e) => assert!(matches!(e, Error::Truncated | Error::Malformed), "{e:?}"),
    }
    let parsed = PacketRepr::parse_bytes(data);
    let repr = match (&checked, parsed) {
        (Err(e), parsed) => {
            assert_eq!(parsed, Err(*e), "the view and the repr disagree");
            return;
        }
        (Ok(_), Err(e)) => {
            // Only a request with wire rq_type 0 that is not exactly EOF or ERQ is refused here.
            assert_eq!(e, Error::Malformed);
            assert!(checked.as_ref().is_ok_and(|p| p.is_request() && p.wire_rq_type() == 0));
            return;
        }
        (Ok(packet), Ok(repr)) => {
            assert_eq!(repr.channel, packet.channel());
            assert_eq!(repr.tag, packet.tag());
            assert_eq!(repr.payload, packet.payload());
            match repr.kind {
                PacketKind::Request { rq_type, flags } => {
                    assert_eq!((rq_type + 1, flags), (packet.wire_rq_type(), packet.wire_flags()));
                }
                PacketKind::Response { ok, flags } => {
                    assert_eq!((flags << 1) | u64::from(ok), packet.wire_flags());
                }
                PacketKind::EndOfFile => assert_eq!(repr, PacketRepr::EOF),
                PacketKind::EndOfRequests => assert_eq!(repr, PacketRepr::ERQ),
            }
            repr
        }
    };

    // Re-emit: canonical, exact length, same meaning.
    let len = repr.buffer_len().expect("a parsed packet is representable");
    assert!(len <= data.len(), "canonical form longer than the input");
    let mut out = vec![0u8; len];
    assert_eq!(repr.emit(&mut out), Ok(len));
    assert_eq!(PacketRepr::parse_bytes(&out), Ok(repr));
    if len == data.len() {
        assert_eq!(out, data, "an input as short as the canonical form is the canonical form");
    }
    if len > 0 {
        assert_eq!(repr.emit(&mut out[..len - 1]), Err(Error::BufferTooSmall));
    }

    // Both framings carry it unchanged.
    for framing in [Framing::Stream, Framing::Serial] {
        let mut tx = vec![0u8; len + 32];
        let mut writer = FrameWriter::new(&mut tx, framing);
        writer.push_repr(&repr).expect("room for one packet");
        let frame = writer.pending().to_vec();
        let mut rx = vec![0u8; frame.len()];
        let body = match framing {
            Framing::Stream => {
                let mut decoder = StreamDecoder::new(&mut rx);
                assert_eq!(decoder.push(&frame), frame.len());
                decoder.next_body().map(|b| b.map(<[u8]>::to_vec))
            }
            Framing::Serial => {
                let mut decoder = SerialDecoder::new(&mut rx);
                assert_eq!(decoder.push(&frame), frame.len());
                decoder.next_body().map(|b| b.map(<[u8]>::to_vec))
            }
        };
        assert_eq!(body, Ok(Some(out.clone())), "{framing:?} framing");
    }
}
