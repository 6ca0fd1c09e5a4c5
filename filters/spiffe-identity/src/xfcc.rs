//! Envoy's `x-forwarded-client-cert` (XFCC) header, parsed strictly.
//!
//! The format, from Envoy's documentation of the header (HTTP connection manager, "HTTP header
//! manipulation"): the value is a `,`-separated list of *elements*, one per proxy hop; an element
//! is a `;`-separated list of `key=value` pairs. Keys are case-insensitive (`By`, `Hash`, `Cert`,
//! `Chain`, `Subject`, `URI`, `DNS`), values case-sensitive. A value that contains `,`, `;` or
//! `=` is double-quoted, and a `"` inside it is written `\"`. `DNS` and `URI` repeat within an
//! element, one per SAN of the client certificate (with `set_current_client_cert_details:
//! {uri: true}`, every URI SAN), and `By` may repeat too (one per URI SAN of the proxy's own
//! certificate), so all three are lists here; Envoy always quotes `Subject`, `Cert` and `Chain`.
//!
//! ```text
//! By=spiffe://mesh/ns/a/sa/gw;Hash=4f1c…;Subject="CN=a, O=\"x\"";URI=spiffe://mesh/ns/b/sa/api
//! ```
//!
//! This parser decides what the caller's identity is, so it refuses anything it would otherwise
//! have to guess about, rather than picking an interpretation:
//!
//! - a pair without `=`, an empty key, a key outside `[A-Za-z0-9-_]`, an empty element or pair
//!   (`,,`, a trailing `,` or `;`);
//! - an unterminated quoted value, or anything but `;`, `,` or the end after a closing quote;
//! - `"`, `=` or whitespace inside an unquoted value;
//! - a control character anywhere (tab excepted, as whitespace);
//! - `Hash`, `Cert`, `Chain` or `Subject` twice in one element (they describe one certificate).
//!
//! Whitespace (space, tab) is allowed only around elements, as in any comma-separated HTTP list.
//! Inside quotes, `\"` is a quote and `\\` a backslash; any other `\c` is kept as is (`\,` stays
//! `\,`), so a Subject in RFC 2253 form survives. An empty header has no elements.
//!
//! The work is bounded: a header over 64 KiB, more than 100 elements, or more than 100 pairs in
//! one element is refused, each with its own error, and parsing is one pass over the bytes.
//!
//! The parser does not judge the values. Envoy writes `By`, `URI` and `DNS` values without
//! quoting them, so a URI SAN containing `,` or `;` would show up as extra pairs or elements;
//! a SPIFFE ID cannot contain either, and the X.509-SVID specification (§2, §5.2) requires an
//! SVID to carry exactly one URI SAN, which callers must check on [`Element::uris`].
//!
//! ```
//! use mesh_spiffe_identity::xfcc::parse;
//! let header = r#"By=spiffe://a/b;Hash=abc;Subject="CN=x, O=\"y\"";URI=spiffe://c/d"#;
//! let elements = parse(header).unwrap();
//! assert_eq!(elements[0].by(), ["spiffe://a/b"]);
//! assert_eq!(elements[0].hash(), Some("abc"));
//! assert_eq!(elements[0].get_all("subject"), [r#"CN=x, O="y""#]);
//! assert_eq!(elements[0].uris(), ["spiffe://c/d"]);
//! assert!(parse(r#"URI="spiffe://c/d"#).is_err()); // unterminated quote
//! ```

use std::fmt;

/// The longest header accepted, in bytes.
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// The most elements (hops) accepted in one header.
pub const MAX_ELEMENTS: usize = 100;
/// The most `key=value` pairs accepted in one element.
pub const MAX_PAIRS: usize = 100;

/// Keys that describe the one client certificate of an element, so appear at most once.
const SINGLE_KEYS: [&str; 4] = ["Hash", "Cert", "Chain", "Subject"];

/// One hop of the header: its `key=value` pairs, in order, values unquoted and unescaped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pairs: Vec<(String, String)>,
}

