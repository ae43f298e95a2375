//! Fuzz target: `banger_fuzz_checks::copy_archive` on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banger_fuzz_checks::copy_archive(data));
