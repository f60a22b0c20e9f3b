//! `/v1/rollouts`: create (or dry-run), list, show, and the operator's decisions (pause,
//! resume, abort, approve). See `service::rollouts`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use swell_proto::messages::ReleaseRef;

use super::extract::JsonBody;
use super::{ApiError, AppState, Operator, Viewer};
use crate::service::rollouts::{Created, NewRollout, RolloutError};

/// The longest reason accepted.
const MAX_REASON_CHARS: usize = 500;

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> ApiError {
        match e {
            RolloutError::NotFound(_) | RolloutError::NoRelease(..) => {
                ApiError::not_found(e.to_string())
            }
            RolloutError::Plan(_) => ApiError::bad_request(e.to_string()),
            RolloutError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RolloutError::Db(e) => e.into(),
        }
    }
}

fn reason(r: Option<&str>, required: bool) -> Result<Option<&str>, ApiError> {
    match r.map(str::trim).filter(|r| !r.is_empty()) {
        None if required => Err(ApiError::bad_request("reason: required")),
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(ApiError::bad_request(format!(
            "reason: at most {MAX_REASON_CHARS} characters"
        ))),
        r => Ok(r),
    }
}

/// The body of `POST /v1/rollouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    plan: String,
    release: ReleaseRef,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    supersedes: Option<String>,
}

/// `POST /v1/rollouts`
pub(super) async fn create(
    State(state): State<AppState>,
    Operator(caller): Operator,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new = NewRollout {
        plan: req.plan,
        release: req.release,
        dry_run: req.dry_run,
        supersedes: req.supersedes,
    };
    Ok(match state.rollouts.create(new, &caller.name).await? {
        Created::DryRun(v) => (StatusCode::OK, Json(v)),
        Created::Rollout(v) => (StatusCode::CREATED, Json(json!({ "rollout": v }))),
    })
}

/// `GET /v1/rollouts`
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "rollouts": state.rollouts.list().await })))
}

/// `GET /v1/rollouts/{id}`
pub(super) async fn show(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "rollout": state.rollouts.show(&id).await? })))
}

/// The body of pause, resume and abort.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonRequest {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/rollouts/{id}/pause`
pub(super) async fn pause(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    let why = reason(req.reason.as_deref(), true)?.unwrap_or_default();
    let v = state.rollouts.pause(&id, why, &caller.name).await?;
    Ok(Json(json!({ "rollout": v })))
}

/// `POST /v1/rollouts/{id}/resume`
pub(super) async fn resume(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    let why = reason(req.reason.as_deref(), false)?.unwrap_or("no reason given");
    let v = state.rollouts.resume(&id, why, &caller.name).await?;
    Ok(Json(json!({ "rollout": v })))
}

/// `POST /v1/rollouts/{id}/abort`
pub(super) async fn abort(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    let why = reason(req.reason.as_deref(), true)?.unwrap_or_default();
    let v = state.rollouts.abort(&id, why, &caller.name).await?;
    Ok(Json(json!({ "rollout": v })))
}

/// The body of approve.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveRequest {
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/rollouts/{id}/approve`
pub(super) async fn approve(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ApproveRequest>,
) -> Result<Json<Value>, ApiError> {
    let why = reason(req.reason.as_deref(), false)?;
    let v = state
        .rollouts
        .approve(&id, req.stage.as_deref(), why, &caller.name)
        .await?;
    Ok(Json(json!({ "rollout": v })))
}
