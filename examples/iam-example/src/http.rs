//! The IAM service's HTTP API: the commands and queries of [`Iam`] as JSON
//! over HTTP (axum), with typed JSON errors.
//!
//! | method and path | what | success |
//! | --- | --- | --- |
//! | `POST /tenants` `{"id","name"}` | create a tenant | 201 |
//! | `PUT /tenants/{t}/suspension` `{"reason"}` | suspend it | 200 |
//! | `DELETE /tenants/{t}/suspension` | reactivate it | 200 |
//! | `POST /tenants/{t}/roles` `{"id","name","permissions"}` | define a role | 201 |
//! | `PUT /tenants/{t}/roles/{r}/permissions/{p}` | grant a permission | 200 |
//! | `DELETE /tenants/{t}/roles/{r}/permissions/{p}` | revoke it | 200 |
//! | `POST /tenants/{t}/users` `{"id","email","display_name"}` | register a user | 201 |
//! | `PUT /tenants/{t}/users/{u}/email` `{"email"}` | change the address | 200 |
//! | `PUT /tenants/{t}/users/{u}/roles/{r}` | assign a role | 200 |
//! | `DELETE /tenants/{t}/users/{u}/roles/{r}` | revoke it | 200 |
//! | `DELETE /tenants/{t}/users/{u}` | deactivate the user | 200 |
//! | `GET /tenants/{t}/users/{u}/permissions` | the user's permissions | 200 |
//! | `GET /tenants/{t}/users/{u}/permissions/{p}` | may the user do `p`? | 200 |
//! | `GET /tenants/{t}/audit/{request id}` | what one request did | 200 |
//! | `GET /health` | store, cache, projections and relay | 200 or 503 |
//! | `GET /metrics` | Prometheus text | 200 |
//!
//! Commands take who acts from `X-Actor` (required), the request id from
//! `X-Correlation-Id` (any text; generated when absent, and returned in the
//! response's `X-Correlation-Id` as the UUID the events record), and an
//! idempotency key from `Idempotency-Key`: the same key again on the same
//! method and path returns the first outcome instead of acting twice (a
//! client that lost an answer retries safely). A key is scoped to its
//! method and path: the same key on another route is another command.
//!
//! Ids: a tenant id is 1 to 40 lowercase letters, digits or `_`; a user or
//! role id starts with its tenant's id and `-` (`t001-u0042`, `t001-admin`),
//! so no two tenants can address the same stream.
//!
//! Errors are `{"error": code, "message": text}` (and `"field"` for bad
//! input): 400 `invalid` or `missing_header`, 404 `not_found`, 409
//! `already_exists`, `tenant_suspended`, `email_taken`, `user_deactivated`,
//! `role_of_another_tenant` or `conflict` (a concurrent writer won every
//! retry), 500 `internal` (the details go to the service's log, not to the
//! client). Reads are answered from the read models, which follow the log
//! within moments of a command.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use annals::CommandError;
use annals::projection::runner::{ProjectionState, ProjectionStatus};
use annals::subscription::SubscriptionStatus;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use iam_domain::IamError;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::backend::Backend;
use crate::service::{self, Iam, Outcome};

/// Counter of answered requests (labels `route`, `status`).
pub const REQUESTS: &str = "iam_http_requests_total";
/// Histogram of seconds per request (label `route`).
pub const REQUEST_SECONDS: &str = "iam_http_request_seconds";

/// What the handlers share.
pub struct Api {
    /// The commands.
    pub iam: Iam,
    /// The storage (for the read models' queries and the health check).
    pub backend: Arc<Backend>,
    /// The projections' statuses, for `/health`.
    pub projections: Box<dyn Fn() -> Vec<ProjectionStatus> + Send + Sync>,
    /// The JetStream relay's status, when the service relays.
    pub relay: Box<dyn Fn() -> Option<SubscriptionStatus> + Send + Sync>,
    /// This instance's name.
    pub instance: String,
    /// The metrics text.
    pub prometheus: PrometheusHandle,
}

type Shared = State<Arc<Api>>;

/// The routes, over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/tenants", post(create_tenant))
        .route(
            "/tenants/{tenant}/suspension",
            put(suspend_tenant).delete(reactivate_tenant),
        )
        .route("/tenants/{tenant}/roles", post(define_role))
        .route(
            "/tenants/{tenant}/roles/{role}/permissions/{permission}",
            put(grant_permission).delete(revoke_permission),
        )
        .route("/tenants/{tenant}/users", post(register_user))
        .route("/tenants/{tenant}/users/{user}", delete(deactivate_user))
        .route("/tenants/{tenant}/users/{user}/email", put(change_email))
        .route(
            "/tenants/{tenant}/users/{user}/roles/{role}",
            put(assign_role).delete(revoke_role),
        )
        .route(
            "/tenants/{tenant}/users/{user}/permissions",
            get(user_permissions),
        )
        .route(
            "/tenants/{tenant}/users/{user}/permissions/{permission}",
            get(may),
        )
        .route("/tenants/{tenant}/audit/{request}", get(audit))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(no_route)
        .layer(axum::middleware::from_fn(measure))
        .with_state(api)
}

