//! envd's log, bounded. envd's stderr is `<data>/sandboxes/<id>/envd.log` on
//! the host, opened by the host; nothing else in the sandbox writes to it
//! (children's output is piped through envd). What goes in is sandbox-made
//! text, so each line is cut to [`MAX_LINE`] bytes with control characters
//! made visible, and the file never grows past [`MAX_BYTES`]: when the next
//! write would pass it, envd truncates the file (it holds a writable
//! descriptor; the host opened it append-only, so writes land at the new
//! end) and notes that older lines were dropped.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest size of envd.log.
pub const MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest line kept from a child's output.
pub const MAX_LINE: usize = 4096;

static WRITTEN: AtomicU64 = AtomicU64::new(0);
static LOCK: Mutex<()> = Mutex::new(());

/// A writer for `tracing_subscriber`: stderr, capped.
#[derive(Clone, Copy, Debug, Default)]
pub struct CappedStderr;

impl Write for CappedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if WRITTEN.load(Ordering::Relaxed) + buf.len() as u64 > MAX_BYTES {
            // SAFETY: fd 2 is envd's own stderr; ftruncate only changes the
            // file's length.
            if unsafe { libc::ftruncate(2, 0) } == 0 {
                let note = b"[kiln-envd] log reached its size limit; older lines were dropped\n";
                let _ = err.write_all(note);
                WRITTEN.store(note.len() as u64, Ordering::Relaxed);
            }
        }
        let n = err.write(buf)?;
        WRITTEN.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One line of a child's output as it may be logged: at most [`MAX_LINE`]
/// bytes, control characters escaped.
pub fn clean_line(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(MAX_LINE)];
    let text = String::from_utf8_lossy(cut);
    let mut out = kiln_types::chat::escape_control(text.trim_end_matches(['\r', '\n'])).into_owned();
    if raw.len() > MAX_LINE {
        out.push_str(" [cut]");
    }
    out
}

/// Copies a child's output into the log line by line (lines bounded).
pub fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(source: &'static str, r: R) {
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut r = tokio::io::BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            // Read at most MAX_LINE + 1 bytes of the line; drop the rest.
            match (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
                let mut skip = Vec::new();
                loop {
                    skip.clear();
                    match (&mut r).take(64 * 1024).read_until(b'\n', &mut skip).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) if skip.last() == Some(&b'\n') => break,
                        Ok(_) => {}
                    }
                }
            }
            tracing::info!(target: "kiln_envd::child", source, "{}", clean_line(&line));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_and_control_characters_shown() {
        assert_eq!(clean_line(b"ok\x1b[31mred\n"), "ok\\x1b[31mred");
        let long = vec![b'a'; MAX_LINE * 3];
        let l = clean_line(&long);
        assert!(l.len() <= MAX_LINE + 6 && l.ends_with("[cut]"));
    }
}
