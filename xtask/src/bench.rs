//! `cargo xtask bench [--quick]`: every workload on Annals, on raw sqlx and
//! Redis, and on the peer crates (their own workspace, `xtask/peers`), in
//! one run against throwaway servers; a table of ratios, and
//! `target/annals-bench/summary.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::services::Services;

/// A target from the issue: the workload, the baseline, and the bound.
struct Target {
    workload: &'static str,
    baseline: &'static str,
    /// `(">=", 3.0)`: ratio at least 3; `("<=", 2.0)`: at most 2.
    bound: (&'static str, f64),
}

/// The W6 baselines: the best raw SQL for the same page.
const BEST_RAW: &str = "best raw SQL for the page";

/// Not a ratio: Annals' own p99 in milliseconds, against the seed's 5 ms
/// (an absolute promise, measured on this machine).
const ABSOLUTE_P99_MS: &str = "absolute p99 (ms)";

const TARGETS: &[Target] = &[
    Target {
        workload: "W1 commands (PostgreSQL)",
        baseline: "cqrs-es 0.5 + postgres-es 0.5",
        bound: (">=", 3.0),
    },
    Target {
        workload: "W1 commands (PostgreSQL)",
        baseline: "raw single-row insert",
        bound: (">=", 1.0),
    },
    Target {
        workload: "W2 batch append, 1 writer",
        baseline: "raw multi-row insert",
        bound: (">=", 0.85),
    },
    Target {
        workload: "W2 batch append, 8 writers",
        baseline: "raw multi-row insert",
        bound: (">=", 0.85),
    },
    Target {
        workload: "W3 catch-up into memory",
        baseline: "raw streaming SELECT",
        bound: (">=", 0.8),
    },
    Target {
        workload: "W4 SQL projection rebuild",
        baseline: "raw COPY",
        bound: (">=", 0.5),
    },
    Target {
        workload: "W5 load: snapshot",
        baseline: "raw row SELECT",
        bound: ("<=", 3.0),
    },
    Target {
        workload: "W5 load: Redis cache",
        baseline: "raw Redis GET",
        bound: ("<=", 2.0),
    },
    Target {
        workload: "W6 query by correlation id",
        baseline: BEST_RAW,
        bound: ("<=", 1.2),
    },
    Target {
        workload: "W6 query by correlation id",
        baseline: ABSOLUTE_P99_MS,
        bound: ("<=", 5.0),
    },
    Target {
        workload: "W6 query by type and time range",
        baseline: BEST_RAW,
        bound: ("<=", 1.2),
    },
    Target {
        workload: "W6 query by type and time range",
        baseline: ABSOLUTE_P99_MS,
        bound: ("<=", 5.0),
    },
    Target {
        workload: "W6 query by tag",
        baseline: BEST_RAW,
        bound: ("<=", 1.2),
    },
    Target {
        workload: "W6 query by tag",
        baseline: ABSOLUTE_P99_MS,
        bound: ("<=", 5.0),
    },
    Target {
        workload: "W11 quiet tenant poll",
        baseline: "raw SELECT in a tenant transaction",
        bound: ("<=", 1.5),
    },
    Target {
        workload: "W9 projection of 1 % of the types",
        baseline: "raw indexed SELECT of the type",
        bound: (">=", 0.8),
    },
    Target {
        workload: "W7 SQLite commands",
        baseline: "raw single-row insert",
        bound: (">=", 0.8),
    },
    Target {
        workload: "W7 SQLite batch append",
        baseline: "raw multi-row insert",
        bound: (">=", 0.8),
    },
];

fn root() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent folder")?
        .to_owned())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Runs a command, passing its stderr through, and returns the JSON lines
