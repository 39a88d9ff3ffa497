//! What the overview draws over time: the store sampled every few seconds
//! (the head of the log and each reader's lag, both read from one row or
//! index entry each: nothing counts the log), kept in memory for the last
//! ten minutes, and the same figures as Prometheus gauges.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use annals::store::EventStore;
use chrono::{DateTime, Utc};

use crate::commands::readers::{log_head, reader_rows};
use crate::failure::Failure;

/// How often the store is sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(2);
/// How many samples are kept (ten minutes' worth).
const KEPT: usize = 300;

/// The store at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) at: DateTime<Utc>,
    /// The sequence of the last event in the log (this handle's tenant's):
    /// its growth is the event rate (a rolled back PostgreSQL append leaves
    /// unused sequences, so it can overstate).
    pub(crate) head: u64,
    /// Each reader's lag in events.
    pub(crate) lags: BTreeMap<String, u64>,
}

/// The samples, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Samples(Mutex<VecDeque<Sample>>);

impl Samples {
    /// Takes a sample of `store`, keeps it and publishes it as gauges.
    pub(crate) async fn take(&self, store: &dyn EventStore) -> Result<Sample, Failure> {
        let head = log_head(store).await?;
        let lags: BTreeMap<String, u64> = reader_rows(store, head)
            .await?
            .into_iter()
            .map(|row| (row.checkpoint.name, row.lag_events))
            .collect();
        metrics::gauge!("annals_log_head_sequence").set(head.sequence as f64);
        for (reader, lag) in &lags {
            metrics::gauge!(
                annals::observability::telemetry::PROJECTION_LAG_EVENTS,
                "reader" => reader.clone()
            )
            .set(*lag as f64);
        }
        let sample = Sample {
            at: Utc::now(),
            head: head.sequence,
            lags,
        };
        if let Ok(mut samples) = self.0.lock() {
            samples.push_back(sample.clone());
            while samples.len() > KEPT {
                samples.pop_front();
            }
        }
        Ok(sample)
    }

    /// Events per second between consecutive samples: (seconds before now,
    /// rate).
    pub(crate) fn rates(&self) -> Vec<(f64, f64)> {
        let Ok(samples) = self.0.lock() else {
            return Vec::new();
        };
        let now = Utc::now();
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(before, after)| {
                let seconds = (after.at - before.at).as_seconds_f64().max(0.001);
                let rate = after.head.saturating_sub(before.head) as f64 / seconds;
                ((now - after.at).as_seconds_f64(), rate)
            })
            .collect()
    }

    /// Each reader's lag over time: (seconds before now, lag).
    pub(crate) fn lags(&self) -> BTreeMap<String, Vec<(f64, f64)>> {
        let Ok(samples) = self.0.lock() else {
            return BTreeMap::new();
        };
        let now = Utc::now();
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in samples.iter() {
            for (reader, lag) in &sample.lags {
                series
                    .entry(reader.clone())
                    .or_default()
                    .push(((now - sample.at).as_seconds_f64(), *lag as f64));
            }
        }
        series
    }
}
