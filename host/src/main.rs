//! The `credhost` command: a thin shell over the library.

fn main() {
    std::process::exit(credhost::cli::main());
}
