//! SPIFFE IDs (mesh_spiffe_identity::id): `parse` never panics; an ID it accepts is exactly the
//! input, at most 2048 bytes, splits into a 1 to 255 byte trust domain and a path of non-empty
//! segments that join back to the input; `escape_for_log` stays within its byte limit and is
//! ASCII apart from the truncation marker.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_spiffe_identity::id::{escape_for_log, parse, SpiffeId, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let max = usize::from(max);
    let escaped = escape_for_log(s, max);
    assert!(escaped.len() <= max, "{s:?} -> {escaped:?}");
    let body = escaped.strip_suffix('…').unwrap_or(&escaped);
    assert!(
        body.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "{escaped:?}"
    );
    if s.len() * 4 <= max {
        // Room for every escape: nothing is cut.
        assert!(
            !escaped.ends_with('…') && escaped.len() >= s.len(),
            "{s:?} -> {escaped:?}"
        );
    }

    let parsed = parse(s);
    assert_eq!(s.parse::<SpiffeId>(), parsed.clone());
    let Ok(id) = parsed else {
        return;
    };
    assert_eq!(id.as_str(), s);
    assert!(s.len() <= MAX_ID_LEN);
    let td = id.trust_domain();
    assert!(!td.is_empty() && td.len() <= MAX_TRUST_DOMAIN_LEN, "{s:?}");
    assert!(
        td.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b)),
        "{s:?}"
    );
    let segments: Vec<&str> = id.segments().collect();
    assert!(!segments.is_empty(), "{s:?}");
    for segment in &segments {
        assert!(
            !segment.is_empty() && *segment != "." && *segment != "..",
            "{s:?}"
        );
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)),
            "{s:?}"
        );
    }
    assert_eq!(format!("spiffe://{td}/{}", segments.join("/")), s);
    assert_eq!(id.path(), format!("/{}", segments.join("/")));
});
