//! `/v1/devices`: list (with filters), show, provision, revoke, and commands.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::{Deserialize, Serialize};
use serde_json::json;
use swell_proto::keys::pem;
use swell_proto::messages::{Action, Progress, ReleaseRef, Running};
use swell_proto::{DeviceId, HardwareId, ReleaseName, SemVer, Timestamp};

use super::extract::{JsonBody, query_pairs};
use super::{Admin, ApiError, AppState, Operator, Viewer};
use crate::service::commands::{InstallError, install_action};
use crate::service::fleet::{Device, Filter, Label, Zone, parse_state, state_name};
use crate::service::registry::Provision;
use crate::store::Batch;

/// A device as the API shows it.
#[derive(Debug, Serialize)]
pub(super) struct DeviceView {
    id: DeviceId,
    keyid: String,
    public_key: String,
    hardware: HardwareId,
    zone: String,
    cohort: Option<String>,
    tags: BTreeMap<String, String>,
    provisioned_at: Timestamp,
    provisioned_by: String,
    revoked: Option<serde_json::Value>,
    online: bool,
    last_seen: Option<Timestamp>,
    agent_version: Option<String>,
    state: String,
    running: Option<Running>,
    target: Option<ReleaseRef>,
    command: Option<String>,
    last_error: Option<String>,
    progress: Option<Progress>,
    uptime_s: Option<u64>,
    metrics: BTreeMap<String, i64>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> DeviceView {
        let reg = d.registration;
        let inv = d.inventory;
        DeviceView {
            keyid: reg.public_key.key_id().to_hex(),
            public_key: pem::public_key_to_pem(&reg.public_key).unwrap_or_default(),
            id: reg.id,
            hardware: reg.hardware,
            zone: reg.zone.as_str().to_owned(),
            cohort: reg.cohort.map(|c| c.as_str().to_owned()),
            tags: reg
                .tags
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
            provisioned_at: reg.provisioned_at,
            provisioned_by: reg.provisioned_by,
            revoked: reg
                .revoked
                .map(|r| json!({"at": r.at, "by": r.by, "reason": r.reason})),
            online: inv.online,
            last_seen: inv.last_seen,
            agent_version: inv.agent_version,
            state: inv.state.map_or("unknown", state_name).to_owned(),
            running: inv.running,
            target: inv.target,
            command: inv.command,
            last_error: inv.last_error,
            progress: inv.progress,
            uptime_s: inv.uptime_s,
            metrics: inv.metrics,
        }
    }
}

fn filter_from_query(uri: &Uri) -> Result<Filter, ApiError> {
    let pairs = query_pairs(
        uri,
        &[
            "tag", "cohort", "version", "state", "zone", "online", "revoked",
        ],
    )?;
    let mut f = Filter::default();
    let label = |s: &str| Label::new(s).map_err(ApiError::bad_request);
    let boolean = |k: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!("{k} must be true or false"))),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "tag" => {
                let (tk, tv) = v.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("tag {v:?}: expected KEY=VALUE"))
                })?;
                f.tags.push((label(tk)?, label(tv)?));
            }
            "cohort" => f.cohort = Some(label(&v)?),
            "version" => {
                f.version =
                    Some(SemVer::new(&v).map_err(|e| ApiError::bad_request(e.to_string()))?);
            }
            "state" => {
                f.state = Some(parse_state(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("state {v:?} is not an update state"))
                })?);
            }
            "zone" => f.zone = Some(Zone::new(&v).map_err(ApiError::bad_request)?),
            "online" => f.online = Some(boolean("online", &v)?),
            "revoked" => f.revoked = Some(boolean("revoked", &v)?),
            _ => {}
        }
    }
    Ok(f)
}

/// `GET /v1/devices`
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Viewer,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = filter_from_query(&uri)?;
    let devices: Vec<DeviceView> = state
        .registry
        .list(&filter)
        .into_iter()
        .map(DeviceView::from)
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

fn device_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `GET /v1/devices/{id}`
pub(super) async fn show(
    State(state): State<AppState>,
    _caller: Viewer,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    let device = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    Ok(Json(device.into()))
}

/// The body of `POST /v1/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProvisionRequest {
    id: DeviceId,
    /// SPKI PEM.
    public_key: String,
    hardware: HardwareId,
    zone: String,
    #[serde(default)]
    cohort: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// `POST /v1/devices`
pub(super) async fn provision(
    State(state): State<AppState>,
    Operator(caller): Operator,
    JsonBody(req): JsonBody<ProvisionRequest>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let public_key = pem::public_key_from_pem(&req.public_key)
        .map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let zone = Zone::new(&req.zone).map_err(|e| ApiError::bad_request(format!("zone: {e}")))?;
    let cohort = req
        .cohort
        .as_deref()
        .map(Label::new)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("cohort: {e}")))?;
    if req.tags.len() > crate::service::fleet::MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "tags: at most {} tags",
            crate::service::fleet::MAX_TAGS
        )));
    }
    let tags = req
        .tags
        .iter()
        .map(|(k, v)| Ok((Label::new(k)?, Label::new(v)?)))
        .collect::<Result<BTreeMap<_, _>, String>>()
        .map_err(|e| ApiError::bad_request(format!("tags: {e}")))?;
    let p = Provision {
        id: req.id,
        public_key,
        hardware: req.hardware,
        zone,
        cohort,
        tags,
        extra: Batch::new(),
    };
    let device = state
        .registry
        .provision(p, &caller.name, state.clock.now())
        .await?;
    tracing::info!(device_id = %device.registration.id, actor = caller.name, "device provisioned");
    Ok((StatusCode::CREATED, Json(device.into())))
}

/// The body of `POST /v1/devices/{id}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeRequest {
    reason: String,
}

/// `POST /v1/devices/{id}/revoke`
pub(super) async fn revoke(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = device_id(&id)?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "reason: say why the device is revoked",
        ));
    }
    let device = state
        .registry
        .revoke(&id, &req.reason, &caller.name, state.clock.now())
        .await?;
    tracing::warn!(device_id = %id, actor = caller.name, "device revoked");
    Ok(Json(device.into()))
}

/// The body of `POST /v1/devices/{id}/commands`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum CommandRequest {
    /// Install an accepted release.
    Install {
        /// Its name.
        release: ReleaseName,
        /// Its version.
        version: SemVer,
    },
    /// Go back to the previous image.
    Revert {},
    /// Stop an update in progress.
    Cancel {},
}

/// `POST /v1/devices/{id}/commands`
pub(super) async fn command(
    State(state): State<AppState>,
    Operator(caller): Operator,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CommandRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = device_id(&id)?;
    let device = state
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device {id}")))?;
    let now = state.clock.now();
    let (action, detail) = match req {
        CommandRequest::Install { release, version } => install_action(
            &state.releases,
            &state.public_url,
            &device,
            &release,
            &version,
            now,
        )
        .map_err(|e| match e {
            InstallError::NoRelease(..) => ApiError::not_found(e.to_string()),
            _ => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        })?,
        CommandRequest::Revert {} => (Action::Revert, json!({})),
        CommandRequest::Cancel {} => (Action::Cancel, json!({})),
    };
    let kind = crate::service::commands::action_kind(&action);
    let sent = state
        .commands
        .send(&id, action, detail, &caller.name, now)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"device": id.as_str(), "command": sent.id, "seq": sent.seq, "kind": kind})),
    ))
}
