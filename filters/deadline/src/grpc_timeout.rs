//! The gRPC `grpc-timeout` header: `TimeoutValue TimeoutUnit`, a positive integer of at most 8
//! ASCII digits followed by one of `H` (hours), `M` (minutes), `S` (seconds), `m` (millis),
//! `u` (micros), `n` (nanos) — per gRPC's "HTTP2 protocol" document.
//!
//! [`format`] picks the finest unit whose value fits in 8 digits and rounds *down*, so a
//! deadline written upstream is never longer than the one we hold.
//!
//! ```
//! use mesh_deadline::grpc_timeout::{format, parse};
//! use std::time::Duration;
//! assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
//! assert_eq!(format(Duration::from_millis(300)), "300000u");
//! assert_eq!(parse("5"), None); // no unit
//! ```

use std::time::Duration;

const MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value; `None` when it does not follow the wire format.
pub fn parse(s: &str) -> Option<Duration> {
    let bytes = s.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(value * 3600),
        b'M' => Duration::from_secs(value * 60),
        b'S' => Duration::from_secs(value),
        b'm' => Duration::from_millis(value),
        b'u' => Duration::from_micros(value),
        b'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value, rounding down to the finest unit that fits.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in UNITS {
        let value = nanos / per;
        if value <= u128::from(MAX_VALUE) {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(
            parse("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn refuses_what_the_wire_format_does_not_allow() {
        for bad in [
            "",
            "abc",
            "5",
            "S",
            "-5S",
            "+5S",
            "123456789S",
            "5s",
            "5 S",
            " 5S",
            "5SS",
            "1.5S",
            "٣S",
            "5\u{0}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_with_the_finest_unit_that_fits_in_eight_digits() {
        assert_eq!(format(Duration::from_nanos(1)), "1n");
        assert_eq!(format(Duration::from_millis(99)), "99000000n");
        assert_eq!(format(Duration::from_millis(300)), "300000u");
        assert_eq!(format(Duration::from_secs(5)), "5000000u");
        assert_eq!(format(Duration::from_secs(100)), "100000m");
        assert_eq!(format(Duration::from_secs(200_000)), "200000S");
        assert_eq!(format(Duration::ZERO), "0n");
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }

        #[test]
        fn format_then_parse_never_grows_and_loses_less_than_one_unit(nanos in 0u64..u64::MAX / 4) {
            let d = Duration::from_nanos(nanos);
            let s = format(d);
            let back = parse(&s).expect("formatted value parses");
            prop_assert!(back <= d);
            prop_assert!(s.len() <= 9);
            // The loss is below 1 unit of the chosen scale, which is < 1/10^7 of the value or < 1ns.
            prop_assert!((d - back).as_nanos() * 10_000_000 <= d.as_nanos().max(1) * 100);
        }

        #[test]
        fn parse_then_format_round_trips_in_value(value in 0u64..=99_999_999, unit in prop::sample::select(vec!['H','M','S','m','u','n'])) {
            let d = parse(&format!("{value}{unit}")).expect("valid");
            prop_assert_eq!(parse(&format(d)), Some(d));
        }
    }
}
