//! The enrollment routes: `POST /v1/enroll` (no operator token: the enrollment token in the
//! body or as the bearer), `POST /v1/enroll-tokens` (admin) and `GET /v1/enroll-tokens`
//! (admin). Registered in [`super::api::routes`].

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use swell_proto::{DeviceId, HardwareId};
use tracing::{info, warn};

use super::api::{Admin, ApiError, AppState};
use super::enroll::{Application, EnrollError, TokenSpec};
use super::fleet::Label;

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> ApiError {
        match e {
            EnrollError::Invalid(_) => ApiError::bad_request(e.to_string()),
            EnrollError::UnknownToken => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            EnrollError::Expired(_) | EnrollError::UsedUp => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            EnrollError::Contended => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            EnrollError::Registry(e) => e.into(),
            EnrollError::Db(e) => e.into(),
            EnrollError::Ca(e) => ApiError::internal(&e),
            EnrollError::Details(e) => ApiError::internal(&e),
        }
    }
}

/// Parses a JSON body, refusing unknown fields, with the API's error shape.
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// The body of `POST /v1/enroll-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    #[serde(default)]
    cohort: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    ttl_s: u64,
    uses: u32,
}

/// `POST /v1/enroll-tokens`
pub async fn create_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: CreateTokenRequest = json_body(&headers, &body)?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| ApiError::internal(&std::io::Error::other(e.to_string())))?;
    let spec = TokenSpec {
        cohort: req.cohort,
        tags: req.tags,
        ttl_s: req.ttl_s,
        uses: req.uses,
    };
    let (secret, info) = state
        .enrollment
        .create_token(spec, &random, &caller.name, state.clock.now())
        .await?;
    info!(
        token = info.id,
        actor = caller.name,
        "enrollment token created"
    );
    let mut v = serde_json::to_value(&info).map_err(|e| ApiError::internal(&e))?;
    v["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

/// `GET /v1/enroll-tokens`
pub async fn list_tokens(
    State(state): State<AppState>,
    _caller: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tokens = state.enrollment.list_tokens(state.clock.now()).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

/// The body of `POST /v1/enroll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    #[serde(default)]
    token: Option<String>,
    id: DeviceId,
    hardware: HardwareId,
    zone: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// SPKI PEM.
    public_key: String,
}

/// `POST /v1/enroll`
pub async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: EnrollRequest = json_body(&headers, &body)?;
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let token = req.token.or(bearer).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing enrollment token (in the body's \"token\" or as the bearer)",
        )
    })?;
    let id = req.id.clone();
    let app = Application {
        token,
        id: req.id,
        hardware: req.hardware,
        zone: req.zone,
        tags: req.tags,
        public_key: req.public_key,
    };
    let enrolled = match state.enrollment.enroll(app, state.clock.now()).await {
        Ok(e) => e,
        Err(e) => {
            warn!(device_id = %id, error = %e, "enrollment refused");
            return Err(e.into());
        }
    };
    let reg = &enrolled.device.registration;
    info!(device_id = %reg.id, "device enrolled");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": reg.id.as_str(),
            "keyid": reg.public_key.key_id().to_hex(),
            "hardware": reg.hardware.as_str(),
            "zone": reg.zone.as_str(),
            "cohort": reg.cohort.as_ref().map(Label::as_str),
            "tags": reg.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<BTreeMap<_, _>>(),
            "certificate": enrolled.certificate,
            "ca": enrolled.ca,
        })),
    ))
}
