//! One request through the gateway, in the order that keeps it safe:
//! match the allow-list, find the key, price the body, hold the worst case,
//! then — only then — send it to the configured origin, stream the answer
//! back, and settle what it cost when the answer ends.
//!
//! Every refusal happens before a byte goes upstream. Only a few request
//! headers are forwarded (a sandbox cannot add `authorization`, cookies or
//! provider-account headers), redirects are not followed, and the hold is
//! settled by a guard that runs however the exchange ends: a cut stream,
//! a caller that goes away, an upstream that fails mid-answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::budget::{self, SpendCap, SpendReservation};
use crate::route::{self, printable};
use crate::usage::UsageTap;
use crate::{Gateway, MAX_REQUEST_BYTES, Provider};

#[derive(Clone)]
pub(crate) struct Caller {
    pub gw: Arc<Gateway>,
    pub sandbox: String,
}

/// Request headers passed on; everything else a sandbox sends is dropped.
const REQUEST_HEADERS: &[&str] = &["accept", "anthropic-version", "anthropic-beta", "openai-beta", "user-agent"];

/// Response headers not passed back.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "set-cookie",
];

/// An error in the shape of the provider's own errors, so agents report it.
fn error(provider: Option<Provider>, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match provider {
        Some(Provider::OpenAi) => serde_json::json!({"error": {"message": message, "type": kind, "code": kind}}),
        _ => serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    (status, axum::Json(body)).into_response()
}

/// What is forwarded, for a 403's message.
fn allowed_list(provider: Option<Provider>) -> String {
    let providers = match provider {
        Some(p) => vec![p],
        None => vec![Provider::Anthropic, Provider::OpenAi],
    };
    let mut out = Vec::new();
    for p in providers {
        let prefix = if p == Provider::Anthropic { "/anthropic" } else { "/openai" };
        out.extend(route::allowed(p).iter().map(|(m, path)| format!("{m} {prefix}{path}")));
    }
    out.join(", ")
}

pub(crate) async fn forward(State(c): State<Caller>, req: Request) -> Response {
    let route = match route::parse(req.method(), req.uri()) {
        Ok(r) => r,
        Err(f) => {
            let (method, target) = (printable(req.method().as_str()), printable(&req.uri().to_string()));
            tracing::warn!(sandbox = %c.sandbox, %method, %target, why = %f.why, "model gateway refused a request");
            let msg = format!(
                "Kiln's model gateway does not forward {method} {target}: {}. It forwards only {}.",
                f.why,
                allowed_list(f.provider)
            );
            return error(f.provider, StatusCode::FORBIDDEN, "permission_error", &msg);
        }
    };
    let provider = route.provider;
    let owner = c.gw.owner_of(&c.sandbox).unwrap_or_default();
    let key = match c.gw.key_for(&owner, provider) {
        Some(k) => Some(k),
        // A keyless local server (Ollama, llama.cpp, vLLM): the operator
        // pointed KILN_OPENAI_BASE_URL at a loopback or private address and
        // configured no key, so requests go without `Authorization`.
        None if provider == Provider::OpenAi && c.gw.openai.is_local() => None,
        None => {
            let var = if provider == Provider::Anthropic { "ANTHROPIC_API_KEY" } else { "OPENAI_API_KEY" };
            let msg = format!(
                "no {} API key is configured on the Kiln server; set {var} where kiln serve runs",
                provider.name()
            );
            c.gw.notify(&c.sandbox, &owner, "no_model_key", &msg);
            return error(Some(provider), StatusCode::UNAUTHORIZED, "authentication_error", &msg);
        }
    };
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        let msg = format!("model requests are limited to {MAX_REQUEST_BYTES} bytes");
        return error(Some(provider), StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", &msg);
    };
    let priced = if route.is_post() {
        match crate::cost::price(&route, &body) {
            Ok(p) => Some(p),
            Err(bad) => return error(Some(provider), StatusCode::BAD_REQUEST, "invalid_request_error", &bad.0),
        }
    } else {
        None
    };
    let tokens = priced.as_ref().map_or(0, |p| p.tokens);
    let mut settle =
        Settle { gw: c.gw.clone(), owner: owner.clone(), hold: None, tap: UsageTap::default(), at: At::NotSent };
    if tokens > 0 {
        let id = kiln_store::new_id();
        // The guard owns the hold before it exists: a caller that goes away
        // mid-reserve leaves nothing held (settling an unknown hold is a no-op).
        settle.hold = Some((id.clone(), tokens));
        if let Err(resp) = hold(&c, &owner, &id, tokens, provider).await {
            settle.hold = None;
            return resp;
        }
    }
    let Some(url) = c.gw.upstream(provider).url(&route) else {
        tracing::error!(sandbox = %c.sandbox, "model gateway: an upstream URL left its configured origin; refused");
        let msg = "Kiln's model gateway could not build the upstream URL; the request was not sent";
        return error(Some(provider), StatusCode::INTERNAL_SERVER_ERROR, "api_error", msg);
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if REQUEST_HEADERS.contains(&k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    if let Some(key) = key {
        let (name, value) = match provider {
            Provider::Anthropic => (header::HeaderName::from_static("x-api-key"), key),
            Provider::OpenAi => (header::AUTHORIZATION, format!("Bearer {key}")),
        };
        let mut v = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("invalid"));
        v.set_sensitive(true);
        headers.insert(name, v);
    }
    let mut request = match priced {
        Some(p) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            c.gw.http.request(Method::POST, url.clone()).body(p.body)
        }
        None => c.gw.http.request(Method::GET, url.clone()),
    };
    request = request.headers(headers);
    settle.at = At::Sent;
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            if e.is_connect() {
                settle.at = At::NotSent;
            }
            tracing::warn!(sandbox = %c.sandbox, error = %e, %url, "model gateway: upstream request failed");
            let msg = format!("the {} API could not be reached from the Kiln server", provider.name());
            return error(Some(provider), StatusCode::BAD_GATEWAY, "upstream_unreachable", &msg);
        }
    };
    let status = upstream.status();
    settle.at = At::Answered { ok: status.is_success(), ended: false };
    let mut out_headers = HeaderMap::new();
    for (k, v) in upstream.headers() {
        if !DROPPED_RESPONSE_HEADERS.contains(&k.as_str()) {
            out_headers.append(k.clone(), v.clone());
        }
    }
    // Pass every chunk on as it arrives; count tokens on the side; settle
    // when the body ends or the caller goes away (the guard is dropped).
    let stream = futures::stream::unfold((upstream.bytes_stream(), settle), |(mut s, mut settle)| async move {
        match s.next().await {
            Some(Ok(b)) => {
                settle.tap.feed(&b);
                Some((Ok::<_, std::io::Error>(b), (s, settle)))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), (s, settle))),
            None => {
                if let At::Answered { ended, .. } = &mut settle.at {
                    *ended = true;
                }
                None
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}

/// Holds `tokens` for `owner` and the server's day; a refusal is the
/// response to send.
async fn hold(c: &Caller, owner: &str, id: &str, tokens: u64, provider: Provider) -> Result<(), Response> {
    let cfg = &c.gw.cfg;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let session = budget::session_scope(owner);
    let caps = [
        SpendCap { scope: session.clone(), cap: cfg.session_budget_tokens },
        SpendCap { scope: budget::global_scope(now), cap: cfg.global_budget_tokens.unwrap_or(budget::MAX_TOKENS) },
    ];
    match c.gw.ledger.reserve(id, tokens, &caps).await {
        Ok(SpendReservation::Held(after)) => {
            c.gw.saw_spent(owner, after[0].spent);
            Ok(())
        }
        Ok(SpendReservation::Refused { scope, spend, cap }) => {
            let (who, var) = if scope == session {
                c.gw.saw_spent(owner, spend.spent);
                ("this session has used its model budget", "start a new app or raise KILN_GATEWAY_SESSION_BUDGET")
            } else {
                (
                    "all sessions together have used today's model budget",
                    "wait for tomorrow (UTC) or raise KILN_GATEWAY_GLOBAL_BUDGET",
                )
            };
            let msg = format!(
                "{who} ({} of {cap} tokens, {} more held by requests in flight) and this request may use up to \
                 {tokens}; {var}",
                spend.spent, spend.reserved
            );
            c.gw.notify(&c.sandbox, owner, "budget_exceeded", &msg);
            Err(error(Some(provider), StatusCode::TOO_MANY_REQUESTS, "budget_exceeded", &msg))
        }
        Err(e) => {
            tracing::error!(sandbox = %c.sandbox, error = %e, "model gateway: cannot hold spend; refusing");
            let msg = "Kiln's model spend ledger is unavailable; the request was not sent";
            Err(error(Some(provider), StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable", msg))
        }
    }
}

/// How far a held request got.
enum At {
    /// Nothing reached the provider.
    NotSent,
    /// Sent; no answer (yet).
    Sent,
    /// The provider answered with a status; `ended` once its body ended.
    Answered { ok: bool, ended: bool },
}

/// Settles a request's hold when dropped, however the exchange ended.
struct Settle {
    gw: Arc<Gateway>,
    owner: String,
    hold: Option<(String, u64)>,
    tap: UsageTap,
    at: At,
}

impl Settle {
    /// The reported usage when the answer ended with a final report; the
    /// hold when the provider may have generated more than was seen (sent
    /// but no answer, a cut stream, a success without usage); an error
    /// status is charged what it reports (providers bill no failed request).
    fn charge(&mut self, held: u64) -> u64 {
        let reported = self.tap.finish();
        match self.at {
            At::NotSent => 0,
            At::Sent => held,
            At::Answered { ok: false, .. } => reported,
            At::Answered { ok: true, ended } if ended && self.tap.final_seen => reported,
            At::Answered { ok: true, .. } => reported.max(held),
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let Some((id, held)) = self.hold.take() else { return };
        let charged = self.charge(held);
        let (gw, owner) = (self.gw.clone(), std::mem::take(&mut self.owner));
        // Without a runtime (shutting down) the hold stays in the ledger and
        // is charged in full when this instance starts again.
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            match gw.ledger.settle(&id, charged).await {
                Ok(after) => {
                    let session = budget::session_scope(&owner);
                    if let Some((_, s)) = after.iter().find(|(scope, _)| *scope == session) {
                        gw.saw_spent(&owner, s.spent);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model gateway: settling failed; the hold is charged at the next start")
                }
            }
        });
    }
}
