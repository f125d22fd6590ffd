//! An in-process authoritative DNS server for the `test.` and `org.` zones (hickory-server) on 127.0.0.1, UDP and TCP on
//! one port, run on its own thread so both sync and async tests can use it. Daemons under test resolve
//! through it (`[dns] nameservers`), never through the machine's resolver.

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// One record in the `test.` zone.
#[derive(Debug, Clone)]
pub enum Rr {
    Mx(&'static str, u16, &'static str),
    A(&'static str, &'static str),
    #[allow(dead_code)]
    Aaaa(&'static str, &'static str),
    Txt(String, String),
    /// PTR for an IPv4 address (in the in-addr.arpa. zone).
    Ptr(&'static str, &'static str),
}

type AddRequest = (Rr, std::sync::mpsc::Sender<()>);

pub struct TestDns {
    pub addr: SocketAddr,
    add: tokio::sync::mpsc::UnboundedSender<AddRequest>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn name(s: &str) -> Name {
    let fqdn = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_str(&fqdn).expect("DNS name")
}

fn record(rr: &Rr) -> Record {
    match rr {
        Rr::Mx(owner, pref, host) => {
            let exchange = if *host == "." {
                Name::root()
            } else {
                name(host)
            };
            Record::from_rdata(name(owner), 60, RData::MX(MX::new(*pref, exchange)))
        }
        Rr::A(owner, ip) => {
            Record::from_rdata(name(owner), 60, RData::A(A(ip.parse().expect("IPv4"))))
        }
        Rr::Aaaa(owner, ip) => Record::from_rdata(
            name(owner),
            60,
            RData::AAAA(AAAA(ip.parse().expect("IPv6"))),
        ),
        Rr::Ptr(ip, host) => {
            Record::from_rdata(name(&reverse(ip)), 60, RData::PTR(PTR(name(host))))
        }
        Rr::Txt(owner, text) => {
            // Character-strings of at most 255 octets (RFC 1035 3.3.14).
            let parts = text
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).to_string())
                .collect();
            Record::from_rdata(name(owner), 60, RData::TXT(TXT::new(parts)))
        }
    }
}

/// The zones served: test domains, example.org (a second local domain of the test daemons), and reverse
/// names for PTR records.
const ZONES: [&str; 3] = ["test.", "org.", "in-addr.arpa."];

fn reverse(ip: &str) -> String {
    let o: std::net::Ipv4Addr = ip.parse().expect("IPv4");
    let o = o.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

fn owner(rr: &Rr) -> String {
    let n = match rr {
        Rr::Mx(o, ..) | Rr::A(o, _) | Rr::Aaaa(o, _) => o.to_string(),
        Rr::Txt(o, _) => o.clone(),
        Rr::Ptr(ip, _) => reverse(ip),
    };
    if n.ends_with('.') { n } else { format!("{n}.") }
}

fn zone(origin: &str, records: &[Rr]) -> InMemoryZoneHandler {
    let origin_name = name(origin);
    let records: Vec<&Rr> = records
        .iter()
        .filter(|r| owner(r).ends_with(&format!(".{origin}")))
        .collect();
    let origin = origin_name;
    let mut zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name("ns.test."),
        name("hostmaster.test."),
        1,
        3600,
        600,
        86400,
        60,
    );
    zone.upsert_mut(Record::from_rdata(origin, 60, RData::SOA(soa)), 1);
    for rr in records {
        zone.upsert_mut(record(rr), 1);
    }
    zone
}

impl TestDns {
    pub fn start(records: Vec<Rr>) -> TestDns {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (add_tx, mut add_rx) = tokio::sync::mpsc::unbounded_channel::<AddRequest>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut catalog = Catalog::new();
                let mut handlers = Vec::new();
                for origin in ZONES {
                    let handler = Arc::new(zone(origin, &records));
                    catalog.upsert(LowerName::from(name(origin)), vec![handler.clone()]);
                    handlers.push((origin, handler));
                }
                let mut server = Server::new(catalog);
                // UDP and TCP on the same port: try a few ports in case one is taken for TCP.
                for _ in 0..20 {
                    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
                    let addr = udp.local_addr().expect("addr");
                    let Ok(tcp) = tokio::net::TcpListener::bind(addr).await else { continue };
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 65535);
                    let _ = addr_tx.send(addr);
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => return,
                            added = add_rx.recv() => match added {
                                Some((rr, done)) => {
                                    let o = owner(&rr);
                                    if let Some((_, h)) = handlers.iter().find(|(z, _)| o.ends_with(&format!(".{z}"))) {
                                        h.upsert(record(&rr), 2).await;
                                    }
                                    let _ = done.send(());
                                }
                                None => return,
                            },
                        }
                    }
                }
                panic!("no port for the test DNS server");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test DNS server started");
        TestDns {
            addr,
            add: add_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Adds a record while the server runs (before anything asks for it, or negative caching hides it).
    pub fn add(&self, rr: Rr) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.add.send((rr, tx)).expect("dns server running");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("record added");
    }

    /// The TOML that points a daemon at this server.
    pub fn config(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\n", self.addr)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
