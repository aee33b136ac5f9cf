//! The image partition in RAM: QEMU's mps2-an386 has no flash controller to write, so images
//! (`rivulet send-file IMAGE --to qemu`) land in 128 KiB of RAM that behaves like NOR flash:
//! erased in 4 KiB sectors to `0xFF`, written in 4-byte blocks that only clear bits. The same
//! receiver writes the Nucleo's flash through embassy-stm32's driver.

use embedded_storage_async::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// Bytes of the partition.
pub const CAPACITY: usize = 128 * 1024;
const SECTOR: usize = 4096;
const BLOCK: usize = 4;

/// The partition: a `'static` buffer the firmware lends.
pub struct RamFlash {
    bytes: &'static mut [u8; CAPACITY],
}

impl RamFlash {
    pub fn new(bytes: &'static mut [u8; CAPACITY]) -> Self {
        bytes.fill(0xFF);
        RamFlash { bytes }
    }

    fn range(&mut self, from: u32, len: usize) -> Result<&mut [u8], NorFlashErrorKind> {
        let from = from as usize;
        self.bytes
            .get_mut(from..from.checked_add(len).ok_or(NorFlashErrorKind::OutOfBounds)?)
            .ok_or(NorFlashErrorKind::OutOfBounds)
    }
}

impl ErrorType for RamFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        bytes.copy_from_slice(self.range(offset, bytes.len())?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        CAPACITY
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = BLOCK;
    const ERASE_SIZE: usize = SECTOR;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if !(from as usize).is_multiple_of(SECTOR) || !(to as usize).is_multiple_of(SECTOR) || to < from {
            return Err(NorFlashErrorKind::NotAligned);
        }
        self.range(from, (to - from) as usize)?.fill(0xFF);
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        if !(offset as usize).is_multiple_of(BLOCK) || !bytes.len().is_multiple_of(BLOCK) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        for (cell, byte) in self.range(offset, bytes.len())?.iter_mut().zip(bytes) {
            *cell &= byte;
        }
        Ok(())
    }
}
