//! Figures (PNG and SVG, the same drawing on both backends): heatmaps and line plots with plotters.
//! Text is drawn with the font of [`crate::font`]: DejaVu Sans compiled into the binary, or S3PET_FONT.
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

fn draw_err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::file(path, format!("cannot draw: {e:?}"))
}

/// Something drawable on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, base: &Path) -> Result<()>;

    /// Draws into `<base>.png` and `<base>.svg`; returns both paths.
    fn save(&self, base: &Path) -> Result<Vec<PathBuf>>
    where
        Self: Sized,
    {
        both(base, self)
    }
}

fn both<F: Figure>(base: &Path, f: &F) -> Result<Vec<PathBuf>> {
    let size = f.size();
    crate::font::ensure()?;
    if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let png = base.with_extension("png");
    let svg = base.with_extension("svg");
    let tmp_png = png.with_extension("png.tmp.png");
    {
        let area = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err(&png))?;
        f.draw(&area, base)?;
        area.present().map_err(draw_err(&png))?;
    }
    std::fs::rename(&tmp_png, &png).map_err(|e| Error::io(&png, e))?;
    let mut text = String::new();
    {
        let area = SVGBackend::with_string(&mut text, size).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err(&svg))?;
        f.draw(&area, base)?;
        area.present().map_err(draw_err(&svg))?;
    }
    crate::artifact::write_bytes(&svg, text.as_bytes())?;
    Ok(vec![png, svg])
}

/// A perceptually ordered ramp (dark blue -> teal -> yellow) for t in [0, 1].
pub fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 4] = [
        (0.0, (68.0, 1.0, 84.0)),
        (0.35, (49.0, 104.0, 142.0)),
        (0.7, (53.0, 183.0, 121.0)),
        (1.0, (253.0, 231.0, 37.0)),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.windows(2).position(|w| t <= w[1].0).unwrap_or(2);
    let ((t0, a), (t1, b)) = (STOPS[i], STOPS[i + 1]);
    let u = (t - t0) / (t1 - t0);
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A heatmap: `values[r][c]` (None: no such cell, drawn grey), colour scaled to [lo, hi]; with
/// `annotate` each cell shows its value.
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub rows: &'a [String],
    pub cols: &'a [String],
    pub values: &'a [Vec<Option<f64>>],
    pub range: (f64, f64),
    pub annotate: bool,
    pub x_label: &'a str,
}

impl Figure for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        ((260 + 70 * self.cols.len() as u32).max(640), (140 + 30 * self.rows.len() as u32).max(300))
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, base: &Path) -> Result<()> {
        let e = draw_err(base);
        let (nr, nc) = (self.rows.len() as i32, self.cols.len() as i32);
        let (lo, hi) = self.range;
        let x_desc = format!("{}   (colour: {lo:.3} dark blue -> {hi:.3} yellow; grey: none)", self.x_label);
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(220)
            .build_cartesian_2d((0..(nc - 1).max(0)).into_segmented(), (0..(nr - 1).max(0)).into_segmented())
            .map_err(&e)?;
        let rows = self.rows.to_vec();
        let cols = self.cols.to_vec();
        let name = |v: &SegmentValue<i32>, names: &[String], flip: bool| match v {
            SegmentValue::CenterOf(i) => {
                let i = if flip { names.len() as i32 - 1 - *i } else { *i };
                names.get(i as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols.len().max(1))
            .y_labels(rows.len().max(1))
            .x_label_formatter(&|x| name(x, &cols, false))
            .y_label_formatter(&|y| name(y, &rows, true))
            .x_desc(x_desc)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(&e)?;
        let span = if hi > lo { hi - lo } else { 1.0 };
        let at = |c: i32, r: i32| (SegmentValue::Exact(c), SegmentValue::Exact(r));
        for (r, row) in self.values.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let (c, y) = (c as i32, nr - 1 - r as i32);
                let color = match v {
                    Some(v) => ramp((v - lo) / span),
                    None => RGBColor(225, 225, 225),
                };
                let rect = Rectangle::new([at(c, y), at(c + 1, y + 1)], color.filled());
                chart.draw_series(std::iter::once(rect)).map_err(&e)?;
                if let (true, Some(v)) = (self.annotate, v) {
                    let light = (v - lo) / span < 0.55;
                    let style = ("sans-serif", 14).into_font().color(if light { &WHITE } else { &BLACK });
                    let text = Text::new(
                        format!("{v:.1}"),
                        (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y)),
                        style,
                    );
                    chart.draw_series(std::iter::once(text)).map_err(&e)?;
                }
            }
        }
        Ok(())
    }
}

