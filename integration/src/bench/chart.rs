//! `bench/chart.svg`: the median CPU overhead of every configuration, one bar per variant.

use std::fmt::Write as _;

use super::{median, Kind, Results, Variant};

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `bench/chart.svg`: horizontal bars of the median CPU overhead (µs/request above bare Envoy)
/// of every configuration but bare, one bar per variant.
pub fn render_svg(results: &Results) -> String {
    const COLORS: [&str; 5] = ["#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f"];
    let kinds: Vec<Kind> = results
        .kinds
        .iter()
        .copied()
        .filter(|k| *k != Kind::Bare)
        .collect();
    let values: Vec<Vec<Option<f64>>> = kinds
        .iter()
        .map(|&k| {
            Variant::ALL
                .iter()
                .map(|&v| median(&results.overhead(k, v)))
                .collect()
        })
        .collect();
    let all = values.iter().flatten().flatten().copied();
    let max = all.clone().fold(1.0_f64, f64::max);
    let min = all.fold(0.0_f64, f64::min);
    let (label_w, plot_w, bar_h, gap, top): (f64, f64, f64, f64, f64) =
        (240.0, 560.0, 9.0, 10.0, 50.0);
    let bars = Variant::ALL.len() as f64;
    let group_h = bar_h * bars + gap;
    let height = top + group_h * kinds.len() as f64 + 40.0;
    let width = (label_w + 35.0 + plot_w + 70.0).max(780.0);
    let span = max - min;
    // A margin left of the plot for the labels of negative bars.
    let x = |val: f64| label_w + 35.0 + (val - min) / span * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="18" font-size="13" font-weight="bold">Envoy CPU µs per request above bare Envoy (median over rounds)</text>"##
    );
    for (i, v) in Variant::ALL.iter().enumerate() {
        let lx = 10.0 + i as f64 * 170.0;
        let color = COLORS.get(i).copied().unwrap_or("#888888");
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="28" width="10" height="10" fill="{color}"/><text x="{:.0}" y="37">{}</text>"#,
            lx + 14.0,
            v.label()
        );
    }
    let zero = x(0.0);
    for (row, (kind, vals)) in kinds.iter().zip(&values).enumerate() {
        let y0 = top + row as f64 * group_h;
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y0 + bar_h * bars / 2.0 + 4.0,
            xml_escape(kind.label())
        );
        for (i, val) in vals.iter().enumerate() {
            let y = y0 + i as f64 * bar_h;
            let color = COLORS.get(i).copied().unwrap_or("#888888");
            match val {
                Some(val) => {
                    let (a, b) = (zero.min(x(*val)), zero.max(x(*val)));
                    // The value beside the bar's end: right of a positive bar, left of a negative one.
                    let (lx, anchor) = if *val < 0.0 {
                        (a - 3.0, "end")
                    } else {
                        (b + 3.0, "start")
                    };
                    let _ = writeln!(
                        s,
                        r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{lx:.1}" y="{:.1}" font-size="9" text-anchor="{anchor}">{val:.1}</text>"#,
                        (b - a).max(0.5),
                        bar_h - 1.0,
                        y + bar_h - 2.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9">n/a</text>"#,
                        zero + 3.0,
                        y + bar_h - 2.0
                    );
                }
            }
        }
    }
    let bottom = top + group_h * kinds.len() as f64;
    let _ = writeln!(
        s,
        r##"<line x1="{zero:.1}" y1="{top}" x2="{zero:.1}" y2="{bottom:.1}" stroke="#333333"/>"##
    );
    // Ticks.
    let step = nice_step(span / 6.0);
    let mut t = (min / step).ceil() * step;
    while t <= max + 1e-9 {
        let tx = x(t);
        // Never "-0".
        let t_shown = if t.abs() < step / 2.0 { 0.0 } else { t };
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{bottom:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#333333"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{t_shown:.0}</text>"##,
            bottom + 4.0,
            bottom + 16.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">µs per request</text>"#,
        label_w + 35.0 + plot_w / 2.0,
        bottom + 32.0
    );
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::test_support::results;

    #[test]
    fn chart_renders() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::NativeRbac, 49.0, 10100.0),
        ]);
        let svg = render_svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("native RBAC"));
        assert!(svg.contains(">-1.0<")); // the negative bar's label
    }
}
