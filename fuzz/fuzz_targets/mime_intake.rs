//! The MIME intake and classifier: any bytes are either a root-level
//! PGP/MIME structure or a rejection naming the problem, never a panic,
//! within the allocation limit libFuzzer is run with (`-malloc_limit_mb`).
#![no_main]

use embargo_relay::intake::mime::{self, MimeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    match mime::parse(raw, &MimeLimits::default()) {
        Ok(incoming) => {
            assert!(!incoming.from.is_empty());
            if let mime::Protected::Signed(signed) = &incoming.body {
                // The signed part is a slice of what came in, never more.
                assert!(signed.signed_part.expose().len() <= raw.len());
            }
        }
        Err(rejection) => assert!(!rejection.to_string().is_empty()),
    }
    // The other readers of untrusted MIME: a decrypted entity, a join
    // request, and the advisory a signed entity may carry.
    let limits = MimeLimits::default();
    if let Ok(entity) = mime::signed_entity(raw, &limits) {
        assert!(entity.signed_part.expose().len() <= raw.len());
    }
    if let Ok(request) = mime::plain_request(raw, &limits) {
        assert!(request.text.len() <= 64 * 1024 + 32);
    }
    let _ = embargo_relay::embargo::public_advisory(raw);
    let _ = mime::attached_keys(raw);
});
