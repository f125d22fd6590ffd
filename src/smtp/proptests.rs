//! Property tests of the protocol core on arbitrary input: nothing panics, and what a client dot-stuffs the
//! server decodes back exactly, however the bytes are split.

use super::client::dot_stuff;
use super::data::{ContentLimits, DataReader};
use super::server::{Action, RcptVerdict, Session, SessionConfig, SessionLimits};
use proptest::prelude::*;
use std::sync::Arc;

const LIMITS: ContentLimits = ContentLimits {
    max_size: 1 << 20,
    max_line: 1 << 16,
    max_header: 1 << 20,
};

/// Message text as a client holds it: CRLF lines without bare CR or LF.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..80,
        ),
        0..30,
    )
    .prop_map(|lines| {
        lines
            .into_iter()
            .flat_map(|mut l| {
                l.extend_from_slice(b"\r\n");
                l
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn dot_stuffing_round_trips_through_the_data_reader(body in message(), split in 0usize..4000) {
        let wire = dot_stuff(&body);
        let mut r = DataReader::new(LIMITS);
        let at = split.min(wire.len());
        let (n1, first) = r.feed(&wire[..at]);
        let (consumed, out) = match first {
            Some(out) => (n1, out),
            None => {
                let (n2, out) = r.feed(&wire[at..]);
                (n1 + n2, out.expect("the end of data is found"))
            }
        };
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(out.expect("clean text is accepted"), body);
    }

    #[test]
    fn the_data_reader_survives_any_bytes(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut r = DataReader::new(ContentLimits { max_size: 100, max_line: 50, max_header: 100 });
        let (n, _) = r.feed(&input);
        prop_assert!(n <= input.len());
    }

    #[test]
    fn command_and_address_parsers_never_panic(line in "\\PC{0,300}") {
        let _ = super::command::parse(&line);
        let _ = super::address::Mailbox::parse(&line, true);
        let _ = super::address::parse_forward_path(&line, false);
    }

    #[test]
    fn a_parsed_mailbox_prints_as_something_that_parses_to_it(local in "[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,30}", domain in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}") {
        if let Ok(m) = super::address::Mailbox::parse(&format!("{local}@{domain}"), false) {
            let again = super::address::Mailbox::parse(&m.to_string(), false).unwrap();
            prop_assert_eq!(again, m);
        }
    }

    #[test]
    fn a_session_fed_any_bytes_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let cfg = Arc::new(SessionConfig {
            hostname: "mx.example.test".into(),
            limits: SessionLimits { message_size: 10_000, recipients: 5, command_line: 512, text_line: 1000, errors: 10, header_section: 1 << 20, junk_commands: 1000 },
            starttls: true,
            auth: true,
            require_auth: false,
            lmtp: false,
        });
        let mut s = Session::new(cfg);
        let mut actions = 0;
        for c in chunks {
            s.receive(&c);
            while let Some(a) = s.poll() {
                actions += 1;
                prop_assert!(actions < 100_000, "runaway session");
                match a {
                    Action::CheckSender(..) => s.sender_verdict(None),
                    Action::CheckRecipient(fp) => {
                        let m = super::Mailbox::parse("a@example.test", false).unwrap();
                        let _ = fp;
                        s.recipient_verdict(RcptVerdict::Accept(vec![m]));
                    }
                    Action::Authenticate(_) => s.auth_verdict(Err(super::Reply::auth_failed())),
                    Action::Message(..) => s.message_stored(super::Reply::queued("Q")),
                    Action::StartTls => s.tls_established(),
                    Action::Reply(_) | Action::Close => {}
                }
            }
        }
    }
}

/// The DATA decoder octet by octet, as it was before runs inside a line were taken whole: the reference
/// the fast path must agree with, error for error.
fn reference_decode(
    input: &[u8],
    limits: ContentLimits,
) -> Option<Result<Vec<u8>, super::data::ContentError>> {
    use super::data::ContentError as E;
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Start,
        Dot,
        DotCr,
        In,
        Cr,
    }
    let (mut pos, mut body, mut line, mut header_done, mut err) =
        (P::Start, Vec::new(), 0usize, false, None::<E>);
    let fail = |err: &mut Option<E>, body: &mut Vec<u8>, e: E| {
        if err.is_none() {
            *err = Some(e);
            body.clear();
        }
    };
    let push = |err: &mut Option<E>, body: &mut Vec<u8>, header_done: bool, b: u8| {
        if err.is_some() {
            return;
        }
        if body.len() >= limits.max_size {
            *err = Some(E::TooBig);
            body.clear();
        } else if !header_done && body.len() >= limits.max_header {
            *err = Some(E::HeaderTooBig(limits.max_header));
            body.clear();
        } else {
            body.push(b);
        }
    };
    for &b in input {
        let octet = |pos: &mut P, err: &mut Option<E>, body: &mut Vec<u8>, line: &mut usize| match b
        {
            b'\r' => *pos = P::Cr,
            b'\n' => fail(err, body, E::BareLf),
            _ => {
                *line += 1;
                if *line > limits.max_line {
                    fail(err, body, E::LineTooLong);
                }
                push(err, body, header_done, b);
            }
        };
        match (pos, b) {
            (P::Start, b'.') => pos = P::Dot,
            (P::Dot, b'\r') => pos = P::DotCr,
            (P::DotCr, b'\n') => return Some(err.map_or(Ok(body), Err)),
            (P::DotCr, _) | (P::Cr, _) if b != b'\n' || pos == P::DotCr => {
                fail(&mut err, &mut body, E::BareCr);
                pos = P::In;
                octet(&mut pos, &mut err, &mut body, &mut line);
            }
            (P::Cr, _) => {
                push(&mut err, &mut body, header_done, b'\r');
                push(&mut err, &mut body, header_done, b'\n');
                if line == 0 {
                    header_done = true;
                }
                line = 0;
                pos = P::Start;
            }
            _ => {
                pos = P::In;
                octet(&mut pos, &mut err, &mut body, &mut line);
            }
        }
    }
    None
}

proptest! {
    #[test]
    fn the_data_reader_agrees_with_the_octet_reference_under_tight_limits(
        input in prop::collection::vec(prop::sample::select(vec![b'a', b'.', b'\r', b'\n', b'x']), 0..300),
        max_size in 1usize..120,
        max_line in 1usize..30,
        max_header in 1usize..60,
        split in 0usize..300,
    ) {
        let limits = ContentLimits { max_size, max_line, max_header };
        let mut input = input;
        input.extend_from_slice(b"\r\n.\r\n");
        let want = reference_decode(&input, limits);
        let mut r = DataReader::new(limits);
        let (a, b) = input.split_at(split.min(input.len()));
        let (n, mut got) = r.feed(a);
        if got.is_none() {
            got = r.feed(b).1;
        } else {
            prop_assert!(n <= a.len());
        }
        prop_assert_eq!(got, want);
    }
}
