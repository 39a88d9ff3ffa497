//! `annals serve` in a real headless browser (Debian's Chromium driven
//! through ChromeDriver): pages render, a `<script>` payload shows as text,
//! a change without the token is refused, a dead letter retried from the
//! page is run by the service and leaves the list, a reader is paused from
//! the page, and a read-only console refuses even the token. Saves a
//! screenshot of the overview (`target/console.png`; with
//! `UPDATE_SCREENSHOT=1` also `framework/cli/console.png`, which the README
//! shows).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use annals::checkpoint::LeaseSettings;
use annals::error::BoxError;
use annals::prelude::*;
use annals::store::SqliteEventStore;
use annals::subscription::Subscription;
use annals::subscription::handler::RetryPolicy;
use annals::subscription::handler_registry::{HandlerRegistry, HandlerSpec};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const ANNALS: &str = env!("CARGO_BIN_EXE_annals");
const TOKEN: &str = "console-test-token-7f3a";
const PAYLOAD: &str = "<script>window.pwned = true</script>";

/// The ChromeDriver and Chromium `cargo xtask test` installs; a test that
/// needs them fails loudly without them.
fn browser_programs() -> (PathBuf, PathBuf) {
    let driver = std::env::var_os("CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        driver.is_file() && chromium.is_file(),
        "the console tests need Chromium and ChromeDriver ({} and {}): run them with \
         `cargo xtask test`, which installs Debian's chromium and chromium-driver, or \
         apt-get install chromium chromium-driver",
        chromium.display(),
        driver.display()
    );
    (driver, chromium)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts ChromeDriver and opens a headless Chromium session.
async fn browser(profile: &Path) -> (Child, Client) {
    let (driver, chromium) = browser_programs();
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => return (child, client),
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no browser session within 30 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Starts `annals serve` on a free port; its base URL.
async fn console(url: &str, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(ANNALS)
        .args(["--database-url", url, "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("ANNALS_CONSOLE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start annals serve");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the console starts within 20 s")
    .expect("read stdout")
    .expect("a first line");
    let base = line
        .strip_prefix("annals console on ")
        .expect("the first line names the URL")
        .trim_end_matches('/')
        .to_owned();
    (child, base)
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|error| panic!("no {css}: {error}"))
        .text()
        .await
        .expect("text")
}

/// Waits (up to 10 s, while a click's navigation lands) until the element
/// `css` reads `wanted`.
async fn wait_for_text(browser: &Client, css: &str, wanted: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(wanted) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} should read {wanted:?}, reads {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A POST from the page's own script, as a script would send it: its status.
async fn post_status(browser: &Client, url: &str, bearer: Option<&str>) -> u64 {
    let status = browser
        .execute_async(
            "const [url, bearer, done] = arguments;
             const headers = bearer ? { Authorization: 'Bearer ' + bearer } : {};
             fetch(url, { method: 'POST', headers, redirect: 'manual' })
                 .then(r => done(r.status), e => done(-1));",
            vec![json!(url), json!(bearer)],
        )
        .await
        .expect("fetch");
    status.as_u64().unwrap_or(0)
}

/// A GET from the page's own script: its status.
async fn get_status(browser: &Client, url: &str) -> u64 {
    let status = browser
        .execute_async(
            "const [url, done] = arguments;
             fetch(url).then(r => done(r.status), e => done(-1));",
            vec![json!(url)],
        )
        .await
        .expect("fetch");
    status.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_headless_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let sqlite = SqliteEventStore::open(&path).await.expect("open the store");
    let store: Arc<dyn EventStore> = Arc::new(sqlite.clone());
    let url = format!("sqlite:{}", path.display());

    // A payload that would run if the page did not escape it.
    let mut renamed =
        NewEvent::json("test.console.renamed", &json!({ "name": PAYLOAD })).expect("JSON");
    renamed.metadata.tenant_id = Some("acme".to_owned());
    let renamed_id = renamed.event_id;
    store
        .append(
            &StreamId::new("user-1").expect("id"),
            ExpectedVersion::NoStream,
            vec![renamed],
        )
        .await
        .expect("append");

    // A handler that fails until repaired, run by a live subscription.
    let broken = Arc::new(AtomicBool::new(true));
    let succeeded = Arc::new(AtomicU64::new(0));
    let handler = {
        let (broken, succeeded) = (broken.clone(), succeeded.clone());
        HandlerSpec::new("mailer", &["test.console.signed_up"], move |_event| {
            let (broken, succeeded) = (broken.clone(), succeeded.clone());
            Box::pin(async move {
                if broken.load(Ordering::SeqCst) {
                    return Err(BoxError::from("smtp: connection refused"));
                }
                succeeded.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        })
        .retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::from_millis(1),
        })
    };
    let running = Subscription::new(store.clone(), "handlers")
        .lease(LeaseSettings::new(Duration::from_millis(300)))
        .poll_interval(Duration::from_millis(50))
        .start(HandlerRegistry::new(store.clone()).with(handler));
    store
        .append(
            &StreamId::new("user-2").expect("id"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json(
                    "test.console.signed_up",
                    &json!({ "email": "bob@example.test" }),
                )
                .expect("JSON"),
            ],
        )
        .await
        .expect("append");
    let letters = store.dead_letters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let letter = loop {
        if let Some(letter) = letters.list(10).await.expect("list").into_iter().next() {
            break letter;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dead letter within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let token_file = dir.path().join("console.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let token_path = token_file.display().to_string();
    let (_console, base) = console(&url, &["--token-file", &token_path]).await;
    let profile = tempfile::tempdir().expect("a browser profile");
    let (_driver, browser) = browser(profile.path()).await;

    // The overview renders with the readers and their lag.
    browser.goto(&format!("{base}/")).await.expect("overview");
    assert_eq!(text_of(&browser, "h1").await, "Overview");
    assert!(text_of(&browser, "#readers").await.contains("handlers"));

    // Streams, and the event whose payload holds a script: shown as text,
    // never run.
    browser
        .goto(&format!("{base}/streams"))
        .await
        .expect("streams");
    assert!(text_of(&browser, "#streams").await.contains("user-1"));
    browser
        .goto(&format!("{base}/events/{renamed_id}"))
        .await
        .expect("event page");
    assert!(text_of(&browser, "#payload").await.contains(PAYLOAD));
    let ran = browser
        .execute(
            "return window.pwned === true || document.scripts.length > 0;",
            vec![],
        )
        .await
        .expect("inspect the page");
    assert_eq!(
        ran,
        json!(false),
        "the payload's script did not run or land in the DOM"
    );
    assert!(text_of(&browser, "#envelope").await.contains("intact"));

    // Retrying without the token is refused, and nothing is requested.
    broken.store(false, Ordering::SeqCst);
    browser
        .goto(&format!("{base}/dead-letters"))
        .await
        .expect("dead letters");
    assert!(
        text_of(&browser, "#dead-letters")
            .await
            .contains("smtp: connection refused")
    );
    browser
        .find(Locator::Css("button[name=retry]"))
        .await
        .expect("a retry button")
        .click()
        .await
        .expect("click retry");
    wait_for_text(&browser, "h1", "Refused").await;
    let untouched = letters.get(letter.id).await.expect("get").expect("kept");
    assert_eq!(untouched.retry_requested_at, None);
    let retry_url = format!("{base}/dead-letters/{}/retry", letter.id);
    assert_eq!(
        post_status(&browser, &retry_url, Some("wrong-token")).await,
        403
    );

    // Signed in, the retry reaches the service and the letter leaves the list.
    browser
        .goto(&format!("{base}/login"))
        .await
        .expect("login page");
    browser
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("token field")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    browser
        .find(Locator::Css("form button"))
        .await
        .expect("sign in button")
        .click()
        .await
        .expect("sign in");
    wait_for_text(&browser, "h1", "Overview").await;
    wait_for_text(&browser, "header", "signed in").await;
    browser
        .goto(&format!("{base}/dead-letters"))
        .await
        .expect("dead letters");
    browser
        .find(Locator::Css("button[name=retry]"))
        .await
        .expect("a retry button")
        .click()
        .await
        .expect("click retry");
    // The request landed (the letter is marked, or already retried) before
    // the page is left: navigating away at once can cancel the form's POST
    // on a loaded machine, which is how this test failed twice in CI.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match letters.get(letter.id).await.expect("get") {
            Some(marked) if marked.retry_requested_at.is_none() => {}
            _ => break,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry request never reached the store within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Generous: on a loaded CI machine Chromium and the registry share two
    // cores.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        browser
            .goto(&format!("{base}/dead-letters"))
            .await
            .expect("reload");
        if browser.find(Locator::Id("no-dead-letters")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried letter gone within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        succeeded.load(Ordering::SeqCst),
        1,
        "the service ran the handler"
    );
    assert_eq!(letters.get(letter.id).await.expect("get"), None);

    // Pause the handlers' subscription from the page.
    browser
        .goto(&format!("{base}/readers"))
        .await
        .expect("readers");
    browser
        .find(Locator::Css("#readers button[name=pause]"))
        .await
        .expect("a pause button")
        .click()
        .await
        .expect("pause");
    wait_for_text(&browser, "#readers", "paused").await;
    let row = store
        .checkpoints()
        .load("handlers")
        .await
        .expect("load")
        .expect("row");
    assert!(row.paused, "paused from the page");

    // Health and metrics.
    browser
        .goto(&format!("{base}/health"))
        .await
        .expect("health");
    assert!(
        browser
            .source()
            .await
            .expect("source")
            .contains(r#"{"status":"ok"}"#)
    );
    browser
        .goto(&format!("{base}/metrics"))
        .await
        .expect("metrics");
    let metrics = browser.source().await.expect("source");
    assert!(metrics.contains("annals_log_head_sequence 2"), "{metrics}");
    assert!(
        metrics.contains("annals_projection_lag_events{reader=\"handlers\"}"),
        "{metrics}"
    );

    // The screenshot the README shows: the overview with its charts, after
    // a few samples of a busy log.
    browser
        .goto(&format!("{base}/readers"))
        .await
        .expect("readers");
    browser
        .find(Locator::Css("#readers button[name=resume]"))
        .await
        .expect("a resume button")
        .click()
        .await
        .expect("resume");
    wait_for_text(&browser, "#readers", "active").await;
    for burst in 0..4 {
        let events = (0..40 * (burst + 1))
            .map(|n| NewEvent::json("test.console.noted", &json!({ "n": n })).expect("JSON"))
            .collect();
        store
            .append(
                &StreamId::new(format!("burst-{burst}")).expect("id"),
                ExpectedVersion::NoStream,
                events,
            )
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    browser.goto(&format!("{base}/")).await.expect("overview");
    let png = browser.screenshot().await.expect("screenshot");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console.png");
    std::fs::write(&target, &png).expect("save the screenshot");
    if std::env::var_os("UPDATE_SCREENSHOT").is_some_and(|value| value == "1") {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("console.png"),
            &png,
        )
        .expect("save the README's screenshot");
    }

    // A console started for one tenant shows that tenant only: globex sees
    // neither acme's stream nor its event.
    let (_globex, globex_base) = console(&url, &["--tenant", "globex"]).await;
    browser
        .goto(&format!("{globex_base}/streams"))
        .await
        .expect("globex's streams");
    assert!(!text_of(&browser, "#streams").await.contains("user-1"));
    browser
        .goto(&format!("{globex_base}/events/{renamed_id}"))
        .await
        .expect("acme's event, asked of globex's console");
    assert_eq!(text_of(&browser, "h1").await, "Error");
    assert!(text_of(&browser, "#notice").await.contains("no event"));

    // A read-only console refuses even the token.
    let (_read_only, read_only_base) =
        console(&url, &["--token-file", &token_path, "--read-only"]).await;
    browser
        .goto(&format!("{read_only_base}/readers"))
        .await
        .expect("read-only page");
    assert!(text_of(&browser, "#readers").await.contains("handlers"));
    let discard_url = format!("{read_only_base}/dead-letters/{}/discard", letter.id);
    assert_eq!(post_status(&browser, &discard_url, Some(TOKEN)).await, 403);
    assert!(
        browser.find(Locator::Css("button")).await.is_err(),
        "no action buttons"
    );

    // A schema behind this build: /health answers 503 with the reason.
    sqlx::query(
        "DELETE FROM annals_schema_history WHERE version = (SELECT max(version) FROM annals_schema_history)",
    )
    .execute(sqlite.pool())
    .await
    .expect("roll the recorded schema back");
    browser
        .goto(&format!("{base}/health"))
        .await
        .expect("health");
    let unhealthy = browser.source().await.expect("source");
    assert!(
        unhealthy.contains("unavailable") && unhealthy.contains("migrate apply"),
        "{unhealthy}"
    );
    let status = get_status(&browser, &format!("{base}/health")).await;
    assert_eq!(status, 503);

    browser.close().await.expect("close the browser");
    running.stop().await.expect("stop");
}
