//! Printing a [`Report`] as readable tables.

use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use crate::scenario::Report;

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(header.to_vec());
    table
}

fn right(table: &mut Table, columns: &[usize]) {
    for index in columns {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The report as text: a heading and a table per part.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Annals IAM example on {}", report.backend);
    let _ = writeln!(
        out,
        "{} tenants, {} users, {} events\n",
        thousands(report.tenants as u64),
        thousands(report.users as u64),
        thousands(report.events)
    );

    let _ = writeln!(
        out,
        "Commands (one request, correlation id {})",
        report.request
    );
    let mut commands = table(&["command", "outcome"]);
    for line in &report.commands {
        commands.add_row(vec![line.command.clone(), line.outcome.clone()]);
    }
    let _ = writeln!(out, "{commands}\n");

    let _ = writeln!(
        out,
        "Permission checks (read model: one primary-key lookup; checked against the aggregates)"
    );
    let mut checks = table(&[
        "tenant",
        "user",
        "permission",
        "allowed",
        "aggregates agree",
        "lookup µs",
    ]);
    for check in &report.checks {
        checks.add_row(vec![
            check.tenant.clone(),
            check.user.clone(),
            check.permission.clone(),
            if check.allowed { "yes" } else { "no" }.to_owned(),
            if check.allowed == check.from_aggregates {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
            check.micros.to_string(),
        ]);
    }
    right(&mut checks, &[5]);
    let _ = writeln!(out, "{checks}\n");

    let travel = &report.time_travel;
    let _ = writeln!(out, "Time travel: what could {} do?", travel.user);
    let mut times = table(&["when", "permissions"]);
    times.add_row(vec![
        format!("{} (from aggregates)", travel.at.format("%H:%M:%S%.3f")),
        travel.then.join(", "),
    ]);
    times.add_row(vec!["now (read model)".to_owned(), travel.now.join(", ")]);
    let _ = writeln!(out, "{times}\n");

    let shredded = &report.shredded;
    let _ = writeln!(
        out,
        "Forgot {} (crypto-shredding): email {} -> {} on reload, {} snapshot(s) deleted\n",
        shredded.user, shredded.email_before, shredded.email_after, shredded.snapshots_deleted
    );

    let _ = writeln!(
        out,
        "Replayed stream {} (state rebuilt at each version)",
        report.replay_stream
    );
    let mut replay = table(&["version", "event", "actor", "roles after"]);
    for event in &report.replayed {
        replay.add_row(vec![
            event.version.to_string(),
            event.event_type.clone(),
            event.actor.clone(),
            event.roles_after.clone(),
        ]);
    }
    right(&mut replay, &[0]);
    let _ = writeln!(out, "{replay}\n");

    let _ = writeln!(out, "Audit trail of request {}", report.request);
    let mut audit = table(&["recorded", "actor", "stream", "what"]);
    for entry in &report.audit_of_request {
        audit.add_row(vec![
            entry.recorded_at.format("%H:%M:%S%.3f").to_string(),
            entry.actor.clone().unwrap_or_default(),
            entry.stream_id.clone(),
            entry.summary.clone(),
        ]);
    }
    let _ = writeln!(out, "{audit}\n");

    if let Some((actor, entries)) = &report.audit_of_actor {
        let _ = writeln!(
            out,
            "Audit trail of actor {actor} (newest {})",
            entries.len()
        );
        let mut by_actor = table(&["recorded", "stream", "what"]);
        for entry in entries {
            by_actor.add_row(vec![
                entry.recorded_at.format("%H:%M:%S%.3f").to_string(),
                entry.stream_id.clone(),
                entry.summary.clone(),
            ]);
        }
        let _ = writeln!(out, "{by_actor}\n");
    }

    let _ = writeln!(out, "Tenant directory (first {})", report.directory.len());
    let mut directory = table(&["tenant", "name", "users", "status"]);
    for row in &report.directory {
        directory.add_row(vec![
            row.tenant_id.clone(),
            row.name.clone(),
            row.users.to_string(),
            if row.suspended { "suspended" } else { "active" }.to_owned(),
        ]);
    }
    right(&mut directory, &[2]);
    let _ = writeln!(out, "{directory}\n");

    let _ = writeln!(out, "Projections");
    let mut projections = table(&[
        "projection",
        "state",
        "events applied",
        "position",
        "lag (events)",
        "lag (time)",
        "last error",
    ]);
    for status in &report.projections {
        projections.add_row(vec![
            status.name.to_owned(),
            format!("{:?}", status.state),
            thousands(status.applied),
            status.position.to_string(),
            thousands(status.lag_events),
            format!("{:.0} ms", status.lag.as_secs_f64() * 1000.0),
            status.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    right(&mut projections, &[2, 4, 5]);
    let _ = writeln!(out, "{projections}\n");

    let _ = writeln!(out, "Health\n{}\n", report.health);

    let _ = writeln!(out, "Cache, handlers and store");
    let mut stats = table(&["what", "value"]);
    let cache = &report.cache;
    stats.add_row(vec![
        "in-process cache".to_owned(),
        format!(
            "{} hits, {} misses ({:.1} % hit rate), {} evictions",
            thousands(cache.hits),
            thousands(cache.misses),
            cache.hit_rate() * 100.0,
            thousands(cache.evictions)
        ),
    ]);
    if let Some(redis) = &report.redis {
        stats.add_row(vec![
            "Redis cache".to_owned(),
            format!(
                "{} hits, {} misses ({:.1} % hit rate)",
                thousands(redis.hits),
                thousands(redis.misses),
                redis.hit_rate() * 100.0
            ),
        ]);
    }
    stats.add_row(vec![
        "handlers".to_owned(),
        format!(
            "{} welcome notifications, {} permission-audit lines in {}",
            thousands(report.handled.0),
            thousands(report.handled.1),
            report.outbox.display()
        ),
    ]);
    stats.add_row(vec!["events stored".to_owned(), thousands(report.events)]);
    for (event_type, count) in &report.events_by_type {
        stats.add_row(vec![format!("  {event_type}"), thousands(*count)]);
    }
    if let Some(bytes) = report.database_bytes {
        stats.add_row(vec![
            "SQLite file".to_owned(),
            format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
        ]);
    }
    let _ = writeln!(out, "{stats}\n");

    let _ = writeln!(out, "Phases");
    let mut phases = table(&["phase", "took", "events", "events/s"]);
    for phase in &report.phases {
        let seconds = phase.took.as_secs_f64();
        phases.add_row(vec![
            phase.name.to_owned(),
            format!("{:.2} s", seconds),
            thousands(phase.events),
            if phase.events > 0 && seconds > 0.0 {
                thousands((phase.events as f64 / seconds) as u64)
            } else {
                "-".to_owned()
            },
        ]);
    }
    right(&mut phases, &[1, 2, 3]);
    let _ = writeln!(out, "{phases}");
    out
}
