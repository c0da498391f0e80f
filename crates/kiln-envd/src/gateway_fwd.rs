//! The sandbox's one way out: a loopback port that splices every connection
//! to the host's model gateway socket (`host.sock`).
//!
//! Byte-for-byte splicing, so streamed model answers arrive as they are sent
//! and envd never parses or holds them. The gateway on the host knows which
//! sandbox is calling by the socket the call arrives on; nothing an agent
//! sends can name another sandbox.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixStream};

/// Accepts on `127.0.0.1:port` until the process ends.
pub async fn serve(port: u16, socket: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    tracing::info!(port, socket = %socket.display(), "model gateway forwarder listening");
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let socket = socket.clone();
        tokio::spawn(async move {
            match UnixStream::connect(&socket).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the host's model gateway is not reachable");
                    let body = r#"{"type":"error","error":{"type":"gateway_unavailable","message":"Kiln's model gateway is not reachable from this sandbox"}}"#;
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, resp.as_bytes()).await;
                }
            }
        });
    }
}
