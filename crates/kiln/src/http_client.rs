//! A minimal HTTP/1.1 client for talking to a local `kiln serve`.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends `method url` with an optional JSON body and bearer token; returns
/// the status and body.
pub async fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad server URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// server URLs are supported (put TLS in front of Kiln with a reverse proxy)");
    }
    let host = uri.host().context("server URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach {host}:{port}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, format!("{host}:{port}"));
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
