//! Where the bootloader, its state, the active firmware and the staged image live in the
//! F767ZI's flash (single-bank: sectors 0-3 of 32K, 4 of 128K, 5-11 of 256K), as offsets into
//! embassy-stm32's flash regions: region 1 (0x08000000, 32K sectors) holds the state, region 3
//! (0x08040000, 256K sectors) the active and DFU partitions. memory.x and the bootloader
//! (firmware/bootloader, which includes this file) agree with it.

/// The bootloader's state, in region 1 (sector 3, 0x08018000).
pub const STATE_OFFSET: u32 = 0x1_8000;
pub const STATE_SIZE: u32 = 32 * 1024;
/// The active firmware, in region 3 (sectors 5-7, 0x08040000): memory.x's FLASH.
pub const ACTIVE_OFFSET: u32 = 0;
pub const ACTIVE_SIZE: u32 = 768 * 1024;
/// The DFU partition, in region 3 (sectors 8-11, 0x08100000): one page more than the active,
/// the swap's scratch.
pub const DFU_OFFSET: u32 = ACTIVE_SIZE;
pub const DFU_SIZE: u32 = 1024 * 1024;

/// embassy-boot's page: the largest erase size of the partitions' flash (region 3's sectors).
const PAGE: u32 = 256 * 1024;
/// The flash's write size (embassy-stm32's F7 `WRITE_SIZE`).
const WRITE: u32 = 16;

// embassy-boot's rules (boot_loader.rs `assert_partitions`), and the regions' bounds.
const _: () = assert!(
    ACTIVE_SIZE.is_multiple_of(PAGE)
        && DFU_SIZE.is_multiple_of(PAGE)
        && DFU_SIZE >= ACTIVE_SIZE + PAGE
        && DFU_OFFSET + DFU_SIZE <= 1792 * 1024
        && STATE_OFFSET.is_multiple_of(0x8000)
        && STATE_OFFSET + STATE_SIZE <= 0x2_0000
        && 2 + 4 * (ACTIVE_SIZE / PAGE) <= STATE_SIZE / WRITE
);
