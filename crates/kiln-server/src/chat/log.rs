//! Per-session chat logs: every event a session's turns produce, numbered.
//!
//! A turn runs in its own task and writes here; HTTP responses only *read*
//! (from a `seq` on), so a browser that drops its connection loses nothing —
//! the turn goes on and `GET /api/chat/events?after=` picks the stream up
//! again. One turn at a time per session: [`ChatHub::begin`] is the lock,
//! and the [`Turn`] guard guarantees the log always ends a turn with `done`
//! (even if the task panics) and releases the lock.

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
    events: VecDeque<ChatEvent>,
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

    /// Cancels the running turn; `false` if none runs.
    pub async fn cancel(&self, key: &str) -> bool {
        let Some(log) = self.existing(key) else { return false };
        let agent = {
            let i = log.inner.lock().unwrap();
            let Some(r) = &i.running else { return false };
            r.cancel.cancel();
            r.agent.clone()
        };
        if let Some((client, session)) = agent
            && let Err(e) = client.agent_cancel(&session).await
        {
            tracing::warn!(error = %e, "cancelling the agent's turn failed");
        }
        true
    }
}

impl ChatLog {
    fn new() -> Arc<ChatLog> {
        let inner = Inner { events: VecDeque::new(), next_seq: 1, running: None, last_active: Instant::now() };
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
        let mut i = self.inner.lock().unwrap();
        let seq = i.next_seq;
        i.next_seq += 1;
        i.events.push_back(ChatEvent { seq, body });
        while i.events.len() > LOG_LIMIT {
            i.events.pop_front();
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
        let evs = i.events.iter().filter(|e| e.seq > after).cloned().collect();
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
    async fn cancel_reaches_the_turn() {
        let hub = ChatHub::default();
        assert!(!hub.cancel("k").await, "nothing to cancel");
        let t = hub.begin("k").unwrap();
        assert!(hub.cancel("k").await);
        tokio::time::timeout(Duration::from_secs(1), t.cancelled()).await.unwrap();
        drop(t);
    }
}
