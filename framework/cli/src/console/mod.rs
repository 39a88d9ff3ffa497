//! `annals serve`: the web console over the same operations as the tool.
//!
//! Server-rendered pages (nothing fetched from elsewhere at run time), bound
//! to loopback unless told otherwise; every change needs the token from
//! configuration (a login sets a session cookie; scripts send
//! `Authorization: Bearer`), and without one the console is read-only. A
//! console opened with `--tenant` shows that tenant only. `/health` answers
//! load balancers, `/metrics` serves Prometheus text.

mod access;
mod pages;
mod samples;

use std::net::SocketAddr;
use std::sync::Arc;

use annals::StreamId;
use annals::store::{EventQuery, StreamQuery};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

use crate::commands::readers::{log_head, reader_rows};
use crate::commands::status::Figures;
use crate::connection::Connection;
use crate::failure::Failure;
use access::{Access, Refusal};
use pages::Frame;
use samples::Samples;

/// How `annals serve` was asked to run.
pub(crate) struct ServeOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) token: Option<String>,
    pub(crate) read_only: bool,
}

/// What every request handler shares.
struct Console {
    connection: Connection,
    access: Access,
    samples: Samples,
    prometheus: PrometheusHandle,
}

type Shared = State<Arc<Console>>;

/// Serves the console until Ctrl-C.
pub(crate) async fn serve(connection: Connection, options: ServeOptions) -> Result<(), Failure> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| Failure::io("cannot install the metrics recorder", error))?;
    let token = options.token.filter(|_| !options.read_only);
    let console = Arc::new(Console {
        connection,
        access: Access::new(token.as_deref()),
        samples: Samples::default(),
        prometheus,
    });
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|error| Failure::io(format!("cannot listen on {}", options.listen), error))?;
    let address = listener
        .local_addr()
        .map_err(|error| Failure::io("cannot read the listening address", error))?;
    // The first line of stdout is the address: scripts and tests read it.
    crate::output::line(format!("annals console on http://{address}/"))?;
    eprintln!(
        "{} ({}); Ctrl-C stops",
        console.connection.description,
        if console.access.writable() {
            "changes need the token"
        } else {
            "read-only"
        }
    );
    let sampler = {
        let console = Arc::clone(&console);
        tokio::spawn(async move {
            loop {
                if let Err(error) = console
                    .samples
                    .take(console.connection.store.as_ref())
                    .await
                {
                    eprintln!(
                        "annals console: cannot sample the store: {}",
                        error.one_line()
                    );
                }
                tokio::time::sleep(samples::EVERY).await;
            }
        })
    };
    let app = Router::new()
        .route("/", get(overview))
        .route("/streams", get(streams))
        .route("/streams/{stream}", get(stream))
        .route("/events", get(events))
        .route("/events/{id}", get(event))
        .route("/readers", get(readers))
        .route("/readers/{name}/{action}", post(reader_action))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}/{action}", post(dead_letter_action))
        .route("/login", get(login_form).post(login))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::clone(&console));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    sampler.abort();
    served.map_err(|error| Failure::io("the console stopped", error))
}

impl Console {
    fn frame(&self, headers: &HeaderMap) -> Frame<'_> {
        Frame {
            location: &self.connection.description,
            writable: self.access.writable(),
            signed_in: self.access.signed_in(headers),
        }
    }

    fn page(&self, headers: &HeaderMap, title: &str, content: Markup) -> Response {
        Html(pages::page(&self.frame(headers), title, content).into_string()).into_response()
    }

    /// A failure as a page: 404 for what is not there, 400 for bad input,
    /// 500 otherwise.
    fn failure(&self, headers: &HeaderMap, failure: &Failure) -> Response {
        let status = match failure.exit_code() {
            2 => StatusCode::BAD_REQUEST,
            3 => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let content = pages::notice(&failure.one_line());
        (
            status,
            Html(pages::page(&self.frame(headers), "Error", content).into_string()),
        )
            .into_response()
    }

    /// The refusal page if the request may not change anything.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        self.access.check(headers).err().map(|refusal| {
            let text = match refusal {
                Refusal::ReadOnly => {
                    "This console is read-only: start it with a token (--token-file or ANNALS_CONSOLE_TOKEN) and without --read-only to act."
                }
                Refusal::NotSignedIn => "Changes need the console's token: sign in first.",
            };
            (
                StatusCode::FORBIDDEN,
                Html(pages::page(&self.frame(headers), "Refused", pages::notice(text)).into_string()),
            )
                .into_response()
        })
    }
}

