//! `POST /v1.0/$batch`: up to 20 requests in one, each run (and throttled, and faulted) as if
//! sent alone. As Graph does, up to 4 items run at once, whatever mailboxes they target, and each
//! takes a concurrency slot of its (app, mailbox) like a request of its own: items running
//! together and other clients' requests count against the same limit of 4, and an item that
//! finds no slot free answers 429 on its own. `dependsOn` holds an item back until its
//! dependencies are answered; a failed dependency answers 424. Answers come back in the reverse
//! of the order they finished in, so clients that assume request order are caught.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::faults::classify;
use crate::graph::{GraphError, GraphRequest, fault_error, handle};
use crate::state::Emu;

const MAX_REQUESTS: usize = 20;
/// Items Graph hands to the service at once ("up to four individual requests from the batch at a
/// time, regardless of the target mailboxes": throttling-limits, Outlook service limits).
const AT_ONCE: usize = 4;

#[derive(Deserialize)]
struct Batch {
    requests: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: Option<String>,
    method: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    depends_on: Vec<String>,
}

pub(crate) async fn batch(emu: Arc<Emu>, req: GraphRequest) -> Response {
    let now = emu.clock.now_ms();
    let fail = |e: GraphError| e.response(&req.headers, now);
    if req.method != Method::POST {
        return fail(GraphError::new(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", "Use POST for $batch."));
    }
    let b: Batch = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => {
            return fail(GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", format!("Invalid batch payload: {e}")));
        }
    };
    if b.requests.len() > MAX_REQUESTS {
        return fail(GraphError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Number of batch request steps exceeds the maximum value of {MAX_REQUESTS}."),
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for it in &b.requests {
        let (Some(id), Some(_), Some(_)) = (&it.id, &it.method, &it.url) else {
            return fail(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Each request needs id, method and url.",
            ));
        };
        if seen.contains(id) {
            return fail(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Duplicate request id '{id}'."),
            ));
        }
        if let Some(d) = it.depends_on.iter().find(|d| !seen.contains(d)) {
            return fail(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("Request '{id}' depends on '{d}', which is not an earlier request."),
            ));
        }
        seen.push(id.clone());
    }
    let mut waiting: Vec<Option<Item>> = b.requests.into_iter().map(Some).collect();
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut running = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    loop {
        // Start what is ready, in request order, while fewer than AT_ONCE run. An item whose
        // dependency failed is answered 424 at once, which may make others ready.
        let mut answered = true;
        while answered {
            answered = false;
            for slot in waiting.iter_mut() {
                if running.len() >= AT_ONCE {
                    break;
                }
                let ready = slot.as_ref().is_some_and(|it| it.depends_on.iter().all(|d| statuses.contains_key(d)));
                let Some(it) = slot.take_if(|_| ready) else { continue };
                let id = it.id.clone().unwrap_or_default();
                if it.depends_on.iter().any(|d| statuses[d] >= 400) {
                    let resp = GraphError::new(
                        StatusCode::FAILED_DEPENDENCY,
                        "FailedDependency",
                        "A dependent request failed.",
                    )
                    .response(&req.headers, now);
                    let (status, value) = item_json(&id, resp).await;
                    statuses.insert(id, status);
                    out.push(value);
                    answered = true;
                    continue;
                }
                let (emu, headers) = (emu.clone(), req.headers.clone());
                running.spawn(async move {
                    let resp = run_item(&emu, &headers, it).await;
                    let (status, value) = item_json(&id, resp).await;
                    (id, status, value)
                });
            }
        }
        match running.join_next().await {
            Some(Ok((id, status, value))) => {
                statuses.insert(id, status);
                out.push(value);
            }
            Some(Err(e)) => {
                // A panicking item: the batch cannot say which one, so it fails as a whole.
                tracing::error!("a $batch item failed: {e}");
                return fail(GraphError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generalException",
                    "An internal server error occurred.",
                ));
            }
            None => break,
        }
    }
    out.reverse();
    let mut r = axum::Json(json!({"responses": out})).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    r
}

/// One item: its own fault and counters (as a request of its own), then the Graph handler with
/// the batch's token.
async fn run_item(emu: &Arc<Emu>, outer: &HeaderMap, it: Item) -> Response {
    let url = it.url.unwrap_or_default();
    let path = if url.starts_with("/v1.0/") { url } else { format!("/v1.0/{}", url.trim_start_matches('/')) };
    let mut headers = HeaderMap::new();
    for name in [header::AUTHORIZATION, HeaderName::from_static("client-request-id")] {
        if let Some(v) = outer.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    for (k, v) in &it.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    let body = match it.body {
        None => Bytes::new(),
        // A non-JSON body (sendMail with MIME) travels as a base64 string.
        Some(Value::String(s)) => Bytes::from(STANDARD.decode(&s).unwrap_or_else(|_| s.into_bytes())),
        Some(v) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Bytes::from(v.to_string())
        }
    };
    let now = emu.clock.now_ms();
    let method =
        Method::from_bytes(it.method.unwrap_or_default().to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
    let uri: Uri = match path.parse() {
        Ok(u) => u,
        Err(_) => {
            return GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", "Invalid request URL.")
                .response(&headers, now);
        }
    };
    let endpoint = classify(uri.path());
    let fault = endpoint.and_then(|ep| {
        let mut faults = emu.faults();
        faults.on_batched(ep);
        faults.on_request(ep)
    });
    let resp = match fault {
        Some(f) => {
            if f.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
            }
            match f.status.and_then(|s| StatusCode::from_u16(s).ok()) {
                Some(s) => fault_error(s, f.retry_after).response(&headers, now),
                // A dropped connection cannot happen inside a batch: the item times out instead.
                None if f.drop_connection => fault_error(StatusCode::GATEWAY_TIMEOUT, None).response(&headers, now),
                None => handle(emu, &GraphRequest { method, uri, headers, body }).await,
            }
        }
        None => handle(emu, &GraphRequest { method, uri, headers, body }).await,
    };
    if let Some(ep) = endpoint {
        emu.faults().on_response(ep, resp.status().as_str());
    }
    resp
}

/// `{id, status, headers, body}`; JSON bodies inline, others base64.
async fn item_json(id: &str, resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), json!(v));
        }
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_default();
    let mut v = json!({"id": id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        v["body"] = if is_json {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else {
            json!(STANDARD.encode(&bytes))
        };
    }
    (status, v)
}
