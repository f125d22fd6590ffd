//! An outbound SMTP connection: plain TCP until STARTTLS, then TLS; replies read with the sans-IO
//! `smtp::client::ReplyParser`; every read bounded by the RFC 5321 4.5.3.2 timeouts.

use crate::smtp::Reply;
use crate::smtp::client::{Capabilities, ReplyParser};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// RFC 5321 4.5.3.2: initial 220, MAIL, RCPT: 5 minutes; DATA initiation: 2; data block: 3; final dot: 10.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
pub const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
pub const FINAL_DOT_TIMEOUT: Duration = Duration::from_secs(600);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// An LMTP server's Unix socket.
    Unix(tokio::net::UnixStream),
}

/// What went wrong talking to a server (not what it replied).
#[derive(Debug, Clone)]
pub struct ConnError(pub String);

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Connection {
    stream: Stream,
    parser: ReplyParser,
    pub addr: SocketAddr,
    /// The MX host name, for logs, DSNs and certificate checks.
    pub host: String,
    pub caps: Capabilities,
    /// TLS version and cipher once STARTTLS succeeded.
    pub tls: Option<String>,
    /// When it was last used, for the idle pool.
    pub last_used: Instant,
    /// Transactions completed on it.
    pub transactions: u32,
    /// The local address it was made from when a transport rule names one (the idle pool keeps them apart).
    pub source: Option<std::net::IpAddr>,
}

impl Connection {
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        timeout: Duration,
        source: Option<std::net::IpAddr>,
    ) -> Result<Connection, ConnError> {
        let connecting = async {
            match source {
                None => TcpStream::connect(addr).await,
                Some(ip) => {
                    let socket = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await
                }
            }
        };
        let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
        let stream = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnError(format!("connect to {host}[{}]{from} timed out", addr.ip())))?
            .map_err(|e| ConnError(format!("connect to {host}[{}]{from}: {e}", addr.ip())))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream: Stream::Plain(stream),
            parser: ReplyParser::default(),
            addr,
            host: host.to_string(),
            caps: Capabilities::default(),
            tls: None,
            last_used: Instant::now(),
            transactions: 0,
            source,
        })
    }

    /// A connection to an LMTP server's Unix socket (`host` names it in logs).
    pub async fn connect_unix(
        path: &std::path::Path,
        timeout: Duration,
    ) -> Result<Connection, ConnError> {
        let host = format!("unix:{}", path.display());
        let stream = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| ConnError(format!("connect to {host} timed out")))?
            .map_err(|e| ConnError(format!("connect to {host}: {e}")))?;
        Ok(Connection {
            stream: Stream::Unix(stream),
            parser: ReplyParser::default(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            host,
            caps: Capabilities::default(),
            tls: None,
            last_used: Instant::now(),
            transactions: 0,
            source: None,
        })
    }

    /// LHLO (RFC 2033 4.1); fills in the capabilities.
    pub async fn lhlo(&mut self, our_name: &str) -> Result<Reply, ConnError> {
        let reply = self
            .command(&format!("LHLO {our_name}\r\n"), COMMAND_TIMEOUT)
            .await?;
        self.caps = if reply.code == 250 {
            Capabilities::from_ehlo(&reply)
        } else {
            Capabilities::default()
        };
        Ok(reply)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let r = match &mut self.stream {
            Stream::Plain(s) => tokio::time::timeout(DATA_BLOCK_TIMEOUT, s.write_all(bytes)).await,
            Stream::Tls(s) => tokio::time::timeout(DATA_BLOCK_TIMEOUT, s.write_all(bytes)).await,
            Stream::Unix(s) => tokio::time::timeout(DATA_BLOCK_TIMEOUT, s.write_all(bytes)).await,
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ConnError(format!("write to {}: {e}", self.host))),
            Err(_) => Err(ConnError(format!("write to {} timed out", self.host))),
        }
    }

    pub async fn reply(&mut self, timeout: Duration) -> Result<Reply, ConnError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(ConnError(format!("{}: {}", self.host, e.0))),
            }
            let read = match &mut self.stream {
                Stream::Plain(s) => tokio::time::timeout_at(deadline, s.read(&mut buf)).await,
                Stream::Tls(s) => tokio::time::timeout_at(deadline, s.read(&mut buf)).await,
                Stream::Unix(s) => tokio::time::timeout_at(deadline, s.read(&mut buf)).await,
            };
            match read {
                Ok(Ok(0)) => return Err(ConnError(format!("{} closed the connection", self.host))),
                Ok(Ok(n)) => self.parser.feed(&buf[..n]),
                Ok(Err(e)) => return Err(ConnError(format!("read from {}: {e}", self.host))),
                Err(_) => {
                    return Err(ConnError(format!(
                        "{} did not answer in {}s",
                        self.host,
                        timeout.as_secs()
                    )));
                }
            }
        }
    }

    pub async fn command(&mut self, line: &str, timeout: Duration) -> Result<Reply, ConnError> {
        self.send(line.as_bytes()).await?;
        self.reply(timeout).await
    }

    /// EHLO, falling back to HELO when EHLO is refused; fills in the capabilities.
    pub async fn hello(&mut self, our_name: &str) -> Result<Reply, ConnError> {
        let reply = self
            .command(&format!("EHLO {our_name}\r\n"), COMMAND_TIMEOUT)
            .await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(reply);
        }
        self.caps = Capabilities::default();
        self.command(&format!("HELO {our_name}\r\n"), COMMAND_TIMEOUT)
            .await
    }

    /// STARTTLS and the handshake; the session must then start over with EHLO (RFC 3207 4.2).
    pub async fn starttls(
        mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Connection, (ConnError, bool)> {
        let reply = self
            .command("STARTTLS\r\n", COMMAND_TIMEOUT)
            .await
            .map_err(|e| (e, false))?;
        if reply.code != 220 {
            return Err((
                ConnError(format!(
                    "{} refused STARTTLS: {}",
                    self.host,
                    reply.summary()
                )),
                true,
            ));
        }
        let Stream::Plain(tcp) = self.stream else {
            return Err((ConnError("TLS is already on".into()), false));
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::IpAddress(self.addr.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout(COMMAND_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                (
                    ConnError(format!("TLS handshake with {} timed out", self.host)),
                    false,
                )
            })?
            .map_err(|e| {
                (
                    ConnError(format!("TLS handshake with {}: {e}", self.host)),
                    false,
                )
            })?;
        let (_, state) = tls.get_ref();
        let version = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        let cipher = state
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        self.tls = Some(format!("{version} {cipher}"));
        self.stream = Stream::Tls(Box::new(tls));
        self.parser = ReplyParser::default();
        Ok(self)
    }

    /// QUIT, politely and briefly.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.command("QUIT\r\n", Duration::from_secs(5)),
        )
        .await;
    }
}
