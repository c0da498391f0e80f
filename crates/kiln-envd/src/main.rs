//! `kiln-envd`: started by the sandbox runtime as the first process inside a
//! sandbox. The per-sandbox token arrives on stdin (never in argv or the
//! environment, where every process in the sandbox could read it).
//!
//! Before anything else envd makes itself non-dumpable: code running as the
//! same uid in the sandbox (the agent, the app, an npm package) can then
//! neither ptrace envd nor read `/proc/<envd>/mem`, `environ` or `fd` — the
//! token stays in envd alone. Every descriptor it inherited is marked
//! close-on-exec so none reaches what it starts.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};

const USAGE: &str = "usage: kiln-envd [--socket PATH] [--app-dir DIR] [--dev-server] [--dev-port N]
  Reads the API token as one line on stdin.
  --socket PATH   unix socket to serve on (default /run/kiln/envd.sock)
  --listen-fd N   serve on the listening unix socket at descriptor N instead
                  (the sandbox runtime binds it where the sandbox cannot reach)
  --app-dir DIR   the app directory the file API is confined to (default /app)
  --dev-server    start and supervise the Vite dev server in the app directory
  --dev-port N    dev server port (default 5173)
  --agent JSON    the ACP agent's argv as a JSON array, e.g. '[\"/opt/kiln/kiln-agent\"]'
  --gateway-socket PATH  the host's model gateway socket, forwarded to 127.0.0.1:4141";

fn parse() -> anyhow::Result<kiln_envd::Config> {
    let mut cfg = kiln_envd::Config {
        socket: PathBuf::from(kiln_types::envd::RUN_DIR).join(kiln_types::envd::SOCKET_NAME),
        listen_fd: None,
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
            "--listen-fd" => {
                cfg.listen_fd = Some(args.next().context("--listen-fd needs a number")?.parse()?);
            }
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
    harden().context("hardening envd")?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KILN_ENVD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(|| kiln_envd::logsink::CappedStderr)
        .with_ansi(false)
        .init();
    let cfg = parse()?;
    // Two workers: envd is I/O-bound and shares the sandbox's CPU quota with Vite.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(kiln_envd::run(cfg)).context("envd server failed")
}

/// Non-dumpable, and no inherited descriptor survives an exec.
fn harden() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor
    // flags; it is called before any thread is started.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } != 0 {
        for fd in 3..1024 {
            // SAFETY: setting FD_CLOEXEC on a descriptor that may not exist.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}
