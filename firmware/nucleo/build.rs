//! Links the Nucleo binaries: embassy-stm32 (feature `memory-x`) provides memory.x; cortex-m-rt's
//! link.x and defmt's defmt.x are added here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
