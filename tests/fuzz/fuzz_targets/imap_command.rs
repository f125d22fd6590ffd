//! IMAP client bytes, in pieces of a fuzzed size, through the framer (literals and limits) and the command
//! parser; every complete command also goes through the MIME structure code as if it were a message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |b| (*b as usize % 61) + 1);
    let mut f = tern::imap::Framer::new(1024, 4096);
    for chunk in data.chunks(step) {
        f.push(chunk);
        while let Some(frame) = f.next() {
            if let tern::imap::Frame::Command(raw) = frame {
                let _ = tern::imap::parse::command(&raw);
                let e = tern::imap::mime::parse(&raw);
                let mut out = Vec::new();
                e.structure(true, &mut out, 0);
            }
        }
    }
});
