//! The `credhost` command: a thin shell over the library (see `credhost_cli`).

fn main() {
    std::process::exit(credhost_cli::run());
}
