//! Pictures of tensors: heat maps of 2-D fields (PNG files, in-memory RGB
//! pictures, or the frames of an animated GIF) in a perceptual colormap
//! with a colorbar and labelled axes, and line plots (loss curves,
//! profiles), drawn with `plotters`. Text is set in an embedded DejaVu Sans
//! (`assets/`), so no system font is needed.
//!
//! A field of shape `[rows, cols]` is drawn with its columns along x and
//! row 0 at the bottom (matplotlib's `origin="lower"`); NaN cells are gray.

use crate::error::{bail, Error, Result};
use crate::graph::Tensor;
use crate::tensor::DType;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// How values map to colors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    /// Dark blue through green to yellow, perceptually uniform: for
    /// magnitudes (speed, temperature).
    #[default]
    Viridis,
    /// Blue below zero, white at zero, red above, symmetric about zero by
    /// default: for signed fields (vorticity, errors).
    Diverging,
}

impl Colormap {
    /// The color at `t` in `[0, 1]` (clamped; NaN gives the NaN gray).
    pub fn color(self, t: f64) -> [u8; 3] {
        if t.is_nan() {
            return NAN_COLOR;
        }
        let t = t.clamp(0.0, 1.0);
        let c = match self {
            Colormap::Viridis => colorous::VIRIDIS.eval_continuous(t),
            Colormap::Diverging => colorous::RED_BLUE.eval_continuous(1.0 - t),
        };
        [c.r, c.g, c.b]
    }
}

/// The color of NaN cells.
pub const NAN_COLOR: [u8; 3] = [160, 160, 160];

/// How a heat map is drawn.
#[derive(Clone, Debug)]
pub struct HeatMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub colormap: Colormap,
    /// Values at the colormap's ends; `None`: the field's finite minimum
    /// and maximum (for `Diverging`, `±` the largest magnitude).
    pub range: Option<(f64, f64)>,
    /// The coordinates of the field's edges: `[x0, x1, y0, y1]`.
    pub extent: [f64; 4],
    /// The picture's size in pixels.
    pub size: (u32, u32),
    /// Polylines drawn over the field, in the extent's coordinates (white
    /// on viridis, black on the diverging map): contours from
    /// [`contour_lines`], streamlines, outlines.
    pub lines: Vec<Vec<(f64, f64)>>,
}

impl Default for HeatMap {
    fn default() -> HeatMap {
        HeatMap {
            title: String::new(),
            x_label: "x".into(),
            y_label: "y".into(),
            colormap: Colormap::Viridis,
            range: None,
            extent: [0.0, 1.0, 0.0, 1.0],
            size: (640, 520),
            lines: Vec::new(),
        }
    }
}

/// One line of a [`LinePlot`].
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// How a line plot is drawn.
#[derive(Clone, Debug)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// A logarithmic y axis (for loss curves and errors): non-positive
    /// values are left out.
    pub log_y: bool,
    pub size: (u32, u32),
}

impl Default for LinePlot {
    fn default() -> LinePlot {
        LinePlot { title: String::new(), x_label: "x".into(), y_label: "y".into(), log_y: false, size: (640, 480) }
    }
}

/// An RGB picture in memory, row by row from the top.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// The color of pixel `(x, y)` (from the top left).
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = 3 * (y as usize * self.width as usize + x as usize);
        Some([self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]])
    }
}

const FONT: &str = "sans-serif";

/// Register the embedded font with plotters, once.
fn font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf")).is_ok()
    });
    if !ok {
        bail!(format, "the embedded font could not be read");
    }
    Ok(())
}

/// A tick label: up to four significant digits, without trailing zeros
/// (exponent form for very large or small magnitudes).
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 || a < 1e-12 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let digits = (3 - a.log10().floor() as i32).clamp(0, 7) as usize;
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

fn drawn<T, E: std::fmt::Debug>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| Error::invalid(format!("drawing failed: {e:?}")))
}

