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
        let mut changes = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(r) = self.decoder.next()? {
                match r {
                    Response::Progress => {}
                    r if r.is_final() => return Ok(Answer { last: r, changes }),
                    r => changes.push(r),
                }
            }
            let n = match tokio::time::timeout(limit, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) => return Err(FilterError::Closed),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(FilterError::Timeout(limit)),
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
