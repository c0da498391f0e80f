//! Per-session chat logs: every event a session's turns produce, numbered.
//!
//! A turn runs in its own task and writes here; HTTP responses only *read*
//! (from a `seq` on), so a browser that drops its connection loses nothing —
//! the turn goes on and `GET /api/chat/events?after=` picks the stream up
//! again. One turn at a time per session: [`ChatHub::begin`] is the lock,
//! and the [`Turn`] guard guarantees the log always ends a turn with `done`
//! (even if the task panics) and releases the lock. A log keeps at most
//! [`LOG_LIMIT`] events and [`LOG_BYTES_LIMIT`] bytes, oldest dropped first:
//! what an agent says is bounded per event and per turn by kiln-bridge, and
//! here in sum, so a session's memory does not depend on its sandbox.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kiln_sandbox::EnvdClient;
use kiln_types::chat::{ChatEvent, EventBody, StopReason};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events kept per session; older ones are dropped first.
pub const LOG_LIMIT: usize = 10_000;
/// Bytes (as JSON) kept per session, whatever the count: an agent's events
/// are bounded one by one (kiln-bridge's contract), this bounds their sum.
pub const LOG_BYTES_LIMIT: usize = 64 << 20;
/// Logs of sessions idle this long (and not running) are forgotten; the
/// versions live on in git.
const FORGET_AFTER: Duration = Duration::from_secs(6 * 3600);

#[derive(Default)]
pub struct ChatHub {
    logs: Mutex<HashMap<String, Arc<ChatLog>>>,
}

pub struct ChatLog {
    inner: Mutex<Inner>,
    /// The newest `seq`; readers wait on it.
    newest: watch::Sender<u64>,
}

struct Inner {
    /// Each event with its size as JSON.
    events: VecDeque<(ChatEvent, usize)>,
    bytes: usize,
    next_seq: u64,
    running: Option<Running>,
    last_active: Instant,
}

/// What a running turn can be stopped through.
struct Running {
    cancel: CancellationToken,
    /// Set once the agent is prompted: cancel goes through ACP too.
    agent: Option<(EnvdClient, String)>,
}

/// A turn is already running for this session.
#[derive(Debug)]
pub struct Busy;

impl ChatHub {
    pub fn log(&self, key: &str) -> Arc<ChatLog> {
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|_, l| {
            let i = l.inner.lock().unwrap();
            i.running.is_some() || i.last_active.elapsed() < FORGET_AFTER
        });
        logs.entry(key.to_owned()).or_insert_with(ChatLog::new).clone()
    }

    /// The session's log if it has one (no new entry for unknown keys).
    pub fn existing(&self, key: &str) -> Option<Arc<ChatLog>> {
        self.logs.lock().unwrap().get(key).cloned()
    }

    /// Starts a turn, or [`Busy`] if one is running.
    pub fn begin(&self, key: &str) -> Result<Turn, Busy> {
        let log = self.log(key);
        let cancel = CancellationToken::new();
        let first_seq = {
            let mut i = log.inner.lock().unwrap();
            if i.running.is_some() {
                return Err(Busy);
            }
            i.running = Some(Running { cancel: cancel.clone(), agent: None });
            i.last_active = Instant::now();
            i.next_seq
        };
        Ok(Turn { log, cancel, first_seq, done: false })
    }

    /// Cancels the running turn; `false` if none runs. Returns at once:
    /// the agent's ACP cancel goes to envd in the background (bounded by the
    /// client's cancel deadline), and the turn ends by itself or, if envd
    /// does not end it, within [`super::vm::CANCEL_GRACE`].
    pub async fn cancel(&self, key: &str) -> bool {
        let Some(log) = self.existing(key) else { return false };
        let agent = {
            let i = log.inner.lock().unwrap();
            let Some(r) = &i.running else { return false };
            r.cancel.cancel();
            r.agent.clone()
        };
        if let Some((client, session)) = agent {
            tokio::spawn(async move {
                if let Err(e) = client.agent_cancel(&session).await {
                    tracing::warn!(error = %e, "cancelling the agent's turn failed");
                }
            });
        }
        true
    }
}

impl ChatLog {
    fn new() -> Arc<ChatLog> {
        let inner =
            Inner { events: VecDeque::new(), bytes: 0, next_seq: 1, running: None, last_active: Instant::now() };
        Arc::new(ChatLog { inner: Mutex::new(inner), newest: watch::channel(0).0 })
    }

    pub fn running(&self) -> bool {
        self.inner.lock().unwrap().running.is_some()
    }

    /// The newest `seq` written (0 for an empty log).
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    fn push(&self, body: EventBody, end_turn: bool) -> u64 {
        // Measured before the lock (the `seq` field is a few bytes more).
        let size = json_size(&body) + 32;
        let mut i = self.inner.lock().unwrap();
        let seq = i.next_seq;
        i.next_seq += 1;
        i.events.push_back((ChatEvent { seq, body }, size));
        i.bytes += size;
        while i.events.len() > LOG_LIMIT || (i.bytes > LOG_BYTES_LIMIT && i.events.len() > 1) {
            let (_, gone) = i.events.pop_front().expect("not empty");
            i.bytes -= gone;
        }
        i.last_active = Instant::now();
        if end_turn {
            i.running = None;
        }
        // Under the lock, so a reader never sees `running == None` before
        // the `done` that ended the turn.
        self.newest.send_replace(seq);
        seq
    }

    /// Events after `after`, and whether a turn is still running.
    fn after(&self, after: u64) -> (Vec<ChatEvent>, bool) {
        let i = self.inner.lock().unwrap();
        let evs = i.events.iter().filter(|(e, _)| e.seq > after).map(|(e, _)| e.clone()).collect();
        (evs, i.running.is_some())
    }

