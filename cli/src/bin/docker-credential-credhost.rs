//! `docker-credential-credhost`: the docker credential-helper protocol, a
//! thin shell over the library (see `credhost_cli::credhelper`).

fn main() {
    std::process::exit(credhost_cli::credhelper::main());
}