async fn overview(State(console): Shared, headers: HeaderMap) -> Response {
    match Figures::gather(console.connection.store.as_ref()).await {
        Ok(figures) => {
            let content = pages::overview(&pages::Overview {
                figures: &figures,
                rates: console.samples.rates(),
                lags: console.samples.lags(),
            });
            console.page(&headers, "Overview", content)
        }
        Err(failure) => console.failure(&headers, &failure),
    }
}

#[derive(Debug, Deserialize)]
struct StreamsQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    after_tenant: Option<String>,
}

/// Streams listed per page.
const STREAMS_PAGE: usize = 50;

async fn streams(
    State(console): Shared,
    headers: HeaderMap,
    Query(query): Query<StreamsQuery>,
) -> Response {
    let mut listing = StreamQuery::new()
        .prefix(query.prefix.clone())
        .limit(STREAMS_PAGE);
    if let Some(after) = &query.after {
        listing.after = Some((
            after.clone(),
            query.after_tenant.clone().unwrap_or_default(),
        ));
    }
    match console.connection.store.list_streams(&listing).await {
        Ok(streams) => {
            let next = (streams.len() == STREAMS_PAGE)
                .then(|| streams.last())
                .flatten()
                .map(|last| {
                    format!(
                        "/streams?prefix={}&after={}&after_tenant={}",
                        pages::encode(&query.prefix),
                        pages::encode(last.stream_id.as_str()),
                        pages::encode(last.tenant_id.as_deref().unwrap_or(""))
                    )
                });
            console.page(
                &headers,
                "Streams",
                pages::streams(&streams, &query.prefix, next),
            )
        }
        Err(error) => console.failure(&headers, &error.into()),
    }
}

#[derive(Debug, Deserialize)]
struct StreamQueryParams {
    tenant: Option<String>,
}

async fn stream(
    State(console): Shared,
    headers: HeaderMap,
    Path(stream): Path<String>,
    Query(params): Query<StreamQueryParams>,
) -> Response {
    let shown = async {
        let id = StreamId::new(stream.clone())?;
        // A stream of a tenant, when the console sees several tenants.
        let store = match (&params.tenant, console.connection.store.tenant()) {
            (Some(tenant), None) if !tenant.is_empty() => {
                console.connection.for_tenant_reading(tenant).await?
            }
            _ => Arc::clone(&console.connection.store),
        };
        let events = store.read_stream(&id, 1, 1000).await?;
        if events.is_empty() {
            return Err(Failure::NotFound(format!("no stream {stream:?}")));
        }
        Ok(events)
    }
    .await;
    match shown {
        Ok(events) => console.page(
            &headers,
            &format!("Stream {stream}"),
            pages::events_table(&events),
        ),
        Err(failure) => console.failure(&headers, &failure),
    }
}

#[derive(Debug, Deserialize, Default)]
struct EventsQuery {
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    correlation: String,
    #[serde(default)]
    tag: String,
}

async fn events(
    State(console): Shared,
    headers: HeaderMap,
    Query(filter): Query<EventsQuery>,
) -> Response {
    let mut query = EventQuery::new().limit(100);
    if !filter.event_type.is_empty() {
        query = query.event_type(filter.event_type.clone());
    }
    if !filter.tenant.is_empty() {
        query = query.tenant(filter.tenant.clone());
    }
    if let Some(tenant) = console.connection.store.tenant() {
        query = query.tenant(tenant);
    }
    if !filter.correlation.is_empty() {
        query = match filter.correlation.parse::<uuid::Uuid>() {
            Ok(id) => query.correlation_id(id),
            Err(_) => query.correlation_key(&filter.correlation),
        };
    }
    if !filter.tag.is_empty() {
        query = query.tag(filter.tag.clone());
    }
    let form = pages::events_filter(
        &filter.event_type,
        &filter.tenant,
        &filter.correlation,
        &filter.tag,
    );
    match console.connection.store.query(&query).await {
        Ok(page) => console.page(
            &headers,
            "Events",
            maud::html! { (form) (pages::events_table(&page.events)) },
        ),
        Err(error) => console.failure(&headers, &error.into()),
    }
}

