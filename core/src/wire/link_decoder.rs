//! The receive decoder of a link whose framing is a value: TCP clients frame with a length
//! prefix, serial lines (a UART, or one bridged to a socket) with COBS + CRC, and a server or
//! device picks per link.

use core::marker::PhantomData;
use core::ops::Range;

use super::{Error, FrameDecoder, Framing, SerialDecoder, StreamDecoder};

/// Which framings a [`LinkDecoder`] may hold: either, chosen per link ([`AnyFraming`]), or one
/// fixed when the program is built (a device's connector), so the other is never linked in: a
/// TCP device carries no COBS or CRC code.
pub trait FramingChoice {
    /// The one framing, if fixed.
    const FIXED: Option<Framing>;
}

/// Either framing, chosen when the decoder is made.
#[derive(Debug, Clone, Copy)]
pub enum AnyFraming {}

impl FramingChoice for AnyFraming {
    const FIXED: Option<Framing> = None;
}

/// A [`StreamDecoder`] or a [`SerialDecoder`], as a link's framing has it.
///
/// [`FrameDecoder::reset_link`] starts a new link as its framing wants: a stream decoder
/// forgets its input (a new stream), a serial one keeps it (the next frame on the line is
/// already aligned). Lend it to each link's [`Driver`](crate::driver::Driver) as `&mut` and it
/// outlives them.
pub struct LinkDecoder<'b, F = AnyFraming> {
    decoder: Either<'b>,
    choice: PhantomData<fn() -> F>,
}

enum Either<'b> {
    Stream(StreamDecoder<'b>),
    Serial(SerialDecoder<'b>),
}

impl<'b, F: FramingChoice> LinkDecoder<'b, F> {
    /// A decoder over `rx` for `framing`, or for `F`'s framing if `F` fixes one.
    #[inline]
    pub fn new(framing: Framing, rx: &'b mut [u8]) -> Self {
        let decoder = match F::FIXED.unwrap_or(framing) {
            Framing::Stream => Either::Stream(StreamDecoder::new(rx)),
            Framing::Serial => Either::Serial(SerialDecoder::new(rx)),
        };
        LinkDecoder { decoder, choice: PhantomData }
    }

    pub fn framing(&self) -> Framing {
        match self.decoder {
            Either::Stream(_) => Framing::Stream,
            Either::Serial(_) => Framing::Serial,
        }
    }
}

impl<F> core::fmt::Debug for LinkDecoder<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.decoder {
            Either::Stream(d) => f.debug_tuple("LinkDecoder").field(d).finish(),
            Either::Serial(d) => f.debug_tuple("LinkDecoder").field(d).finish(),
        }
    }
}

