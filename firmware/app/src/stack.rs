//! How much stack a Cortex-M firmware has used, for [`Board::stack_used`](crate::Board::stack_used):
//! cortex-m-rt's `paint-stack` feature fills the stack (from `_stack_end`, just above the
//! statics, up to `_stack_start`, the top of RAM) with [`PAINT`] at reset, and every word the
//! stack ever reached no longer holds it. Only on bare-metal ARM, where cortex-m-rt links the
//! firmware; the firmware must turn `paint-stack` on, or the answer is meaningless.
#![allow(unsafe_code)]

/// cortex-m-rt's `STACK_PAINT_VALUE`.
pub const PAINT: u32 = 0xCCCC_CCCC;

unsafe extern "C" {
    /// The initial stack pointer (the stack's top); defined by cortex-m-rt's `link.x`.
    static _stack_start: u32;
    /// The lowest address the stack may reach; defined by cortex-m-rt's `link.x`.
    static _stack_end: u32;
}

/// The high-water mark of the stack, in bytes: from its top down to the deepest word that lost
/// the paint. A word the program wrote with the paint value itself reads as unused, so this can
/// be a few bytes short, never long.
pub fn used() -> u32 {
    // Only the linker symbols' addresses are taken, never their values.
    let (top, end) = (&raw const _stack_start as usize, &raw const _stack_end as usize);
    let mut deepest = end;
    while deepest < top {
        // SAFETY: `end..top` is RAM the stack owns (word-aligned by cortex-m-rt's asserts); the
        // words below the stack pointer are only read.
        if unsafe { core::ptr::read_volatile(deepest as *const u32) } != PAINT {
            break;
        }
        deepest += 4;
    }
    u32::try_from(top - deepest).unwrap_or(u32::MAX)
}
