//! The allow-list: which requests a sandbox may make, and where they go.
//!
//! The gateway is not a proxy. A request is forwarded only if its method and
//! path are one of a fixed handful per provider (what agents need: messages,
//! chat completions, the Responses API, token counting, model listing), and
//! the upstream URL is built from the operator's configured origin with the
//! `url` crate's path-segment setters — never by gluing strings — so nothing
//! a sandbox sends can choose the scheme, host, port or userinfo the key is
//! sent to. The request target is checked before it is matched: anything
//! that could mean something else to another parser (`%`-escapes, `\`, `@`,
//! `.`/`..` or empty segments, non-ASCII, absolute- or authority-form
//! targets) is refused outright rather than normalised, since no allowed
//! path needs any of it.

use axum::http::{Method, Uri};
use url::Url;

use crate::Provider;

/// What an allowed request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens` (not billed).
    CountTokens,
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}`.
    Model(String),
}

/// The (method, path) pairs forwarded for `provider`, below its prefix
/// (`/anthropic`, `/openai`): the table in the docs.
pub fn allowed(provider: Provider) -> &'static [(&'static str, &'static str)] {
    match provider {
        Provider::Anthropic => &[
            ("POST", "/v1/messages"),
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/{id}"),
        ],
        Provider::OpenAi => &[
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/responses"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/{id}"),
        ],
    }
}

/// An allowed request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub provider: Provider,
    pub endpoint: Endpoint,
    /// Path segments below the provider prefix, e.g. `["v1", "messages"]`.
    pub segments: Vec<String>,
    /// The query forwarded, if it is one the allow-list knows.
    pub query: Option<String>,
}

impl Route {
    pub fn is_post(&self) -> bool {
        !matches!(self.endpoint, Endpoint::Models | Endpoint::Model(_))
    }
}

/// Why a request is not forwarded (→ 403).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// The provider whose error shape to answer in, when the prefix said.
    pub provider: Option<Provider>,
    pub why: String,
}

fn forbid(provider: Option<Provider>, why: impl Into<String>) -> Forbidden {
    Forbidden { provider, why: why.into() }
}

/// Longest model id accepted in `/v1/models/{id}`.
const MAX_ID: usize = 256;

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Matches a request against the allow-list.
pub fn parse(method: &Method, uri: &Uri) -> Result<Route, Forbidden> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(forbid(None, "absolute-form and authority-form request targets are not accepted"));
    }
    let path = uri.path();
    if let Some(b) = path.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(forbid(None, format!("the path contains byte 0x{b:02x} (only printable ASCII is accepted)")));
    }
    if let Some(c) = path.chars().find(|c| matches!(c, '%' | '\\' | '@')) {
        return Err(forbid(None, format!("the path contains {c:?} (no escapes, backslashes or userinfo)")));
    }
    let Some(segments) = path.strip_prefix('/').map(|p| p.split('/').collect::<Vec<_>>()) else {
        return Err(forbid(None, "the path must start with /"));
    };
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(forbid(None, "the path has an empty, `.` or `..` segment"));
    }
    let provider = match segments[0] {
        "anthropic" => Provider::Anthropic,
        "openai" => Provider::OpenAi,
        _ => return Err(forbid(None, "only /anthropic/… and /openai/… are served")),
    };
    let rest = &segments[1..];
    let post = *method == Method::POST;
    let get = *method == Method::GET;
    let endpoint = match (provider, rest) {
        (Provider::Anthropic, ["v1", "messages"]) if post => Endpoint::Messages,
        (Provider::Anthropic, ["v1", "messages", "count_tokens"]) if post => Endpoint::CountTokens,
        (Provider::OpenAi, ["v1", "chat", "completions"]) if post => Endpoint::ChatCompletions,
        (Provider::OpenAi, ["v1", "responses"]) if post => Endpoint::Responses,
        (_, ["v1", "models"]) if get => Endpoint::Models,
        (_, ["v1", "models", id]) if get && is_id(id) => Endpoint::Model((*id).to_owned()),
        _ => return Err(forbid(Some(provider), "this method and path are not on the allow-list")),
    };
    let query = match uri.query().filter(|q| !q.is_empty()) {
        None => None,
        Some(q) => Some(check_query(provider, &endpoint, q)?),
    };
    Ok(Route { provider, endpoint, segments: rest.iter().map(|s| (*s).to_owned()).collect(), query })
}

/// The queries agents send: Anthropic's SDK adds `beta=true` to messages
/// when it uses beta features; model listing pages. Anything else is
/// refused (not silently dropped), so a surprise is visible.
fn check_query(provider: Provider, endpoint: &Endpoint, q: &str) -> Result<String, Forbidden> {
    let ok = match (provider, endpoint) {
        (Provider::Anthropic, Endpoint::Messages | Endpoint::CountTokens) => q == "beta=true",
        (Provider::Anthropic, Endpoint::Models) => q.split('&').all(|kv| match kv.split_once('=') {
            Some(("limit", v)) => !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| b.is_ascii_digit()),
            Some(("after_id" | "before_id", v)) => is_id(v),
            _ => false,
        }),
        _ => false,
    };
    if ok { Ok(q.to_owned()) } else { Err(forbid(Some(provider), "this query string is not on the allow-list")) }
}

/// A provider's fixed upstream: the operator's base URL, parsed once.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The base as configured, without a trailing `/` or `/v1`: a base may
    /// carry a path prefix (`https://proxy.example/openai`), and a trailing
    /// `/v1` (as in `http://127.0.0.1:11434/v1`) is the API's own, which
    /// every route starts with, so it is not repeated.
    base: Url,
}