/// A 2-D real field's values (f64), rows and columns.
fn field(t: &Tensor) -> Result<(Vec<f64>, usize, usize)> {
    if t.rank() != 2 || !(t.dtype().is_float() || t.dtype().is_int()) {
        bail!(shape, "a heat map needs a real 2-D field, got {}{}", t.dtype(), t.shape());
    }
    let (rows, cols) = (t.shape()[0], t.shape()[1]);
    if rows == 0 || cols == 0 {
        bail!(shape, "a heat map needs a nonempty field, got shape {}", t.shape());
    }
    let v = crate::ops::cast(t, DType::F64)?.to_vec::<f64>()?;
    Ok((v, rows, cols))
}

/// The values at the colormap's ends.
fn value_range(v: &[f64], opts: &HeatMap) -> Result<(f64, f64)> {
    if let Some((lo, hi)) = opts.range {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            bail!(invalid, "a heat map's range must be finite and increasing, got ({lo}, {hi})");
        }
        return Ok((lo, hi));
    }
    let finite = v.iter().copied().filter(|x| x.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = match opts.colormap {
        Colormap::Diverging => {
            let m = lo.abs().max(hi.abs());
            (-m, m)
        }
        Colormap::Viridis => (lo, hi),
    };
    Ok(if !lo.is_finite() {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    })
}

/// Draw a heat map of `t` onto `root`.
fn draw_heat_map<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &Tensor, opts: &HeatMap) -> Result<()> {
    font()?;
    let (v, rows, cols) = field(t)?;
    let (lo, hi) = value_range(&v, opts)?;
    let [x0, x1, y0, y1] = opts.extent;
    if !(x0 < x1 && y0 < y1) {
        bail!(invalid, "a heat map's extent must be increasing, got {:?}", opts.extent);
    }
    drawn(root.fill(&WHITE))?;
    let (w, _) = root.dim_in_pixel();
    let (main, bar) = root.split_horizontally(w.saturating_sub(120).max(1));
    let mut chart = drawn(
        ChartBuilder::on(&main)
            .caption(&opts.title, (FONT, 20))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y0..y1),
    )?;
    drawn(
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&opts.x_label)
            .y_desc(&opts.y_label)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw(),
    )?;
    let area = chart.plotting_area();
    let (xr, yr) = area.get_pixel_range();
    let (pw, ph) = ((xr.end - xr.start).max(1) as usize, (yr.end - yr.start).max(1) as usize);
    let pixels = area.strip_coord_spec();
    let span = hi - lo;
    for py in 0..ph {
        let row = ((ph - 1 - py) * rows / ph).min(rows - 1);
        for px in 0..pw {
            let col = (px * cols / pw).min(cols - 1);
            let [r, g, b] = opts.colormap.color((v[row * cols + col] - lo) / span);
            drawn(pixels.draw_pixel((px as i32, py as i32), &RGBColor(r, g, b)))?;
        }
    }
    let ink = match opts.colormap {
        Colormap::Viridis => WHITE,
        Colormap::Diverging => BLACK,
    };
    drawn(chart.draw_series(opts.lines.iter().map(|l| PathElement::new(l.clone(), ink.stroke_width(1)))))?;
    // The colorbar: the colormap from bottom to top, labelled in values.
    let mut scale = drawn(
        ChartBuilder::on(&bar)
            .margin_top(45)
            .margin_bottom(55)
            .margin_right(15)
            .margin_left(5)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, lo..hi),
    )?;
    drawn(
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&tick)
            .label_style((FONT, 13))
            .draw(),
    )?;
    let area = scale.plotting_area();
    let (xr, yr) = area.get_pixel_range();
    let (bw, bh) = ((xr.end - xr.start).max(1), (yr.end - yr.start).max(1));
    let pixels = area.strip_coord_spec();
    for py in 0..bh {
        let t = if bh > 1 { (bh - 1 - py) as f64 / (bh - 1) as f64 } else { 0.5 };
        let [r, g, b] = opts.colormap.color(t);
        // Clear of the tick labels, which reach a little into the area.
        for px in (bw / 3).min(16)..bw {
            drawn(pixels.draw_pixel((px, py), &RGBColor(r, g, b)))?;
        }
    }
    Ok(())
}