/// A named series of (x, y, error bar half-height) points.
pub type Series = (String, Vec<(f64, f64, f64)>);

/// Line plot: each series a list of (x, y[, error]) points; `log_x` puts x on a log10 axis; `notes`
/// are printed under the title (e.g. what was skipped).
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub log_x: bool,
    pub notes: &'a [String],
    /// Draw points only (no connecting line) for series whose name starts with one of these.
    pub points_only: &'a [String],
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

impl Figure for Lines<'_> {
    fn size(&self) -> (u32, u32) {
        (900, 560 + 18 * self.notes.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, base: &Path) -> Result<()> {
        let e = draw_err(base);
        let pts: Vec<(f64, f64, f64)> = self.series.iter().flat_map(|s| s.1.iter().copied()).collect();
        if pts.is_empty() {
            return Err(Error::file(base, "nothing to plot"));
        }
        let tx = |x: f64| if self.log_x { x.max(1e-300).log10() } else { x };
        let (mut x0, mut x1) =
            pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(tx(p.0)), b.max(tx(p.0))));
        let (mut y0, mut y1) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1 - p.2), b.max(p.1 + p.2)));
        let pad = |a: &mut f64, b: &mut f64| {
            let d = if *b > *a { (*b - *a) * 0.06 } else { 1.0 };
            (*a, *b) = (*a - d, *b + d);
        };
        pad(&mut x0, &mut x1);
        pad(&mut y0, &mut y1);
        let (top, rest) = area.split_vertically(18 * self.notes.len() as u32 + 4);
        for (i, n) in self.notes.iter().enumerate() {
            top.draw(&Text::new(n.clone(), (60, 2 + 18 * i as i32), ("sans-serif", 13).into_font()))
                .map_err(&e)?;
        }
        let mut chart = ChartBuilder::on(&rest)
            .caption(self.title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(&e)?;
        let log_x = self.log_x;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&|x| if log_x { format!("{:.1e}", 10f64.powf(*x)) } else { format!("{x:.0}") })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(&e)?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let xy: Vec<(f64, f64)> = points.iter().map(|p| (tx(p.0), p.1)).collect();
            let only_points = self.points_only.iter().any(|p| name.starts_with(p.as_str()));
            let anno = if only_points {
                chart
                    .draw_series(xy.iter().map(|&p| TriangleMarker::new(p, 7, color.filled())))
                    .map_err(&e)?
            } else {
                chart.draw_series(LineSeries::new(xy.clone(), color.stroke_width(2))).map_err(&e)?;
                chart.draw_series(xy.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(&e)?
            };
            anno.label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3)));
            let bars = points.iter().filter(|p| p.2 > 0.0).map(|p| {
                PathElement::new(vec![(tx(p.0), p.1 - p.2), (tx(p.0), p.1 + p.2)], color.stroke_width(1))
            });
            chart.draw_series(bars).map_err(&e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(&e)?;
        Ok(())
    }
}

/// Layer index and site type of an encoder's site path: `encoder.layer.3.attention.self.query` ->
/// (Some(3), "attention.self.query"), DistilBERT's `transformer.layer.3.ffn.lin1` -> (Some(3), "ffn.lin1");
/// `embeddings.LayerNorm` -> (None, "embeddings.LayerNorm").
pub fn layer_and_type(site: &str) -> (Option<usize>, String) {
    let parts: Vec<&str> = site.split('.').collect();
    for (i, w) in parts.windows(2).enumerate() {
        if matches!(w[0], "layer" | "block") {
            if let Ok(n) = w[1].parse::<usize>() {
                // BERT: bert.encoder.layer.N...; T5 keeps encoder / decoder apart
                let bert = w[0] == "layer";
                let prefix = parts[..i]
                    .iter()
                    .filter(|p| !(**p == "bert" || bert && matches!(**p, "encoder" | "transformer")));
                let prefix = prefix.copied();
                let rest: Vec<&str> = prefix.chain(parts[i + 2..].iter().copied()).collect();
                return (Some(n), rest.join("."));
            }
        }
    }
    (None, site.to_string())
}

