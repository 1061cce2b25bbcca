//! The configuration file, parsed and validated.
#![no_main]

use std::collections::BTreeMap;

use introspectd::config::FileConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = FileConfig::parse(text, &BTreeMap::new()) {
        let _ = file.validate();
    }
});
