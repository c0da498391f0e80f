//! `kiln-envd`: started by the sandbox runtime as the first process inside a
//! sandbox. The per-sandbox token arrives on stdin (never in argv or the
//! environment, where every process in the sandbox could read it).

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};

const USAGE: &str = "usage: kiln-envd [--socket PATH] [--app-dir DIR] [--dev-server] [--dev-port N]
  Reads the API token as one line on stdin.
  --socket PATH   unix socket to serve on (default /run/kiln/envd.sock)
  --app-dir DIR   the app directory the file API is confined to (default /app)
  --dev-server    start and supervise the Vite dev server in the app directory
  --dev-port N    dev server port (default 5173)
  --agent JSON    the ACP agent's argv as a JSON array, e.g. '[\"/opt/kiln/kiln-agent\"]'
  --gateway-socket PATH  the host's model gateway socket, forwarded to 127.0.0.1:4141";

fn parse() -> anyhow::Result<kiln_envd::Config> {
    let mut cfg = kiln_envd::Config {
        socket: PathBuf::from(kiln_types::envd::RUN_DIR).join(kiln_types::envd::SOCKET_NAME),
        app_dir: PathBuf::from(kiln_types::envd::APP_DIR),
        token: String::new(),
        dev_server: false,
        dev_port: kiln_types::envd::DEV_SERVER_PORT,
        agent: None,
        gateway_socket: None,
        gateway_port: kiln_types::agent::GATEWAY_PORT,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => cfg.socket = args.next().context("--socket needs a path")?.into(),
            "--app-dir" => cfg.app_dir = args.next().context("--app-dir needs a path")?.into(),
            "--dev-server" => cfg.dev_server = true,
            "--dev-port" => cfg.dev_port = args.next().context("--dev-port needs a number")?.parse()?,
            "--agent" => {
                let json = args.next().context("--agent needs a JSON array")?;
                let argv: Vec<String> =
                    serde_json::from_str(&json).context("--agent must be a JSON array of strings")?;
                if argv.is_empty() {
                    bail!("--agent must name a command");
                }
                cfg.agent = Some(argv);
            }
            "--gateway-socket" => {
                cfg.gateway_socket = Some(args.next().context("--gateway-socket needs a path")?.into())
            }
            "--gateway-port" => cfg.gateway_port = args.next().context("--gateway-port needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mut token = String::new();
    std::io::stdin().lock().read_line(&mut token).context("reading the token from stdin")?;
    cfg.token = token.trim().to_owned();
    if cfg.token.len() < 32 {
        bail!("the token on stdin must be at least 32 characters");
    }
    Ok(cfg)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KILN_ENVD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = parse()?;
    // Two workers: envd is I/O-bound and shares the sandbox's CPU quota with Vite.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(kiln_envd::run(cfg)).context("envd server failed")
}
