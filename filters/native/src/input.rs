//! The pure conversions the adapter applies to the bytes Envoy hands it, kept apart from the
//! pointer handling in `ffi` so that they can be tested and fuzzed without Envoy
//! (`fuzz/fuzz_targets/native_stream.rs`):
//!
//! - [`text`]: a header name or value (Envoy's header maps hold bytes, the kit's `Host` speaks
//!   `String`);
//! - [`status_of`]: the `:status` of an HTTP callout's answer.

/// A header name or value as the stages see it: the bytes as UTF-8, each invalid sequence
/// replaced by U+FFFD (Envoy does not promise UTF-8; a stage never fails on it, and a value it
/// has to parse is refused by the parser, not by the adapter).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `:status` of a callout's answer: the first `:status` pair whose value is a number
/// (surrounding whitespace allowed) that fits in a `u32`; `None` when there is none.
pub fn status_of<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Option<u32> {
    pairs.into_iter().find_map(|(k, v)| {
        (k == b":status")
            .then(|| std::str::from_utf8(v).ok()?.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pairs: &[(&str, &[u8])]) -> Option<u32> {
        status_of(pairs.iter().map(|(k, v)| (k.as_bytes(), *v)))
    }

    #[test]
    fn text_keeps_utf8_and_replaces_what_is_not() {
        assert_eq!(text(b"application/grpc"), "application/grpc");
        assert_eq!(text("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(text(b""), "");
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(text(b"\xc3"), "\u{fffd}", "a truncated sequence");
        assert_eq!(
            text(b"\xed\xa0\x80"),
            "\u{fffd}\u{fffd}\u{fffd}",
            "a surrogate"
        );
        // Bytes that are valid UTF-8 pass as they are, control characters included: what a
        // stage writes back is the stage's business.
        assert_eq!(text(b"a\r\n\0"), "a\r\n\0");
    }

    #[test]
    fn the_status_is_the_first_numeric_status_pair() {
        assert_eq!(status(&[(":status", b"200")]), Some(200));
        assert_eq!(
            status(&[("content-type", b"text/plain"), (":status", b"503")]),
            Some(503)
        );
        assert_eq!(status(&[(":status", b" 204 ")]), Some(204), "spaces");
        assert_eq!(status(&[(":status", b"\t404\r\n")]), Some(404));
        assert_eq!(
            status(&[(":status", b"abc"), (":status", b"201")]),
            Some(201),
            "a non-numeric one is skipped"
        );
        assert_eq!(
            status(&[(":status", b"200"), (":status", b"500")]),
            Some(200)
        );
    }

    #[test]
    fn no_status_when_missing_or_not_a_number() {
        assert_eq!(status(&[]), None);
        assert_eq!(status(&[("status", b"200"), (":Status", b"200")]), None);
        assert_eq!(status(&[(":status", b"")]), None);
        assert_eq!(status(&[(":status", b"ok")]), None);
        assert_eq!(status(&[(":status", b"2 00")]), None);
        assert_eq!(status(&[(":status", b"-1")]), None);
        assert_eq!(status(&[(":status", b"20\xff")]), None, "not UTF-8");
        assert_eq!(status(&[(":status", b"4294967295")]), Some(u32::MAX));
        assert_eq!(status(&[(":status", b"4294967296")]), None, "overflow");
        assert_eq!(status(&[(":status", b"99999999999999999999")]), None);
    }
}
