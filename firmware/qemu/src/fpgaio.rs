//! The MPS2 FPGA IO block's user LEDs (QEMU's hw/misc/mps2-fpgaio.c, at 0x4002_8000): register
//! LED0 holds one bit per LED, two on the AN386.

const LED0: *mut u32 = 0x4002_8000 as *mut u32;

/// Sets LED `index` (0 or 1) on or off, keeping the other.
pub fn set_led(index: u32, on: bool) {
    let bit = 1 << (index & 1);
    // SAFETY: LED0 is an aligned, always-present MMIO register; nothing else writes it.
    unsafe {
        let leds = LED0.read_volatile();
        LED0.write_volatile(if on { leds | bit } else { leds & !bit });
    }
}
