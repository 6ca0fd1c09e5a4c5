//! The controls of a request: each a request header or a query parameter (the header wins),
//! and the small helpers the handlers share.

use std::str::FromStr;

use http::request::Parts;
use http::{HeaderMap, HeaderValue};

/// Looks a control up as a request header first, then as a query parameter.
pub(super) struct Controls<'a> {
    headers: &'a HeaderMap,
    query: Vec<(String, String)>,
}

impl<'a> Controls<'a> {
    pub(super) fn new(parts: &'a Parts) -> Self {
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(pair), String::new()),
            })
            .collect();
        Controls {
            headers: &parts.headers,
            query,
        }
    }

    pub(super) fn get(&self, header: &str, param: &str) -> Option<String> {
        if let Some(value) = self.headers.get(header) {
            return Some(lossy(value));
        }
        self.query
            .iter()
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.clone())
    }

    pub(super) fn number<T: FromStr>(&self, header: &str, param: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(header, param) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| format!("bad {header} / {param} value {raw:?}: {e}")),
        }
    }

    pub(super) fn rate(&self, header: &str, param: &str) -> Result<Option<f64>, String> {
        match self.number::<f64>(header, param)? {
            Some(rate) if !(0.0..=1.0).contains(&rate) => Err(format!(
                "bad {header} / {param} value {rate}: must be within 0..=1"
            )),
            other => Ok(other),
        }
    }

    pub(super) fn flag(&self, header: &str, param: &str) -> Result<Option<bool>, String> {
        match self.get(header, param).as_deref().map(str::trim) {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false") => Ok(Some(false)),
            Some(other) => Err(format!(
                "bad {header} / {param} value {other:?}: expected 1, 0, true or false"
            )),
        }
    }
}

pub(super) fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(decoded) = hex {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

pub(super) fn parse_header<T: FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

pub(super) fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
}
