//! `kiln`: the server, the operator CLI, `doctor` and the benchmarks.
//! A thin shell: argument parsing here, the work in the library crates.

mod bench;
mod bench_bridge;
mod bench_e2e;
mod bench_pool;
mod chat_cmd;
mod cli;
mod doctor;
mod http_client;
mod pool_cmd;
mod sandbox_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never into a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("kiln: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
