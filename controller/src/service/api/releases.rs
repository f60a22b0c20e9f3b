//! `/v1/releases`: list, show, and the two-step upload (manifest, then image).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;
use serde::Serialize;
use serde_json::json;
use swell_proto::{Artifact, HardwareId, ReleaseName, SemVer, Sha256Digest, TargetName, Timestamp};
use tokio_util::io::StreamReader;

use super::extract::{BodyBytes, query_pairs};
use super::{ApiError, AppState, Operator, Viewer};
use crate::service::releases::{Progress, Release};

/// An artifact as the API shows it.
#[derive(Debug, Serialize)]
struct ArtifactView {
    target: TargetName,
    size: u64,
    sha256: Sha256Digest,
    url: String,
}

/// A release as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct ReleaseView {
    name: ReleaseName,
    version: SemVer,
    security_version: u64,
    hardware: Vec<HardwareId>,
    artifacts: Vec<ArtifactView>,
    manifest_version: u64,
    expires: Timestamp,
    manifest_digest: Sha256Digest,
    accepted_at: Timestamp,
    accepted_by: String,
}

fn view(r: &Release, public_url: &str) -> ReleaseView {
    let artifact = |a: &Artifact| ArtifactView {
        target: a.target.clone(),
        size: a.size,
        sha256: a.sha256,
        url: format!("{public_url}/v1/artifacts/{}", a.sha256),
    };
    ReleaseView {
        name: r.doc.name.clone(),
        version: r.doc.release_version.clone(),
        security_version: r.doc.security_version,
        hardware: r.doc.hardware.clone(),
        artifacts: r.doc.artifacts.iter().map(artifact).collect(),
        manifest_version: r.header.version,
        expires: r.header.expires,
        manifest_digest: r.manifest_digest,
        accepted_at: r.accepted_at,
        accepted_by: r.accepted_by.clone(),
    }
}

fn name_version(name: &str, version: &str) -> Result<(ReleaseName, SemVer), ApiError> {
    let name = ReleaseName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let version = SemVer::new(version).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((name, version))
}

/// `GET /v1/releases`
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
) -> Json<serde_json::Value> {
    let releases: Vec<ReleaseView> = state
        .releases
        .list()
        .iter()
        .map(|r| view(r, &state.public_url))
        .collect();
    Json(json!({ "releases": releases }))
}

fn find(state: &AppState, name: &str, version: &str) -> Result<Release, ApiError> {
    let (name, version) = name_version(name, version)?;
    state
        .releases
        .get(&name, &version)
        .ok_or_else(|| ApiError::not_found(format!("no release {name} {version}")))
}

/// `GET /v1/releases/{name}/{version}`
pub(super) async fn show(
    State(state): State<AppState>,
    _caller: Viewer,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ReleaseView>, ApiError> {
    let r = find(&state, &name, &version)?;
    Ok(Json(view(&r, &state.public_url)))
}

/// `GET /v1/releases/{name}/{version}/manifest`: the signed manifest as uploaded.
pub(super) async fn get_manifest(
    State(state): State<AppState>,
    _caller: Viewer,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let r = find(&state, &name, &version)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], r.manifest).into_response())
}

fn progress_response(p: Progress, public_url: &str) -> (StatusCode, Json<serde_json::Value>) {
    match p {
        Progress::Accepted(r) => (
            StatusCode::CREATED,
            Json(json!({"status": "accepted", "release": view(&r, public_url)})),
        ),
        Progress::Waiting {
            name,
            version,
            missing,
        } => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "staged",
                "name": name,
                "version": version,
                "missing": missing,
            })),
        ),
    }
}

/// `PUT /v1/releases/{name}/{version}/manifest`
pub(super) async fn put_manifest(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path((name, version)): Path<(String, String)>,
    BodyBytes(body): BodyBytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (name, version) = name_version(&name, &version)?;
    let result = state
        .releases
        .put_manifest(&name, &version, &body, &caller.name, state.clock.now())
        .await;
    state.metrics.upload(result.is_ok());
    if let Err(e) = &result {
        tracing::warn!(release = %name, version = %version, actor = caller.name, error = %e, "manifest refused");
    }
    Ok(progress_response(result?, &state.public_url))
}

/// `PUT /v1/releases/{name}/{version}/image[?target=T]`: the image, streamed.
pub(super) async fn put_image(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path((name, version)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (name, version) = name_version(&name, &version)?;
    let mut target = TargetName::new("rootfs").map_err(|e| ApiError::internal(&e))?;
    for (_, v) in query_pairs(&uri, &["target"])? {
        target = TargetName::new(&v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let declared = match headers.get(header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))?,
        ),
        None => None,
    };
    let reader = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let result = state
        .releases
        .put_image(
            &name,
            &version,
            &target,
            declared,
            reader,
            &caller.name,
            state.clock.now(),
        )
        .await;
    state.metrics.upload(result.is_ok());
    if let Err(e) = &result {
        tracing::warn!(release = %name, version = %version, actor = caller.name, error = %e, "image refused");
    }
    Ok(progress_response(result?, &state.public_url))
}
