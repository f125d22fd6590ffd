//! Connection limits and timeouts.

use crate::harness::{Daemon, Raw};

#[tokio::test]
async fn per_ip_connection_limit_answers_421() {
    let d = Daemon::start("[limits]\nconnections_per_ip = 2\n");
    let _a = Raw::connect(d.addr).await;
    let _b = Raw::connect(d.addr).await;
    let mut c = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(
        crate::harness::IO_TIMEOUT,
        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("421 4.7.0 Too many connections from your address"),
        "{text}"
    );
    // Another source address is not affected.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut other = Raw::from_stream(socket.connect(d.addr).await.unwrap());
    assert_eq!(other.reply().await.0, 220);
    // A slot frees when its session ends.
    drop(_a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let n = tokio::io::AsyncReadExt::read(&mut c, &mut buf)
            .await
            .unwrap();
        if buf[..n].starts_with(b"220") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_client_is_cut_off_with_421_4_4_2() {
    let d = Daemon::start("[limits]\ncommand_timeout_secs = 1\n");
    let mut c = Raw::connect(d.addr).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(c.closed().await);
}
