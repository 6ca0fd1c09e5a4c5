//! What the machine and the other programs report: the measured Envoy's CPU time and memory
//! from `/proc`, `envoy --version`, and criterion's estimates of the micro-benchmarks. (Envoy's
//! counters are read from `/stats/prometheus` through [`crate::metrics`].)

use serde_json::Value;

/// utime + stime (clock ticks) of a process, from the text of `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 (index 0 here); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The version of `envoy --version` output: `envoy  version: <hash>/1.40.0/Clean/RELEASE/...`.
pub fn envoy_version(text: &str) -> String {
    let tail = text.split("version:").nth(1).unwrap_or(text).trim();
    let mut parts = tail.split('/');
    match (parts.next(), parts.next()) {
        (Some(hash), Some(version)) if !version.is_empty() => {
            let short: String = hash.chars().take(12).collect();
            format!("{version} ({short})")
        }
        _ => tail.lines().next().unwrap_or("?").to_owned(),
    }
}

/// A criterion estimate in ns: the slope when criterion fitted one, else the mean, with the
/// 95 % confidence bounds.
pub fn criterion_estimate(json: &str) -> Option<(f64, f64, f64)> {
    let v: Value = serde_json::from_str(json).ok()?;
    let e = ["slope", "mean"]
        .iter()
        .find_map(|k| v.get(*k).filter(|x| !x.is_null()))?;
    let point = e.get("point_estimate")?.as_f64()?;
    let ci = e.get("confidence_interval")?;
    Some((
        point,
        ci.get("lower_bound")?.as_f64()?,
        ci.get("upper_bound")?.as_f64()?,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "4242 (envoy (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 9 0 100 1000000 5000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        let status = "Name:\tenvoy\nVmPeak:\t  100 kB\nVmRSS:\t   51234 kB\nThreads: 9\n";
        assert_eq!(vm_rss_kib(status), Some(51234));
    }

    #[test]
    fn criterion_estimates_and_envoy_versions_are_read() {
        let j = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":10.0,"upper_bound":12.0},"point_estimate":11.0,"standard_error":0.1},"slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":9.0,"upper_bound":10.0},"point_estimate":9.5,"standard_error":0.1}}"#;
        assert_eq!(criterion_estimate(j), Some((9.5, 9.0, 10.0)));
        let j = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":10.0,"upper_bound":12.0},"point_estimate":11.0,"standard_error":0.1},"slope":null}"#;
        assert_eq!(criterion_estimate(j), Some((11.0, 10.0, 12.0)));
        assert_eq!(
            envoy_version(
                "\nenvoy  version: 0123456789abcdef0123/1.40.0/Clean/RELEASE/BoringSSL\n"
            ),
            "1.40.0 (0123456789ab)"
        );
    }
}
