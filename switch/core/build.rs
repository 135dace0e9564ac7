//! Builds the uplink's steering XDP program (bpf/steer.c) with clang into OUT_DIR, where
//! port/steer.rs includes it.
use std::process::Command;

fn main() {
    let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    let obj = format!("{out}/steer.o");
    println!("cargo:rerun-if-changed=bpf/steer.c");
    let status = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            "bpf/steer.c",
            "-o",
            &obj,
        ])
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang -target bpf failed ({s}): install clang and libbpf-dev"),
        Err(e) => panic!("cannot run clang ({e}): install clang and libbpf-dev"),
    }
}
