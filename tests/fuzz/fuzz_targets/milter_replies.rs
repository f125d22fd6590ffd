//! A milter filter's bytes, in pieces of a fuzzed size, through the reply decoder (bounded packets), and
//! whatever header changes they carry applied to a header section: never a panic, never a header section
//! that gains a line not starting a field or a continuation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::milter::edit::{self, Change};
use tern::milter::{Decoder, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut d = Decoder::new(64 * 1024);
    let mut fields = edit::fields(b"Subject: x\r\nFrom: a@b.test\r\n");
    for piece in rest.chunks((split as usize).max(1)) {
        d.feed(piece);
        loop {
            match d.next() {
                Ok(Some(r)) => {
                    let change = match r {
                        Response::AddHeader(n, v) => Change::Add(n, v),
                        Response::InsHeader(i, n, v) => Change::Insert(i, n, v),
                        Response::ChgHeader(i, n, v) => Change::Change(i, n, v),
                        _ => continue,
                    };
                    edit::apply(&mut fields, &change);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let out = edit::render(&fields);
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            !line.is_empty() && (line[0] == b' ' || line[0] == b'\t' || line.contains(&b':')),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
});