/// of its stdout.
fn json_lines(mut command: Command, what: &str) -> Result<Vec<Value>> {
    println!("xtask: running {what}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!("{what} failed ({})", output.status);
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}")))
        .collect()
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let root = root()?;
    let out = root.join("target").join("annals-bench");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut build = cargo();
    build.args(["build", "--release", "--quiet", "-p", "annals-bench"]);
    println!("xtask: building the Annals benchmarks (release)");
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("building annals-bench failed");
    }
    let mut build = cargo();
    build
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("xtask/peers/Cargo.toml"));
    println!("xtask: building the peer crates (release, their own workspace)");
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("building the peer benchmarks failed");
    }

    let dir = std::env::temp_dir().join(format!("annals-bench-{}", std::process::id()));
    let services = Services::start(&dir)?;
    let size = if quick { "--quick" } else { "--full" };
    let mut annals = Command::new(root.join("target/release/annals-bench"));
    annals
        .arg(size)
        .env("ANNALS_BENCH_DATABASE_URL", services.database_url())
        .env("ANNALS_BENCH_REDIS_URL", services.redis_url());
    let mut results = json_lines(annals, "the Annals workloads")?;
    let mut peer = Command::new(root.join("xtask/peers/target/release/peer-bench"));
    peer.arg(size)
        .env("PEER_DATABASE_URL", services.database_url());
    let peers = json_lines(peer, "the peer crates (cqrs-es + postgres-es, esrs)")?;
    drop(services);

    for peer in peers {
        let (Some(workload), Some(name)) = (peer["workload"].as_str(), peer["peer"].as_str())
        else {
            continue;
        };
        if let Some(result) = results.iter_mut().find(|r| r["workload"] == workload) {
            result["baselines"][name] = json!({ "per_s": peer["per_s"] });
        }
    }
    let summary = summarise(&results);
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    print!("{}", table(&summary));
    println!("xtask: wrote {}", path.display());
    Ok(())
}

/// The summary entries: per workload, Annals' figure, each baseline's, and
/// the ratios (throughput: Annals / baseline, higher is better; latency:
/// Annals / baseline, lower is better), with the targets that apply.
fn summarise(results: &[Value]) -> Value {
    let mut entries = Vec::new();
    for result in results {
        let Some(workload) = result["workload"].as_str() else {
            continue;
        };
        if workload.starts_with("IAM") {
            entries.push(result.clone());
            continue;
        }
        let mut entry = Map::new();
        entry.insert("workload".into(), workload.into());
        let annals = &result["annals"];
        let throughput = annals.get("per_s").is_some();
        if throughput {
            entry.insert("annals_per_s".into(), annals["per_s"].clone());
        } else {
            entry.insert("annals_p50_ms".into(), annals["p50_ms"].clone());
            entry.insert("annals_p99_ms".into(), annals["p99_ms"].clone());
        }
        let mut baselines = Map::new();
        let mut ratios = Map::new();
        if let Some(map) = result["baselines"].as_object() {
            for (name, figure) in map {
                let ratio = if throughput {
                    baselines.insert(name.clone(), figure["per_s"].clone());
                    ratio(annals["per_s"].as_f64(), figure["per_s"].as_f64())
                } else {
                    baselines.insert(name.clone(), figure.clone());
                    // p99 for queries (the promise is about tails), p50 for loads.
                    let key = if workload.starts_with("W6") {
                        "p99_ms"
                    } else {
                        "p50_ms"
                    };
                    ratio(annals[key].as_f64(), figure[key].as_f64())
                };
                ratios.insert(name.clone(), ratio.map_or(Value::Null, Value::from));
            }
        }
        entry.insert("baselines".into(), baselines.into());
        entry.insert("ratios".into(), ratios.clone().into());
        if let Some(extra) = result.get("extra") {
            entry.insert("extra".into(), extra.clone());
        }
        entry.insert("peak_rss_mb".into(), result["peak_rss_mb"].clone());
        let targets: Vec<Value> = TARGETS
            .iter()
            .filter(|target| target.workload == workload)
            .map(|target| {
                let value = if target.baseline == ABSOLUTE_P99_MS {
                    annals["p99_ms"].as_f64()
                } else {
                    ratios.get(target.baseline).and_then(Value::as_f64)
                };
                let holds = value.map(|v| match target.bound.0 {
                    ">=" => v >= target.bound.1,
                    _ => v <= target.bound.1,
                });
                json!({
                    "baseline": target.baseline,
                    "target": format!("{} {}", target.bound.0, target.bound.1),
                    "ratio": value,
                    "holds": holds,
                })
            })
            .collect();
        entry.insert("targets".into(), targets.into());
        entries.push(entry.into());
    }
    json!({ "workloads": entries, "promises": promises(results) })
}

