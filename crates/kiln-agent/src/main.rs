//! `kiln-agent`: Kiln's ACP agent on stdio (see `kiln-agent --help`).

use agent_client_protocol::ByteStreams;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{}", kiln_agent::config::HELP);
        return std::process::ExitCode::SUCCESS;
    }
    // stdout carries ACP; logs go to stderr (envd keeps them in the sandbox log).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_AGENT_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match kiln_agent::config::AgentConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiln-agent: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let transport = ByteStreams::new(tokio::io::stdout().compat_write(), tokio::io::stdin().compat());
    match rt.block_on(kiln_agent::agent::serve(cfg, transport)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
