//! The race as SVG: throughput against writers (log scale), and WAL bytes per event per
//! strategy. Plain SVG with no blank lines, so the book can inline it as HTML.

use super::race::RaceReport;
use super::report::{median_wal_per_event, thousands};
use super::strategy::Strategy;

/// Twelve colours that stay apart on a projector.
const PALETTE: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    "#393b79", "#ad494a",
];

fn colour(strategy: Strategy) -> &'static str {
    let i = super::strategy::ALL.iter().position(|s| *s == strategy).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

const FONT: &str = "font-family=\"sans-serif\" font-size=\"12\"";

/// Events/s (log scale) against writers (log 2 scale), one line per strategy.
pub fn throughput_svg(report: &RaceReport) -> String {
    let (width, height) = (860.0, 440.0);
    let (left, right, top, bottom) = (70.0, 250.0, 30.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let writers = &report.writers;
    let max_eps = report.points.iter().map(|p| p.events_per_second).fold(1.0, f64::max);
    let min_eps = report.points.iter().map(|p| p.events_per_second).filter(|v| *v > 0.0).fold(max_eps, f64::min);
    let (lo, hi) = (min_eps.log10().floor(), max_eps.log10().ceil().max(min_eps.log10().floor() + 1.0));
    let y = |eps: f64| top + plot_h - (eps.max(1.0).log10() - lo) / (hi - lo) * plot_h;
    let (wmin, wmax) =
        (writers.iter().copied().min().unwrap_or(1) as f64, writers.iter().copied().max().unwrap_or(1) as f64);
    let x = |w: usize| {
        if wmax <= wmin {
            left + plot_w / 2.0
        } else {
            left + ((w as f64).log2() - wmin.log2()) / (wmax.log2() - wmin.log2()) * plot_w
        }
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Events per second against concurrent writers, per strategy\">\n"
    );
    svg += &format!("<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
    svg += &format!("<text x=\"{left}\" y=\"18\" {FONT} font-weight=\"bold\">Events per second (log scale) against concurrent writers</text>\n");
    // Grid: one line per power of ten.
    let mut decade = lo;
    while decade <= hi {
        let yy = y(10f64.powf(decade));
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n",
            left + plot_w
        );
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            yy + 4.0,
            thousands(10f64.powf(decade))
        );
        decade += 1.0;
    }
    for &w in writers {
        let xx = x(w);
        svg +=
            &format!("<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n", top + plot_h);
        svg +=
            &format!("<text x=\"{xx:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">{w}</text>\n", top + plot_h + 18.0);
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">concurrent writers</text>\n",
        left + plot_w / 2.0,
        height - 10.0
    );
    for (i, s) in report.strategies.iter().enumerate() {
        let points: Vec<String> = report
            .points
            .iter()
            .filter(|p| p.strategy == s.strategy)
            .map(|p| format!("{:.1},{:.1}", x(p.writers), y(p.events_per_second)))
            .collect();
        let dash = if s.durable { "" } else { " stroke-dasharray=\"6 4\"" };
        let c = colour(s.strategy);
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
            points.join(" ")
        );
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            svg += &format!("<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{c}\"/>\n");
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = left + plot_w + 16.0;
        svg += &format!(
            "<line x1=\"{lx}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>\n",
            ly - 4.0,
            lx + 22.0,
            ly - 4.0
        );
        let label = if s.durable { s.strategy.id().to_string() } else { format!("{} (not durable)", s.strategy.id()) };
        svg += &format!("<text x=\"{:.1}\" y=\"{ly:.1}\" {FONT}>{label}</text>\n", lx + 28.0);
    }
    svg += "</svg>\n";
    svg
}

/// Median WAL bytes per event of each strategy, as horizontal bars.
pub fn wal_per_event_svg(report: &RaceReport) -> String {
    let rows: Vec<(Strategy, bool, f64)> = report
        .strategies
        .iter()
        .filter_map(|s| median_wal_per_event(report, s.strategy).map(|w| (s.strategy, s.durable, w)))
        .collect();
    let (left, right, top, row_h) = (240.0, 90.0, 40.0, 24.0);
    let width = 860.0;
    let height = top + row_h * rows.len() as f64 + 40.0;
    let plot_w = width - left - right;
    let max = rows.iter().map(|r| r.2).fold(1.0, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"WAL bytes per event, per strategy\">\n"
    );
    svg += &format!("<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
    svg += &format!(
        "<text x=\"10\" y=\"20\" {FONT} font-weight=\"bold\">WAL bytes per event (median over writer counts)</text>\n"
    );
    for (i, (strategy, durable, wal)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let w = (wal / max * plot_w).max(1.0);
        let c = colour(*strategy);
        let opacity = if *durable { "1" } else { "0.45" };
        let label = if *durable { strategy.id().to_string() } else { format!("{} (not durable)", strategy.id()) };
        svg +=
            &format!("<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"end\">{label}</text>\n", left - 8.0, y + 15.0);
        svg += &format!("<rect x=\"{left}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{c}\" fill-opacity=\"{opacity}\"/>\n", y + 3.0, row_h - 6.0);
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" {FONT}>{}</text>\n", left + w + 6.0, y + 15.0, thousands(*wal));
    }
    svg += &format!(
        "<text x=\"10\" y=\"{:.1}\" {FONT} fill=\"#555\">{} ({}), {} CPUs; fsync {}, full_page_writes {}</text>\n",
        height - 12.0,
        report.provenance.postgres,
        report.provenance.backend,
        report.provenance.cpus,
        report.provenance.settings.get("fsync").map(String::as_str).unwrap_or("?"),
        report.provenance.settings.get("full_page_writes").map(String::as_str).unwrap_or("?"),
    );
    svg += "</svg>\n";
    svg
}
