//! A minimal receiving SMTP server for outbound tests: plays a remote MX on a 127.0.0.x address, answers
//! recipients and DATA as a test tells it to, offers STARTTLS if asked, and records what it received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
    pub tls: bool,
}

/// How the sink behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    pub starttls: bool,
    /// The first N final replies to DATA are 451.
    pub fail_data: usize,
    /// Greeting code other than 220 (e.g. 554).
    pub greeting: Option<u16>,
    /// Seconds to wait before answering the final dot (a slow or stuck server).
    pub stall_secs: u64,
}

#[derive(Default)]
pub struct State {
    pub messages: Mutex<Vec<Received>>,
    pub connections: AtomicUsize,
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    /// The client address of every connection, in order.
    pub peers: Mutex<Vec<std::net::IpAddr>>,
    data_failures: AtomicUsize,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Recipients with "reject" in the local part get 550 5.1.1, with "later" 451 4.2.1.
fn rcpt_reply(rcpt: &str) -> &'static str {
    if rcpt.contains("reject") {
        "550 5.1.1 no such user here\r\n"
    } else if rcpt.contains("later") {
        "451 4.2.1 mailbox busy, try later\r\n"
    } else {
        "250 2.1.5 ok\r\n"
    }
}

impl Sink {
    /// A sink on `ip:port` (port 0 picks one).
    pub fn start(ip: &str, port: u16, behaviour: Behaviour) -> Option<Sink> {
        let std_listener = std::net::TcpListener::bind((ip, port)).ok()?;
        std_listener.set_nonblocking(true).ok()?;
        let addr = std_listener.local_addr().ok()?;
        let state = Arc::new(State::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let tls = behaviour.starttls.then(|| {
                    let key = rcgen::generate_simple_self_signed(vec!["mx.sink.test".to_string()]).expect("cert");
                    let cert = key.cert.der().clone();
                    let der = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key");
                    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .expect("versions")
                        .with_no_client_auth()
                        .with_single_cert(vec![cert], der)
                        .expect("tls config");
                    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
                });
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => return,
                        accepted = listener.accept() => {
                            let Ok((stream, peer)) = accepted else { continue };
                            st.peers.lock().unwrap().push(peer.ip());
                            // Replies are written one by one: without this, Nagle and delayed ACKs stall
                            // every pipelined transaction by 40 ms.
                            let _ = stream.set_nodelay(true);
                            let (st, b, tls) = (st.clone(), behaviour.clone(), tls.clone());
                            tokio::spawn(async move {
                                st.connections.fetch_add(1, Ordering::SeqCst);
                                let now = st.open.fetch_add(1, Ordering::SeqCst) + 1;
                                st.max_open.fetch_max(now, Ordering::SeqCst);
                                let _ = tokio::time::timeout(Duration::from_secs(60), session(stream, &st, &b, tls)).await;
                                st.open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                    }
                }
            });
        });
        Some(Sink {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` messages arrived.
    pub fn wait(&self, n: usize) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.messages().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.messages()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sinks on 127.0.0.2, .3, ... sharing one port, as MX hosts on one `[delivery] remote_port`.
pub fn sinks(behaviours: Vec<Behaviour>) -> Vec<Sink> {
    for _ in 0..50 {
        let Some(first) = Sink::start("127.0.0.2", 0, behaviours[0].clone()) else {
            continue;
        };
        let port = first.addr.port();
        let mut all = vec![first];
        for (i, b) in behaviours.iter().enumerate().skip(1) {
            match Sink::start(&format!("127.0.0.{}", i + 2), port, b.clone()) {
                Some(s) => all.push(s),
                None => break,
            }
        }
        if all.len() == behaviours.len() {
            return all;
        }
    }
    panic!("no common port for the sinks");
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn session(
    stream: tokio::net::TcpStream,
    st: &State,
    b: &Behaviour,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let greeting = b.greeting.unwrap_or(220);
    let mut io: Box<dyn Io> = Box::new(stream);
    if io
        .write_all(format!("{greeting} mx.sink.test ESMTP sink\r\n").as_bytes())
        .await
        .is_err()
        || greeting != 220
    {
        return;
    }
    let mut on_tls = false;
    'outer: loop {
        let mut reader = BufReader::new(io);
        let mut from = String::new();
        let mut rcpts = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") {
                let tls_line = if tls.is_some() && !on_tls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!(
                    "250-mx.sink.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n{tls_line}250 DSN\r\n"
                )
            } else if upper.starts_with("STARTTLS") {
                let Some(acceptor) = tls.clone() else {
                    continue;
                };
                let mut inner = reader.into_inner();
                if inner.write_all(b"220 2.0.0 go ahead\r\n").await.is_err() {
                    return;
                }
                // Box<dyn Io> cannot be unwrapped to TcpStream, so TLS runs over the boxed stream.
                match acceptor.accept(inner).await {
                    Ok(t) => {
                        io = Box::new(t);
                        on_tls = true;
                        continue 'outer;
                    }
                    Err(_) => return,
                }
            } else if upper.starts_with("MAIL FROM:") {
                from = line[10..]
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .trim_matches(['<', '>'])
                    .to_string();
                rcpts.clear();
                "250 2.1.0 ok\r\n".into()
            } else if upper.starts_with("RCPT TO:") {
                let rcpt = line[8..]
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .trim_matches(['<', '>'])
                    .to_string();
                let r = rcpt_reply(&rcpt);
                if r.starts_with('2') {
                    rcpts.push(rcpt);
                }
                r.into()
            } else if upper.starts_with("DATA") {
                if reader.get_mut().write_all(b"354 go\r\n").await.is_err() {
                    return;
                }
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
                if b.stall_secs > 0 {
                    tokio::time::sleep(Duration::from_secs(b.stall_secs)).await;
                }
                if st.data_failures.fetch_add(1, Ordering::SeqCst) < b.fail_data {
                    "451 4.3.0 temporary trouble, try again\r\n".into()
                } else {
                    st.messages.lock().unwrap().push(Received {
                        mail_from: from.clone(),
                        rcpt_to: rcpts.clone(),
                        data,
                        tls: on_tls,
                    });
                    "250 2.0.0 queued at sink\r\n".into()
                }
            } else if upper.starts_with("BDAT") {
                let size: usize = upper
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut buf = vec![0u8; size];
                if reader.read_exact(&mut buf).await.is_err() {
                    return;
                }
                "250 2.0.0 ok\r\n".into()
            } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                "250 2.0.0 ok\r\n".into()
            } else if upper.starts_with("QUIT") {
                let _ = reader.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                return;
            } else {
                "500 5.5.2 what\r\n".into()
            };
            if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}
