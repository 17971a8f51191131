//! Feeds a sequence of requests to the session rules on the embedded store: the input is
//! split at 0xFF bytes (never part of UTF-8) into request bodies, each parsed as the server
//! does and handled in turn by one `SessionService`, with time paused so that long polls end
//! at once. Checks that no request panics (debug assertions catch integer overflow in the
//! lifetime and limit arithmetic) and that every answer writes and reads back as a message.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use redsess_shim::dsc::{self, Endpoint};
use redsess_shim::session::{SessionService, Settings};
use redsess_shim::soap;
use redsess_shim::store::memory::MemoryStore;

/// Unix seconds the service's clock stands at: late 2026.
const NOW: i64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let service = SessionService::new(
            Arc::new(MemoryStore::new()),
            Settings::default(),
            Arc::new(|| NOW),
            stopped,
        );
        for body in data.split(|&b| b == 0xFF).take(16) {
            let Ok(op) = soap::read_operation(body) else { continue };
            for endpoint in [Endpoint::Client, Endpoint::Admin] {
                let Ok(request) = dsc::parse_request(endpoint, &op) else { continue };
                if let Ok(response) = service.handle(request).await {
                    let xml = response.to_xml();
                    assert!(soap::read_operation(xml.as_bytes()).is_ok(), "an answer must read back: {xml}");
                }
            }
        }
    });
});
