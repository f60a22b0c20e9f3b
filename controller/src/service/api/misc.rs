//! Health, metrics, the OpenAPI document, whoami, the audit log, and the fallbacks.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::query_pairs;
use super::{ApiError, AppState, Viewer};
use crate::service::metrics::Gauges;

/// The OpenAPI 3.1 document, written by hand and held to the router by a test.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// Most audit entries one request returns.
pub(super) const MAX_AUDIT_PAGE: usize = 10_000;

/// `GET /healthz`
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /v1/openapi.json`
pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /metrics`
pub(super) async fn metrics(State(state): State<AppState>, _caller: Viewer) -> Response {
    let text = state.metrics.render(
        &state.registry.snapshot(),
        Gauges {
            releases: state.releases.count(),
        },
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/whoami`
pub(super) async fn whoami(Viewer(caller): Viewer) -> Json<serde_json::Value> {
    Json(json!({"name": caller.name, "role": caller.role.name()}))
}

/// `GET /v1/audit[?after=N][&limit=M]`
pub(super) async fn audit_list(
    State(state): State<AppState>,
    _caller: Viewer,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut after = 0u64;
    let mut limit = MAX_AUDIT_PAGE;
    for (k, v) in query_pairs(&uri, &["after", "limit"])? {
        let n: u64 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{k} must be a non-negative integer")))?;
        match k.as_str() {
            "after" => after = n,
            _ => {
                limit = usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .clamp(1, MAX_AUDIT_PAGE)
            }
        }
    }
    let entries: Vec<serde_json::Value> = state
        .audit
        .list()
        .await?
        .iter()
        .filter(|e| e.seq > after)
        .take(limit)
        .map(|e| e.to_json())
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

/// `GET /v1/audit/verify`
pub(super) async fn audit_verify(
    State(state): State<AppState>,
    _caller: Viewer,
) -> Result<Json<serde_json::Value>, ApiError> {
    let v = state.audit.verify().await?;
    let problems: Vec<serde_json::Value> = v
        .problems
        .iter()
        .map(|p| json!({"seq": p.seq, "kind": p.kind.name(), "detail": p.detail}))
        .collect();
    Ok(Json(json!({
        "ok": v.problems.is_empty(),
        "entries": v.entries,
        "head": {"seq": v.head.seq, "hash": v.head.hash.to_hex()},
        "problems": problems,
    })))
}

/// Unknown paths.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// Known paths, wrong method.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}
