//! The Nucleo-F767ZI's bootloader: embassy-boot over the flash layout of
//! `firmware/nucleo/src/layout.rs`. At reset it finishes or starts a swap the firmware asked for
//! (an image verified and staged in the DFU partition), or swaps back a firmware that was
//! started but never confirmed itself (it did not call `mark_booted`), then jumps to the active
//! firmware (embassy-boot-stm32 sets VTOR).
#![no_std]
#![no_main]

use core::cell::RefCell;

use cortex_m_rt::{ExceptionFrame, entry, exception};
use embassy_boot_stm32::{BootLoader, BootLoaderConfig};
use embassy_embedded_hal::flash::partition::BlockingPartition;
use embassy_stm32::flash::{BANK1_REGION3, Flash};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;

#[path = "../../nucleo/src/layout.rs"]
mod layout;

/// The swap's buffer: divides a 256K page and is a multiple of the 16-byte write size.
const SWAP_BUFFER: usize = 2048;

#[entry]
fn main() -> ! {
    let p = embassy_stm32::init(Default::default());
    let regions = Flash::new_blocking(p.FLASH).into_blocking_regions();
    // The state in the 32K sectors, the active and DFU partitions in the 256K ones.
    let small = Mutex::<NoopRawMutex, _>::new(RefCell::new(regions.bank1_region1));
    let large = Mutex::<NoopRawMutex, _>::new(RefCell::new(regions.bank1_region3));
    let config = BootLoaderConfig {
        active: BlockingPartition::new(&large, layout::ACTIVE_OFFSET, layout::ACTIVE_SIZE),
        dfu: BlockingPartition::new(&large, layout::DFU_OFFSET, layout::DFU_SIZE),
        state: BlockingPartition::new(&small, layout::STATE_OFFSET, layout::STATE_SIZE),
    };
    let bootloader = BootLoader::prepare::<_, _, _, SWAP_BUFFER>(config);
    // SAFETY: the active partition holds a firmware linked there (nucleo/memory.x); nothing of
    // the bootloader runs after the jump.
    unsafe { bootloader.load(BANK1_REGION3.base() + layout::ACTIVE_OFFSET) }
}

/// A fault in the bootloader: start over (a swap in progress goes on from where it was).
#[exception]
unsafe fn HardFault(_: &ExceptionFrame) -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}
