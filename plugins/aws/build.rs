//! The plugin file exports its root module and nothing else: C functions
//! that dependencies export (crc-fast's, through the AWS SDK) stay inside,
//! so they can never clash with, or be bound to, the host's own copies.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs=ALL");
}