impl Element {
    /// Every pair, in order, keys as written.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every value of `key` (compared case-insensitively), in order.
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The URI SANs of the certificate of the proxy that added this element.
    pub fn by(&self) -> Vec<&str> {
        self.get_all("By")
    }

    /// The SHA-256 digest of the client certificate, as Envoy writes it (hex).
    pub fn hash(&self) -> Option<&str> {
        self.get_all("Hash").first().copied()
    }

    /// The URI SANs of the client certificate.
    pub fn uris(&self) -> Vec<&str> {
        self.get_all("URI")
    }
}

/// Why a header was refused. Positions are byte offsets into the header; `element` counts from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XfccError {
    /// Longer than [`MAX_HEADER_LEN`].
    TooLong { len: u64 },
    /// More than [`MAX_ELEMENTS`] elements.
    TooManyElements,
    /// More than [`MAX_PAIRS`] pairs in one element.
    TooManyPairs { element: u32 },
    /// A control character other than tab.
    ControlCharacter { at: u32 },
    /// Nothing between two `,`, or a `,` at the end.
    EmptyElement { at: u32 },
    /// A pair with no `=` (an empty pair, `;;` or a trailing `;`, included).
    MissingEquals { at: u32 },
    /// `=` with no key before it.
    EmptyKey { at: u32 },
    /// A key with a character outside `[A-Za-z0-9-_]`.
    InvalidKey { at: u32 },
    /// `Hash`, `Cert`, `Chain` or `Subject` a second time in one element.
    DuplicateKey { at: u32 },
    /// A `"` that opens a value and is never closed.
    UnterminatedQuote { at: u32 },
    /// Something other than `;`, `,` or the end after a closing quote.
    GarbageAfterQuote { at: u32 },
    /// `"`, `=` or whitespace in a value that is not quoted.
    UnquotedValueChar { at: u32 },
}

impl fmt::Display for XfccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XfccError::TooLong { len } => {
                write!(f, "{len} bytes, longer than {MAX_HEADER_LEN}")
            }
            XfccError::TooManyElements => write!(f, "more than {MAX_ELEMENTS} elements"),
            XfccError::TooManyPairs { element } => {
                write!(f, "more than {MAX_PAIRS} pairs in element [{element}]")
            }
            XfccError::ControlCharacter { at } => write!(f, "control character at byte {at}"),
            XfccError::EmptyElement { at } => write!(f, "empty element at byte {at}"),
            XfccError::MissingEquals { at } => write!(f, "pair without '=' at byte {at}"),
            XfccError::EmptyKey { at } => write!(f, "empty key at byte {at}"),
            XfccError::InvalidKey { at } => {
                write!(f, "key with a character outside [A-Za-z0-9-_] at byte {at}")
            }
            XfccError::DuplicateKey { at } => write!(
                f,
                "Hash, Cert, Chain or Subject repeated in one element at byte {at}"
            ),
            XfccError::UnterminatedQuote { at } => {
                write!(f, "unterminated quoted value from byte {at}")
            }
            XfccError::GarbageAfterQuote { at } => {
                write!(f, "unexpected text after a closing quote at byte {at}")
            }
            XfccError::UnquotedValueChar { at } => write!(
                f,
                "'\"', '=' or whitespace in an unquoted value at byte {at}"
            ),
        }
    }
}

impl std::error::Error for XfccError {}