// Each method matches `F::FIXED` with the variant: for a fixed framing the other arm is
// constant-false and its decoder's code is left out. `new` builds only `F`'s variant, so the
// last arm (a variant `F` rules out) is never taken; it answers as an empty decoder would.
impl<F: FramingChoice> FrameDecoder for LinkDecoder<'_, F> {
    /// A fixed serial framing resynchronises; otherwise `reset_link` asks the variant.
    const RESYNCS: bool = matches!(F::FIXED, Some(Framing::Serial));

    fn read_buffer(&mut self) -> &mut [u8] {
        match (F::FIXED, &mut self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.read_buffer(),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.read_buffer(),
            _ => &mut [],
        }
    }

    fn commit(&mut self, n: usize) {
        match (F::FIXED, &mut self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.commit(n),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.commit(n),
            _ => {}
        }
    }

    fn next_frame(&mut self) -> Result<Option<Range<usize>>, Error> {
        match (F::FIXED, &mut self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.next_frame(),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.next_frame(),
            _ => Err(Error::Malformed),
        }
    }

    fn frame(&self, range: Range<usize>) -> &[u8] {
        match (F::FIXED, &self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.frame(range),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.frame(range),
            _ => &[],
        }
    }

    fn reset(&mut self) {
        match (F::FIXED, &mut self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.reset(),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.reset(),
            _ => {}
        }
    }

    fn reset_link(&mut self) {
        match (F::FIXED, &mut self.decoder) {
            (None | Some(Framing::Stream), Either::Stream(d)) => d.reset_link(),
            (None | Some(Framing::Serial), Either::Serial(d)) => d.reset_link(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameWriter, PacketKind};

    /// A fixed serial framing.
    enum SerialOnly {}

    impl FramingChoice for SerialOnly {
        const FIXED: Option<Framing> = Some(Framing::Serial);
    }

    /// Two framed packets with tags 2 and 3, each with a one-byte payload.
    fn two_packets(framing: Framing) -> std::vec::Vec<u8> {
        let mut tx = [0u8; 64];
        let mut writer = FrameWriter::new(&mut tx, framing);
        for tag in [2, 3] {
            writer
                .push(0, tag, PacketKind::Request { rq_type: 1, flags: 0 }, |out: &mut [u8]| {
                    out[0] = 7;
                    Ok::<usize, Error>(1)
                })
                .expect("room");
        }
        writer.pending().to_vec()
    }

    /// Pushes `bytes`, then takes every whole body.
    fn bodies(decoder: &mut impl FrameDecoder, bytes: &[u8]) -> std::vec::Vec<std::vec::Vec<u8>> {
        assert_eq!(decoder.push(bytes), bytes.len());
        let mut out = std::vec::Vec::new();
        while let Ok(Some(body)) = decoder.next_body() {
            out.push(body.to_vec());
        }
        out
    }

    /// Decodes what the framing's own decoder decodes, and a new link starts as that framing
    /// wants: a stream forgets the half packet it had, a serial line keeps it.
    #[test]
    fn decodes_either_framing_and_starts_links_as_it_wants() {
        for framing in [Framing::Stream, Framing::Serial] {
            let bytes = two_packets(framing);
            let (mut rx, mut plain_rx) = ([0u8; 64], [0u8; 64]);
            let mut decoder: LinkDecoder<'_> = LinkDecoder::new(framing, &mut rx);
            assert_eq!(decoder.framing(), framing);
            let expected = match framing {
                Framing::Stream => bodies(&mut StreamDecoder::new(&mut plain_rx), &bytes),
                Framing::Serial => bodies(&mut SerialDecoder::new(&mut plain_rx), &bytes),
            };
            assert_eq!(expected.len(), 2);
            assert_eq!(bodies(&mut decoder, &bytes), expected, "{framing:?}");

            // Over again from the start: the first packet whole, the second cut short; then a
            // new link.
            decoder.reset();
            let cut = bytes.len() - 2;
            assert_eq!(bodies(&mut decoder, &bytes[..cut]), expected[..1], "{framing:?}");
            decoder.reset_link();
            let kept = bodies(&mut decoder, &bytes[cut..]);
            match framing {
                Framing::Stream => assert!(kept.is_empty(), "a new stream starts clean: {kept:?}"),
                Framing::Serial => assert_eq!(kept, expected[1..], "the line keeps its place"),
            }
            decoder.push(&bytes[..1]);
            decoder.reset();
            assert_eq!(decoder.read_buffer().len(), 64, "reset forgets everything");
        }
    }

    /// A fixed framing wins over the one given, and says it resynchronises.
    #[test]
    fn a_fixed_framing_is_the_one_built() {
        let mut rx = [0u8; 64];
        let mut decoder = LinkDecoder::<'_, SerialOnly>::new(Framing::Stream, &mut rx);
        assert_eq!(decoder.framing(), Framing::Serial);
        const { assert!(LinkDecoder::<'_, SerialOnly>::RESYNCS && !LinkDecoder::<'_, AnyFraming>::RESYNCS) };
        assert_eq!(bodies(&mut decoder, &two_packets(Framing::Serial)).len(), 2);
    }
}
