//! The `engine` binary: everything is in the library; see `engine::cli`.

fn main() -> std::process::ExitCode {
    engine::cli::main()
}
