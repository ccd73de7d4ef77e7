#![no_main]

// The entry function lives in tests/fuzz_entry, shared with the stable smoke test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| zvon_fuzz_entry::recording(data));
