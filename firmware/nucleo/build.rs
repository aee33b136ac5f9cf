//! Links the Nucleo binaries: this crate's memory.x (the active partition behind the bootloader,
//! src/layout.rs), cortex-m-rt's link.x and defmt's defmt.x.

include!("../tools/memory_x.rs");

fn main() {
    link_memory_x(include_bytes!("memory.x"), &["-Tdefmt.x"]);
}