fn ratio(annals: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (annals, baseline) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 1000.0).round() / 1000.0),
        _ => None,
    }
}

fn find<'a>(results: &'a [Value], workload: &str) -> Option<&'a Value> {
    results.iter().find(|result| result["workload"] == workload)
}

/// The original design's five promises beside the measured figures.
fn promises(results: &[Value]) -> Value {
    let rate = |workload: &str| find(results, workload).and_then(|r| r["annals"]["per_s"].as_f64());
    let p99 = [
        "W6 query by correlation id",
        "W6 query by type and time range",
        "W6 query by tag",
    ]
    .iter()
    .filter_map(|w| find(results, w).and_then(|r| r["annals"]["p99_ms"].as_f64()))
    .fold(None, |worst: Option<f64>, v| {
        Some(worst.map_or(v, |w| w.max(v)))
    });
    let hit_rate = find(results, "IAM example cache hit rate").and_then(|r| r["hit_rate"].as_f64());
    json!([
        { "promise": "event store throughput", "seed": "15,000 events/s", "measured": rate("W2 batch append, 1 writer"), "unit": "events/s" },
        { "promise": "event query latency", "seed": "5 ms", "measured": p99, "unit": "ms (p99, worst W6 query)" },
        { "promise": "cache hit rate", "seed": "85 %", "measured": hit_rate.map(|h| h * 100.0), "unit": "% (IAM example scenario)" },
        { "promise": "replay speed", "seed": "1,200 events/s", "measured": rate("W3 catch-up into memory"), "unit": "events/s" },
        { "promise": "projection speed", "seed": "600 events/s", "measured": rate("W4 SQL projection rebuild"), "unit": "events/s" },
    ])
}

fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v >= 100.0 => format!("{:.0}", v),
        Some(v) => format!("{v:.3}"),
        None => "-".to_owned(),
    }
}

/// The summary as a text table.
fn table(summary: &Value) -> String {
    let mut out = String::from(
        "\nworkload                                  | Annals          | baseline                        | baseline value  | ratio  | target | holds | peak RSS MB\n",
    );
    out.push_str(&"-".repeat(150));
    out.push('\n');
    for entry in summary["workloads"].as_array().into_iter().flatten() {
        let Some(workload) = entry["workload"].as_str() else {
            continue;
        };
        if workload.starts_with("IAM") {
            continue;
        }
        let annals = match entry.get("annals_per_s") {
            Some(v) => format!("{}/s", number(v)),
            None => format!(
                "{} / {} ms",
                number(&entry["annals_p50_ms"]),
                number(&entry["annals_p99_ms"])
            ),
        };
        let baselines = entry["baselines"].as_object().cloned().unwrap_or_default();
        for (name, value) in &baselines {
            let shown = match value {
                Value::Object(latency) => format!(
                    "{} / {} ms",
                    number(&latency["p50_ms"]),
                    number(&latency["p99_ms"])
                ),
                other => format!("{}/s", number(other)),
            };
            let target = entry["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["baseline"] == name.as_str());
            out.push_str(&format!(
                "{:<41} | {:<15} | {:<31} | {:<15} | {:<6} | {:<6} | {:<5} | {}\n",
                workload,
                annals,
                name,
                shown,
                number(&entry["ratios"][name]),
                target.and_then(|t| t["target"].as_str()).unwrap_or("-"),
                target.map_or("-".to_owned(), |t| match t["holds"].as_bool() {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "-".to_owned(),
                }),
                number(&entry["peak_rss_mb"]),
            ));
        }
    }
    out.push_str("\n(throughput ratio: Annals / baseline, higher is better; latency given as p50 / p99, ratio Annals / baseline on p50 for loads and p99 for queries, lower is better)\n\nThe original design's promises:\n");
    for promise in summary["promises"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<24} promised {:<16} measured {} {}\n",
            promise["promise"].as_str().unwrap_or(""),
            promise["seed"].as_str().unwrap_or(""),
            number(&promise["measured"]),
            promise["unit"].as_str().unwrap_or("")
        ));
    }
    out
}
