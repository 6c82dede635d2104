fn main() {
    std::process::exit(subvault::cli::main());
}
