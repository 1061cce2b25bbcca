//! A state-log entry as a replica reads it back (from redb or a Redis Stream).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let change = introspectd::statelog::decode(data);
    let _ = (change.forget_after(), change.subject());
});
