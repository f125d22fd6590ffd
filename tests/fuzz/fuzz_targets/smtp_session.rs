//! The whole server session fed arbitrary client bytes in arbitrary pieces: it must never panic and must
//! keep answering.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use tern::smtp::server::{Action, RcptVerdict, Session, SessionConfig, SessionLimits};
use tern::smtp::{Mailbox, Reply};

fuzz_target!(|data: &[u8]| {
    let cfg = Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        limits: SessionLimits { message_size: 10_000, recipients: 5, command_line: 512, text_line: 1000, errors: 10, header_section: 1 << 20, junk_commands: 1000 },
        starttls: true,
        auth: true,
        require_auth: false,
        lmtp: data.first().is_some_and(|b| b & 1 == 1),
    });
    let mut s = Session::new(cfg);
    // The first byte picks the piece size, so splits are fuzzed too.
    let piece = data.first().map_or(1, |b| (*b as usize % 64) + 1);
    for chunk in data.chunks(piece) {
        s.receive(chunk);
        while let Some(a) = s.poll() {
            match a {
                Action::CheckSender(..) => s.sender_verdict(None),
                Action::CheckRecipient(_) => {
                    s.recipient_verdict(RcptVerdict::Accept(vec![Mailbox::parse("a@example.test", false).unwrap()]))
                }
                Action::Authenticate(_) => s.auth_verdict(Err(Reply::auth_failed())),
                Action::Message(..) => s.message_stored(Reply::queued("Q")),
                Action::StartTls => s.tls_established(),
                Action::Reply(_) | Action::Close => {}
            }
        }
    }
});
