//! `x-forwarded-client-cert` (mesh_spiffe_identity::xfcc): `parse` never panics; what it
//! accepts stays within the element and pair bounds, and written back with every value quoted
//! (`"` and `\` escaped) parses to the same elements.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_spiffe_identity::xfcc::{parse, Element, MAX_ELEMENTS, MAX_HEADER_LEN, MAX_PAIRS};

fn write(elements: &[Element]) -> String {
    let mut out = String::new();
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, (k, v)) in e.pairs().enumerate() {
            if j > 0 {
                out.push(';');
            }
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&v.replace('\\', "\\\\").replace('"', "\\\""));
            out.push('"');
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(elements) = parse(s) else {
        return;
    };
    assert!(s.len() <= MAX_HEADER_LEN);
    assert!(elements.len() <= MAX_ELEMENTS);
    for e in &elements {
        let pairs = e.pairs().count();
        assert!(pairs > 0 && pairs <= MAX_PAIRS, "{s:?}");
        for (k, _) in e.pairs() {
            assert!(
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{k:?} in {s:?}"
            );
        }
        assert!(e.get_all("hash").len() <= 1, "{s:?}");
        let _ = (e.by(), e.hash(), e.uris());
    }
    let written = write(&elements);
    if written.len() <= MAX_HEADER_LEN {
        assert_eq!(
            parse(&written).as_ref(),
            Ok(&elements),
            "{s:?} -> {written:?}"
        );
    }
});
