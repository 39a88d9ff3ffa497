//! A TCP proxy in front of PostgreSQL that, once armed, cuts the connection
//! that sends an `INSERT` right after the server committed it: the server
//! has the rows, the client gets a broken connection instead of an answer.
//! The ambiguous failure an idempotent command must survive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; dropping it stops accepting connections.
pub struct CutAfterCommit {
    url: String,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutAfterCommit {
    /// A proxy to the server of `url` (a `postgres://` URL with a host and
    /// port), listening on a free loopback port.
    pub async fn start(url: &str) -> Self {
        // postgres://user@host:port/database?options
        let (scheme, rest) = url
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {url}"));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) => (format!("{user}@"), host_port),
            None => (String::new(), authority),
        };
        let target = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot listen: {error}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no local address: {error}"))
            .port();
        // Plain text, so that the proxy can read the messages.
        let separator = if path.contains('?') { '&' } else { '?' };
        let proxied = format!("{scheme}://{user}127.0.0.1:{port}/{path}{separator}sslmode=disable");
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (armed, cuts) = (Arc::clone(&armed), Arc::clone(&cuts));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    tokio::spawn(relay(client, server, Arc::clone(&armed), Arc::clone(&cuts)));
                }
            }
        });
        CutAfterCommit {
            url: proxied,
            armed,
            cuts,
            accept,
        }
    }

    /// The URL to connect through the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Cuts the next connection that sends an `INSERT`, once the server
    /// has answered it (committed), before the answer reaches the client.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutAfterCommit {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays one connection both ways; cuts it as described above.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let insert_sent = Arc::new(AtomicBool::new(false));
    let upstream = tokio::spawn({
        let insert_sent = Arc::clone(&insert_sent);
        let armed = Arc::clone(&armed);
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let Ok(read) = client_read.read(&mut buffer).await else {
                    return;
                };
                if read == 0 {
                    return;
                }
                let chunk = &buffer[..read];
                // The statement text may straddle two reads.
                tail.extend_from_slice(chunk);
                if armed.load(Ordering::SeqCst)
                    && tail
                        .windows(b"INSERT INTO".len())
                        .any(|window| window == b"INSERT INTO")
                {
                    insert_sent.store(true, Ordering::SeqCst);
                }
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
                if server_write.write_all(chunk).await.is_err() {
                    return;
                }
            }
        }
    });
    // Server to client, message by message (type byte, then a 4-byte
    // length that counts itself).
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    // The insert's statement completed ('C'): the next ReadyForQuery that
    // says the connection is idle, out of any transaction ('I'), comes
    // after its commit (the one after preparing it does not, nor one inside
    // the transaction an append may run in).
    let mut completed = false;
    'relay: while let Ok(read) = server_read.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        pending.extend_from_slice(&buffer[..read]);
        let mut forward = 0;
        while pending.len() - forward >= 5 {
            let length = u32::from_be_bytes([
                pending[forward + 1],
                pending[forward + 2],
                pending[forward + 3],
                pending[forward + 4],
            ]) as usize;
            let end = forward + 1 + length;
            if pending.len() < end {
                break;
            }
            let kind = pending[forward];
            if kind == b'C' && insert_sent.load(Ordering::SeqCst) {
                completed = true;
            }
            let idle = pending.get(forward + 5) == Some(&b'I');
            if kind == b'Z' && completed && idle && armed.swap(false, Ordering::SeqCst) {
                // Committed: everything before this message reaches the
                // client, this one and the rest never do.
                let _ = client_write.write_all(&pending[..forward]).await;
                cuts.fetch_add(1, Ordering::SeqCst);
                break 'relay;
            }
            forward = end;
        }
        if client_write.write_all(&pending[..forward]).await.is_err() {
            break;
        }
        pending.drain(..forward);
    }
    upstream.abort();
    let _ = client_write.shutdown().await;
}
