//! envd as the ACP client: the connection to the agent and the requests the
//! agent makes of us (files, terminals, permissions) and its updates.
//!
//! Handlers run inside the SDK's dispatch loop, which waits for each one, so
//! anything that may take long (waiting for a command to exit) is moved to a
//! task and answered from there.

use std::sync::Arc;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, CreateTerminalResponse, KillTerminalRequest, KillTerminalResponse, PermissionOptionKind,
    ReadTextFileRequest, ReadTextFileResponse, ReleaseTerminalRequest, ReleaseTerminalResponse,
    RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse, SelectedPermissionOutcome,
    SessionNotification, TerminalExitStatus, TerminalOutputRequest, TerminalOutputResponse, WaitForTerminalExitRequest,
    WaitForTerminalExitResponse, WriteTextFileRequest, WriteTextFileResponse,
};
use agent_client_protocol::{Agent, ByteStreams, Client};
use kiln_types::chat::{EventBody, FileOp};
use tokio::sync::oneshot;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::Shared;
use super::terminal::Exit;
use crate::error::EnvdError;
use crate::files::RelPath;

/// What envd does with `session/request_permission`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionPolicy {
    /// Pick the option of kind `allow_once` (else `allow_always`).
    AllowOnce,
    /// Pick `reject_once` (else `reject_always`); cancel if neither exists.
    Reject,
}

impl PermissionPolicy {
    /// The option to select: chosen by its kind, never by its position.
    pub fn choose(self, options: &[(String, PermissionOptionKind)]) -> Option<String> {
        let prefs: &[PermissionOptionKind] = match self {
            PermissionPolicy::AllowOnce => &[PermissionOptionKind::AllowOnce, PermissionOptionKind::AllowAlways],
            PermissionPolicy::Reject => &[PermissionOptionKind::RejectOnce, PermissionOptionKind::RejectAlways],
        };
        prefs.iter().find_map(|k| options.iter().find(|(_, kind)| kind == k).map(|(id, _)| id.clone()))
    }
}

fn acp_err(e: &EnvdError) -> agent_client_protocol::Error {
    let code = match e {
        EnvdError::PathEscapes(_) | EnvdError::BadRequest(_) | EnvdError::IsDirectory(_) => -32602,
        EnvdError::NotFound(_) => -32002,
        _ => -32603,
    };
    let msg = if let EnvdError::Io(io) = e {
        tracing::warn!(error = %io, "agent file request failed");
        "internal error in envd".to_owned()
    } else {
        e.to_string()
    };
    agent_client_protocol::Error::new(code, msg)
}

/// `/app/x`, `<app dir>/x` or `x` → the app-relative path the file API
/// confines. (Inside a sandbox the app dir is `/app`; envd run elsewhere,
/// as in tests, tells the agent its real app dir as the session's cwd.)
pub fn app_path(p: &std::path::Path, root: &std::path::Path) -> Result<RelPath, EnvdError> {
    let s = p.to_string_lossy();
    let root = root.to_string_lossy();
    let rel = [kiln_types::envd::APP_DIR, root.trim_end_matches('/')]
        .iter()
        .filter(|prefix| !prefix.is_empty())
        .find_map(|prefix| s.strip_prefix(prefix).filter(|rest| rest.is_empty() || rest.starts_with('/')));
    let rel = match rel {
        Some("") => return Err(EnvdError::IsDirectory(s.into_owned())),
        Some(rest) => rest.trim_start_matches('/'),
        None if s.starts_with('/') => return Err(EnvdError::PathEscapes(s.into_owned())),
        None => &s,
    };
    RelPath::parse(rel, false)
}

/// A terminal's working directory: the app dir, or a directory inside it.
fn terminal_cwd(cwd: Option<&std::path::Path>, root: &std::path::Path) -> Result<Option<String>, EnvdError> {
    let Some(c) = cwd else { return Ok(None) };
    if c == std::path::Path::new(kiln_types::envd::APP_DIR) || c == root {
        return Ok(Some(root.to_string_lossy().into_owned()));
    }
    let rel = app_path(c, root)?;
    Ok(Some(root.join(rel.as_path()).to_string_lossy().into_owned()))
}

fn exit_status(e: Exit) -> TerminalExitStatus {
    TerminalExitStatus::new().exit_code(e.code).signal(e.signal)
}

