//! Builds the kernel programs (`dhcp-ebpf`) for the BPF target with aya-build and leaves the
//! object in OUT_DIR, where `src/capture/mod.rs` embeds it: one binary is all a router needs.
use std::path::Path;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../dhcp-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to dhcp-ebpf")?;
    // The common crate is a dependency of the kernel side too; rebuild when it changes.
    println!("cargo:rerun-if-changed={manifest_dir}/../dhcp-common/src");
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not installed; run `cargo xtask setup` (it installs it with Debian's LLVM 22)"
        );
    }
    let package = aya_build::Package {
        name: "dhcp-ebpf",
        root_dir: ebpf_dir,
        ..Default::default()
    };
    // The nightly is pinned: bpf-linker reads the bitcode rustc writes with Debian's LLVM 22,
    // and a newer nightly (LLVM 23) writes records it rejects ("Invalid record").
    println!("cargo:rerun-if-changed={manifest_dir}/../dhcp-ebpf/NIGHTLY");
    let nightly = include_str!("../dhcp-ebpf/NIGHTLY").trim();
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(nightly))
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}
