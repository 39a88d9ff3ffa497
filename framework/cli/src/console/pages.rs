//! The console's pages, rendered on the server. Every value goes through
//! maud's escaping: a payload holding `<script>` shows as text.

use std::collections::BTreeMap;

use annals::RecordedEvent;
use annals::store::StreamInfo;
use annals::subscription::dead_letter::DeadLetter;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::commands::readers::{ReaderKind, ReaderRow};
use crate::commands::status::Figures;
use crate::output;

/// The style sheet, inline: the console fetches nothing from elsewhere.
const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 0.6rem 1.2rem; display: flex; gap: 1.4rem; align-items: baseline; }
header a { color: #cfd8e6; text-decoration: none; } header a:hover { color: #fff; }
header .brand { font-weight: 700; color: #fff; }
main { padding: 1rem 1.4rem; }
table { border-collapse: collapse; background: #fff; margin: 0.6rem 0 1.2rem; }
th, td { border: 1px solid #d9dde5; padding: 0.3rem 0.6rem; text-align: left; font-size: 0.9rem; vertical-align: top; }
th { background: #eef1f5; }
pre { background: #fff; border: 1px solid #d9dde5; padding: 0.8rem; overflow-x: auto; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { background: #fff; border: 1px solid #d9dde5; padding: 0.8rem 1rem; min-width: 11rem; }
.card .value { font-size: 1.6rem; font-weight: 600; }
.ok { color: #12733a; } .bad { color: #b3261e; } .muted { color: #6b7280; }
form.inline { display: inline; } button { cursor: pointer; }
svg { background: #fff; border: 1px solid #d9dde5; }
.notice { background: #fff4d6; border: 1px solid #e8c96b; padding: 0.5rem 0.8rem; }
";

/// What every page shows around its content.
pub(crate) struct Frame<'a> {
    /// The store and tenant, as the tool names them.
    pub(crate) location: &'a str,
    /// Whether changes are possible and the visitor is signed in.
    pub(crate) writable: bool,
    pub(crate) signed_in: bool,
}

pub(crate) fn page(frame: &Frame<'_>, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · annals console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "annals" }
                    a href="/" { "overview" }
                    a href="/streams" { "streams" }
                    a href="/events" { "events" }
                    a href="/readers" { "projections & subscriptions" }
                    a href="/dead-letters" { "dead letters" }
                    span.muted { (frame.location) }
                    @if !frame.writable {
                        span { "read-only" }
                    } @else if frame.signed_in {
                        span { "signed in" }
                    } @else {
                        a href="/login" { "sign in to act" }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A line chart of `series` (seconds before now, value) over the time the
/// samples cover (one minute to ten).
fn chart(series: &BTreeMap<String, Vec<(f64, f64)>>, unit: &str) -> Markup {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 120.0;
    let span = series
        .values()
        .flatten()
        .map(|(ago, _)| *ago)
        .fold(60.0_f64, f64::max)
        .min(600.0);
    let top = series
        .values()
        .flatten()
        .map(|(_, value)| *value)
        .fold(1.0_f64, f64::max);
    let colours = [
        "#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2",
    ];
    html! {
        svg width=(WIDTH) height=(HEIGHT + 20.0) viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 20.0)) role="img" {
            text x="4" y="12" font-size="10" fill="#6b7280" { (format!("{top:.0} {unit}")) }
            text x="4" y=(HEIGHT + 16.0) font-size="10" fill="#6b7280" { (format!("{span:.0} s ago")) }
            text x=(WIDTH - 30.0) y=(HEIGHT + 16.0) font-size="10" fill="#6b7280" { "now" }
            @for (index, (name, points)) in series.iter().enumerate() {
                @let path = points
                    .iter()
                    .map(|(ago, value)| {
                        let x = WIDTH * (1.0 - (ago / span).min(1.0));
                        let y = HEIGHT - (value / top) * (HEIGHT - 16.0);
                        format!("{x:.1},{y:.1}")
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                polyline points=(path) fill="none" stroke=(colours[index % colours.len()]) stroke-width="1.5" {
                    title { (name) }
                }
            }
        }
    }
}

/// The overview's figures.
pub(crate) struct Overview<'a> {
    pub(crate) figures: &'a Figures,
    pub(crate) rates: Vec<(f64, f64)>,
    pub(crate) lags: BTreeMap<String, Vec<(f64, f64)>>,
}

pub(crate) fn overview(overview: &Overview<'_>) -> Markup {
    let rates = BTreeMap::from([("events per second".to_owned(), overview.rates.clone())]);
    let figures = overview.figures;
    html! {
        div.cards {
            div.card {
                div.muted { "health" }
                @if figures.health.is_healthy() {
                    div.value.ok title=(figures.health.store) { "healthy" }
                } @else {
                    div.value.bad title=(figures.health.store) { "unhealthy" }
                }
            }
            div.card { div.muted { "events" } div.value { (figures.total) } }
            div.card {
                div.muted { "last minute" }
                div.value { (format!("{:.1}/s", figures.per_second())) }
            }
            div.card { div.muted { "log head" } div.value { (figures.head) } }
            div.card {
                div.muted { "dead letters" }
                div.value.bad[figures.dead_letters > 0] { (figures.dead_letters_text()) }
            }
        }
        h2 { "Events per second" }
        (chart(&rates, "events/s"))
        h2 { "Lag (events behind the head)" }
        (chart(&overview.lags, "events"))
        h2 { "Readers" }
        (readers_table(&figures.readers, false))
    }
}

pub(crate) fn readers_table(rows: &[ReaderRow], actions: bool) -> Markup {
    html! {
        table #readers {
            tr {
                th { "kind" } th { "name" } th { "state" } th { "position" }
                th { "lag (events)" } th { "owner" } th { "generation" }
                @if actions { th { "" } }
            }
            @for row in rows {
                tr {
                    td { (match row.kind { ReaderKind::Projection => "projection", ReaderKind::Subscription => "subscription" }) }
                    td { (row.checkpoint.name) }
                    td { (row.state()) }
                    td { (row.checkpoint.position) }
                    td { (row.lag_events) }
                    td { (row.ownership()) }
                    td { (row.checkpoint.generation) }
                    @if actions {
                        td {
                            @let verb = if row.checkpoint.paused { "resume" } else { "pause" };
                            form.inline method="post" action=(format!("/readers/{}/{verb}", encode(&row.checkpoint.name))) {
                                button type="submit" name=(verb) { (verb) }
                            }
                            @if row.kind == ReaderKind::Projection {
                                " "
                                form.inline method="post" action=(format!("/readers/{}/rebuild", encode(&row.checkpoint.name))) {
                                    button type="submit" name="rebuild" { "rebuild" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn streams(streams: &[StreamInfo], prefix: &str, next: Option<String>) -> Markup {
    html! {
        form method="get" action="/streams" {
            input type="text" name="prefix" value=(prefix) placeholder="stream id prefix";
            button type="submit" { "filter" }
        }
        table #streams {
            tr { th { "stream" } th { "tenant" } th { "version" } th { "created" } th { "updated" } }
            @for stream in streams {
                tr {
                    td { a href=(stream_link(stream)) { (stream.stream_id) } }
                    td { (stream.tenant_id.as_deref().unwrap_or("")) }
                    td { (stream.version) }
                    td { (output::time(stream.created_at)) }
                    td { (output::time(stream.updated_at)) }
                }
            }
        }
        @if let Some(next) = next { a href=(next) { "next page" } }
    }
}

fn stream_link(stream: &StreamInfo) -> String {
    match &stream.tenant_id {
        Some(tenant) => format!(
            "/streams/{}?tenant={}",
            encode(stream.stream_id.as_str()),
            encode(tenant)
        ),
        None => format!("/streams/{}", encode(stream.stream_id.as_str())),
    }
}

pub(crate) fn events_table(events: &[RecordedEvent]) -> Markup {
    html! {
        table #events {
            tr { th { "position" } th { "stream" } th { "version" } th { "type" } th { "recorded at" } th { "tenant" } }
            @for event in events {
                tr {
                    td { a href=(format!("/events/{}", event.event_id)) { (event.position) } }
                    td { (event.stream_id) }
                    td { (event.version) }
                    td { (event.event_type) }
                    td { (output::time(event.recorded_at)) }
                    td { (event.metadata.tenant_id.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

pub(crate) fn events_filter(
    event_type: &str,
    tenant: &str,
    correlation: &str,
    tag: &str,
) -> Markup {
    html! {
        form method="get" action="/events" {
            input type="text" name="type" value=(event_type) placeholder="event type";
            input type="text" name="tenant" value=(tenant) placeholder="tenant";
            input type="text" name="correlation" value=(correlation) placeholder="correlation key or id";
            input type="text" name="tag" value=(tag) placeholder="tag";
            button type="submit" { "search" }
        }
    }
}

/// One event: envelope, metadata and pretty-printed payload, and whether
/// its stream's hash chain holds.
pub(crate) fn event(event: &RecordedEvent, payload: &str, chain: &str) -> Markup {
    let metadata = &event.metadata;
    html! {
        table #envelope {
            tr { th { "event id" } td { (event.event_id) } }
            tr {
                th { "stream" }
                td {
                    @let stream = match &metadata.tenant_id {
                        Some(tenant) => format!("/streams/{}?tenant={}", encode(event.stream_id.as_str()), encode(tenant)),
                        None => format!("/streams/{}", encode(event.stream_id.as_str())),
                    };
                    a href=(stream) { (event.stream_id) }
                    " version " (event.version)
                }
            }
            tr { th { "position" } td { (event.position) } }
            tr { th { "type" } td { (event.event_type) " (schema v" (event.schema_version) ")" } }
            tr { th { "recorded at" } td { (output::time(event.recorded_at)) } }
            tr { th { "tenant" } td { (metadata.tenant_id.as_deref().unwrap_or("-")) } }
            tr { th { "correlation id" } td { (metadata.correlation_id.map(|id| id.to_string()).unwrap_or_else(|| "-".into())) } }
            tr { th { "causation id" } td { (metadata.causation_id.map(|id| id.to_string()).unwrap_or_else(|| "-".into())) } }
            tr { th { "actor" } td { (metadata.actor.as_deref().unwrap_or("-")) } }
            @for (key, value) in &metadata.headers {
                tr { th { "header " (key) } td { (value) } }
            }
            @if !event.tags.is_empty() {
                tr { th { "tags" } td { (event.tags.join(", ")) } }
            }
            tr { th { "hash chain" } td { (chain) } }
        }
        h2 { "Payload" }
        pre #payload { (payload) }
    }
}

pub(crate) fn dead_letters(letters: &[DeadLetter], actions: bool) -> Markup {
    html! {
        @if letters.is_empty() {
            p #no-dead-letters { "No dead letters." }
        } @else {
            table #dead-letters {
                tr {
                    th { "id" } th { "handler" } th { "stream" } th { "version" } th { "type" }
                    th { "attempts" } th { "failed at" } th { "error" } th { "retry" }
                    @if actions { th { "" } }
                }
                @for letter in letters {
                    tr {
                        td { (letter.id) }
                        td { (letter.handler) }
                        td { (letter.stream_id) }
                        td { (letter.version) }
                        td { a href=(format!("/events/{}", letter.event_id)) { (letter.event_type) } }
                        td { (letter.attempts) }
                        td { (output::time(letter.failed_at)) }
                        td { (letter.error) }
                        td { @if letter.retry_requested_at.is_some() { "requested" } }
                        @if actions {
                            td {
                                form.inline method="post" action=(format!("/dead-letters/{}/retry", letter.id)) {
                                    button type="submit" name="retry" { "retry" }
                                }
                                " "
                                form.inline method="post" action=(format!("/dead-letters/{}/discard", letter.id)) {
                                    button type="submit" name="discard" { "discard" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn login(failed: bool) -> Markup {
    html! {
        @if failed { p.notice #login-failed { "That is not the console's token." } }
        form method="post" action="/login" {
            label { "token " input type="password" name="token" autocomplete="off"; }
            " "
            button type="submit" { "sign in" }
        }
        p.muted { "The token is the one the console was started with (--token-file or ANNALS_CONSOLE_TOKEN)." }
    }
}

pub(crate) fn notice(text: &str) -> Markup {
    html! { p.notice #notice { (text) } }
}

/// `text` for a URL path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
