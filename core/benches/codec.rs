//! Encode and decode of the two hot messages as the machines do them: an event notification
//! (server → device) and a registration (device → server), each framed for a stream (TCP) and
//! for serial (COBS + CRC). Run: `cargo bench -p rivulet-core --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rivulet_core::model::{EventPayloadRef, Timestamp};
use rivulet_core::session::message::{self, IdDelta, MessageKind, NotifyBody, RegisterBody};
use rivulet_core::wire::{FrameDecoder, FrameWriter, Framing, PacketRepr, SerialDecoder, StreamDecoder};

const PAYLOAD: &str = r#"{"temp": 21.5}"#;
/// The type alias both messages use, as after a `Declare`.
const ALIAS: u64 = 3;

fn payload_len(payload: &Option<EventPayloadRef<'_>>) -> usize {
    match payload {
        Some(EventPayloadRef::Json(text)) => text.len(),
        Some(EventPayloadRef::Binary { data, .. }) => data.len(),
        None => 0,
    }
}

fn decode_notify(body: &[u8]) -> usize {
    let repr = PacketRepr::parse_bytes(body).expect("packet");
    let (_, notify) = message::decode_subject::<NotifyBody<'_>>(repr.tag, repr.payload).expect("notify");
    payload_len(&notify.payload)
}

fn decode_register(body: &[u8]) -> usize {
    let repr = PacketRepr::parse_bytes(body).expect("packet");
    let (_, register) = message::decode_subject::<RegisterBody<'_>>(repr.tag, repr.payload).expect("register");
    payload_len(&register.payload)
}

/// Frame → packet → message body, as a receiving driver and machine do.
fn deframe_and_decode(framing: Framing, frame: &[u8], decode_body: fn(&[u8]) -> usize) -> usize {
    let mut rx = [0u8; 256];
    match framing {
        Framing::Stream => {
            let mut decoder = StreamDecoder::new(&mut rx);
            decoder.push(frame);
            decode_body(decoder.next_body().expect("frame").expect("whole"))
        }
        Framing::Serial => {
            let mut decoder = SerialDecoder::new(&mut rx);
            decoder.push(frame);
            decode_body(decoder.next_body().expect("frame").expect("whole"))
        }
    }
}

fn encode<T: serde::Serialize>(framing: Framing, kind: MessageKind, body: &T, buf: &mut [u8]) -> usize {
    let mut out = FrameWriter::new(buf, framing);
    message::push_with_subject(&mut out, kind, ALIAS, None, body).expect("fits");
    out.pending().len()
}

fn benches(c: &mut Criterion) {
    let notify = NotifyBody {
        id: IdDelta::Instance(1),
        timestamp: Timestamp { s: 1_763_000_000, us: 250_000 },
        source_timestamp: None,
        payload: Some(EventPayloadRef::Json(PAYLOAD)),
    };
    let register = RegisterBody { source_timestamp: None, payload: Some(EventPayloadRef::Json(PAYLOAD)) };
    for (framing, name) in [(Framing::Stream, "stream"), (Framing::Serial, "serial")] {
        let mut buf = [0u8; 256];
        let len = encode(framing, MessageKind::Notify, &notify, &mut buf);
        let notify_frame = buf[..len].to_vec();
        let len = encode(framing, MessageKind::Register, &register, &mut buf);
        let register_frame = buf[..len].to_vec();
        println!(
            "{name}: notify frame {} B, register frame {} B, payload {} B",
            notify_frame.len(),
            register_frame.len(),
            PAYLOAD.len()
        );

        c.bench_function(&format!("notify/encode/{name}"), |b| {
            b.iter(|| encode(framing, MessageKind::Notify, black_box(&notify), &mut buf))
        });
        c.bench_function(&format!("notify/decode/{name}"), |b| {
            b.iter(|| deframe_and_decode(framing, black_box(&notify_frame), decode_notify))
        });
        c.bench_function(&format!("register/encode/{name}"), |b| {
            b.iter(|| encode(framing, MessageKind::Register, black_box(&register), &mut buf))
        });
        c.bench_function(&format!("register/decode/{name}"), |b| {
            b.iter(|| deframe_and_decode(framing, black_box(&register_frame), decode_register))
        });
    }
}

criterion_group!(codec, benches);
criterion_main!(codec);