    /// Streams the events after `after`: what is logged, then, while a turn
    /// runs, what it adds, up to and including the turn's `done`.
    pub fn stream(self: Arc<Self>, after: u64) -> impl Stream<Item = ChatEvent> + Send + 'static {
        let rx = self.newest.subscribe();
        futures::stream::unfold((self, rx, after, false), |(log, mut rx, mut after, finished)| async move {
            if finished {
                return None;
            }
            loop {
                // Marked before reading, so a push in between wakes us.
                rx.mark_unchanged();
                let (evs, running) = log.after(after);
                if let Some(last) = evs.last() {
                    after = last.seq;
                    // A `done` with no turn running after it ends the stream.
                    let fin = !running && last.body.is_done();
                    return Some((futures::stream::iter(evs), (log, rx, after, fin)));
                }
                if !running || rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .flatten()
    }
}

/// The length of `ev` as JSON, counted without building it.
fn json_size(ev: &EventBody) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, ev);
    c.0
}

/// A running turn. Dropping it without [`Turn::done`] ends the turn with an
/// error (so a panicking task never leaves a session locked).
pub struct Turn {
    log: Arc<ChatLog>,
    cancel: CancellationToken,
    first_seq: u64,
    done: bool,
}

impl Turn {
    /// The `seq` of this turn's first event.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn log(&self) -> &Arc<ChatLog> {
        &self.log
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// From now on a cancel also goes to the agent's ACP session.
    pub fn set_agent(&self, client: EnvdClient, session: String) {
        if let Some(r) = self.log.inner.lock().unwrap().running.as_mut() {
            r.agent = Some((client, session));
        }
    }

    /// Logs an event; a `done` ends the turn.
    pub fn emit(&mut self, body: EventBody) {
        if self.done {
            tracing::debug!(?body, "event after the turn's done; dropped");
            return;
        }
        let end = body.is_done();
        self.done = end;
        self.log.push(body, end);
    }

    /// Ends the turn with `error` + `done`.
    pub fn fail(&mut self, code: &str, message: impl Into<String>, retryable: bool) {
        self.emit(EventBody::Error { code: code.into(), message: message.into(), retryable });
        self.emit(EventBody::Done { stop_reason: StopReason::Error });
    }

    pub fn finish(&mut self, stop_reason: StopReason) {
        self.emit(EventBody::Done { stop_reason });
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.done {
            tracing::error!("a chat turn ended without done; closing it");
            self.fail("internal", "the turn stopped unexpectedly; the server log has the details", true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> EventBody {
        EventBody::Text { delta: s.into() }
    }

    #[tokio::test]
    async fn one_turn_at_a_time_and_streams_end_at_done() {
        let hub = ChatHub::default();
        let mut t = hub.begin("k").unwrap();
        assert!(hub.begin("k").is_err(), "a second turn is refused while one runs");
        t.emit(text("a"));
        let reader = tokio::spawn(hub.log("k").stream(0).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.emit(text("b"));
        t.finish(StopReason::EndTurn);
        let got = reader.await.unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(got[2].body.is_done());
        // Resume after a seq; a finished log does not wait.
        let rest: Vec<_> = hub.log("k").stream(2).collect().await;
        assert_eq!(rest.len(), 1);
        let mut t2 = hub.begin("k").expect("free again after done");
        assert_eq!(t2.first_seq(), 4);
        t2.finish(StopReason::EndTurn);
    }

    #[tokio::test]
    async fn a_sessions_log_is_bounded_in_bytes_as_well_as_events() {
        let hub = ChatHub::default();
        let mut t = hub.begin("k").unwrap();
        let big = "x".repeat(1 << 20);
        for _ in 0..(LOG_BYTES_LIMIT >> 20) + 10 {
            t.emit(text(&big));
        }
        t.finish(StopReason::EndTurn);
        let i = hub.log("k").inner.lock().unwrap().bytes;
        assert!(i <= LOG_BYTES_LIMIT, "{i}");
        let evs: Vec<_> = hub.log("k").stream(0).collect().await;
        assert!(evs.last().unwrap().body.is_done() && evs.len() < (LOG_BYTES_LIMIT >> 20) + 1);
    }

    #[tokio::test]
    async fn a_dropped_turn_ends_with_an_error_and_unlocks() {
        let hub = ChatHub::default();
        {
            let mut t = hub.begin("k").unwrap();
            t.emit(text("x"));
        }
        let evs: Vec<_> = hub.log("k").stream(0).collect().await;
        assert!(matches!(evs[1].body, EventBody::Error { .. }));
        assert!(evs[2].body.is_done());
        assert!(hub.begin("k").is_ok());
    }

    #[tokio::test]
    async fn cancel_returns_at_once_when_envd_never_answers() {
        // An envd that accepts connections and never answers.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("envd.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let hub = ChatHub::default();
        let t = hub.begin("k").unwrap();
        let client = EnvdClient::new(kiln_sandbox::Endpoint { socket, token: "t".into() });
        t.set_agent(client, "s".into());
        let started = Instant::now();
        assert!(hub.cancel("k").await);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        tokio::time::timeout(Duration::from_secs(1), t.cancelled()).await.unwrap();
        drop(t);
        held.abort();
    }

    #[tokio::test]
    async fn cancel_reaches_the_turn() {
        let hub = ChatHub::default();
        assert!(!hub.cancel("k").await, "nothing to cancel");
        let t = hub.begin("k").unwrap();
        assert!(hub.cancel("k").await);
        tokio::time::timeout(Duration::from_secs(1), t.cancelled()).await.unwrap();
        drop(t);
    }
}
