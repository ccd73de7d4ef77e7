#![no_main]

// The entry function lives in tests/fuzz_entry, shared with the stable smoke test. The worker
// catches str0m's panics on hostile offers (edge::offer_guard); only one that escapes is a crash.
libfuzzer_sys::fuzz_target!(
    init: zvon_fuzz_entry::report_caught_panics(),
    |data: &[u8]| zvon_fuzz_entry::publish_offer(data)
);
