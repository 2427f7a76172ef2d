fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Linux (ELF): export the root module only, not the C functions of dependencies.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs=ALL");
    }
}
