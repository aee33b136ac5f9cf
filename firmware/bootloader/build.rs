//! Links the bootloader: its memory.x (sectors 0-2) and cortex-m-rt's link.x.

include!("../tools/memory_x.rs");

fn main() {
    link_memory_x(include_bytes!("memory.x"), &[]);
}