/// The contour lines of a 2-D field (rows along y, as [`heat_map`] draws
/// it) at each of `levels`, as line segments in the coordinates of
/// `extent` (`[x0, x1, y0, y1]`, the first and last grid points), by
/// marching squares; cells touching NaN are skipped. For a 2-D
/// incompressible flow the contours of the stream function are its
/// streamlines.
pub fn contour_lines(t: &Tensor, levels: &[f64], extent: [f64; 4]) -> Result<Vec<Vec<(f64, f64)>>> {
    let (v, rows, cols) = field(t)?;
    let [x0, x1, y0, y1] = extent;
    if !(x0 < x1 && y0 < y1) || rows < 2 || cols < 2 {
        bail!(
            invalid,
            "contour_lines needs an increasing extent and at least 2x2 points, got {extent:?} and {rows}x{cols}"
        );
    }
    let (dx, dy) = ((x1 - x0) / (cols - 1) as f64, (y1 - y0) / (rows - 1) as f64);
    let mut segments = Vec::new();
    for &level in levels.iter().filter(|l| l.is_finite()) {
        for i in 0..rows - 1 {
            for j in 0..cols - 1 {
                // Corners counterclockwise from the lower left, as (row, col).
                let corners = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)];
                let at = |(r, c): (usize, usize)| v[r * cols + c];
                if corners.iter().any(|&p| at(p).is_nan()) {
                    continue;
                }
                let above = corners.map(|p| at(p) > level);
                let mut cuts = Vec::with_capacity(4);
                for e in 0..4 {
                    let (p, q) = (corners[e], corners[(e + 1) % 4]);
                    if above[e] != above[(e + 1) % 4] {
                        let f = (level - at(p)) / (at(q) - at(p));
                        let (r, c) =
                            (p.0 as f64 + f * (q.0 as f64 - p.0 as f64), p.1 as f64 + f * (q.1 as f64 - p.1 as f64));
                        cuts.push((x0 + c * dx, y0 + r * dy));
                    }
                }
                match cuts.len() {
                    2 => segments.push(vec![cuts[0], cuts[1]]),
                    4 => {
                        // A saddle: the centre decides which pair of opposite corners it joins.
                        let centre = corners.iter().map(|&p| at(p)).sum::<f64>() / 4.0 > level;
                        if centre == above[0] {
                            segments.push(vec![cuts[0], cuts[1]]);
                            segments.push(vec![cuts[2], cuts[3]]);
                        } else {
                            segments.push(vec![cuts[3], cuts[0]]);
                            segments.push(vec![cuts[1], cuts[2]]);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(segments)
}

/// A heat map of a 2-D field as an RGB picture in memory.
pub fn heat_map(t: &Tensor, opts: &HeatMap) -> Result<Picture> {
    let (w, h) = checked_size(opts.size)?;
    let mut rgb = vec![0u8; 3 * w as usize * h as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_heat_map(&root, t, opts)?;
        drawn(root.present())?;
    }
    Ok(Picture { width: w, height: h, rgb })
}

/// A heat map of a 2-D field written as a PNG file.
pub fn save_heat_map(path: impl AsRef<Path>, t: &Tensor, opts: &HeatMap) -> Result<()> {
    let (w, h) = checked_size(opts.size)?;
    let root = BitMapBackend::new(path.as_ref(), (w, h)).into_drawing_area();
    draw_heat_map(&root, t, opts)?;
    drawn(root.present())
}

/// Heat maps side by side in one PNG file of `size` pixels, one panel per
/// field (each panel's own `size` is not used): true against recovered,
/// before against after.
pub fn save_heat_maps(path: impl AsRef<Path>, panels: &[(&Tensor, &HeatMap)], size: (u32, u32)) -> Result<()> {
    let (w, h) = checked_size(size)?;
    if panels.is_empty() || (w as usize) < 200 * panels.len() {
        bail!(invalid, "save_heat_maps needs 1 to {} panels for a width of {w} pixels, got {}", w / 200, panels.len());
    }
    let root = BitMapBackend::new(path.as_ref(), (w, h)).into_drawing_area();
    for ((t, opts), area) in panels.iter().zip(root.split_evenly((1, panels.len()))) {
        draw_heat_map(&area, t, opts)?;
    }
    drawn(root.present())
}

fn checked_size((w, h): (u32, u32)) -> Result<(u32, u32)> {
    if !(200..=8192).contains(&w) || !(150..=8192).contains(&h) {
        bail!(invalid, "a picture's size must be 200..=8192 x 150..=8192 pixels, got {w}x{h}");
    }
    Ok((w, h))
}

/// An animated GIF of heat maps, one frame per [`Animation::frame`].
pub struct Animation {
    root: DrawingArea<BitMapBackend<'static>, Shift>,
}

impl Animation {
    /// Start a GIF at `path`: frames of `size` pixels, `delay_ms` apart.
    pub fn create(path: impl AsRef<Path>, size: (u32, u32), delay_ms: u32) -> Result<Animation> {
        let size = checked_size(size)?;
        let backend = drawn(BitMapBackend::gif(path.as_ref(), size, delay_ms))?;
        Ok(Animation { root: backend.into_drawing_area() })
    }

    /// Add a heat map of `t` as the next frame (its `size` is the animation's).
    pub fn frame(&mut self, t: &Tensor, opts: &HeatMap) -> Result<()> {
        draw_heat_map(&self.root, t, opts)?;
        drawn(self.root.present())
    }
}

/// Line plots of `series` written as a PNG file, with a legend when the
/// series are named.
pub fn save_line_plot(path: impl AsRef<Path>, series: &[Series], opts: &LinePlot) -> Result<()> {
    font()?;
    let (w, h) = checked_size(opts.size)?;
    let keep = |y: f64| y.is_finite() && (!opts.log_y || y > 0.0);
    let mut points: Vec<Vec<(f64, f64)>> = Vec::with_capacity(series.len());
    for s in series {
        if s.x.len() != s.y.len() {
            bail!(shape, "series '{}' has {} x values and {} y values", s.name, s.x.len(), s.y.len());
        }
        points.push(s.x.iter().zip(&s.y).filter(|(x, y)| x.is_finite() && keep(**y)).map(|(x, y)| (*x, *y)).collect());
    }
    let all = points.iter().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        bail!(
            invalid,
            "a line plot needs at least one finite point{}",
            if opts.log_y { " (positive, on a log axis)" } else { "" }
        );
    }
    if x0 == x1 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    if y0 == y1 {
        (y0, y1) = if opts.log_y { (y0 / 2.0, y1 * 2.0) } else { (y0 - 0.5, y1 + 0.5) };
    }
    let root = BitMapBackend::new(path.as_ref(), (w, h)).into_drawing_area();
    drawn(root.fill(&WHITE))?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(&opts.title, (FONT, 20)).margin(15).x_label_area_size(45).y_label_area_size(70);
    if opts.log_y {
        let chart = drawn(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()))?;
        draw_lines(chart, series, &points, opts)?;
    } else {
        let pad = 0.05 * (y1 - y0);
        let chart = drawn(builder.build_cartesian_2d(x0..x1, y0 - pad..y1 + pad))?;
        draw_lines(chart, series, &points, opts)?;
    }
    drawn(root.present())
}

fn draw_lines<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    mut chart: ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    series: &[Series],
    points: &[Vec<(f64, f64)>],
    opts: &LinePlot,
) -> Result<()> {
    drawn(
        chart
            .configure_mesh()
            .x_desc(&opts.x_label)
            .y_desc(&opts.y_label)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .y_labels(8)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw(),
    )?;
    for (k, (s, p)) in series.iter().zip(points).enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let line = drawn(chart.draw_series(LineSeries::new(p.iter().copied(), color.stroke_width(2))))?;
        if !s.name.is_empty() {
            line.label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if series.iter().any(|s| !s.name.is_empty()) {
        drawn(
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw(),
        )?;
    }
    Ok(())
}