/// Parses an `x-forwarded-client-cert` value into its elements, first hop first.
pub fn parse(header: &str) -> Result<Vec<Element>, XfccError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(XfccError::TooLong {
            len: u64::try_from(header.len()).unwrap_or(u64::MAX),
        });
    }
    let mut p = Parser {
        s: header,
        bytes: header.as_bytes(),
        i: 0,
    };
    if let Some(at) = p
        .bytes
        .iter()
        .position(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(XfccError::ControlCharacter { at: pos(at) });
    }
    let mut elements = Vec::new();
    p.skip_whitespace();
    if p.peek().is_none() {
        return Ok(elements);
    }
    loop {
        if elements.len() == MAX_ELEMENTS {
            return Err(XfccError::TooManyElements);
        }
        let element = p.element(u32::try_from(elements.len()).unwrap_or(u32::MAX))?;
        elements.push(element);
        p.skip_whitespace();
        match p.peek() {
            None => return Ok(elements),
            Some(b',') => p.i += 1,
            // `element` stops only at `,`, whitespace before one, or the end.
            Some(_) => return Err(XfccError::UnquotedValueChar { at: p.at() }),
        }
        p.skip_whitespace();
        if matches!(p.peek(), None | Some(b',')) {
            return Err(XfccError::EmptyElement { at: p.at() });
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    bytes: &'a [u8],
    i: usize,
}

fn pos(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_whitespace(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.i).copied()
    }

    fn at(&self) -> u32 {
        pos(self.i)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_whitespace) {
            self.i += 1;
        }
    }

    /// `text[from..to]`; both ends are at ASCII delimiters, so always char boundaries.
    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or_default()
    }

    /// One element; stops at `,`, at the end, or after whitespace that precedes either.
    fn element(&mut self, index: u32) -> Result<Element, XfccError> {
        if matches!(self.peek(), None | Some(b',')) {
            return Err(XfccError::EmptyElement { at: self.at() });
        }
        let mut element = Element::default();
        loop {
            if element.pairs.len() == MAX_PAIRS {
                return Err(XfccError::TooManyPairs { element: index });
            }
            let key_at = self.i;
            let key = self.key()?;
            let quoted = self.peek() == Some(b'"');
            let value = if quoted {
                self.quoted()?
            } else {
                self.unquoted()?
            };
            let single = SINGLE_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key));
            if single
                && element
                    .pairs
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(key))
            {
                return Err(XfccError::DuplicateKey { at: pos(key_at) });
            }
            element.pairs.push((key.to_string(), value));
            match self.peek() {
                Some(b';') => self.i += 1,
                None | Some(b',') => return Ok(element),
                Some(_) => {
                    // Whitespace: allowed only when the element ends there.
                    let at = self.at();
                    self.skip_whitespace();
                    if matches!(self.peek(), None | Some(b',')) {
                        return Ok(element);
                    }
                    return Err(if quoted {
                        XfccError::GarbageAfterQuote { at }
                    } else {
                        XfccError::UnquotedValueChar { at }
                    });
                }
            }
        }
    }

    /// A key and its `=`; leaves `i` on the value.
    fn key(&mut self) -> Result<&'a str, XfccError> {
        let start = self.i;
        while self.peek().is_some_and(is_key_byte) {
            self.i += 1;
        }
        let end = self.i;
        match self.peek() {
            Some(b'=') if start == end => Err(XfccError::EmptyKey { at: pos(start) }),
            Some(b'=') => {
                self.i += 1;
                Ok(self.slice(start, end))
            }
            None | Some(b';' | b',') => Err(XfccError::MissingEquals { at: pos(start) }),
            Some(_) => {
                // A character no key has: is there an `=` in this pair at all?
                let rest = self.bytes.get(end..).unwrap_or_default();
                let pair_len = rest
                    .iter()
                    .position(|&b| b == b';' || b == b',')
                    .unwrap_or(rest.len());
                if rest.get(..pair_len).unwrap_or_default().contains(&b'=') {
                    Err(XfccError::InvalidKey { at: pos(end) })
                } else {
                    Err(XfccError::MissingEquals { at: pos(start) })
                }
            }
        }
    }

    /// A value up to `;`, `,`, whitespace or the end; may be empty (Envoy writes `URI=` for a
    /// certificate without one).
    fn unquoted(&mut self) -> Result<String, XfccError> {
        let start = self.i;
        while let Some(b) = self.peek() {
            match b {
                b';' | b',' | b' ' | b'\t' => break,
                b'"' | b'=' => return Err(XfccError::UnquotedValueChar { at: self.at() }),
                _ => self.i += 1,
            }
        }
        Ok(self.slice(start, self.i).to_string())
    }

    /// A value in double quotes, `i` on the opening one; unescapes `\"` and `\\`.
    fn quoted(&mut self) -> Result<String, XfccError> {
        let open = self.i;
        let mut j = open + 1;
        let close = loop {
            match self.bytes.get(j) {
                None => return Err(XfccError::UnterminatedQuote { at: pos(open) }),
                Some(b'"') => break j,
                // The escaped byte may be any byte; a `\` at the very end leaves no closing quote.
                Some(b'\\') => j += 2,
                Some(_) => j += 1,
            }
        };
        self.i = close + 1;
        let raw = self.slice(open + 1, close);
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(e @ ('"' | '\\')) => value.push(e),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => value.push('\\'),
                }
            } else {
                value.push(c);
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn one(header: &str) -> Element {
        let mut elements = parse(header).unwrap_or_else(|e| panic!("{header:?}: {e}"));
        assert_eq!(elements.len(), 1, "{header:?}");
        elements.pop().unwrap()
    }

    fn pairs(e: &Element) -> Vec<(&str, &str)> {
        e.pairs().collect()
    }

    /// The value as it is written inside quotes.
    fn quote(value: &str) -> String {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }

    #[test]
    fn reads_an_envoy_style_element() {
        let e = one("By=spiffe://a/b;Hash=abc;URI=spiffe://c/d");
        assert_eq!(e.by(), ["spiffe://a/b"]);
        assert_eq!(e.hash(), Some("abc"));
        assert_eq!(e.uris(), ["spiffe://c/d"]);
        assert_eq!(
            pairs(&e),
            [
                ("By", "spiffe://a/b"),
                ("Hash", "abc"),
                ("URI", "spiffe://c/d")
            ]
        );
    }

    #[test]
    fn reads_the_examples_of_envoys_documentation() {
        let e = one("By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com");
        assert_eq!(
            e.get_all("Subject"),
            ["/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"]
        );
        assert_eq!(e.get_all("DNS"), ["lyft.com", "www.lyft.com"]);
        let two = parse("By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=http://testclient.lyft.com,By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;URI=http://frontend.lyft.com").unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].uris(), ["http://testclient.lyft.com"]);
        assert_eq!(two[1].by(), ["http://backend.lyft.com"]);
        assert_eq!(two[1].uris(), ["http://frontend.lyft.com"]);
    }

    #[test]
    fn a_quoted_subject_keeps_its_commas_semicolons_equals_and_escaped_quotes() {
        let e = one(r#"Hash=h;Subject="CN=a, O=\"Quoted; Inc\", L=x=y";URI=spiffe://td/a"#);
        assert_eq!(e.get_all("Subject"), [r#"CN=a, O="Quoted; Inc", L=x=y"#]);
        assert_eq!(e.uris(), ["spiffe://td/a"]);
        // `\\` is one backslash; other escapes stay as written (RFC 2253 `\,`).
        let e = one(r#"Subject="CN=a\\\,b\\";URI=x"#);
        assert_eq!(e.get_all("subject"), [r"CN=a\\,b\"]);
        assert_eq!(one(r#"Subject="""#).get_all("Subject"), [""]);
    }

    #[test]
    fn keys_are_case_insensitive_and_values_are_not() {
        let e = one("by=spiffe://A/b;HASH=AbC;uri=spiffe://c/D;Uri=x");
        assert_eq!(e.by(), ["spiffe://A/b"]);
        assert_eq!(e.hash(), Some("AbC"));
        assert_eq!(e.uris(), ["spiffe://c/D", "x"]);
        assert_eq!(e.get_all("URI"), e.get_all("uri"));
    }

    #[test]
    fn uri_and_by_may_repeat_in_one_element() {
        let e = one("By=spiffe://a/1;By=spiffe://a/2;Hash=h;URI=spiffe://c/d;URI=spiffe://c/e");
        assert_eq!(e.by(), ["spiffe://a/1", "spiffe://a/2"]);
        assert_eq!(e.uris(), ["spiffe://c/d", "spiffe://c/e"]);
    }

    #[test]
    fn reads_several_elements_in_order() {
        let es = parse("By=spiffe://gw/a;Hash=1;URI=spiffe://c/1, By=spiffe://gw/b;Hash=2;URI=spiffe://c/2 ,\tHash=3").unwrap();
        assert_eq!(es.len(), 3);
        assert_eq!(
            es.iter().map(|e| e.hash()).collect::<Vec<_>>(),
            [Some("1"), Some("2"), Some("3")]
        );
        assert_eq!(es[1].uris(), ["spiffe://c/2"]);
        assert!(es[2].uris().is_empty() && es[2].by().is_empty());
    }

    #[test]
    fn empty_values_and_unknown_keys_are_kept() {
        let e = one("URI=;Hash=h;X-Custom_1=v;DNS=");
        assert_eq!(e.uris(), [""]);
        assert_eq!(e.get_all("x-custom_1"), ["v"]);
        assert_eq!(e.get_all("DNS"), [""]);
        assert_eq!(e.get_all("Chain"), Vec::<&str>::new());
        assert_eq!(one("Cert=\"a%20b\"").hash(), None);
    }

    #[test]
    fn an_empty_header_has_no_elements() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("  "), Ok(vec![]));
    }

    #[test]
    fn refuses_malformed_headers_instead_of_guessing() {
        use XfccError::*;
        for (header, want) in [
            (r#"URI="spiffe://c/d"#, UnterminatedQuote { at: 4 }),
            (r#"Subject="a\";URI=x"#, UnterminatedQuote { at: 8 }),
            (r#"Subject="a\"#, UnterminatedQuote { at: 8 }),
            ("By=a;Hash", MissingEquals { at: 5 }),
            ("Hash", MissingEquals { at: 0 }),
            ("By=a;;URI=b", MissingEquals { at: 5 }),
            ("By=a;", MissingEquals { at: 5 }),
            ("By=a;URI=b,URI", MissingEquals { at: 11 }),
            ("hello world", MissingEquals { at: 0 }),
            ("=abc", EmptyKey { at: 0 }),
            ("By=a;=b", EmptyKey { at: 5 }),
            ("U RI=b", InvalidKey { at: 1 }),
            ("\"URI\"=b", InvalidKey { at: 0 }),
            ("URI.x=b", InvalidKey { at: 3 }),
            (r#"Subject="a"b;URI=x"#, GarbageAfterQuote { at: 11 }),
            (r#"Subject="a" b"#, GarbageAfterQuote { at: 11 }),
            (r#"Subject="a""b""#, GarbageAfterQuote { at: 11 }),
            (r#"Subject="a"=b"#, GarbageAfterQuote { at: 11 }),
            (r#"URI=ab"c""#, UnquotedValueChar { at: 6 }),
            ("URI=a=b", UnquotedValueChar { at: 5 }),
            ("URI=a b", UnquotedValueChar { at: 5 }),
            ("URI= a", UnquotedValueChar { at: 4 }),
            ("URI=a ;Hash=b", UnquotedValueChar { at: 5 }),
            ("URI=a,,URI=b", EmptyElement { at: 6 }),
            ("URI=a, ,URI=b", EmptyElement { at: 7 }),
            ("URI=a,", EmptyElement { at: 6 }),
            (",URI=a", EmptyElement { at: 0 }),
            ("URI=a\r\nX: y", ControlCharacter { at: 5 }),
            ("URI=\"a\u{0}\"", ControlCharacter { at: 6 }),
            ("Hash=a;Hash=b", DuplicateKey { at: 7 }),
            ("Subject=\"a\";subject=\"b\"", DuplicateKey { at: 12 }),
            ("Cert=\"a\";CERT=\"a\"", DuplicateKey { at: 9 }),
            ("Chain=a;Chain=a", DuplicateKey { at: 8 }),
        ] {
            assert_eq!(parse(header), Err(want), "{header:?}");
        }
    }

    #[test]
    fn bounds_the_header_length() {
        let exact = format!("Cert={}", quote(&"a".repeat(MAX_HEADER_LEN - 7)));
        assert_eq!(exact.len(), 65536);
        assert_eq!(one(&exact).get_all("Cert")[0].len(), MAX_HEADER_LEN - 7);
        let over = format!("{exact} ");
        assert_eq!(parse(&over), Err(XfccError::TooLong { len: 65537 }));
    }

    #[test]
    fn bounds_the_number_of_elements() {
        let element = "By=spiffe://a/b;URI=spiffe://c/d";
        let hundred = vec![element; 100].join(",");
        assert_eq!(parse(&hundred).unwrap().len(), 100);
        let more = vec![element; 101].join(",");
        assert_eq!(parse(&more), Err(XfccError::TooManyElements));
    }

    #[test]
    fn bounds_the_number_of_pairs_in_an_element() {
        let hundred = vec!["DNS=a"; 100].join(";");
        assert_eq!(one(&hundred).get_all("dns").len(), 100);
        let more = vec!["DNS=a"; 101].join(";");
        assert_eq!(parse(&more), Err(XfccError::TooManyPairs { element: 0 }));
        assert_eq!(
            parse(&format!("URI=x,{more}")),
            Err(XfccError::TooManyPairs { element: 1 })
        );
    }

    #[test]
    fn errors_read_as_short_reasons() {
        assert_eq!(
            XfccError::UnterminatedQuote { at: 4 }.to_string(),
            "unterminated quoted value from byte 4"
        );
        assert_eq!(
            XfccError::TooManyElements.to_string(),
            "more than 100 elements"
        );
        assert_eq!(
            XfccError::TooManyPairs { element: 2 }.to_string(),
            "more than 100 pairs in element [2]"
        );
        assert_eq!(
            XfccError::TooLong { len: 70000 }.to_string(),
            "70000 bytes, longer than 65536"
        );
        assert_eq!(
            XfccError::MissingEquals { at: 5 }.to_string(),
            "pair without '=' at byte 5"
        );
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,20}", "[\",;=\\\\ a]{0,12}"]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "By",
            "by",
            "Hash",
            "Cert",
            "Chain",
            "Subject",
            "URI",
            "uri",
            "DNS",
            "X-Extra_1",
        ])
    }

    /// Pairs in which Hash, Cert, Chain and Subject appear at most once.
    fn element_pairs() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        prop::collection::vec((key(), value()), 1..12).prop_map(|pairs| {
            let mut kept: Vec<(&'static str, String)> = Vec::new();
            for (k, v) in pairs {
                let single = SINGLE_KEYS.iter().any(|s| s.eq_ignore_ascii_case(k));
                if !(single && kept.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(k))) {
                    kept.push((k, v));
                }
            }
            kept
        })
    }

    fn write(pairs: &[(&str, String)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(";")
    }

    proptest! {
        #[test]
        fn an_element_with_every_value_quoted_and_escaped_parses_back_to_the_same_pairs(pairs in element_pairs()) {
            let header = write(&pairs);
            let e = one(&header);
            let got: Vec<(&str, &str)> = e.pairs().collect();
            let want: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn several_quoted_elements_parse_back_in_order(elements in prop::collection::vec(element_pairs(), 1..5), sep in prop::sample::select(vec![",", ", ", " ,\t"])) {
            let header = elements.iter().map(|p| write(p)).collect::<Vec<_>>().join(sep);
            let parsed = parse(&header).unwrap();
            prop_assert_eq!(parsed.len(), elements.len());
            for (e, pairs) in parsed.iter().zip(&elements) {
                let want: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                prop_assert_eq!(e.pairs().collect::<Vec<_>>(), want);
            }
        }

        #[test]
        fn unquoted_spiffe_uris_parse_back(uris in prop::collection::vec("spiffe://[a-z0-9.-]{1,10}(/[a-zA-Z0-9._-]{1,8}){1,4}", 1..4)) {
            let header = uris.iter().map(|u| format!("URI={u}")).collect::<Vec<_>>().join(";");
            let e = one(&header);
            prop_assert_eq!(e.uris(), uris.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[a-zA-Z=;,\" \t\\\\é]{0,60}") {
            if let Ok(elements) = parse(&s) {
                prop_assert!(elements.len() <= MAX_ELEMENTS);
                for e in &elements {
                    prop_assert!(e.pairs().count() >= 1 && e.pairs().count() <= MAX_PAIRS);
                    prop_assert!(e.pairs().all(|(k, _)| !k.is_empty()));
                }
            }
        }
    }
}