/// Values per (site, delta type) laid out as rows "site type · delta" x columns of layers ("-" for
/// sites outside the layers, e.g. the embedding LayerNorm).
pub type Grid = (Vec<String>, Vec<String>, Vec<Vec<Option<f64>>>);

pub fn site_grid(values: &std::collections::BTreeMap<(String, String), f64>) -> Grid {
    let mut rows: Vec<String> = Vec::new();
    let mut layers: Vec<Option<usize>> = Vec::new();
    let placed: Vec<(String, Option<usize>, f64)> = values
        .iter()
        .map(|((site, kind), v)| {
            let (layer, t) = layer_and_type(site);
            (format!("{t} · {kind}"), layer, *v)
        })
        .collect();
    for (r, l, _) in &placed {
        if !rows.contains(r) {
            rows.push(r.clone());
        }
        if !layers.contains(l) {
            layers.push(*l);
        }
    }
    rows.sort();
    layers.sort();
    let mut grid = vec![vec![None; layers.len()]; rows.len()];
    for (r, l, v) in placed {
        let (ri, ci) = (
            rows.iter().position(|x| *x == r).unwrap_or(0),
            layers.iter().position(|x| *x == l).unwrap_or(0),
        );
        grid[ri][ci] = Some(v);
    }
    let cols = layers.iter().map(|l| l.map(|n| n.to_string()).unwrap_or_else(|| "-".into())).collect();
    (rows, cols, grid)
}

/// The heatmap of a p (or any [0, 1] value) per (site, delta type), layer x site type, as PNG and SVG.
pub fn save_p_heatmap(
    p: &std::collections::BTreeMap<(String, String), f64>,
    title: &str,
    base: &Path,
) -> Result<Vec<PathBuf>> {
    let (rows, cols, values) = site_grid(p);
    Heatmap {
        title,
        rows: &rows,
        cols: &cols,
        values: &values,
        range: (0.0, 1.0),
        annotate: false,
        x_label: "layer",
    }
    .save(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_split_into_layer_and_type() {
        assert_eq!(
            layer_and_type("encoder.layer.3.attention.self.query"),
            (Some(3), "attention.self.query".into())
        );
        assert_eq!(layer_and_type("embeddings.LayerNorm"), (None, "embeddings.LayerNorm".into()));
        assert_eq!(layer_and_type("transformer.layer.1.ffn.lin1"), (Some(1), "ffn.lin1".into()));
        assert_eq!(layer_and_type("encoder.layer.0.attention.attn.q"), (Some(0), "attention.attn.q".into()));
        assert_eq!(
            layer_and_type("decoder.block.11.layer.1.EncDecAttention.q"),
            (Some(11), "decoder.layer.1.EncDecAttention.q".into())
        );
    }

    #[test]
    fn figures_with_text_draw_with_the_embedded_font() {
        crate::font::register(None).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = std::collections::BTreeMap::from([
            (("encoder.layer.0.attention.self.query".to_string(), "lora".to_string()), 0.9),
            (("embeddings.LayerNorm".to_string(), "bitfit".to_string()), 0.1),
        ]);
        let mut files = save_p_heatmap(&p, "p per site", &d.path().join("heat")).unwrap();
        let series: Vec<Series> = vec![("dev".into(), vec![(1.0, 50.0, 1.0), (2.0, 60.0, 0.5)])];
        let notes = ["a note under the title".to_string()];
        let lines = Lines {
            title: "dev accuracy",
            x_label: "step",
            y_label: "accuracy",
            series: &series,
            log_x: false,
            notes: &notes,
            points_only: &[],
        };
        files.extend(lines.save(&d.path().join("curves")).unwrap());
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(bytes.len() > 1000, "{}: {} bytes", f.display(), bytes.len());
        }
        assert!(std::fs::read(&files[0]).unwrap().starts_with(b"\x89PNG"));
        let svg = std::fs::read_to_string(&files[3]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("dev accuracy") && svg.contains("<text"), "{svg}");
    }

    #[test]
    fn ramp_ends_and_clamps() {
        assert_eq!(ramp(0.0), RGBColor(68, 1, 84));
        assert_eq!(ramp(1.0), RGBColor(253, 231, 37));
        assert_eq!(ramp(7.0), ramp(1.0));
        assert_eq!(ramp(f64::NAN), ramp(0.0));
    }
}
