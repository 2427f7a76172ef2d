//! The plugin file exports its root module and nothing else: C functions
//! that dependencies export (crc-fast's, through the AWS SDK) stay inside,
//! so they can never clash with, or be bound to, the host's own copies.
//! (`--exclude-libs` is the ELF linkers' option: Linux.)
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs=ALL");
    }
}
