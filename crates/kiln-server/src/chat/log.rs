//! Per-app chat logs: every event an app's turns produce, numbered by one
//! sequence per app that the store keeps across restarts.
//!
//! A turn runs in its own task and writes here; HTTP responses only *read*
//! (from a `seq` on), so a browser that drops its connection loses nothing —
//! the turn goes on and `GET /api/apps/{id}/events?after=` picks the stream
//! up again. One turn at a time per app: [`ChatHub::begin`] is the lock, and
//! the [`Turn`] guard guarantees the log always ends a turn with `done`
//! (even if the task panics) and releases the lock.
//!
//! Durable: each log has a writer task that appends what was pushed to the
//! store in batches (one transaction per batch, so a burst of deltas costs
//! one write), and a stream holds a turn's `done` back until the store has
//! it — a client that saw `done` knows the whole turn survives a restart.
//! A new log (first use, or after a restart) numbers on from the store's
//! newest `seq`, and a resume reads from the store what memory no longer
//! has ([`ChatHub::stream`]). In memory a log keeps at most [`LOG_LIMIT`]
//! events and [`LOG_BYTES_LIMIT`] bytes, oldest dropped first: what an
//! agent says is bounded per event and per turn by kiln-bridge, and here in
//! sum, so the server's memory does not depend on a sandbox.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kiln_sandbox::EnvdClient;
use kiln_store::Store;
use kiln_types::AppId;
use kiln_types::chat::{ChatEvent, EventBody, StopReason};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events kept per session; older ones are dropped first.
pub const LOG_LIMIT: usize = 10_000;
/// Bytes (as JSON) kept per session, whatever the count: an agent's events
/// are bounded one by one (kiln-bridge's contract), this bounds their sum.
pub const LOG_BYTES_LIMIT: usize = 64 << 20;
/// Logs of sessions idle this long (and not running) are forgotten; the
/// versions live on in git.
const FORGET_AFTER: Duration = Duration::from_secs(6 * 3600);
/// Most events one conversation load returns (the UI's whole history).
pub const LOAD_LIMIT: u32 = 100_000;
/// Events the writer appends in one transaction at most.
const WRITE_BATCH: usize = 1_000;
/// How long a stream holds a `done` back waiting for the store.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ChatHub {
    logs: Mutex<HashMap<AppId, Arc<ChatLog>>>,
    /// Where conversations are kept (`None`: memory only, unit tests).
    store: Option<Arc<dyn Store>>,
}

pub struct ChatLog {
    inner: Mutex<Inner>,
    /// The newest `seq`; readers wait on it.
    newest: watch::Sender<u64>,
    /// Events on their way to the store (`None`: memory only).
    persist: Option<mpsc::UnboundedSender<ChatEvent>>,
    /// The newest `seq` the store has.
    persisted: watch::Sender<u64>,
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
    /// A hub that keeps every app's conversation in `store`.
    pub fn with_store(store: Arc<dyn Store>) -> ChatHub {
        ChatHub { logs: Mutex::default(), store: Some(store) }
    }

