//! NDJSON framing of envd's streams, bounded and in linear time.
//!
//! Why its own module: the first version kept every byte of an unfinished
//! line and searched the whole buffer again on each frame, so a fake envd
//! streaming one endless line drove the server to 193 % CPU and 611 MiB and
//! rising. Here each byte is scanned once (`scanned` remembers where the last
//! search stopped), a complete line is split off without copying the rest,
//! a line longer than the cap is an error that ends the stream (its bytes
//! are dropped, not held), and a stream silent for longer than its idle
//! bound ends with [`ClientError::Timeout`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::ClientError;

struct Lines<S> {
    frames: S,
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    done: bool,
    max_line: usize,
    idle: Duration,
}

impl<S: Stream<Item = Result<Bytes, ClientError>> + Unpin> Lines<S> {
    /// The next complete line (without its `\n`; empty lines skipped).
    async fn next_line(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + at;
                self.scanned = 0;
                if end > self.max_line {
                    return Some(Err(self.fail_too_long()));
                }
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                if line.is_empty() {
                    continue;
                }
                return Some(Ok(line.freeze()));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                return Some(Err(self.fail_too_long()));
            }
            if self.done {
                // A last line without `\n` is not a whole event: dropped.
                return None;
            }
            match tokio::time::timeout(self.idle, self.frames.next()).await {
                Ok(Some(Ok(b))) => self.buf.extend_from_slice(&b),
                Ok(Some(Err(e))) => {
                    self.finish();
                    return Some(Err(e));
                }
                Ok(None) => self.done = true,
                Err(_) => {
                    self.finish();
                    return Some(Err(ClientError::Timeout { what: "the next event", after: self.idle }));
                }
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.buf = BytesMut::new();
        self.scanned = 0;
    }

    fn fail_too_long(&mut self) -> ClientError {
        self.finish();
        ClientError::TooLarge { what: "one event line", limit: self.max_line }
    }
}

/// Splits a stream of body frames into lines of at most `max_line` bytes,
/// waiting at most `idle` for each frame. Ends after the first error.
pub fn lines<S>(frames: S, max_line: usize, idle: Duration) -> impl Stream<Item = Result<Bytes, ClientError>>
where
    S: Stream<Item = Result<Bytes, ClientError>> + Unpin,
{
    let st = Lines { frames, buf: BytesMut::new(), scanned: 0, done: false, max_line, idle };
    futures::stream::unfold(st, |mut st| async move {
        let item = st.next_line().await?;
        Some((item, st))
    })
}

/// [`lines`], each decoded as a `T`. A line that does not decode is an
/// error item; the stream goes on after it.
pub fn decode<S, T>(frames: S, max_line: usize, idle: Duration) -> impl Stream<Item = Result<T, ClientError>>
where
    S: Stream<Item = Result<Bytes, ClientError>> + Unpin,
    T: DeserializeOwned,
{
    lines(frames, max_line, idle).map(|l| l.and_then(|l| Ok(serde_json::from_slice(&l)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, ClientError>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    async fn all(s: impl Stream<Item = Result<Bytes, ClientError>>) -> Vec<Result<Bytes, ClientError>> {
        s.collect().await
    }

    #[tokio::test]
    async fn lines_split_across_and_within_frames() {
        let got =
            all(lines(frames(vec![b"{\"a\"", b":1}\n\n{\"b\":2}\n{\"c", b"\":3}\n", b"tail"]), 64, Duration::MAX))
                .await;
        let got: Vec<_> = got.into_iter().map(|l| l.unwrap()).collect();
        assert_eq!(got, vec![&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
    }

    #[tokio::test]
    async fn a_line_over_the_cap_ends_the_stream_whether_or_not_it_ends() {
        for parts in [vec![&b"0123456789"[..], b"0123456789", b"\n{}\n"], vec![&b"0123456789"[..]; 100]] {
            let got = all(lines(frames(parts), 16, Duration::MAX)).await;
            assert_eq!(got.len(), 1, "nothing after the error");
            assert!(matches!(got[0], Err(ClientError::TooLarge { limit: 16, .. })), "{:?}", got[0]);
        }
        // Exactly at the cap is fine.
        let got = all(lines(frames(vec![b"0123456789abcdef\n"]), 16, Duration::MAX)).await;
        assert_eq!(got[0].as_ref().unwrap().len(), 16);
    }

    #[tokio::test]
    async fn a_silent_stream_times_out() {
        let silent = futures::stream::pending::<Result<Bytes, ClientError>>();
        let got = all(lines(silent, 16, Duration::from_millis(50))).await;
        assert!(matches!(got[..], [Err(ClientError::Timeout { .. })]), "{got:?}");
    }

    #[tokio::test]
    async fn an_endless_line_is_scanned_in_linear_time() {
        // 2 MiB in 16-byte frames under a 4 MiB cap: rescanning the buffer
        // on each frame is ~10^11 comparisons (minutes); linear, a moment.
        let s = futures::stream::iter((0..(2 << 20) / 16).map(|_| Ok(Bytes::from_static(b"xxxxxxxxxxxxxxxx"))));
        let t = std::time::Instant::now();
        let got = all(lines(s, 4 << 20, Duration::MAX)).await;
        assert!(got.is_empty());
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
}
