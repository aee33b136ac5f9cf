//! Firmware images (or any file) received into a flash partition over the file requests of
//! `rivulet_core::files` (docs/FILES.md): `rivulet send-file fw.bin --to <device>` reaches the
//! device's [`ImageReceiver`], which writes the image through an `embedded-storage-async`
//! [`NorFlash`] (the DFU partition of `embassy-boot`, or any region) and answers.
//!
//! - The core's [`Receiver`] is the rule (what is held, which chunk is taken, the hash); this
//!   module erases each sector as the image first reaches it, writes whole `WRITE_SIZE` blocks
//!   (keeping the few bytes of a partial block until the next chunk), pads the last block with
//!   `0xFF` and, at `done`, reads the image back from flash and hashes it again: the image is
//!   verified only if both the received bytes and the flash hold the offered SHA-256.
//! - A transfer cut by a lost link (the gateway restarted, say) goes on where it was: the state
//!   is in RAM, and the sender's offer finds it. After the device restarts, it starts over.
//! - No allocation: RAM is the receiver (the name, the SHA-256 state) and a block of at most
//!   [`MAX_WRITE`] bytes; see [`ImageReceiver`]'s size in docs/PROTOCOL.md §4.16.

use embassy_sync::blocking_mutex::raw::RawMutex;
use embedded_storage_async::nor_flash::NorFlash;
use rivulet_core::files::{self, Answer, Digest, FileError, FileRequest, Receiver, Sha256, Step, Transfer};

use crate::device::{Device, Error, Request};
pub use crate::sha::Sha2;
use crate::state::REQUEST_BYTES;

/// The largest `WRITE_SIZE` a flash may have for the receiver (embassy-stm32's F7: 16, H7: 32).
pub const MAX_WRITE: usize = 32;
/// The largest chunk the receiver takes: what a request of [`REQUEST_BYTES`] holds after a
/// chunk's header with the longest name.
pub const MAX_CHUNK: u32 = (REQUEST_BYTES - (1 + files::NAME_BYTES + 15)) as u32;
/// Bytes read back at a time to hash the image at `done`.
const VERIFY_BLOCK: usize = 64;

/// Why a file request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ImageError {
    /// The request's fault (see [`FileError`]).
    File(FileError),
    /// The flash failed to erase, write or read.
    Flash,
    /// The flash does not hold what was written: the image is discarded.
    ReadBack,
    /// A device lists and reads no files.
    NotHere,
}

impl From<FileError> for ImageError {
    fn from(e: FileError) -> Self {
        ImageError::File(e)
    }
}

impl ImageError {
    /// The refusal's reason (at most 48 bytes).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::File(e) => e.summary(),
            ImageError::Flash => "flash error",
            ImageError::ReadBack => "the flash does not hold the image: discarded",
            ImageError::NotHere => "a device lists and reads no files",
        }
    }
}

/// A file receiver writing into `flash` from its offset 0; see the module doc.
pub struct ImageReceiver<F> {
    flash: F,
    receiver: Receiver<Sha2>,
    /// Bytes from the start erased for the current image, and written to flash.
    erased: u32,
    written: u32,
    /// The start of a block not written yet (fewer than `WRITE_SIZE` bytes).
    block: heapless::Vec<u8, MAX_WRITE>,
}

