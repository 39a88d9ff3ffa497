//! W8: catching up through `PiiEventStore` over 15,000 data subjects, more
//! than its key cache holds (10,000): each page's uncached keys are loaded
//! in one query, and every sealed field is opened. Baseline: the same
//! catch-up through the plain store underneath (the ciphertext, nothing
//! opened).

use std::sync::Arc;
use std::time::Duration;

use annals::pii::{MasterKey, PiiEventStore};
use annals::prelude::*;
use annals::store::{LogFilter, StreamAppend};
use anyhow::Result;
use serde_json::{Value, json};

use crate::Context;
use crate::measure::{peak_rss_mb, per_second, rate, reset_peak_rss, timed};
use crate::postgres::store;

/// A member joined: two fields of personal data about its subject.
#[event(name = "bench.member.joined")]
pub struct MemberJoined {
    /// The data subject.
    pub member_id: String,
    /// Personal data.
    #[pii(subject = member_id)]
    pub email: String,
    /// Personal data.
    #[pii(subject = member_id)]
    pub display_name: String,
    /// Not personal data.
    pub plan: String,
    /// Not personal data.
    pub note: String,
}

/// Reads the whole log page by page, decoding every event as a member
/// joined; how many came.
async fn catch_up(store: &dyn EventStore) -> Result<u64> {
    let mut after = LogPosition::START;
    let mut read = 0u64;
    loop {
        let page = store.read_log(after, 5_000, &LogFilter::all()).await?;
        if page.read_to <= after {
            return Ok(read);
        }
        for event in &page.events {
            let _: serde_json::Map<String, Value> = event.payload.decode()?;
        }
        read += page.events.len() as u64;
        after = page.read_to;
    }
}

/// W8 (see the module docs).
pub async fn w8_personal_data(context: &Context) -> Result<Value> {
    const SUBJECTS: u64 = 15_000;
    let per_subject = (context.size.log_events / 100_000).max(1);
    let plain = Arc::new(store(context, "w8").await?);
    let master = MasterKey::generate();
    let pii = PiiEventStore::new(plain.clone(), plain.clone(), master.clone());
    for first in (0..SUBJECTS).step_by(50) {
        let batch = (first..(first + 50).min(SUBJECTS))
            .map(|n| {
                let events = (0..per_subject)
                    .map(|k| {
                        NewEvent::from_event(&MemberJoined {
                            member_id: format!("member-{n:05}"),
                            email: format!("member-{n:05}@example.com"),
                            display_name: format!("Member {n} of the benchmark"),
                            plan: if k % 2 == 0 { "pro" } else { "team" }.to_owned(),
                            note: "Joined through the partner portal; prefers email.".to_owned(),
                        })
                    })
                    .collect::<annals::Result<Vec<_>>>()?;
                Ok(StreamAppend::new(
                    StreamId::new(format!("member-{n:05}"))?,
                    ExpectedVersion::NoStream,
                    events,
                ))
            })
            .collect::<annals::Result<Vec<_>>>()?;
        pii.append_batch(batch).await?;
    }
    let events = SUBJECTS * per_subject;
    // A fresh reader: an empty key cache, as after a restart.
    let reader = PiiEventStore::new(plain.clone(), plain.clone(), master);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while catch_up(&*plain).await? < events {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the log never showed every event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reset_peak_rss();
    let (read, through_pii) = timed(catch_up(&reader)).await;
    anyhow::ensure!(read? == events, "the personal-data catch-up missed events");
    let rss = peak_rss_mb();
    let (read, plain_took) = timed(catch_up(&*plain)).await;
    anyhow::ensure!(read? == events, "the plain catch-up missed events");
    Ok(json!({
        "workload": "W8 catch-up through PiiEventStore",
        "annals": rate(per_second(events, through_pii)),
        "baselines": { "the same catch-up, plain store": rate(per_second(events, plain_took)) },
        "extra": { "events": events, "data subjects": SUBJECTS, "key cache subjects": 10_000 },
        "peak_rss_mb": rss,
    }))
}
