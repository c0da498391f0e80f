//! Exec: run a command inside the sandbox and stream its output.
//!
//! Each command gets its own process group so that a timeout or a client
//! that hangs up kills everything it started, not just the first process.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use kiln_types::envd::{DEFAULT_EXEC_TIMEOUT_MS, ExecEvent, ExecRequest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::error::EnvdError;

/// Checks a request before anything is spawned, so bad input is a 400
/// rather than an `error` line in a 200 stream.
pub fn validate(req: &ExecRequest) -> Result<(), EnvdError> {
    if req.cmd.is_empty() {
        return Err(EnvdError::BadRequest("cmd is empty".into()));
    }
    let nul = |s: &str| s.contains('\0');
    if nul(&req.cmd)
        || req.args.iter().any(|a| nul(a))
        || req.env.iter().any(|(k, v)| nul(k) || nul(v) || k.contains('='))
    {
        return Err(EnvdError::BadRequest(
            "cmd, args and env may not contain NUL; env names may not contain '='".into(),
        ));
    }
    if req.timeout_ms == Some(0) {
        return Err(EnvdError::BadRequest("timeout_ms must be positive".into()));
    }
    if let Some(s) = &req.stdin_b64 {
        B64.decode(s).map_err(|e| EnvdError::BadRequest(format!("stdin_b64 is not base64: {e}")))?;
    }
    Ok(())
}

fn line(ev: &ExecEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).expect("exec events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

/// Spawns the command and returns the receiving end of its NDJSON stream.
/// Dropping the receiver (client gone) kills the process group.
pub fn spawn(req: ExecRequest, default_cwd: &std::path::Path) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(64);
    let default_cwd = default_cwd.to_owned();
    tokio::spawn(async move {
        run(req, &default_cwd, tx).await;
    });
    rx
}

async fn run(req: ExecRequest, default_cwd: &std::path::Path, tx: mpsc::Sender<Bytes>) {
    let mut cmd = Command::new(&req.cmd);
    cmd.args(&req.args)
        .current_dir(req.cwd.as_deref().map(std::path::Path::new).unwrap_or(default_cwd))
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(if req.stdin_b64.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match crate::reaper::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(line(&ExecEvent::Error { message: format!("cannot start {:?}: {e}", req.cmd) })).await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    let _ = tx.send(line(&ExecEvent::Started { pid })).await;

    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), req.stdin_b64.as_deref()) {
        let bytes = B64.decode(data).unwrap_or_default();
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
    }
    let out = pump(child.stdout.take(), tx.clone(), true);
    let err = pump(child.stderr.take(), tx.clone(), false);
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS));

    let kill_group = |pid: u32| {
        if pid > 0 {
            // Negative pid: the whole process group.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    };
    let (status, timed_out) = tokio::select! {
        s = child.wait() => (s, false),
        () = tokio::time::sleep(timeout) => { kill_group(pid); (child.wait().await, true) }
        () = tx.closed() => { kill_group(pid); let _ = child.wait().await; return; }
    };
    // Leftover children holding the pipes open must not keep the stream alive.
    kill_group(pid);
    let _ = tokio::join!(out, err);
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
        Err(_) => -1,
    };
    let _ = tx.send(line(&ExecEvent::Exit { code, timed_out })).await;
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    r: Option<R>,
    tx: mpsc::Sender<Bytes>,
    stdout: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut r) = r else { return };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let b64 = B64.encode(&buf[..n]);
                    let ev = if stdout { ExecEvent::Stdout { b64 } } else { ExecEvent::Stderr { b64 } };
                    if tx.send(line(&ev)).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}
