//! Arbitrary text into `SocketId`'s parser.
//!
//! Nothing may panic. What parses is `<digits>.<digits>`, and its printed form parses back to the
//! same id (the text itself may differ only by leading zeros); every id printed from two integers
//! parses back.

#![no_main]

use herald_protocol::SocketId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 16 {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let id = SocketId::new(word(&data[..8]), word(&data[8..16]));
        assert_eq!(id.to_string().parse::<SocketId>(), Ok(id));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<SocketId>() {
        let (high, low) = text.split_once('.').expect("a parsed id has a dot");
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        assert!(digits(high) && digits(low), "{text:?}");
        let printed = id.to_string();
        assert_eq!(printed.parse::<SocketId>(), Ok(id));
        let trim = |p: &str| match p.trim_start_matches('0') {
            "" => "0".to_owned(),
            rest => rest.to_owned(),
        };
        assert_eq!(printed, format!("{}.{}", trim(high), trim(low)));
    }
});
