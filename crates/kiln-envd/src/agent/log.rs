//! The bounded per-session event log.
//!
//! Why a log and not just a stream: the server's connection to envd may drop
//! (a restart, a second server instance taking over), but the agent's turn
//! goes on. Every event gets a sequence number and stays here until the log
//! is full, so whoever asks next can resume with `events?after=<seq>`.

use std::collections::VecDeque;
use std::sync::Mutex;

use kiln_types::agent::EVENT_LOG_CAPACITY;
use kiln_types::chat::{ChatEvent, EventBody};
use tokio::sync::watch;

#[derive(Debug)]
pub struct SessionLog {
    inner: Mutex<Inner>,
    /// Last seq written; followers wait on it.
    last: watch::Sender<u64>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<ChatEvent>,
    next_seq: u64,
    turn_running: bool,
}

/// A read of the log after some seq.
#[derive(Debug)]
pub enum Read {
    Events(Vec<ChatEvent>),
    /// Events after the asked seq were dropped; the oldest kept one is this.
    Expired {
        oldest: u64,
    },
}

impl SessionLog {
    pub fn new() -> SessionLog {
        SessionLog::with_capacity(EVENT_LOG_CAPACITY)
    }

    pub fn with_capacity(capacity: usize) -> SessionLog {
        let (last, _) = watch::channel(0);
        SessionLog { inner: Mutex::new(Inner { next_seq: 1, ..Default::default() }), last, capacity }
    }

    /// Appends an event and returns its seq.
    pub fn push(&self, body: EventBody) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let seq = g.next_seq;
        g.next_seq += 1;
        if body.is_done() {
            g.turn_running = false;
        }
        g.events.push_back(ChatEvent { seq, body });
        while g.events.len() > self.capacity {
            g.events.pop_front();
        }
        drop(g);
        self.last.send_replace(seq);
        seq
    }

    /// Marks a turn as started; false if one is already running.
    pub fn begin_turn(&self) -> Option<u64> {
        let mut g = self.inner.lock().unwrap();
        if g.turn_running {
            return None;
        }
        g.turn_running = true;
        Some(g.next_seq - 1)
    }

    pub fn turn_running(&self) -> bool {
        self.inner.lock().unwrap().turn_running
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap().next_seq - 1
    }

    /// Events with `seq > after`.
    pub fn read_after(&self, after: u64) -> Read {
        let g = self.inner.lock().unwrap();
        let oldest = g.events.front().map_or(g.next_seq, |e| e.seq);
        if after + 1 < oldest {
            return Read::Expired { oldest };
        }
        Read::Events(g.events.iter().filter(|e| e.seq > after).cloned().collect())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

impl Default for SessionLog {
    fn default() -> Self {
        SessionLog::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_increase_and_old_events_expire() {
        let log = SessionLog::with_capacity(3);
        for i in 0..5 {
            assert_eq!(log.push(EventBody::Text { delta: i.to_string() }), i + 1);
        }
        match log.read_after(3) {
            Read::Events(e) => assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]),
            Read::Expired { .. } => panic!("4 and 5 are kept"),
        }
        assert!(matches!(log.read_after(2), Read::Events(ref e) if e.len() == 3));
        assert!(matches!(log.read_after(0), Read::Expired { oldest: 3 }));
    }

    #[test]
    fn one_turn_at_a_time_and_done_ends_it() {
        let log = SessionLog::new();
        assert_eq!(log.begin_turn(), Some(0));
        assert_eq!(log.begin_turn(), None);
        log.push(EventBody::Done { stop_reason: kiln_types::chat::StopReason::EndTurn });
        assert!(!log.turn_running());
        assert_eq!(log.begin_turn(), Some(1));
    }
}
