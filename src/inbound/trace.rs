//! Our Received: header (RFC 5321 4.4): who sent it, over what, and the queue ID. The `for` clause and the date
//! are added per recipient at delivery.

use crate::queue::QueueId;
use std::net::{IpAddr, SocketAddr};

/// TLS parameters of a session, for Received: and logs.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3).
pub fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// The header up to the `for` clause, CRLF-folded, without a final CRLF. `peer` is `None` when the client's
/// address is to be left out (`[submission] hide_client_ip`).
pub fn received(
    helo: &str,
    peer: Option<SocketAddr>,
    rdns: Option<&str>,
    tls: Option<&TlsInfo>,
    hostname: &str,
    protocol: &str,
    id: QueueId,
) -> String {
    // The HELO name is the client's word: keep it printable and free of the comment delimiters it sits in.
    let helo: String = helo
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | ';'))
        .take(255)
        .collect();
    let mut h = match peer {
        // The name is the client's forward-confirmed reverse DNS name, else "unknown" (as Postfix writes).
        Some(peer) => format!(
            "Received: from {helo} ({} {})",
            rdns.unwrap_or("unknown"),
            address_literal(peer.ip())
        ),
        // The client's address is not to be shown: neither through a HELO that is an address literal.
        None if helo.starts_with('[') => "Received: from unknown".to_string(),
        None => format!("Received: from {helo}"),
    };
    if let Some(t) = tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            t.version, t.cipher
        ));
    }
    h.push_str(&format!(
        "\r\n\tby {hostname} (tern) with {protocol} id {id}"
    ));
    h
}

/// For a message handed over by a local program through `tern sendmail`.
pub fn received_local(uid: u32, hostname: &str, id: QueueId) -> String {
    format!("Received: by {hostname} (tern, from uid {uid})\r\n\tid {id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_and_mapped_literals() {
        assert_eq!(address_literal("::1".parse().unwrap()), "[IPv6:::1]");
        assert_eq!(
            address_literal("::ffff:192.0.2.1".parse().unwrap()),
            "[192.0.2.1]"
        );
    }

    #[test]
    fn received_header_shape() {
        let id = crate::queue::IdGenerator::after(None).next(1);
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        };
        let peer = Some("127.0.0.1:25".parse().unwrap());
        let h = received(
            "c(x).test",
            peer,
            None,
            Some(&tls),
            "mx.example.test",
            "ESMTPS",
            id,
        );
        assert_eq!(
            h,
            "Received: from cx.test (unknown [127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\
             \tby mx.example.test (tern) with ESMTPS id 00000000000001"
        );
        let h = received("laptop", None, None, None, "mx.example.test", "ESMTPSA", id);
        assert_eq!(
            h,
            "Received: from laptop\r\n\tby mx.example.test (tern) with ESMTPSA id 00000000000001"
        );
        let h = received(
            "[192.0.2.7]",
            None,
            None,
            None,
            "mx.example.test",
            "ESMTPSA",
            id,
        );
        assert!(h.starts_with("Received: from unknown\r\n"), "{h}");
        let h = received(
            "mail.peer.test",
            peer,
            Some("mail.peer.test"),
            None,
            "mx.example.test",
            "ESMTP",
            id,
        );
        assert!(
            h.starts_with("Received: from mail.peer.test (mail.peer.test [127.0.0.1])"),
            "{h}"
        );
    }
}
