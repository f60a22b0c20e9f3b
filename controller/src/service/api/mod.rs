//! The HTTP API (axum): JSON in and out, bearer-token auth, roles, bounded bodies, and one
//! error shape, `{"error": "..."}`, with a 4xx status for anything the caller can fix.
//!
//! Authentication is an extractor per role ([`Viewer`], [`Operator`], [`Admin`]), so each
//! handler's signature says who may call it, and the check runs before any body is read.
//! `/healthz`, `/v1/openapi.json` and `/v1/artifacts/{sha256}` need no token: devices fetch
//! artifacts, whose integrity comes from the signed manifest, not from the transport.
//!
//! Every route is registered through [`Routes::route`], which also records its path and
//! methods, so the unit test below can hold the OpenAPI document to the router.

mod artifacts;
mod devices;
mod errors;
mod extract;
mod locks;
mod misc;
mod releases;
mod rollouts;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post, put};
use tracing::info;

pub use self::errors::ApiError;
pub use self::extract::{Admin, Operator, Viewer};

use super::Clock;
use super::audit::AuditLog;
use super::auth::TokenTable;
use super::commands::Commands;
use super::metrics::Metrics;
use super::registry::Registry;
use super::releases::Releases;

/// Largest JSON request body: a device registration or a command is a few hundred bytes.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Devices.
    pub registry: Registry,
    /// Releases and artifacts.
    pub releases: Releases,
    /// Commands to devices.
    pub commands: Commands,
    /// The audit log.
    pub audit: AuditLog,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// API tokens.
    pub tokens: Arc<TokenTable>,
    /// The base URL devices download artifacts from.
    pub public_url: Arc<str>,
    /// Enrollment tokens and the device CA.
    pub enrollment: super::enroll::Enrollment,
    /// Deploy locks.
    pub locks: super::locks::Locks,
    /// Rollout event webhooks.
    pub webhooks: super::webhooks::Webhooks,
    /// The rollout executor.
    pub rollouts: super::rollouts::Rollouts,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// The router under construction, with the paths and methods registered so far.
#[derive(Debug)]
pub struct Routes {
    router: Router<AppState>,
    /// `(path, methods)` in registration order.
    pub table: Vec<(&'static str, &'static [&'static str])>,
}

impl Routes {
    fn route(
        mut self,
        path: &'static str,
        methods: &'static [&'static str],
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.table.push((path, methods));
        self.router = self.router.route(path, handler);
        self
    }
}

/// Every route of the API, before the state is attached.
pub fn routes() -> Routes {
    let r = Routes {
        router: Router::new(),
        table: Vec::new(),
    };
    r.route("/healthz", &["get"], get(misc::healthz))
        .route("/metrics", &["get"], get(misc::metrics))
        .route("/v1/openapi.json", &["get"], get(misc::openapi))
        .route("/v1/whoami", &["get"], get(misc::whoami))
        .route(
            "/v1/devices",
            &["get", "post"],
            get(devices::list).post(devices::provision),
        )
        .route("/v1/devices/{id}", &["get"], get(devices::show))
        .route("/v1/devices/{id}/revoke", &["post"], post(devices::revoke))
        .route(
            "/v1/devices/{id}/commands",
            &["post"],
            post(devices::command),
        )
        .route("/v1/releases", &["get"], get(releases::list))
        .route(
            "/v1/releases/{name}/{version}",
            &["get"],
            get(releases::show),
        )
        .route(
            "/v1/releases/{name}/{version}/manifest",
            &["get", "put"],
            get(releases::get_manifest)
                .put(releases::put_manifest)
                .layer(DefaultBodyLimit::max(
                    swell_proto::limits::MAX_DOCUMENT_BYTES,
                )),
        )
        .route(
            "/v1/releases/{name}/{version}/image",
            &["put"],
            // Streamed to disk and capped at the manifest's size by the handler itself.
            put(releases::put_image).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/artifacts/{sha256}",
            &["get", "head"],
            get(artifacts::get),
        )
        .route(
            "/v1/enroll-tokens",
            &["get", "post"],
            get(super::enroll_api::list_tokens).post(super::enroll_api::create_token),
        )
        .route("/v1/enroll", &["post"], post(super::enroll_api::enroll))
        .route(
            "/v1/locks",
            &["get", "post"],
            get(locks::list).post(locks::create),
        )
        .route("/v1/locks/{id}/release", &["post"], post(locks::release))
        .route(
            "/v1/rollouts",
            &["get", "post"],
            get(rollouts::list).post(rollouts::create),
        )
        .route("/v1/rollouts/{id}", &["get"], get(rollouts::show))
        .route("/v1/rollouts/{id}/pause", &["post"], post(rollouts::pause))
        .route(
            "/v1/rollouts/{id}/resume",
            &["post"],
            post(rollouts::resume),
        )
        .route("/v1/rollouts/{id}/abort", &["post"], post(rollouts::abort))
        .route(
            "/v1/rollouts/{id}/approve",
            &["post"],
            post(rollouts::approve),
        )
        .route("/v1/audit", &["get"], get(misc::audit_list))
        .route("/v1/audit/verify", &["get"], get(misc::audit_verify))
}

/// The API with its state, limits and request logging.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(misc::not_found)
        .method_not_allowed_fallback(misc::method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

async fn log_request(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let response = next.run(req).await;
    info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "http"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document lists every route with its methods, and nothing else.
    #[test]
    fn openapi_matches_the_router() {
        let doc: serde_json::Value = serde_json::from_str(misc::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let table = routes().table;
        for (path, methods) in &table {
            let item = paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is routed but not in openapi.json"));
            for m in *methods {
                assert!(
                    item.get(*m).is_some(),
                    "{m} {path} is routed but not documented"
                );
            }
            for (m, _) in item.as_object().unwrap() {
                if ["get", "put", "post", "delete", "head", "patch"].contains(&m.as_str()) {
                    assert!(
                        methods.contains(&m.as_str()),
                        "{m} {path} is documented but not routed"
                    );
                }
            }
        }
        for path in paths.keys() {
            assert!(
                table.iter().any(|(p, _)| p == path),
                "{path} is documented but not routed"
            );
        }
    }
}
