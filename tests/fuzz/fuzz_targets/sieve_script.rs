//! Sieve script bytes through the lexer, parser and compiler; what compiles runs on a fixed message, and
//! the rest of the input is run through it as a message too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let Ok(source) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    if let Ok(program) = tern::sieve::compile(source) {
        let message = data.get(split + 1..).unwrap_or(b"Subject: x\r\n\r\nbody\r\n");
        let envelope = tern::sieve::Envelope {
            from: "a@example.org".into(),
            to: "b+c@example.test".into(),
        };
        let _ = tern::sieve::interp::run(
            &[&program],
            message,
            &envelope,
            &[],
            &tern::sieve::interp::Detached,
            &tern::sieve::Limits::default(),
        );
    }
});
