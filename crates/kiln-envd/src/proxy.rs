//! Port proxy: HTTP and WebSocket to any loopback port inside the sandbox.
//!
//! Requests arrive as `/v1/proxy/{port}/{path}?{query}` and are replayed to
//! `127.0.0.1:{port}/{path}?{query}` with every header kept (Vite's HMR
//! socket needs `Sec-WebSocket-Protocol: vite-hmr` and its `?token=` query)
//! except the envd token, which the app never sees. Upgrades are joined
//! byte-for-byte once both sides have switched protocols.

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::EnvdError;

pub const PREFIX: &str = "/v1/proxy/";

/// Splits `/v1/proxy/5173/src/App.tsx?x=1` into the port and `/src/App.tsx?x=1`.
pub fn split(uri: &Uri) -> Option<(u16, String)> {
    let rest = uri.path().strip_prefix(PREFIX)?;
    let (port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Some((port, pq))
}

pub async fn forward(port: u16, path_and_query: String, mut req: Request<Body>) -> Result<Response<Body>, EnvdError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|_| EnvdError::Upstream(port))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|_| EnvdError::Upstream(port))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxy upstream connection ended");
        }
    });

    let is_upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    parts.uri = path_and_query.parse().map_err(|_| EnvdError::BadRequest("bad proxied path".into()))?;
    parts.headers.remove(header::AUTHORIZATION);
    if let Ok(v) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
        // Vite accepts any host here (the template sets allowedHosts); the
        // original one is kept for the app in X-Forwarded-Host.
        if let Some(orig) = parts.headers.insert(header::HOST, v) {
            parts.headers.insert("x-forwarded-host", orig);
        }
    }
    let upstream_req = Request::from_parts(parts, body);
    let mut resp = sender.send_request(upstream_req).await.map_err(|_| EnvdError::Upstream(port))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "proxy upgrade failed"),
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// `true` if `GET path` on `addr` answers with a 2xx.
pub async fn get_ok(addr: &str, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await else {
        return false;
    };
    tokio::spawn(conn);
    let req = Request::get(path).header(header::HOST, "localhost").body(Body::empty());
    let Ok(req) = req else { return false };
    matches!(sender.send_request(req).await, Ok(r) if r.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_path_and_query() {
        let u: Uri = "/v1/proxy/5173/?token=abc".parse().unwrap();
        assert_eq!(split(&u), Some((5173, "/?token=abc".into())));
        let u: Uri = "/v1/proxy/5173".parse().unwrap();
        assert_eq!(split(&u), Some((5173, "/".into())));
        let u: Uri = "/v1/proxy/80/@vite/client".parse().unwrap();
        assert_eq!(split(&u), Some((80, "/@vite/client".into())));
        for bad in ["/v1/proxy/0/", "/v1/proxy/x/", "/v1/proxy/70000/", "/v1/files"] {
            assert_eq!(split(&bad.parse().unwrap()), None, "{bad}");
        }
    }
}