impl<F> core::fmt::Debug for ImageReceiver<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ImageReceiver")
            .field("transfer", &self.receiver.transfer())
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<F: NorFlash> ImageReceiver<F> {
    /// A receiver of images of up to the flash's capacity, taking `window` chunks in flight (the
    /// `REQUESTS` of the device's [`State`](crate::State): more would be refused as busy).
    pub fn new(flash: F, window: u16) -> Self {
        const { assert!(F::WRITE_SIZE <= MAX_WRITE && F::WRITE_SIZE > 0, "WRITE_SIZE up to MAX_WRITE") };
        let capacity = flash.capacity() as u64;
        ImageReceiver {
            flash,
            receiver: Receiver::new(capacity, MAX_CHUNK, window),
            erased: 0,
            written: 0,
            block: heapless::Vec::new(),
        }
    }

    /// Whether `request` is a file request the receiver answers (offer, chunk, done; a list or
    /// a read is refused by it too).
    pub fn takes(request: &Request) -> bool {
        files::is_file_request(request.rq_type)
    }

    /// Handles `request` (one it [`takes`](Self::takes)) and answers it through `device`;
    /// returns what it answered. An answer that cannot be sent (the request's link ended: the
    /// gateway has failed the request already) is logged.
    pub async fn serve<M: RawMutex>(
        &mut self,
        device: &Device<'_, M>,
        request: &Request,
    ) -> Result<Answer, ImageError> {
        let answer = self.handle(request.rq_type, &request.payload).await;
        let sent: Result<(), Error> = match &answer {
            Ok(answer) => {
                let mut body = [0u8; 48];
                match files::encode(answer, &mut body) {
                    Ok(len) => device.respond(request.from, 0, body.get(..len).unwrap_or_default()).await,
                    Err(_) => device.refuse(request.from, "the answer does not fit").await,
                }
            }
            Err(e) => {
                warn!("file request {} refused: {}", request.rq_type, e.reason());
                device.refuse(request.from, e.reason()).await
            }
        };
        if let Err(error) = sent {
            debug!("file request {} not answered: {}", request.rq_type, error);
        }
        answer
    }

    /// The image, once `done` found it whole in flash with the offered SHA-256: its name, size
    /// and hash. The application then marks it for the bootloader (`embassy-boot`'s
    /// `mark_updated`) or uses it.
    pub fn verified(&self) -> Option<&Transfer<Sha2>> {
        self.receiver.verified()
    }

    /// The transfer in progress, or the last one.
    pub fn transfer(&self) -> Option<&Transfer<Sha2>> {
        self.receiver.transfer()
    }

    /// The flash, for the application (after the image is verified, say).
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// A file request's answer: the core's receiver decides, this writes.
    pub async fn handle(&mut self, rq_type: u64, payload: &[u8]) -> Result<Answer, ImageError> {
        match FileRequest::parse(rq_type, payload)?.ok_or(ImageError::NotHere)? {
            FileRequest::Offer(offer) => {
                let same = self.receiver.transfer().is_some_and(|t| t.is(&offer));
                let answer = self.receiver.offer(&offer)?;
                if !same {
                    // Another image: the flash is erased again as it arrives.
                    (self.erased, self.written) = (0, 0);
                    self.block.clear();
                    info!("receiving image {} ({} bytes)", offer.name, offer.size);
                }
                Ok(answer)
            }
            FileRequest::Chunk(chunk) => match self.receiver.chunk(&chunk)? {
                Step::Write { data, .. } => {
                    if self.write(data).await.is_err() {
                        self.receiver.discard();
                        return Err(ImageError::Flash);
                    }
                    Ok(self.receiver.wrote(data))
                }
                Step::Answer(answer) => Ok(answer),
            },
            FileRequest::Done(done) => {
                let whole = self.receiver.transfer().is_some_and(|t| t.held() == t.size());
                if whole && !self.block.is_empty() && self.flush().await.is_err() {
                    self.receiver.discard();
                    return Err(ImageError::Flash);
                }
                let digest = self.receiver.done(&done)?;
                let size = self.receiver.transfer().map_or(0, Transfer::size);
                match self.read_back(size).await {
                    Ok(stored) if stored == digest => {
                        info!("image {} verified ({} bytes)", done.name, size);
                        Ok(Answer::Complete(digest))
                    }
                    _ => {
                        self.receiver.discard();
                        Err(ImageError::ReadBack)
                    }
                }
            }
            FileRequest::List | FileRequest::Read(_) => Err(ImageError::NotHere),
        }
    }

    /// Writes `data` after what was written: whole blocks now, a partial block's bytes later.
    async fn write(&mut self, mut data: &[u8]) -> Result<(), F::Error> {
        let size = F::WRITE_SIZE;
        if !self.block.is_empty() {
            let take = (size - self.block.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            // Within MAX_WRITE: the block holds less than WRITE_SIZE before this.
            let _ = self.block.extend_from_slice(head);
            data = rest;
            if self.block.len() == size {
                let block = core::mem::take(&mut self.block);
                self.program(&block).await?;
            }
        }
        let whole = data.len() / size * size;
        let (blocks, rest) = data.split_at(whole);
        if !blocks.is_empty() {
            self.program(blocks).await?;
        }
        let _ = self.block.extend_from_slice(rest);
        Ok(())
    }

    /// Writes the last partial block, padded with the erased value.
    async fn flush(&mut self) -> Result<(), F::Error> {
        let mut block = core::mem::take(&mut self.block);
        while block.len() < F::WRITE_SIZE {
            let _ = block.push(0xFF);
        }
        self.program(&block).await
    }

    /// Writes whole blocks at the end of what was written, erasing sectors first.
    async fn program(&mut self, bytes: &[u8]) -> Result<(), F::Error> {
        let end = self.written.saturating_add(bytes.len() as u32);
        let capacity = self.flash.capacity() as u32;
        while self.erased < end {
            let to = self.erased.saturating_add(F::ERASE_SIZE as u32).min(capacity);
            self.flash.erase(self.erased, to).await?;
            self.erased = to;
        }
        self.flash.write(self.written, bytes).await?;
        self.written = end;
        Ok(())
    }

    /// The SHA-256 of the image's `size` bytes as the flash holds them.
    async fn read_back(&mut self, size: u64) -> Result<Digest, F::Error> {
        let mut hash = Sha2::new();
        let mut buf = [0u8; VERIFY_BLOCK];
        let mut at: u32 = 0;
        while u64::from(at) < size {
            let len = (size - u64::from(at)).min(VERIFY_BLOCK as u64) as usize;
            // READ_SIZE is 1 on the flashes embassy drives; a larger one reads a whole unit.
            let unit = F::READ_SIZE.max(1);
            let read = len.div_ceil(unit) * unit;
            let Some(into) = buf.get_mut(..read) else { break };
            self.flash.read(at, into).await?;
            hash.update(into.get(..len).unwrap_or_default());
            at = at.saturating_add(len as u32);
        }
        Ok(hash.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage_async::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};
    use rivulet_core::files::{Chunk, Done, Offer};

    /// A RAM flash with the NOR rules: writes only clear bits, in whole aligned blocks, of
    /// erased bytes; erases whole sectors.
    struct RamFlash {
        bytes: [u8; 1024],
        erases: u32,
    }

    impl ErrorType for RamFlash {
        type Error = NorFlashErrorKind;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
            let at = offset as usize;
            bytes.copy_from_slice(self.bytes.get(at..at + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.bytes.len()
        }
    }

    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 8;
        const ERASE_SIZE: usize = 256;
        async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
            assert!(from.is_multiple_of(256) && to.is_multiple_of(256), "whole sectors");
            self.bytes[from as usize..to as usize].fill(0xFF);
            self.erases += 1;
            Ok(())
        }
        async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            assert!(offset.is_multiple_of(8) && bytes.len().is_multiple_of(8), "whole blocks");
            for (cell, b) in self.bytes[offset as usize..].iter_mut().zip(bytes) {
                assert_eq!(*cell, 0xFF, "written once after an erase");
                *cell &= b;
            }
            Ok(())
        }
    }

    fn digest(bytes: &[u8]) -> Digest {
        let mut hash = Sha2::new();
        hash.update(bytes);
        hash.finalize()
    }

    fn request(request: FileRequest<'_>) -> (u64, std::vec::Vec<u8>) {
        let mut body = std::vec![0u8; 300];
        let len = request.encode(&mut body).unwrap();
        body.truncate(len);
        (request.rq_type(), body)
    }

    async fn ask(rx: &mut ImageReceiver<RamFlash>, r: FileRequest<'_>) -> Result<Answer, ImageError> {
        let (rq_type, body) = request(r);
        rx.handle(rq_type, &body).await
    }

    #[test]
    fn an_image_in_odd_chunks_lands_in_flash_and_is_verified_by_reading_it_back() {
        embassy_futures::block_on(async {
            let image: std::vec::Vec<u8> = (0..700u32).map(|i| (i * 13 % 251) as u8).collect();
            let mut rx = ImageReceiver::new(RamFlash { bytes: [0; 1024], erases: 0 }, 2);
            let offer = Offer { name: "fw.bin", size: 700, sha256: digest(&image) };
            assert_eq!(
                ask(&mut rx, FileRequest::Offer(offer)).await,
                Ok(Answer::Ready { held: 0, max_chunk: 176, window: 2 })
            );
            // Chunks of 13 bytes (never a whole block), one of them early, one again.
            let chunk = |at: usize| Chunk { name: "fw.bin", offset: at as u64, data: &image[at..(at + 13).min(700)] };
            assert_eq!(ask(&mut rx, FileRequest::Chunk(chunk(13))).await, Ok(Answer::Held(0)));
            for at in (0..700).step_by(13) {
                assert_eq!(
                    ask(&mut rx, FileRequest::Chunk(chunk(at))).await,
                    Ok(Answer::Held((at as u64 + 13).min(700)))
                );
            }
            assert_eq!(ask(&mut rx, FileRequest::Chunk(chunk(0))).await, Ok(Answer::Held(700)));
            // A lost link: the sender offers again and is told all is held.
            assert_eq!(
                ask(&mut rx, FileRequest::Offer(offer)).await,
                Ok(Answer::Ready { held: 700, max_chunk: 176, window: 2 })
            );
            let done = ask(&mut rx, FileRequest::Done(Done { name: "fw.bin" })).await;
            assert_eq!(done, Ok(Answer::Complete(digest(&image))));
            assert_eq!(&rx.flash.bytes[..700], &image[..], "the flash holds the image");
            assert!(rx.flash.bytes[700..704].iter().all(|b| *b == 0xFF), "the last block padded");
            assert_eq!(rx.flash.erases, 3, "each sector erased once");
            assert!(rx.verified().is_some());
        });
    }

    #[test]
    fn flash_that_does_not_hold_the_image_is_caught_and_a_wrong_hash_is_refused() {
        embassy_futures::block_on(async {
            let image = [0x5Au8; 64];
            let mut rx = ImageReceiver::new(RamFlash { bytes: [0; 1024], erases: 0 }, 2);
            let offer = Offer { name: "a", size: 64, sha256: digest(&image) };
            ask(&mut rx, FileRequest::Offer(offer)).await.unwrap();
            ask(&mut rx, FileRequest::Chunk(Chunk { name: "a", offset: 0, data: &image })).await.unwrap();
            rx.flash.bytes[10] = 0; // a bit the flash lost
            assert_eq!(ask(&mut rx, FileRequest::Done(Done { name: "a" })).await, Err(ImageError::ReadBack));
            assert!(rx.verified().is_none());
            // Offered again, it starts over (and erases again); a wrong hash is refused.
            let wrong = Offer { sha256: [0; 32], ..offer };
            assert_eq!(
                ask(&mut rx, FileRequest::Offer(wrong)).await,
                Ok(Answer::Ready { held: 0, max_chunk: 176, window: 2 })
            );
            ask(&mut rx, FileRequest::Chunk(Chunk { name: "a", offset: 0, data: &image })).await.unwrap();
            let refused = ask(&mut rx, FileRequest::Done(Done { name: "a" })).await;
            assert!(matches!(refused, Err(ImageError::File(FileError::Mismatch { .. }))), "{refused:?}");
            assert_eq!(ask(&mut rx, FileRequest::List).await, Err(ImageError::NotHere));
            let too_large = Offer { size: 2000, ..offer };
            let refused = ask(&mut rx, FileRequest::Offer(too_large)).await;
            assert_eq!(refused, Err(ImageError::File(FileError::TooLarge { size: 2000, capacity: 1024 })));
        });
    }
}
