//! Spreading the CPU work of a page of events (parsing payloads, opening
//! sealed fields) over the machine's cores: a catch-up through
//! [`PiiEventStore`](super::PiiEventStore) is otherwise bound by one core
//! while the database waits for the next request.

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};

/// Pages smaller than this are worked through on the calling task: handing
/// a few events to other threads costs more than it saves.
const PARALLEL_FROM: usize = 256;

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// `work` applied to each item, the results in the items' order: split
/// into one chunk per core on Tokio's blocking threads for a large page
/// inside a Tokio runtime, on the calling task otherwise. The first error
/// (in item order) is returned.
pub(super) async fn map_on_every_core<T, R, F>(
    items: Vec<T>,
    what: &'static str,
    work: F,
) -> Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Result<R> + Send + Sync + 'static,
{
    let cores = cores();
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if cores >= 2 && items.len() >= PARALLEL_FROM => runtime,
        _ => return items.into_iter().map(work).collect(),
    };
    let total = items.len();
    let chunk = total.div_ceil(cores);
    let work = Arc::new(work);
    let mut items = items.into_iter();
    let mut tasks = Vec::with_capacity(cores);
    loop {
        let part: Vec<T> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let work = work.clone();
        tasks.push(runtime.spawn_blocking(move || {
            part.into_iter()
                .map(|item| work(item))
                .collect::<Result<Vec<R>>>()
        }));
    }
    let mut results = Vec::with_capacity(total);
    for task in tasks {
        let part = task.await.map_err(|error| Error::TaskFailed {
            task: "personal-data reveal",
            name: what.to_owned(),
            source: Box::new(error),
        })??;
        results.extend(part);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_page_keeps_its_order_and_its_first_error() {
        let items: Vec<u32> = (0..1_000).collect();
        let doubled = map_on_every_core(items.clone(), "test", |n| Ok(n * 2))
            .await
            .expect("no error");
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());

        let failed = map_on_every_core(items, "test", |n| {
            if n == 700 || n == 900 {
                Err(Error::invalid("item", format!("{n}")))
            } else {
                Ok(n)
            }
        })
        .await;
        assert!(
            matches!(&failed, Err(Error::InvalidInput { reason, .. }) if reason == "700"),
            "{failed:?}"
        );
    }
}