/// A refused or failed request, answered as typed JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }

    /// The domain's refusal: 400 for bad input, 404 for what is not there,
    /// 409 for a broken rule.
    fn refused(refusal: IamError) -> Self {
        let message = refusal.to_string();
        let conflict = |code| ApiError::new(StatusCode::CONFLICT, code, message.clone());
        match refusal {
            IamError::Invalid { field, .. } => ApiError::invalid(field, message),
            IamError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            IamError::AlreadyExists { .. } => conflict("already_exists"),
            IamError::TenantSuspended { .. } => conflict("tenant_suspended"),
            IamError::EmailTaken { .. } => conflict("email_taken"),
            IamError::UserDeactivated { .. } => conflict("user_deactivated"),
            IamError::RoleOfAnotherTenant { .. } => conflict("role_of_another_tenant"),
        }
    }

    /// A failure below the domain: a conflict that outlasted the retries
    /// (409), input the store refused (400), anything else 500 with the
    /// details in the log only.
    fn failed(error: &anyhow::Error) -> Self {
        let store = match error.downcast_ref::<CommandError<IamError>>() {
            Some(CommandError::Store(store)) => Some(store),
            _ => error
                .chain()
                .find_map(|cause| cause.downcast_ref::<annals::Error>()),
        };
        match store {
            Some(
                annals::Error::VersionConflict { .. }
                | annals::Error::AppendConditionFailed { .. }
                | annals::Error::HistoryMismatch { .. },
            ) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "other writers changed what this command decides on, again and again; retry",
            ),
            Some(annals::Error::InvalidInput { field, reason }) => {
                ApiError::invalid(field, format!("invalid {field}: {reason}"))
            }
            _ => {
                eprintln!("iam-example serve: {error:#}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the service failed; its log has the details",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

type Answer = Result<Response, ApiError>;

/// Who asks in a command request: the `X-Actor`, `X-Correlation-Id` and
/// `Idempotency-Key` headers, the key scoped to the method and path.
struct Caller(service::Caller);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let route = format!("{} {}", parts.method, parts.uri.path());
        caller(&parts.headers, &route).map(Caller)
    }
}

fn caller(headers: &HeaderMap, route: &str) -> Result<service::Caller, ApiError> {
    let text = |name: &'static str| -> Result<Option<String>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => {
                let value = value
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|value| !value.is_empty() && value.len() <= 200)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            name,
                            format!("{name} must be 1 to 200 visible ASCII characters"),
                        )
                    })?;
                Ok(Some(value.to_owned()))
            }
        }
    };
    let Some(actor) = text("x-actor")? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "the X-Actor header must name who acts",
        ));
    };
    let request_id = text("x-correlation-id")?;
    let command_id = text("idempotency-key")?.map(|key| {
        use sha2::Digest as _;
        let scope = sha2::Sha256::digest(route.as_bytes());
        format!("{key}/{}", hex::encode(&scope[..8]))
    });
    Ok(service::Caller::for_request(
        actor,
        request_id.as_deref(),
        command_id,
    ))
}

/// The JSON body as `T`; a bad one names what is wrong.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::invalid("body", format!("the JSON body is not accepted: {error}"))
    })
}

fn check_tenant(tenant: &str) -> Result<(), ApiError> {
    let valid = (1..=40).contains(&tenant.len())
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "tenant id",
            format!("tenant id {tenant:?} must be 1 to 40 lowercase letters, digits or _"),
        ))
    }
}

/// A user's or role's id: its tenant's id, `-`, and 1 to 60 lowercase
/// letters, digits, `_` or `-`.
fn check_member(field: &'static str, tenant: &str, id: &str) -> Result<(), ApiError> {
    let valid = id
        .strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|local| {
            (1..=60).contains(&local.len())
                && local
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "{field} {id:?} must be \"{tenant}-\" and 1 to 60 lowercase letters, digits, _ or -"
            ),
        ))
    }
}

