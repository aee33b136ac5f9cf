//! Links the QEMU firmware: this crate's memory.x (the Nucleo uses embassy-stm32's generated one),
//! an empty device.x (cortex-m-rt's `device` feature includes it; the vector table's device part,
//! `__INTERRUPTS`, is in main.rs), cortex-m-rt's link.x and defmt's defmt.x.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    std::fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x into OUT_DIR");
    std::fs::write(out.join("device.x"), "/* The device interrupts are dispatched in main.rs. */\n")
        .expect("write device.x into OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
