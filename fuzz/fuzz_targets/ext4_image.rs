//! Fuzz target: `banger_fuzz_checks::ext4_image` on every input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banger_fuzz_checks::ext4_image(data));
