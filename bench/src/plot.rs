//! The recall@10 vs QPS picture of a benchmark run: one curve per
//! configuration (pg_hnsw with each `ef_construction`, hnswlib beside it),
//! one point per `ef_search`, QPS on a log scale. PNG through plotters'
//! bitmap backend; text is drawn with a font compiled into the binary (Ubuntu
//! Light from `epaint_default_fonts`), so no system fonts are needed.

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One curve: a label and `(recall@10, QPS, ef_search)` points.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Legend text, e.g. `pg_hnsw m=16 ef_construction=64`.
    pub label: String,
    /// `(recall@10, QPS, ef_search)`, in `ef_search` order.
    pub points: Vec<(f64, f64, i32)>,
    /// Drawn dashed-looking (hollow markers) for reference systems.
    pub reference: bool,
}

const FONT: &str = "sans-serif";

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the plot: {e:?}")
}

fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "the compiled-in font did not load".to_string())
    })
    .clone()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Writes the recall@10 (x) vs QPS (y, log scale) plot of `curves` to `path`
/// (900 × 600 PNG) under `title`. The x axis spans the measured recalls.
pub fn recall_qps_png(path: &std::path::Path, title: &str, curves: &[Curve]) -> Result<(), String> {
    register_font()?;
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut rmin, mut qmin, mut qmax) = (1.0f64, f64::MAX, 0.0f64);
    for &(r, q, _) in pts {
        rmin = rmin.min(r);
        qmin = qmin.min(q);
        qmax = qmax.max(q);
    }
    if qmax <= 0.0 {
        return Err("no points to plot".into());
    }
    let x0 = ((rmin - 0.02) * 50.0).floor() / 50.0;
    let (y0, y1) = (qmin / 1.6, qmax * 1.6);
    let e = draw_err;

    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(70)
        .build_cartesian_2d(x0.max(0.0)..1.0f64, (y0..y1).log_scale())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("recall@10")
        .y_desc("queries per second (log scale)")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(e)?;
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.1)).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
        let hollow = c.reference;
        chart
            .draw_series(line.iter().map(move |&p| {
                if hollow {
                    Circle::new(p, 5, color.stroke_width(2))
                } else {
                    Circle::new(p, 5, color.filled())
                }
            }))
            .map_err(e)?;
        // ef_search next to the points of the first curve only, to keep it legible.
        if i == 0 {
            chart
                .draw_series(c.points.iter().map(|&(r, q, ef)| {
                    Text::new(format!("ef {ef}"), (r, q * 1.12), (FONT, 13).into_font().color(&RGBColor(90, 90, 90)))
                }))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}
