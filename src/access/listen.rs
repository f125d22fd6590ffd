//! What the mail access listeners share: the accept loop with its connection limits, and the TLS handshake.

use super::Access;
use crate::config::ListenerKind;
use crate::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts connections until shutdown; each one takes a slot of `access.limiter` (total and per client) or
/// is sent `busy` and closed, and is served by `handle` in a span carrying the client's address.
pub async fn accept<F, Fut>(
    listener: TcpListener,
    kind: ListenerKind,
    access: Arc<Access>,
    mut shutdown: Shutdown,
    busy: &'static [u8],
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<Access>, Shutdown) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = kind.as_str(), error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("access", listener = kind.as_str(), client_ip = %peer.ip(), client_port = peer.port());
        let slot = match access.limiter.try_acquire(peer.ip()) {
            Ok(s) => s,
            Err(over) => {
                let _span = span.enter();
                tracing::warn!(
                    limit = over.scope(),
                    "connection refused: too many connections"
                );
                let mut stream = stream;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        stream.write_all(busy),
                    )
                    .await;
                });
                continue;
            }
        };
        let session = handle(stream, peer, access.clone(), shutdown.clone());
        tokio::spawn(
            async move {
                tracing::info!("connect");
                crate::ops::metrics::inc("tern_connections_total", &[("listener", kind.as_str())]);
                let _open = crate::ops::metrics::connection_opened(kind.as_str());
                match session.await {
                    Ok(()) => tracing::info!("disconnect"),
                    Err(e) => tracing::info!(error = %e, "disconnect"),
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}

/// The server side of a TLS handshake with the current certificate, bounded in time.
pub async fn handshake(
    access: &Access,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, access.tls().accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::info!("tls handshake timed out");
            None
        }
    }
}

/// Writes what is pending, then waits for the client's next bytes: `Some(n)` read into `buf`, `None` when
/// the session is over (the client left, stayed silent past `idle`, or the server is shutting down; the
/// last two are told `bye_idle` or `bye_shutdown` first).
pub async fn flush_and_read<S>(
    stream: &mut S,
    out: &mut Vec<u8>,
    buf: &mut [u8],
    idle: std::time::Duration,
    shutdown: &mut Shutdown,
    bye_idle: &[u8],
    bye_shutdown: &[u8],
) -> std::io::Result<Option<usize>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;
    if !out.is_empty() {
        // A client that does not read cannot hold the session past `idle` (nor past a shutdown).
        let write = async {
            stream.write_all(out).await?;
            stream.flush().await
        };
        tokio::select! {
            w = tokio::time::timeout(idle, write) => match w {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!("timeout writing to a client that does not read");
                    return Ok(None);
                }
            },
            _ = shutdown.fired() => return Ok(None),
        }
        out.clear();
    }
    tokio::select! {
        read = tokio::time::timeout(idle, stream.read(buf)) => match read {
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(n)) => Ok(Some(n)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::info!("timeout");
                let _ = stream.write_all(bye_idle).await;
                Ok(None)
            }
        },
        _ = shutdown.fired() => {
            let _ = stream.write_all(bye_shutdown).await;
            Ok(None)
        }
    }
}
