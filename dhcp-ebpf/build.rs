// Rebuild the kernel programs when the linker changes (e.g. after `cargo xtask setup` upgraded it).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
