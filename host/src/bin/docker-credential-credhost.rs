//! `docker-credential-credhost`: the docker credential-helper protocol, a
//! thin shell over the library (see `credhost::credhelper`).

fn main() {
    std::process::exit(credhost::credhelper::main());
}
