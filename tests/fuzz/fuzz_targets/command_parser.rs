//! Command lines and addresses: whatever a client sends, parsing answers with a command or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = tern::smtp::command::parse(line);
        let _ = tern::smtp::Mailbox::parse(line, true);
        let _ = tern::smtp::address::parse_reverse_path(line, false);
    }
});
