//! The DATA and BDAT decoders on arbitrary bytes: no panic, never more consumed than given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern::smtp::data::{ChunkReader, ContentLimits, DataReader};

fuzz_target!(|data: &[u8]| {
    let limits = ContentLimits { max_size: 4096, max_line: 1000, max_header: 2048 };
    let mut r = DataReader::new(limits);
    let (n, _) = r.feed(data);
    assert!(n <= data.len());
    let mut c = ChunkReader::new(limits);
    c.begin_chunk(data.len(), true);
    assert_eq!(c.feed(data), data.len());
    let _ = c.finish();
});