    /// The app's log, made on first use numbering on from the store.
    pub async fn log(&self, app: &AppId) -> Result<Arc<ChatLog>, kiln_store::StoreError> {
        if let Some(l) = self.existing(app) {
            return Ok(l);
        }
        let stored = match &self.store {
            Some(s) => s.last_event_seq(app).await?,
            None => 0,
        };
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|_, l| {
            let i = l.inner.lock().unwrap();
            i.running.is_some() || i.last_active.elapsed() < FORGET_AFTER
        });
        // Another request may have made it meanwhile: theirs wins.
        let store = self.store.clone();
        Ok(logs.entry(app.clone()).or_insert_with(|| ChatLog::new(app.clone(), stored, store)).clone())
    }

    /// The app's log if it has one in memory (no new entry).
    pub fn existing(&self, app: &AppId) -> Option<Arc<ChatLog>> {
        self.logs.lock().unwrap().get(app).cloned()
    }

    /// Whether a turn (or restore) of the app is running.
    pub fn running(&self, app: &AppId) -> bool {
        self.existing(app).is_some_and(|l| l.running())
    }

    /// The whole conversation as it stands: what the store has, then what
    /// memory has that the store may not have yet.
    pub async fn events(&self, app: &AppId) -> Result<Vec<ChatEvent>, kiln_store::StoreError> {
        let mem = self.existing(app);
        let mem_events = mem.as_ref().map(|l| l.after(0).0).unwrap_or_default();
        let mut out = self.stored_before(app, 0, mem_events.first().map(|e| e.seq)).await?;
        out.extend(mem_events);
        Ok(out)
    }

    /// Stored events after `after` and before `before` (if given).
    async fn stored_before(
        &self,
        app: &AppId,
        after: u64,
        before: Option<u64>,
    ) -> Result<Vec<ChatEvent>, kiln_store::StoreError> {
        let Some(store) = &self.store else { return Ok(vec![]) };
        if before.is_some_and(|b| b <= after + 1) {
            return Ok(vec![]);
        }
        let mut evs = store.load_events(app, after, LOAD_LIMIT).await?;
        if let Some(b) = before {
            evs.retain(|e| e.seq < b);
        }
        Ok(evs)
    }

    /// Streams the app's events after `after`: the stored ones memory no
    /// longer (or never, after a restart) has, then the log's, following a
    /// running turn to its `done`.
    pub async fn stream(
        &self,
        app: &AppId,
        after: u64,
    ) -> Result<futures::stream::BoxStream<'static, ChatEvent>, kiln_store::StoreError> {
        let mem = self.existing(app);
        let first_in_mem = mem.as_ref().and_then(|l| l.oldest());
        let stored = self.stored_before(app, after, first_in_mem.or(mem.as_ref().map(|l| l.next_seq()))).await?;
        let from = stored.last().map_or(after, |e| e.seq.max(after));
        let head = futures::stream::iter(stored);
        Ok(match mem {
            Some(l) => head.chain(l.stream(from)).boxed(),
            None => head.boxed(),
        })
    }

    /// Starts a turn, or [`Busy`] if one is running.
    pub async fn begin(&self, app: &AppId) -> Result<Result<Turn, Busy>, kiln_store::StoreError> {
        let log = self.log(app).await?;
        Ok(Self::begin_on(log))
    }

    fn begin_on(log: Arc<ChatLog>) -> Result<Turn, Busy> {
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
    pub async fn cancel(&self, app: &AppId) -> bool {
        let Some(log) = self.existing(app) else { return false };
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
    /// A log whose first event is `stored + 1`, appending to `store`.
    fn new(app: AppId, stored: u64, store: Option<Arc<dyn Store>>) -> Arc<ChatLog> {
        let inner = Inner {
            events: VecDeque::new(),
            bytes: 0,
            next_seq: stored + 1,
            running: None,
            last_active: Instant::now(),
        };
        let persisted = watch::channel(stored).0;
        let persist = store.map(|store| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_events(app, store, rx, persisted.clone()));
            tx
        });
        Arc::new(ChatLog { inner: Mutex::new(inner), newest: watch::channel(stored).0, persist, persisted })
    }

    /// The oldest `seq` held in memory.
    fn oldest(&self) -> Option<u64> {
        self.inner.lock().unwrap().events.front().map(|(e, _)| e.seq)
    }

    fn next_seq(&self) -> u64 {
        self.inner.lock().unwrap().next_seq
    }

    /// Waits (bounded) until the store has every event up to `seq`.
    async fn durable(&self, seq: u64) {
        if self.persist.is_none() {
            return;
        }
        let mut rx = self.persisted.subscribe();
        let wait = rx.wait_for(|p| *p >= seq);
        if tokio::time::timeout(DURABLE_WAIT, wait).await.is_err() {
            tracing::error!(seq, "the store has not taken a turn's events in time; answering without waiting");
        }
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
        let ev = ChatEvent { seq, body };
        if let Some(tx) = &self.persist {
            // In `seq` order: sent under the lock.
            let _ = tx.send(ev.clone());
        }
        i.events.push_back((ev, size));
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
                    if evs.iter().any(|e| e.body.is_done()) {
                        // A client that saw `done` may rely on the turn being stored.
                        log.durable(last.seq).await;
                    }
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

/// The log's writer: appends what was pushed, in batches, retrying a
/// failing store a few times before giving a batch up (logged).
async fn write_events(
    app: AppId,
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<ChatEvent>,
    persisted: watch::Sender<u64>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |e| e.seq);
        let mut attempt = 0;
        loop {
            match store.append_events(&app, &batch, crate::now_ms()).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(app = %app, error = %e, attempt, "storing chat events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(app = %app, error = %e, events = batch.len(), "chat events could not be stored");
                    break;
                }
            }
        }
        persisted.send_replace(last);
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

    fn app() -> AppId {
        "0123456789abcdef0123456789abcdef".parse().unwrap()
    }

    fn text(s: &str) -> EventBody {
        EventBody::Text { delta: s.into() }
    }

    #[tokio::test]
    async fn one_turn_at_a_time_and_streams_end_at_done() {
        let hub = ChatHub::default();
        let mut t = hub.begin(&app()).await.unwrap().unwrap();
        assert!(hub.begin(&app()).await.unwrap().is_err(), "a second turn is refused while one runs");
        t.emit(text("a"));
        let reader = tokio::spawn(hub.log(&app()).await.unwrap().stream(0).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.emit(text("b"));
        t.finish(StopReason::EndTurn);
        let got = reader.await.unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(got[2].body.is_done());
        // Resume after a seq; a finished log does not wait.
        let rest: Vec<_> = hub.log(&app()).await.unwrap().stream(2).collect().await;
        assert_eq!(rest.len(), 1);
        let mut t2 = hub.begin(&app()).await.unwrap().expect("free again after done");
        assert_eq!(t2.first_seq(), 4);
        t2.finish(StopReason::EndTurn);
    }

    #[tokio::test]
    async fn a_sessions_log_is_bounded_in_bytes_as_well_as_events() {
        let hub = ChatHub::default();
        let mut t = hub.begin(&app()).await.unwrap().unwrap();
        let big = "x".repeat(1 << 20);
        for _ in 0..(LOG_BYTES_LIMIT >> 20) + 10 {
            t.emit(text(&big));
        }
        t.finish(StopReason::EndTurn);
        let i = hub.log(&app()).await.unwrap().inner.lock().unwrap().bytes;
        assert!(i <= LOG_BYTES_LIMIT, "{i}");
        let evs: Vec<_> = hub.log(&app()).await.unwrap().stream(0).collect().await;
        assert!(evs.last().unwrap().body.is_done() && evs.len() < (LOG_BYTES_LIMIT >> 20) + 1);
    }

    #[tokio::test]
    async fn a_dropped_turn_ends_with_an_error_and_unlocks() {
        let hub = ChatHub::default();
        {
            let mut t = hub.begin(&app()).await.unwrap().unwrap();
            t.emit(text("x"));
        }
        let evs: Vec<_> = hub.log(&app()).await.unwrap().stream(0).collect().await;
        assert!(matches!(evs[1].body, EventBody::Error { .. }));
        assert!(evs[2].body.is_done());
        assert!(hub.begin(&app()).await.unwrap().is_ok());
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
        let t = hub.begin(&app()).await.unwrap().unwrap();
        let client = EnvdClient::new(kiln_sandbox::Endpoint { socket, token: "t".into() });
        t.set_agent(client, "s".into());
        let started = Instant::now();
        assert!(hub.cancel(&app()).await);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        tokio::time::timeout(Duration::from_secs(1), t.cancelled()).await.unwrap();
        drop(t);
        held.abort();
    }

    #[tokio::test]
    async fn cancel_reaches_the_turn() {
        let hub = ChatHub::default();
        assert!(!hub.cancel(&app()).await, "nothing to cancel");
        let t = hub.begin(&app()).await.unwrap().unwrap();
        assert!(hub.cancel(&app()).await);
        tokio::time::timeout(Duration::from_secs(1), t.cancelled()).await.unwrap();
        drop(t);
    }
}

