//! `/v1/locks`: list (viewer), create and release (operator). See `service::locks`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;
use swell_proto::Timestamp;
use tracing::info;

use super::extract::{JsonBody, query_pairs};
use super::{ApiError, AppState, Operator, Viewer};
use crate::service::locks::{Freeze, FreezeSpec, LockError, Locks, NewLock};

impl From<LockError> for ApiError {
    fn from(e: LockError) -> ApiError {
        match e {
            LockError::Invalid(_) => ApiError::bad_request(e.to_string()),
            LockError::NotFound(_) => ApiError::not_found(e.to_string()),
            LockError::AlreadyReleased { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            LockError::Db(e) => e.into(),
        }
    }
}

/// `GET /v1/locks[?all=true]`: unreleased locks, or every lock with `all`; newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut all = false;
    for (_, v) in query_pairs(&uri, &["all"])? {
        all = match v.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "all: {v:?} is not true or false"
                )));
            }
        };
    }
    let now = state.clock.now();
    let locks: Vec<serde_json::Value> = state
        .locks
        .list(all)
        .iter()
        .map(|l| l.to_json(now))
        .collect();
    Ok(Json(json!({ "locks": locks })))
}

/// The body of `POST /v1/locks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    reason: String,
    #[serde(default)]
    until: Option<Timestamp>,
    #[serde(default)]
    freeze: Option<FreezeSpec>,
}

/// `POST /v1/locks`
pub(super) async fn create(
    State(state): State<AppState>,
    Operator(caller): Operator,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let freeze = req
        .freeze
        .as_ref()
        .map(Freeze::from_spec)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let new = NewLock {
        reason: req.reason,
        until: req.until,
        freeze,
        auto_from: None,
    };
    let now = state.clock.now();
    Locks::check(&new, now)?;
    let lock = state.locks.create(new, &caller.name, now).await?;
    info!(
        lock = lock.id,
        actor = caller.name,
        reason = lock.reason,
        "lock created"
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({ "lock": lock.to_json(now) })),
    ))
}

/// The body of `POST /v1/locks/{id}/release`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseRequest {
    reason: String,
}

/// `POST /v1/locks/{id}/release`
pub(super) async fn release(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReleaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = state.clock.now();
    let lock = state
        .locks
        .release(&id, &req.reason, &caller.name, now)
        .await?;
    info!(
        lock = lock.id,
        actor = caller.name,
        reason = req.reason,
        "lock released"
    );
    Ok(Json(json!({ "lock": lock.to_json(now) })))
}
