//! Links the QEMU firmware: this crate's memory.x (the Nucleo builds its own), an empty device.x
//! (cortex-m-rt's `device` feature includes it; the vector table's device part, `__INTERRUPTS`,
//! is in main.rs), cortex-m-rt's link.x and defmt's defmt.x.

include!("../tools/memory_x.rs");

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    std::fs::write(out.join("device.x"), "/* The device interrupts are dispatched in main.rs. */\n")
        .expect("write device.x into OUT_DIR");
    link_memory_x(include_bytes!("memory.x"), &["-Tdefmt.x"]);
}
