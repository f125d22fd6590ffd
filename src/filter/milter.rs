//! One milter connection for one SMTP session: connect and negotiate within `connect_timeout`, then each
//! command and its answer within `command_timeout` (progress replies restart the wait), over TCP or a Unix
//! socket, through the sans-IO codec in `crate::milter`.

use crate::config::{FilterAddress, FilterSettings};
use crate::milter::{Command, Decoder, MilterError, Response, actions, protocol};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest reply packet accepted (a REPLBODY chunk or a header with its value).
const MAX_PACKET: usize = 2 * 1024 * 1024;
/// Changes one answer may carry, in number and in octets (a replacement body is further bounded by
/// `[limits] message_size`).
const MAX_CHANGES: usize = 10_000;
const MAX_CHANGE_BYTES: usize = 64 * 1024 * 1024;

/// Octets a change holds.
fn change_size(r: &Response) -> usize {
    match r {
        Response::ReplBody(b) => b.len(),
        Response::AddHeader(a, b) | Response::AddRcptPar(a, b) | Response::ChgFrom(a, b) => {
            a.len() + b.len()
        }
        Response::InsHeader(_, a, b) | Response::ChgHeader(_, a, b) => a.len() + b.len(),
        Response::AddRcpt(a) | Response::DelRcpt(a) | Response::Quarantine(a) => a.len(),
        _ => 0,
    }
}

#[derive(Debug, Error)]
pub enum FilterError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the filter")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] MilterError),
    #[error("too many changes in one answer (over {MAX_CHANGES} or {MAX_CHANGE_BYTES} octets)")]
    TooManyChanges,
    #[error("unexpected answer {0:?}")]
    Unexpected(Response),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub struct Milter {
    pub settings: Arc<FilterSettings>,
    stream: Box<dyn Stream>,
    decoder: Decoder,
    /// What the filter may do, and the steps it wants left out or unanswered, as negotiated.
    pub actions: u32,
    pub protocol: u32,
}

/// A final answer with the modifications that came before it.
#[derive(Debug)]
pub struct Answer {
    pub last: Response,
    pub changes: Vec<Response>,
}

impl Milter {
    pub async fn open(settings: Arc<FilterSettings>) -> Result<Milter, FilterError> {
        let limit = settings.connect_timeout;
        let connect = async {
            let stream: Box<dyn Stream> = match &settings.address {
                FilterAddress::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
                FilterAddress::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(FilterError::Connect(e)),
            Err(_) => return Err(FilterError::Timeout(limit)),
        };
        let mut m = Milter {
            settings,
            stream,
            decoder: Decoder::new(MAX_PACKET),
            actions: 0,
            protocol: 0,
        };
        let offer = Command::OptNeg {
            version: crate::milter::VERSION,
            actions: actions::ALL,
            protocol: protocol::OFFERED,
        };
        let answer = tokio::time::timeout(limit, m.ask_within(offer, limit)).await;
        match answer {
            Ok(Ok(Answer {
                last:
                    Response::OptNeg {
                        actions: a,
                        protocol: p,
                        ..
                    },
                ..
            })) => {
                // Only what both sides know: a filter asking for more gets what was offered.
                m.actions = a & actions::ALL;
                m.protocol = p & protocol::OFFERED;
                Ok(m)
            }
            Ok(Ok(other)) => Err(FilterError::Unexpected(other.last)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FilterError::Timeout(limit)),
        }
    }

    pub fn wants(&self, step: u32) -> bool {
        self.protocol & step == 0
    }

    pub fn may(&self, action: u32) -> bool {
        self.actions & action != 0
    }

    /// Sends a command the filter will not answer.
    pub async fn tell(&mut self, command: Command) -> Result<(), FilterError> {
        let limit = self.settings.command_timeout;
        match tokio::time::timeout(limit, self.stream.write_all(&command.encode())).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(FilterError::Timeout(limit)),
        }
    }

    /// Sends a command and waits for its final answer.
    pub async fn ask(&mut self, command: Command) -> Result<Answer, FilterError> {
        let limit = self.settings.command_timeout;
        self.ask_within(command, limit).await
    }

    async fn ask_within(
        &mut self,
        command: Command,
        limit: Duration,
    ) -> Result<Answer, FilterError> {
        self.tell(command).await?;
        // Progress replies restart the wait for the next packet, but never past content_timeout in all.
        let deadline = tokio::time::Instant::now() + self.settings.content_timeout.max(limit);
        let mut changes = Vec::new();
        let mut change_bytes = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(r) = self.decoder.next()? {
                match r {
                    Response::Progress => {}
                    r if r.is_final() => return Ok(Answer { last: r, changes }),
                    r => {
                        change_bytes += change_size(&r);
                        if changes.len() >= MAX_CHANGES || change_bytes > MAX_CHANGE_BYTES {
                            return Err(FilterError::TooManyChanges);
                        }
                        changes.push(r)
                    }
                }
            }
            let wait = limit.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            let n = match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) => return Err(FilterError::Closed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(FilterError::Timeout(wait)),
            };
            self.decoder.feed(&buf[..n]);
        }
    }

    /// SMFIC_QUIT, best effort, and the connection closed.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.stream.write_all(&Command::Quit.encode()),
        )
        .await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DefaultAction, FilterKind};
    use tokio::io::AsyncWriteExt;

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    /// A filter on a real socket that negotiates, then answers the next command with `flood`.
    async fn filter_answering(flood: Vec<u8>, progress: bool) -> Arc<FilterSettings> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let mut optneg = 6u32.to_be_bytes().to_vec();
            optneg.extend(actions::ALL.to_be_bytes());
            optneg.extend(0u32.to_be_bytes());
            s.write_all(&packet(b'O', &optneg)).await.unwrap();
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(&flood).await;
            for _ in 0..50 {
                if progress {
                    let _ = s.write_all(&packet(b'p', b"")).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Arc::new(FilterSettings {
            kind: FilterKind::Milter,
            name: "test".into(),
            address: FilterAddress::Tcp(addr),
            listeners: Vec::new(),
            default_action: DefaultAction::Tempfail,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(300),
            content_timeout: Duration::from_secs(1),
            controller: None,
            controller_password: None,
            reject_score: None,
            junk_score: None,
            virus: false,
        })
    }

    #[tokio::test]
    async fn a_flood_of_changes_is_cut_off() {
        let mut flood = Vec::new();
        for _ in 0..(MAX_CHANGES + 1) {
            flood.extend(packet(b'h', b"X-A\0v\0"));
        }
        let mut m = Milter::open(filter_answering(flood, false).await)
            .await
            .unwrap();
        let e = m.ask(Command::BodyEob).await.unwrap_err();
        assert!(matches!(e, FilterError::TooManyChanges), "{e}");
    }

    #[tokio::test]
    async fn progress_forever_ends_at_content_timeout() {
        // Progress every 100 ms (inside command_timeout) for 5 s: the answer is given up after 1 s.
        let mut m = Milter::open(filter_answering(Vec::new(), true).await)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let e = m.ask(Command::BodyEob).await.unwrap_err();
        assert!(matches!(e, FilterError::Timeout(_)), "{e}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