impl Upstream {
    pub fn parse(base: &str) -> Result<Upstream, String> {
        let mut url = Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{base:?} must be http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{base:?} names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{base:?} must be an origin and path only (no userinfo, query or fragment)"));
        }
        let v1 = url.path_segments().and_then(|mut s| s.rfind(|s| !s.is_empty())) == Some("v1");
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            if v1 {
                p.pop();
            }
        }
        Ok(Upstream { base: url })
    }

    /// The URL for `route`: the configured base, then the route's segments
    /// (each escaped by the URL library) and its allowed query. `None` if the
    /// result left the configured origin (impossible by construction; checked
    /// all the same).
    pub fn url(&self, route: &Route) -> Option<Url> {
        let mut u = self.base.clone();
        u.path_segments_mut().ok()?.pop_if_empty().extend(&route.segments);
        u.set_query(route.query.as_deref());
        self.same_origin(&u).then_some(u)
    }

    fn same_origin(&self, u: &Url) -> bool {
        u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default()
            && u.username().is_empty()
            && u.password().is_none()
    }

    /// Whether the host is a local address the operator chose: `localhost`,
    /// a loopback, private (RFC 1918, fc00::/7) or link-local IP literal.
    pub fn is_local(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
            Some(url::Host::Ipv6(ip)) => {
                ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local() || {
                    ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
                }
            }
            None => false,
        }
    }
}

/// `s` fit for a log line: control and non-ASCII characters escaped, at
/// most 200 characters (for anything a sandbox sent).
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &Method, target: &str) -> Result<Route, Forbidden> {
        parse(method, &target.parse::<Uri>().unwrap())
    }

    #[test]
    fn only_the_listed_methods_and_paths_match() {
        let ok = [
            (Method::POST, "/anthropic/v1/messages", Endpoint::Messages),
            (Method::POST, "/anthropic/v1/messages?beta=true", Endpoint::Messages),
            (Method::POST, "/anthropic/v1/messages/count_tokens", Endpoint::CountTokens),
            (Method::GET, "/anthropic/v1/models?limit=20&after_id=claude-x", Endpoint::Models),
            (Method::GET, "/openai/v1/models/llama3.2:latest", Endpoint::Model("llama3.2:latest".into())),
            (Method::POST, "/openai/v1/chat/completions", Endpoint::ChatCompletions),
            (Method::POST, "/openai/v1/responses", Endpoint::Responses),
        ];
        for (m, t, e) in ok {
            assert_eq!(route(&m, t).map(|r| r.endpoint), Ok(e), "{t}");
        }
        let refused = [
            (Method::GET, "/anthropic/v1/messages"),
            (Method::DELETE, "/openai/v1/models/gpt-x"),
            (Method::POST, "/openai/v1/files"),
            (Method::POST, "/openai/v1/chat/completions/"),
            (Method::POST, "/openai//v1/chat/completions"),
            (Method::POST, "/anthropic/v1/messages/batches"),
            (Method::POST, "/anthropic/v1/messages?beta=true&x=1"),
            (Method::POST, "/openai/v1/chat/completions?api-version=1"),
            (Method::POST, "/anthropic@127.0.0.1:18081/v1/messages"),
            (Method::POST, "/anthropic.evil.example/v1/messages"),
            (Method::POST, "/openai/../../admin"),
            (Method::POST, "/openai/v1/./chat/completions"),
            (Method::POST, "/openai/%2e%2e/v1/chat/completions"),
            (Method::POST, "/openai/v1%2fchat/completions"),
            (Method::POST, "/openai/v1\\chat\\completions"),
            (Method::GET, "/anthropic/v1/models/a@b"),
            (Method::POST, "http://127.0.0.1:18081/anthropic/v1/messages"),
            (Method::CONNECT, "127.0.0.1:18081"),
            (Method::OPTIONS, "*"),
            (Method::GET, "/etc/passwd"),
        ];
        for (m, t) in refused {
            assert!(route(&m, t).is_err(), "{m} {t} was allowed");
        }
    }

    #[test]
    fn upstream_urls_keep_the_configured_origin_and_prefix() {
        let r = route(&Method::POST, "/openai/v1/chat/completions").unwrap();
        for (base, want) in [
            ("https://api.openai.com", "https://api.openai.com/v1/chat/completions"),
            ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1/chat/completions"),
            ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1/chat/completions"),
            ("https://proxy.example:8443/team/openai", "https://proxy.example:8443/team/openai/v1/chat/completions"),
            ("https://proxy.example/a%20b/v1", "https://proxy.example/a%20b/v1/chat/completions"),
        ] {
            assert_eq!(Upstream::parse(base).unwrap().url(&r).unwrap().as_str(), want);
        }
        let r = route(&Method::POST, "/anthropic/v1/messages?beta=true").unwrap();
        let u = Upstream::parse("https://api.anthropic.com").unwrap().url(&r).unwrap();
        assert_eq!(u.as_str(), "https://api.anthropic.com/v1/messages?beta=true");
        for bad in ["api.anthropic.com", "ftp://x", "https://user:pw@x", "https://x/?a=1", "http://"] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_bases_are_recognised_and_logged_text_is_escaped() {
        for (base, local) in [
            ("http://127.0.0.1:11434", true),
            ("http://localhost:11434/v1", true),
            ("http://[::1]:8000", true),
            ("http://192.168.1.20:11434", true),
            ("https://api.openai.com", false),
            ("http://8.8.8.8", false),
        ] {
            assert_eq!(Upstream::parse(base).unwrap().is_local(), local, "{base}");
        }
        assert_eq!(printable("a\u{1b}[31m\nb"), "a\\u{1b}[31m\\nb");
    }
}
