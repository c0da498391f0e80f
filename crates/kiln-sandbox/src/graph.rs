//! Fetches a page's whole module graph through envd's port proxy, the way a
//! browser would: the HTML, every module it imports, and theirs.
//!
//! Used to warm Vite's caches when the template is built and by the sandbox
//! benchmark ("create → full module graph fetched").

use std::collections::{HashSet, VecDeque};

use futures::stream::{FuturesUnordered, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};

use crate::envd_client::{ClientError, EnvdClient};

/// A browser opens about six connections per host.
const PARALLEL: usize = 6;
/// Upper bound on modules, so a pathological app cannot loop us forever.
const MAX_MODULES: usize = 2_000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GraphStats {
    pub modules: usize,
    pub bytes: u64,
    /// Paths that answered with a non-2xx status.
    pub failed: Vec<String>,
}

/// Largest module the warm-up crawl reads.
const MAX_MODULE_BYTES: usize = 16 << 20;

/// GETs `path` on `port` inside the sandbox; returns status and body.
pub async fn proxy_get(client: &EnvdClient, port: u16, path: &str) -> Result<(u16, bytes::Bytes), ClientError> {
    let req = Request::get(format!("/v1/proxy/{port}{path}"))
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())?;
    let resp = client.send(req).await?;
    let status = resp.status().as_u16();
    // A module served by the sandbox is untrusted input: bounded like a file read.
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_MODULE_BYTES);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ClientError::TooLarge { what: "a dev-server module", limit: MAX_MODULE_BYTES });
        }
        Err(e) => return Err(ClientError::Body(e.to_string())),
    };
    Ok((status, body))
}

pub async fn fetch_module_graph(client: &EnvdClient, port: u16) -> Result<GraphStats, ClientError> {
    let mut stats = GraphStats::default();
    let mut seen: HashSet<String> = HashSet::from(["/".to_owned()]);
    let mut queue: VecDeque<String> = VecDeque::from(["/".to_owned()]);
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < PARALLEL {
            let Some(path) = queue.pop_front() else { break };
            inflight.push(async move {
                let r = proxy_get(client, port, &path).await;
                (path, r)
            });
        }
        let Some((path, r)) = inflight.next().await else {
            break;
        };
        let (status, body) = r?;
        stats.modules += 1;
        stats.bytes += body.len() as u64;
        if !(200..300).contains(&status) {
            stats.failed.push(path);
            continue;
        }
        let text = String::from_utf8_lossy(&body);
        for dep in imports(&path, &text) {
            if seen.len() < MAX_MODULES && seen.insert(dep.clone()) {
                queue.push_back(dep);
            }
        }
    }
    Ok(stats)
}

/// Same-origin module URLs referenced by an HTML page or a JS module.
pub fn imports(base: &str, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["src=\"", "from \"", "import \"", "import(\"", "from '", "import '"] {
        let quote = marker.chars().last().expect("non-empty");
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            let Some(end) = rest.find(quote) else { break };
            let spec = &rest[..end];
            if let Some(url) = resolve(base, spec) {
                out.push(url);
            }
        }
    }
    out
}

fn resolve(base: &str, spec: &str) -> Option<String> {
    if spec.starts_with("//") || spec.contains("://") || spec.is_empty() {
        return None;
    }
    if spec.starts_with('/') {
        return Some(spec.to_owned());
    }
    if !(spec.starts_with("./") || spec.starts_with("../")) {
        return None;
    }
    let base_path = base.split('?').next().unwrap_or(base);
    let mut parts: Vec<&str> = base_path.split('/').collect();
    parts.pop();
    let (spec_path, query) = match spec.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (spec, None),
    };
    for seg in spec_path.split('/') {
        match seg {
            "." => {}
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            s => parts.push(s),
        }
    }
    let mut url = parts.join("/");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_vite_style_imports_and_resolves_relative_ones() {
        let js = r#"import { createHotContext } from "/@vite/client";
import "/src/kiln-hmr-bridge.ts";
import App from "/src/App.tsx?t=1";
import { a } from "./chunk-ABC.js?v=9";
const m = import("../x/y.js");
import x from "react";
import y from "https://cdn.example/z.js";"#;
        let got = imports("/node_modules/.vite/deps/react.js?v=9", js);
        assert_eq!(
            got,
            [
                "/@vite/client",
                "/src/App.tsx?t=1",
                "/node_modules/.vite/deps/chunk-ABC.js?v=9",
                "/src/kiln-hmr-bridge.ts",
                "/node_modules/.vite/x/y.js",
            ]
        );
        assert_eq!(imports("/", r#"<script type="module" src="/src/main.tsx"></script>"#), ["/src/main.tsx"]);
    }
}
