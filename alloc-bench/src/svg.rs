//! Hand-written SVG bar chart of the overhead ratios (`alloc-bench/overhead.svg`).
//!
//! Called by the driver after a run; pure string generation, no I/O.

/// One bar: configuration name and its median CPU ratio to its base.
pub struct Bar {
    /// Configuration name (legend entry).
    pub config: String,
    /// Median CPU ratio (NaN = not measured; drawn as absent).
    pub ratio: f64,
}

const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal grouped bars: one group per workload, one bar per config.
/// The axis is linear from 0 to `clip`; longer bars are cut at `clip` and
/// labelled with their value. A dashed line marks 1.0 (no overhead).
pub fn chart(title: &str, groups: &[(String, Vec<Bar>)], clip: f64) -> String {
    let configs: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for (_, bars) in groups {
            for b in bars {
                if !v.contains(&b.config.as_str()) {
                    v.push(&b.config);
                }
            }
        }
        v
    };
    let color = |c: &str| {
        let i = configs.iter().position(|x| *x == c).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let (left, bar_h, gap, plot_w) = (120.0, 11.0, 14.0, 560.0);
    let legend_w = 190.0;
    let top = 40.0;
    let mut y = top;
    let mut body = String::new();
    let x_of = |r: f64| left + plot_w * (r.min(clip) / clip);
    for (wl, bars) in groups {
        let h = bars.len() as f64 * bar_h;
        body.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\" font-weight=\"bold\">{}</text>\n",
            left - 8.0,
            y + h / 2.0 + 4.0,
            esc(wl)
        ));
        for b in bars {
            if b.ratio.is_finite() {
                let w = x_of(b.ratio) - left;
                body.push_str(&format!(
                    "<rect x=\"{left:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {:.3}x</title></rect>\n",
                    bar_h - 1.0,
                    color(&b.config),
                    esc(wl),
                    esc(&b.config),
                    b.ratio
                ));
                body.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{:.2}{}</text>\n",
                    left + w + 3.0,
                    y + bar_h - 2.5,
                    b.ratio,
                    if b.ratio > clip { " (cut)" } else { "" }
                ));
            }
            y += bar_h;
        }
        y += gap;
    }
    let bottom = y;
    let mut axis = String::new();
    let mut t = 0.0;
    while t <= clip + 1e-9 {
        let x = x_of(t);
        axis.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{t:.1}x</text>\n",
            bottom + 14.0
        ));
        t += if clip > 4.0 { 1.0 } else { 0.5 };
    }
    let one = x_of(1.0);
    axis.push_str(&format!(
        "<line x1=\"{one:.1}\" y1=\"{top:.1}\" x2=\"{one:.1}\" y2=\"{bottom:.1}\" stroke=\"#000\" stroke-dasharray=\"4,3\"/>\n"
    ));
    let mut legend = String::new();
    for (i, c) in configs.iter().enumerate() {
        let ly = top + i as f64 * 16.0;
        let lx = left + plot_w + 60.0;
        legend.push_str(&format!(
            "<rect x=\"{lx:.1}\" y=\"{ly:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>\n",
            color(c),
            lx + 16.0,
            ly + 10.0,
            esc(c)
        ));
    }
    let width = left + plot_w + 60.0 + legend_w;
    let height = (bottom + 30.0).max(top + configs.len() as f64 * 16.0 + 20.0);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left:.1}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n\
         {axis}{body}{legend}</svg>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_bars_and_clips() {
        let g = vec![(
            "churn1".to_string(),
            vec![
                Bar {
                    config: "a".into(),
                    ratio: 1.02,
                },
                Bar {
                    config: "b<".into(),
                    ratio: 9.0,
                },
                Bar {
                    config: "c".into(),
                    ratio: f64::NAN,
                },
            ],
        )];
        let s = chart("t", &g, 3.0);
        assert!(s.starts_with("<svg"));
        assert_eq!(s.matches("<rect x=").count(), 2 + 3); // 2 bars + 3 legend boxes
        assert!(s.contains("9.00 (cut)"));
        assert!(s.contains("b&lt;"));
    }
}
