//! A writer process for the SQLite crash test (`tests/crash_safety.rs`):
//! appends two-stream batches to the SQLite file named by its argument from
//! four tasks, forever, printing `ok <batch>` after each acknowledged
//! append, until the test kills it with SIGKILL.

use std::io::Write as _;

use annals::prelude::*;
use annals::store::StreamAppend;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: sqlite_crash_writer <database file>")?;
    let store = SqliteEventStore::open(&path).await?;
    let writers: Vec<tokio::task::JoinHandle<annals::Result<()>>> = (0..4)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0_u64.. {
                    let batch = format!("w{writer}-b{n}");
                    let appends = ["a", "b"]
                        .iter()
                        .map(|side| {
                            let events = (0..3)
                                .map(|i| {
                                    NewEvent::json("crash.noted", &serde_json::json!({ "i": i }))
                                })
                                .collect::<annals::Result<Vec<_>>>()?;
                            Ok(StreamAppend::new(
                                StreamId::new(format!("{batch}-{side}"))?,
                                ExpectedVersion::NoStream,
                                events,
                            ))
                        })
                        .collect::<annals::Result<Vec<_>>>()?;
                    store.append_batch(appends).await?;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ok {batch}")
                        .map_err(|error| annals::Error::Config(error.to_string()))?;
                    out.flush()
                        .map_err(|error| annals::Error::Config(error.to_string()))?;
                }
                annals::Result::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(())
}
