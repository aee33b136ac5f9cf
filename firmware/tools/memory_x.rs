// Included by the firmware's build scripts (`include!`): puts a binary's memory.x where the linker
// finds it and links with cortex-m-rt's link.x, as every Cortex-M binary here does.

/// Writes `memory_x` into OUT_DIR, puts OUT_DIR on the linker's path, and adds `--nmagic` and
/// `-Tlink.x` (and `extra` link arguments) for the binaries.
fn link_memory_x(memory_x: &[u8], extra: &[&str]) {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    std::fs::write(out.join("memory.x"), memory_x).expect("write memory.x into OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    for arg in extra {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
