//! The HTTP listeners on hyper: `[[listener]] kind = "http"` (port 80: ACME http-01 challenges, mail client
//! autoconfiguration), `"https"` (port 443: MTA-STS policies, autoconfiguration, tls-alpn-01 challenges)
//! and the admin bind (`[admin]`: /metrics, /healthz). HTTP/1.1 only; each connection takes a slot of
//! `[http]`'s connection limits, and is bounded in header time, total time, header and body size.

pub mod autoconfig;
pub mod mta_sts;
pub mod route;

use crate::config::{Config, HttpSettings, ListenerKind};
use crate::inbound::limits::ConnLimiter;
use crate::queue::Queue;
use crate::shutdown::Shutdown;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use route::{Reply, Role, Routes};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tracing::Instrument;

/// Pending http-01 answers, shared with the ACME client.
#[derive(Debug, Default)]
pub struct HttpChallenges(RwLock<HashMap<String, String>>);

impl HttpChallenges {
    pub fn set(&self, token: &str, key_authorization: Option<String>) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        match key_authorization {
            Some(k) => m.insert(token.to_string(), k),
            None => m.remove(token),
        };
    }
}

impl route::Challenges for HttpChallenges {
    fn key_authorization(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// What every HTTP connection shares.
pub struct Web {
    routes: RwLock<Arc<Routes>>,
    pub challenges: Arc<HttpChallenges>,
    settings: HttpSettings,
    limiter: Arc<ConnLimiter>,
    queue: Queue,
    /// For https: ALPN http/1.1 and acme-tls/1, certificates from the shared resolver.
    tls: tokio_rustls::TlsAcceptor,
}

/// The client-facing listeners as bound (first address of each kind): port 0 in a configuration becomes
/// the port the kernel chose.
pub fn services_of(bound: &[(ListenerKind, SocketAddr)]) -> Vec<autoconfig::Service> {
    let mut services: Vec<autoconfig::Service> = Vec::new();
    for (kind, addr) in bound {
        if !services.iter().any(|s| s.kind == *kind) {
            services.push(autoconfig::Service {
                kind: *kind,
                port: addr.port(),
            });
        }
    }
    services
}

/// The routes `cfg` describes over the listeners `services` (which change only with a restart).
pub fn routes_of(cfg: &Config, services: Vec<autoconfig::Service>) -> Routes {
    Routes {
        site: autoconfig::Site {
            hostname: cfg.hostname.clone(),
            services,
        },
        domains: cfg
            .local_domains
            .iter()
            .map(|d| d.to_string().to_ascii_lowercase())
            .collect(),
        mta_sts: cfg.mta_sts.clone(),
    }
}

impl Web {
    pub fn new(
        cfg: &Config,
        services: Vec<autoconfig::Service>,
        queue: Queue,
        certs: &Arc<crate::tls::Certs>,
        challenges: Arc<HttpChallenges>,
    ) -> Arc<Web> {
        let tls =
            crate::tls::server_config(certs, &[b"http/1.1", crate::tls::certs::ACME_TLS_ALPN]);
        Arc::new(Web {
            routes: RwLock::new(Arc::new(routes_of(cfg, services))),
            challenges,
            settings: cfg.http.clone(),
            limiter: ConnLimiter::new(cfg.http.max_connections, cfg.http.max_connections_per_ip),
            queue,
            tls: tokio_rustls::TlsAcceptor::from(tls),
        })
    }

    /// A reload's host name, domains and MTA-STS policy, for requests from now on (the listeners stay).
    pub fn reload(&self, cfg: &Config) {
        let services = self.routes().site.services.clone();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(routes_of(cfg, services));
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The role a listener kind plays.
pub fn role_of(kind: ListenerKind) -> Option<Role> {
    match kind {
        ListenerKind::Http => Some(Role::Http),
        ListenerKind::Https => Some(Role::Https),
        _ => None,
    }
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, role: Role, web: Arc<Web>, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = role.as_str(), error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let span = tracing::info_span!("http", listener = role.as_str(), client_ip = %peer.ip(), client_port = peer.port());
        let slot = match web.limiter.try_acquire(peer.ip()) {
            Ok(s) => s,
            Err(over) => {
                let _span = span.enter();
                tracing::warn!(
                    limit = over.scope(),
                    "connection refused: too many connections"
                );
                continue;
            }
        };
        let web = web.clone();
        tokio::spawn(
            async move {
                crate::ops::metrics::inc("tern_connections_total", &[("listener", role.as_str())]);
                let _open = crate::ops::metrics::connection_opened(role.as_str());
                let limit = web.settings.connection_time;
                if tokio::time::timeout(limit, connection(stream, peer, role, web))
                    .await
                    .is_err()
                {
                    tracing::debug!("connection closed: it reached http.connection_secs");
                }
                drop(slot);
            }
            .instrument(span),
        );
    }
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, role: Role, web: Arc<Web>) {
    if role != Role::Https {
        return http1(TokioIo::new(stream), role, web).await;
    }
    let handshake = tokio::time::timeout(web.settings.header_timeout, web.tls.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    // A tls-alpn-01 validation ends with the handshake (RFC 8737 section 3).
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::certs::ACME_TLS_ALPN) {
        tracing::info!(peer = %peer, "answered a tls-alpn-01 challenge");
        return;
    }
    http1(TokioIo::new(tls), role, web).await
}

async fn http1<I>(io: TokioIo<I>, role: Role, web: Arc<Web>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let web = web.clone();
        hyper::service::service_fn(move |req| {
            let web = web.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(req, role, &web).await) }
        })
    };
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(web.settings.header_timeout)
        .max_buf_size(web.settings.max_header_bytes)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Lower case, without port or trailing dot; empty when absent or not a plain host name.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    let name = match raw.rsplit_once(':') {
        Some((h, port)) if !h.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        name
    } else {
        String::new()
    }
}

async fn handle(req: Request<Incoming>, role: Role, web: &Web) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let host = host_of(&req);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let reply = if role == Role::Admin {
        admin(&method, &path, &web.queue).await
    } else {
        let limit = web.settings.max_body_bytes;
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                route::answer(
                    role,
                    &web.routes(),
                    web.challenges.as_ref(),
                    &route::Request {
                        method: &method,
                        host: &host,
                        path: &path,
                        query: &query,
                        body: &body,
                    },
                )
            }
            Err(_) => Reply::text(413, "the request body is over http.max_body_bytes"),
        }
    };
    if role == Role::Admin {
        tracing::debug!(method = %method, path = %path, status = reply.status, "http request");
    } else {
        tracing::info!(method = %method, host = %host, path = %path, status = reply.status, "http request");
    }
    let mut builder = Response::builder()
        .status(reply.status)
        .header(hyper::header::CONTENT_TYPE, reply.content_type)
        .header("X-Content-Type-Options", "nosniff");
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"internal error\n"))))
}

async fn admin(method: &str, path: &str, queue: &Queue) -> Reply {
    match (method, path) {
        ("GET" | "HEAD", "/healthz") => Reply::text(200, "ok"),
        ("GET" | "HEAD", "/metrics") => Reply::new(
            200,
            crate::ops::metrics::CONTENT_TYPE,
            crate::ops::admin::metrics_text(queue).await,
        ),
        ("GET" | "HEAD", _) => Reply::text(404, "not found"),
        _ => Reply::text(405, "GET only"),
    }
}