#[cfg(test)]
mod durable_tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = kiln_store::connect(&format!("sqlite://{}", dir.path().join("kiln.db").display())).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_conversation_numbers_on_and_replays_after_a_restart() {
        let (_dir, store) = sqlite().await;
        let owner: kiln_types::OwnerKey = "3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b".parse().unwrap();
        let app = AppId::random();
        store.create_app(&app, &owner.owner_id(), "x", 1).await.unwrap();
        let hub = ChatHub::with_store(store.clone());
        let mut t = hub.begin(&app).await.unwrap().unwrap();
        for i in 0..50 {
            t.emit(EventBody::Text { delta: format!("d{i}") });
        }
        t.finish(StopReason::EndTurn);
        // Streaming to the `done` means the store has the turn.
        let seen: Vec<_> = hub.stream(&app, 0).await.unwrap().collect().await;
        assert_eq!(seen.len(), 51);
        assert_eq!(store.last_event_seq(&app).await.unwrap(), 51);
        // A restarted server: a fresh hub on the same store.
        let hub = ChatHub::with_store(store.clone());
        assert_eq!(hub.events(&app).await.unwrap(), seen);
        let resumed: Vec<_> = hub.stream(&app, 49).await.unwrap().collect().await;
        assert_eq!(resumed.iter().map(|e| e.seq).collect::<Vec<_>>(), [50, 51]);
        let mut t = hub.begin(&app).await.unwrap().unwrap();
        assert_eq!(t.first_seq(), 52, "one sequence per app across restarts");
        t.finish(StopReason::EndTurn);
        let all: Vec<_> = hub.stream(&app, 0).await.unwrap().collect().await;
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=52).collect::<Vec<_>>());
        assert_eq!(hub.events(&app).await.unwrap(), all);
    }
}
