//! Request normalization on arbitrary text: never panics, and normalizing again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::normalize::{normalize_host, normalize_path, normalize_target};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    // Host: idempotent.
    let h = normalize_host(s);
    assert_eq!(
        normalize_host(&h),
        h,
        "normalize_host is not idempotent on {s:?}"
    );

    // Path: an accepted path normalizes to itself.
    if let Ok(p) = normalize_path(s) {
        assert_eq!(
            normalize_path(&p).as_ref(),
            Ok(&p),
            "normalize_path is not idempotent on {s:?}"
        );
    }

    // Origin-form: accepted exactly when its path is (the query is never judged).
    if s.starts_with('/') && !s.contains('#') {
        let path = s.split_once('?').map_or(s, |(p, _)| p);
        assert_eq!(
            normalize_target(s).map(|t| t.path),
            normalize_path(path),
            "origin-form {s:?} and its path are judged differently"
        );
    }

    // Target: what is forwarded (path and query) is accepted again, unchanged.
    if let Ok(t) = normalize_target(s) {
        let forwarded = t.path_and_query();
        match normalize_target(&forwarded) {
            Ok(again) => {
                assert_eq!(
                    (&again.path, &again.query),
                    (&t.path, &t.query),
                    "normalize_target is not idempotent on {s:?} (forwarded {forwarded:?})"
                );
                assert_eq!(again.authority, None, "{forwarded:?} grew an authority");
            }
            Err(e) => panic!(
                "normalize_target accepted {s:?} but rejects what it forwards, {forwarded:?}: {e:?}"
            ),
        }
        if let Some(a) = &t.authority {
            assert_eq!(
                &normalize_host(a),
                a,
                "authority of {s:?} is not normalized"
            );
        }
    }
});
