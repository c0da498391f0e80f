//! ACP `terminal/*`: commands the agent runs inside the sandbox.
//!
//! Built on the exec API's runner (process group, timeout, kill on drop), so
//! an agent's command is contained exactly like an exec from the host. The
//! output kept is bounded; ACP asks clients to drop from the beginning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use kiln_types::envd::{ExecEvent, ExecRequest};
use tokio::sync::watch;

use crate::error::EnvdError;

/// Output kept per terminal when the agent names no limit (bytes).
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;
/// Longest an agent's command may run.
pub const TERMINAL_TIMEOUT_MS: u64 = 10 * 60 * 1000;
/// Terminals one agent may hold at once.
pub const MAX_TERMINALS: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<u32>,
    pub signal: Option<String>,
}

#[derive(Debug)]
struct Term {
    out: Mutex<(String, bool)>,
    exit: watch::Sender<Option<Exit>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Term {
    fn abort(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Terminals {
    map: Arc<Mutex<HashMap<String, Arc<Term>>>>,
    /// Where commands run unless they name a directory (the app).
    cwd: std::path::PathBuf,
}

impl Terminals {
    pub fn new(cwd: std::path::PathBuf) -> Terminals {
        Terminals { map: Arc::default(), cwd }
    }

    pub fn create(
        &self,
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
        limit: Option<u64>,
    ) -> Result<String, EnvdError> {
        if self.map.lock().unwrap().len() >= MAX_TERMINALS {
            return Err(EnvdError::BadRequest(format!("{MAX_TERMINALS} terminals are open; release one first")));
        }
        // A bare command line with spaces is what agents send most often.
        let (cmd, args) = if args.is_empty() && command.contains(char::is_whitespace) {
            ("/bin/sh".to_owned(), vec!["-c".to_owned(), command])
        } else {
            (command, args)
        };
        let req = ExecRequest { cmd, args, cwd, env, timeout_ms: Some(TERMINAL_TIMEOUT_MS), stdin_b64: None };
        crate::exec::validate(&req)?;
        let limit = limit.map_or(DEFAULT_OUTPUT_LIMIT, |l| (l as usize).min(DEFAULT_OUTPUT_LIMIT * 16));
        let (exit, _) = watch::channel(None);
        let id = format!("term-{}", crate::agent::random_suffix());
        let mut rx = crate::exec::spawn(req, &self.cwd);
        let term = Arc::new(Term { out: Mutex::new((String::new(), false)), exit, task: Mutex::new(None) });
        let t = term.clone();
        let task = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                let Ok(ev) = serde_json::from_slice::<ExecEvent>(&line) else { continue };
                match ev {
                    ExecEvent::Stdout { b64 } | ExecEvent::Stderr { b64 } => {
                        let bytes = B64.decode(b64).unwrap_or_default();
                        let mut o = t.out.lock().unwrap();
                        o.0.push_str(&String::from_utf8_lossy(&bytes));
                        if o.0.len() > limit {
                            o.0 = crate::agent::translate::truncate(std::mem::take(&mut o.0), limit);
                            o.1 = true;
                        }
                    }
                    ExecEvent::Exit { code, timed_out } => {
                        let exit = if timed_out || code >= 128 {
                            Exit {
                                code: None,
                                signal: Some(if timed_out { "SIGKILL (timeout)" } else { "signal" }.into()),
                            }
                        } else {
                            Exit { code: Some(code.max(0) as u32), signal: None }
                        };
                        t.exit.send_replace(Some(exit));
                    }
                    ExecEvent::Error { message } => {
                        t.out.lock().unwrap().0.push_str(&message);
                        t.exit.send_replace(Some(Exit { code: Some(127), signal: None }));
                    }
                    ExecEvent::Started { .. } => {}
                }
            }
        });
        *term.task.lock().unwrap() = Some(task.abort_handle());
        self.map.lock().unwrap().insert(id.clone(), term);
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Arc<Term>, EnvdError> {
        self.map.lock().unwrap().get(id).cloned().ok_or_else(|| EnvdError::NotFound(format!("terminal {id}")))
    }

    /// (output, truncated, exit status if it has exited)
    pub fn output(&self, id: &str) -> Result<(String, bool, Option<Exit>), EnvdError> {
        let t = self.get(id)?;
        let o = t.out.lock().unwrap().clone();
        let exit = t.exit.borrow().clone();
        Ok((o.0, o.1, exit))
    }

    pub async fn wait(&self, id: &str) -> Result<Exit, EnvdError> {
        let t = self.get(id)?;
        let mut rx = t.exit.subscribe();
        let got = rx.wait_for(Option::is_some).await.map_err(|_| EnvdError::NotFound(format!("terminal {id}")))?;
        Ok(got.clone().expect("waited for Some"))
    }

    /// Kills the command (dropping the exec stream kills its process group);
    /// the terminal stays readable until released.
    pub fn kill(&self, id: &str) -> Result<(), EnvdError> {
        let t = self.get(id)?;
        t.abort();
        if t.exit.borrow().is_none() {
            t.exit.send_replace(Some(Exit { code: None, signal: Some("SIGKILL".into()) }));
        }
        Ok(())
    }

    pub fn release(&self, id: &str) -> Result<(), EnvdError> {
        self.kill(id)?;
        self.map.lock().unwrap().remove(id);
        Ok(())
    }

    pub fn release_all(&self) {
        let all: Vec<_> = self.map.lock().unwrap().drain().collect();
        for (_, t) in all {
            t.abort();
        }
    }
}