/// A command's outcome as a response: `status` with the request's
/// correlation id, or the refusal.
fn answer(
    outcome: anyhow::Result<Outcome>,
    caller: &service::Caller,
    status: StatusCode,
) -> Answer {
    match outcome {
        Ok(Ok(())) => {
            let mut response = (
                status,
                axum::Json(json!({ "status": "done", "correlation_id": caller.correlation_id })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&caller.correlation_id.to_string()) {
                response.headers_mut().insert("x-correlation-id", value);
            }
            Ok(response)
        }
        Ok(Err(refusal)) => Err(ApiError::refused(refusal)),
        Err(error) => Err(ApiError::failed(&error)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    name: String,
}

async fn create_tenant(State(api): Shared, Caller(caller): Caller, bytes: Bytes) -> Answer {
    let new: NewTenant = body(&bytes)?;
    check_tenant(&new.id)?;
    let outcome = api.iam.create_tenant(&caller, &new.id, &new.name).await;
    answer(outcome, &caller, StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suspension {
    reason: String,
}

async fn suspend_tenant(
    State(api): Shared,
    Path(tenant): Path<String>,
    Caller(caller): Caller,
    bytes: Bytes,
) -> Answer {
    check_tenant(&tenant)?;
    let suspension: Suspension = body(&bytes)?;
    let outcome = api
        .iam
        .set_suspended(&caller, &tenant, true, &suspension.reason)
        .await;
    answer(outcome, &caller, StatusCode::OK)
}

async fn reactivate_tenant(
    State(api): Shared,
    Path(tenant): Path<String>,
    Caller(caller): Caller,
) -> Answer {
    check_tenant(&tenant)?;
    let outcome = api.iam.set_suspended(&caller, &tenant, false, "").await;
    answer(outcome, &caller, StatusCode::OK)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    id: String,
    name: String,
    #[serde(default)]
    permissions: BTreeSet<String>,
}

async fn define_role(
    State(api): Shared,
    Path(tenant): Path<String>,
    Caller(caller): Caller,
    bytes: Bytes,
) -> Answer {
    check_tenant(&tenant)?;
    let role: NewRole = body(&bytes)?;
    check_member("role id", &tenant, &role.id)?;
    let outcome = api
        .iam
        .define_role(&caller, &tenant, &role.id, &role.name, role.permissions)
        .await;
    answer(outcome, &caller, StatusCode::CREATED)
}

async fn change_permission(
    api: &Api,
    (tenant, role, permission): (String, String, String),
    caller: &service::Caller,
    grant: bool,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("role id", &tenant, &role)?;
    let outcome = api
        .iam
        .change_permission(caller, &tenant, &role, &permission, grant)
        .await;
    answer(outcome, caller, StatusCode::OK)
}

async fn grant_permission(
    State(api): Shared,
    Path(path): Path<(String, String, String)>,
    Caller(caller): Caller,
) -> Answer {
    change_permission(&api, path, &caller, true).await
}

async fn revoke_permission(
    State(api): Shared,
    Path(path): Path<(String, String, String)>,
    Caller(caller): Caller,
) -> Answer {
    change_permission(&api, path, &caller, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    id: String,
    email: String,
    display_name: String,
}

async fn register_user(
    State(api): Shared,
    Path(tenant): Path<String>,
    Caller(caller): Caller,
    bytes: Bytes,
) -> Answer {
    check_tenant(&tenant)?;
    let user: NewUser = body(&bytes)?;
    check_member("user id", &tenant, &user.id)?;
    let outcome = api
        .iam
        .register_user(&caller, &tenant, &user.id, &user.email, &user.display_name)
        .await;
    answer(outcome, &caller, StatusCode::CREATED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEmail {
    email: String,
}

async fn change_email(
    State(api): Shared,
    Path((tenant, user)): Path<(String, String)>,
    Caller(caller): Caller,
    bytes: Bytes,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("user id", &tenant, &user)?;
    let email: NewEmail = body(&bytes)?;
    let outcome = api
        .iam
        .change_email(&caller, &tenant, &user, &email.email)
        .await;
    answer(outcome, &caller, StatusCode::OK)
}

async fn deactivate_user(
    State(api): Shared,
    Path((tenant, user)): Path<(String, String)>,
    Caller(caller): Caller,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("user id", &tenant, &user)?;
    let outcome = api.iam.deactivate_user(&caller, &tenant, &user).await;
    answer(outcome, &caller, StatusCode::OK)
}

async fn role_of_user(
    api: &Api,
    (tenant, user, role): (String, String, String),
    caller: &service::Caller,
    assign: bool,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("user id", &tenant, &user)?;
    check_member("role id", &tenant, &role)?;
    let outcome = if assign {
        api.iam.assign_role(caller, &tenant, &user, &role).await
    } else {
        api.iam.revoke_role(caller, &tenant, &user, &role).await
    };
    answer(outcome, caller, StatusCode::OK)
}

async fn assign_role(
    State(api): Shared,
    Path(path): Path<(String, String, String)>,
    Caller(caller): Caller,
) -> Answer {
    role_of_user(&api, path, &caller, true).await
}

async fn revoke_role(
    State(api): Shared,
    Path(path): Path<(String, String, String)>,
    Caller(caller): Caller,
) -> Answer {
    role_of_user(&api, path, &caller, false).await
}

/// A read-model query's failure.
fn query_failed(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::failed(&error.into())
}

async fn user_permissions(
    State(api): Shared,
    Path((tenant, user)): Path<(String, String)>,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("user id", &tenant, &user)?;
    let mut connection = api.backend.query().await.map_err(query_failed)?;
    let permissions = iam_domain::permissions::of_user(connection.db(), &tenant, &user)
        .await
        .map_err(query_failed)?;
    Ok(
        axum::Json(json!({ "tenant": tenant, "user": user, "permissions": permissions }))
            .into_response(),
    )
}

async fn may(
    State(api): Shared,
    Path((tenant, user, permission)): Path<(String, String, String)>,
) -> Answer {
    check_tenant(&tenant)?;
    check_member("user id", &tenant, &user)?;
    iam_domain::role::check_permission(&permission).map_err(ApiError::refused)?;
    let mut connection = api.backend.query().await.map_err(query_failed)?;
    let allowed = iam_domain::permissions::may(connection.db(), &tenant, &user, &permission)
        .await
        .map_err(query_failed)?;
    Ok(axum::Json(json!({
        "tenant": tenant, "user": user, "permission": permission, "allowed": allowed,
    }))
    .into_response())
}

async fn audit(State(api): Shared, Path((tenant, request)): Path<(String, String)>) -> Answer {
    check_tenant(&tenant)?;
    let correlation_id = annals::event::metadata::correlation_uuid(&request);
    let mut connection = api.backend.query().await.map_err(query_failed)?;
    let entries = iam_domain::audit::by_correlation_in(connection.db(), &tenant, correlation_id)
        .await
        .map_err(query_failed)?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|entry| {
            json!({
                "recorded_at": entry.recorded_at,
                "actor": entry.actor,
                "stream_id": entry.stream_id,
                "summary": entry.summary,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "correlation_id": correlation_id, "entries": entries })).into_response())
}

/// 200 when the store and the cache answer and no projection is failing;
/// 503 otherwise. A projection another instance owns is `standby`.
async fn health(State(api): Shared) -> Response {
    let mut report = annals::observability::health::HealthReport::check(
        api.backend.store.as_ref(),
        Some(api.backend.cache.as_ref()),
    )
    .await;
    let statuses = (api.projections)();
    for status in &statuses {
        report = report.with_projection(status);
    }
    let check = |check: &annals::observability::health::Check| match check {
        annals::observability::health::Check::Healthy { latency } => {
            json!({ "ok": true, "latency_ms": latency.as_secs_f64() * 1000.0 })
        }
        annals::observability::health::Check::Unhealthy { error } => {
            json!({ "ok": false, "error": error })
        }
    };
    let projections: Vec<Value> = statuses
        .iter()
        .map(|status| {
            json!({
                "name": status.name,
                "state": state_name(&status.state),
                "position": status.position.to_string(),
                "lag_events": status.lag_events,
                "owner": status.ownership.as_ref().and_then(|ownership| ownership.owner.clone()),
                "last_error": status.last_error,
            })
        })
        .collect();
    // The relay is healthy while it is not failing: another instance may
    // hold it, and it may wait for NATS between retries.
    let relay = (api.relay)();
    let relay_failing = relay
        .as_ref()
        .is_some_and(|status| status.last_error.is_some());
    let relay = relay.map(|status| {
        json!({
            "position": status.position.to_string(),
            "caught_up": status.caught_up,
            "owner": status.ownership.as_ref().and_then(|ownership| ownership.owner.clone()),
            "held": status.ownership.as_ref().is_some_and(|ownership| ownership.held),
            "last_error": status.last_error,
        })
    });
    let healthy = report.is_healthy() && !relay_failing;
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "instance": api.instance,
        "backend": report.backend,
        "store": check(&report.store),
        "cache": report.cache.as_ref().map(check),
        "projections": projections,
        "relay": relay,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

fn state_name(state: &ProjectionState) -> &'static str {
    match state {
        ProjectionState::CatchingUp => "catching_up",
        ProjectionState::Running => "running",
        ProjectionState::Failed => "failed",
        ProjectionState::Stopped => "stopped",
        ProjectionState::Standby => "standby",
        ProjectionState::Rebuilding => "rebuilding",
        ProjectionState::Paused => "paused",
        _ => "other",
    }
}

async fn metrics_text(State(api): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.prometheus.render(),
    )
        .into_response()
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

/// Counts and times every request by its route (the pattern, never the
/// ids in the path).
async fn measure(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = format!("{method} {route}");
    metrics::histogram!(REQUEST_SECONDS, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(REQUESTS, "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}
