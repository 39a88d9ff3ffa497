//! Waking readers: `LISTEN` on the channel every append `NOTIFY`s, for this
//! store's schema.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::PostgresEventStore;

impl PostgresEventStore {
    /// The notifier woken by appends to this store's schema, starting the
    /// listening task on first use. `None` if listening cannot start (the
    /// caller then just polls).
    pub(super) async fn wake(&self) -> Option<Arc<crate::store::AppendSignal>> {
        self.wake
            .get_or_try_init(|| async {
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&self.pool)
                    .await?;
                // A connection of its own, outside the store's pool: LISTEN
                // holds it for as long as the store lives, and the pool's
                // connections stay for statements.
                let own = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(self.pool.connect_options().as_ref().clone());
                let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
                listener
                    .listen(&self.tables.rename("annals_events"))
                    .await?;
                let notify = Arc::new(crate::store::AppendSignal::default());
                tokio::spawn(listen(listener, schema, Arc::downgrade(&notify)));
                Ok::<_, sqlx::Error>(notify)
            })
            .await
            .inspect_err(|error| tracing::warn!(%error, "cannot LISTEN for appends; polling only"))
            .ok()
            .cloned()
    }
}

/// Forwards notifications for `schema` to the notifier until it is dropped.
/// A lost connection wakes everyone too (notifications may have been
/// missed), and `PgListener` reconnects on the next receive.
pub(super) async fn listen(
    mut listener: sqlx::postgres::PgListener,
    schema: String,
    notify: Weak<crate::store::AppendSignal>,
) {
    loop {
        let received = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
        let Some(notify) = notify.upgrade() else {
            return;
        };
        match received {
            Ok(Ok(Some(notification))) if notification.payload() == schema => notify.signal(),
            Ok(Ok(Some(_))) | Err(_) => {}
            Ok(Ok(None)) => notify.signal(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "LISTEN connection failed; retrying");
                notify.signal();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