async fn event(State(console): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let shown = async {
        let id: uuid::Uuid = id
            .parse()
            .map_err(|_| Failure::Usage(format!("{id:?} is not an event id")))?;
        let store = console.connection.store.as_ref();
        let page = store
            .query(&EventQuery::new().event_id(id).limit(1))
            .await?;
        let event = page
            .events
            .into_iter()
            .next()
            .ok_or_else(|| Failure::NotFound(format!("no event {id}")))?;
        let payload = serde_json::to_string_pretty(&event.payload.to_value())
            .map_err(|error| Failure::io("cannot format the payload", error))?;
        let chain = match store.verify_stream(&event.stream_id).await {
            Ok(report) if report.is_intact() => format!(
                "intact ({} events of the stream checked)",
                report.events_checked
            ),
            Ok(report) => match report.first_break {
                Some(broken) => format!("BROKEN: {broken}"),
                None => "intact".to_owned(),
            },
            Err(error) => format!("not checked: {error}"),
        };
        Ok::<_, Failure>((event, payload, chain))
    }
    .await;
    match shown {
        Ok((event, payload, chain)) => console.page(
            &headers,
            &format!("Event {}", event.event_id),
            pages::event(&event, &payload, &chain),
        ),
        Err(failure) => console.failure(&headers, &failure),
    }
}

async fn readers(State(console): Shared, headers: HeaderMap) -> Response {
    let store = console.connection.store.as_ref();
    let rows = async {
        let head = log_head(store).await?;
        reader_rows(store, head).await
    }
    .await;
    match rows {
        Ok(rows) => {
            let actions = console.access.writable();
            console.page(
                &headers,
                "Projections and subscriptions",
                pages::readers_table(&rows, actions),
            )
        }
        Err(failure) => console.failure(&headers, &failure),
    }
}

async fn reader_action(
    State(console): Shared,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = console.refusal(&headers) {
        return refused;
    }
    let checkpoints = console.connection.store.checkpoints();
    let done = match action.as_str() {
        "pause" => checkpoints.set_paused(&name, true).await,
        "resume" => checkpoints.set_paused(&name, false).await,
        "rebuild" if name.starts_with("projection:") => {
            checkpoints.request_rebuild(&name, true).await
        }
        other => {
            return console.failure(
                &headers,
                &Failure::Usage(format!(
                    "unknown action {other:?} for {name:?}: pause, resume, or rebuild (projections)"
                )),
            );
        }
    };
    match done {
        Ok(true) => Redirect::to("/readers").into_response(),
        Ok(false) => console.failure(
            &headers,
            &Failure::NotFound(format!("no reader named {name:?}")),
        ),
        Err(error) => console.failure(&headers, &error.into()),
    }
}

async fn dead_letters(State(console): Shared, headers: HeaderMap) -> Response {
    match console.connection.store.dead_letters().list(500).await {
        Ok(letters) => {
            let actions = console.access.writable();
            console.page(
                &headers,
                "Dead letters",
                pages::dead_letters(&letters, actions),
            )
        }
        Err(error) => console.failure(&headers, &error.into()),
    }
}

async fn dead_letter_action(
    State(console): Shared,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = console.refusal(&headers) {
        return refused;
    }
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return console.failure(
            &headers,
            &Failure::Usage(format!("{id:?} is not a dead letter id")),
        );
    };
    let letters = console.connection.store.dead_letters();
    let done = match action.as_str() {
        "retry" => letters.request_retry(id).await,
        "discard" => letters.delete(id).await,
        other => {
            return console.failure(
                &headers,
                &Failure::Usage(format!("unknown action {other:?}: retry or discard")),
            );
        }
    };
    match done {
        Ok(true) => Redirect::to("/dead-letters").into_response(),
        Ok(false) => console.failure(&headers, &Failure::NotFound(format!("no dead letter {id}"))),
        Err(error) => console.failure(&headers, &error.into()),
    }
}

async fn login_form(State(console): Shared, headers: HeaderMap) -> Response {
    if !console.access.writable() {
        return console.page(
            &headers,
            "Sign in",
            pages::notice("This console is read-only: there is nothing to sign in for."),
        );
    }
    console.page(&headers, "Sign in", pages::login(false))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(console): Shared,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !console.access.is_token(&form.token) {
        return (
            StatusCode::FORBIDDEN,
            Html(
                pages::page(&console.frame(&headers), "Sign in", pages::login(true)).into_string(),
            ),
        )
            .into_response();
    }
    let session = console.access.open_session();
    (
        [(header::SET_COOKIE, access::session_cookie(&session))],
        Redirect::to("/"),
    )
        .into_response()
}

async fn health(State(console): Shared) -> Response {
    let checked = async {
        console.connection.require_current_schema().await?;
        log_head(console.connection.store.as_ref()).await?;
        Ok::<_, Failure>(())
    }
    .await;
    match checked {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ok"}"#.to_owned(),
        )
            .into_response(),
        Err(failure) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "status": "unavailable", "reason": failure.one_line() })
                .to_string(),
        )
            .into_response(),
    }
}

async fn metrics_text(State(console): Shared) -> Response {
    if let Err(failure) = console
        .samples
        .take(console.connection.store.as_ref())
        .await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, failure.one_line()).into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        console.prometheus.render(),
    )
        .into_response()
}