/// Starts the ACP connection over the child's stdio; returns the
/// connection handle once the SDK hands it out, and a sender that ends it.
pub async fn connect(
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    shared: Arc<Shared>,
) -> Result<(ConnectionTo<Agent>, oneshot::Sender<()>), EnvdError> {
    let transport = ByteStreams::new(stdin.compat_write(), stdout.compat());
    let (conn_tx, conn_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (s1, s2, s3, s4, s5, s6, s7, s8, s9) = (
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        shared,
    );
    let driver = Client
        .v1()
        .name("kiln-envd")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                let v = serde_json::to_value(&n.update).unwrap_or_default();
                if let Some(body) = super::translate::translate(&v) {
                    s1.log(n.session_id.0.as_ref()).push(body);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |r: ReadTextFileRequest, responder, _cx| {
                let res = app_path(&r.path, s2.app.path()).and_then(|rel| s2.app.read(&rel));
                match res {
                    Ok(bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let start = r.line.map_or(0, |l| l.saturating_sub(1) as usize);
                        let text = if start > 0 || r.limit.is_some() {
                            let take = r.limit.map_or(usize::MAX, |l| l as usize);
                            text.split_inclusive('\n').skip(start).take(take).collect::<String>()
                        } else {
                            text.into_owned()
                        };
                        responder.respond(ReadTextFileResponse::new(text))
                    }
                    Err(e) => responder.respond_with_error(acp_err(&e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: WriteTextFileRequest, responder, _cx| {
                let res = app_path(&r.path, s3.app.path())
                    .and_then(|rel| s3.app.write(&rel, r.content.as_bytes()).map(|_| rel));
                match res {
                    Ok(rel) => {
                        s3.log(r.session_id.0.as_ref())
                            .push(EventBody::File { path: rel.display(), op: FileOp::Write });
                        responder.respond(WriteTextFileResponse::new())
                    }
                    Err(e) => responder.respond_with_error(acp_err(&e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: RequestPermissionRequest, responder, _cx| {
                let options: Vec<(String, PermissionOptionKind)> =
                    r.options.iter().map(|o| (o.option_id.0.to_string(), o.kind)).collect();
                let outcome = match s4.policy.choose(&options) {
                    Some(id) => RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(id)),
                    None => RequestPermissionOutcome::Cancelled,
                };
                responder.respond(RequestPermissionResponse::new(outcome))
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: CreateTerminalRequest, responder, _cx| {
                let env = r.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
                let cwd = match terminal_cwd(r.cwd.as_deref(), s5.app.path()) {
                    Ok(c) => c,
                    Err(e) => return responder.respond_with_error(acp_err(&e)),
                };
                match s5.terminals.create(r.command.clone(), r.args.clone(), env, cwd, r.output_byte_limit) {
                    Ok(id) => responder.respond(CreateTerminalResponse::new(id)),
                    Err(e) => responder.respond_with_error(acp_err(&e)),
                }
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: TerminalOutputRequest, responder, _cx| match s6.terminals.output(&r.terminal_id.0) {
                Ok((out, truncated, exit)) => {
                    responder.respond(TerminalOutputResponse::new(out, truncated).exit_status(exit.map(exit_status)))
                }
                Err(e) => responder.respond_with_error(acp_err(&e)),
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: WaitForTerminalExitRequest, responder, _cx| {
                let terms = s7.terminals.clone();
                tokio::spawn(async move {
                    let _ = match terms.wait(&r.terminal_id.0).await {
                        Ok(exit) => responder.respond(WaitForTerminalExitResponse::new(exit_status(exit))),
                        Err(e) => responder.respond_with_error(acp_err(&e)),
                    };
                });
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: KillTerminalRequest, responder, _cx| match s8.terminals.kill(&r.terminal_id.0) {
                Ok(()) => responder.respond(KillTerminalResponse::new()),
                Err(e) => responder.respond_with_error(acp_err(&e)),
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |r: ReleaseTerminalRequest, responder, _cx| match s9.terminals.release(&r.terminal_id.0) {
                Ok(()) => responder.respond(ReleaseTerminalResponse::new()),
                Err(e) => responder.respond_with_error(acp_err(&e)),
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async move |cx: ConnectionTo<Agent>| {
            let _ = conn_tx.send(cx.clone());
            tokio::select! {
                () = cx.incoming_closed() => {}
                _ = stop_rx => {}
            }
            Ok(())
        });
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::warn!(error = %e, "ACP connection to the agent ended with an error");
        }
    });
    let conn = conn_rx.await.map_err(|_| EnvdError::Agent("the agent's ACP connection closed at once".into()))?;
    Ok((conn, stop_tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_is_chosen_by_kind_not_position() {
        let opts = vec![
            ("a".to_owned(), PermissionOptionKind::RejectOnce),
            ("b".to_owned(), PermissionOptionKind::AllowAlways),
            ("c".to_owned(), PermissionOptionKind::AllowOnce),
        ];
        assert_eq!(PermissionPolicy::AllowOnce.choose(&opts).as_deref(), Some("c"));
        assert_eq!(PermissionPolicy::Reject.choose(&opts).as_deref(), Some("a"));
        assert_eq!(PermissionPolicy::AllowOnce.choose(&opts[..2]).as_deref(), Some("b"));
        assert_eq!(PermissionPolicy::AllowOnce.choose(&opts[..1]), None);
    }

    #[test]
    fn agent_paths_must_be_inside_app() {
        let root = std::path::Path::new("/srv/t/app");
        assert_eq!(app_path("/app/src/App.tsx".as_ref(), root).unwrap().display(), "src/App.tsx");
        assert_eq!(app_path("/srv/t/app/src/App.tsx".as_ref(), root).unwrap().display(), "src/App.tsx");
        assert_eq!(app_path("src/x.ts".as_ref(), root).unwrap().display(), "src/x.ts");
        for bad in ["/etc/passwd", "/apple/x", "/app/../etc/passwd", "../x", "/app", "/srv/t/apple", "/srv/t/app/../x"]
        {
            assert!(app_path(bad.as_ref(), root).is_err(), "{bad} accepted");
        }
        assert_eq!(terminal_cwd(Some("/app".as_ref()), root).unwrap().as_deref(), Some("/srv/t/app"));
        assert_eq!(terminal_cwd(Some("/app/src".as_ref()), root).unwrap().as_deref(), Some("/srv/t/app/src"));
        assert!(terminal_cwd(Some("/etc".as_ref()), root).is_err());
    }
}
