//! Figures: line charts (linear or log scale) and heatmaps, laid out in panels, drawn with
//! plotters into an RGB buffer and written as PNG, or as an animated GIF from several frames.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Once;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::LabError;

/// DejaVu Sans (Bitstream Vera license, `assets/DejaVuSans-LICENSE.txt`): plotters draws text
/// with the fonts it is given, so every figure reads the same on every machine.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font is a valid TrueType font"));
    });
}

/// One named line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(x, y)` points; non-finite ones (a diverged run) and, on a log scale, non-positive ones
    /// are left out of the drawing (they stay in the CSV).
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from its name and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// The caption.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// Whether the y axis is logarithmic.
    pub log_y: bool,
    /// The lines, drawn in the order given with the colours of [`color`].
    pub series: Vec<Series>,
    /// A fixed x range (the frames of an animation share their axes); `None` fits the data.
    pub x_range: Option<(f64, f64)>,
    /// A fixed y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
}

/// A matrix of values in `[-1, 1]` drawn blue (−1), white (0), red (+1): correlations.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// The caption.
    pub title: String,
    /// Rows of equal length.
    pub values: Vec<Vec<f32>>,
}

/// One panel of a figure.
#[derive(Debug, Clone)]
pub enum Panel {
    /// A line chart.
    Lines(LineChart),
    /// A heatmap.
    Heatmap(Heatmap),
}

/// The colour of the `index`-th series: distinct, and the same in every figure, so a normalizer
/// keeps its colour when experiments list them in the same order.
pub fn color(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(30, 30, 30),
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    COLORS[index % COLORS.len()]
}

/// Draws `panels` in a grid of `columns` columns, each panel `panel_size` pixels, with an
/// optional overall title.
pub fn render(
    title: Option<&str>,
    panels: &[Panel],
    columns: usize,
    panel_size: (u32, u32),
) -> Result<RgbImage, LabError> {
    register_font();
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let title_height = if title.is_some() { 40 } else { 0 };
    let (width, height) = (
        panel_size.0 * columns as u32,
        panel_size.1 * rows as u32 + title_height,
    );
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let body = match title {
            Some(title) => root.titled(title, ("sans-serif", 24)).map_err(plot_error)?,
            None => root.clone(),
        };
        for (area, panel) in body.split_evenly((rows, columns)).iter().zip(panels) {
            match panel {
                Panel::Lines(chart) => draw_lines(area, chart)?,
                Panel::Heatmap(map) => draw_heatmap(area, map)?,
            }
        }
        root.present().map_err(plot_error)?;
    }
    Ok(RgbImage::from_raw(width, height, buffer).expect("the buffer is width × height × 3"))
}

fn plot_error(err: impl std::fmt::Display) -> LabError {
    LabError::Plot(err.to_string())
}

/// The range covering `values` with a little room, never empty.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 2.0, hi * 2.0)
    } else {
        let pad = ((hi - lo) * 0.05).max(1e-6 * hi.abs().max(1.0));
        (lo - pad, hi + pad)
    }
}

fn draw_lines(area: &DrawingArea<BitMapBackend, Shift>, chart: &LineChart) -> Result<(), LabError> {
    let visible =
        |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(visible))
    };
    let (x0, x1) = chart
        .x_range
        .unwrap_or_else(|| padded_range(points().map(|(x, _)| x), false));
    let (y0, y1) = chart
        .y_range
        .unwrap_or_else(|| padded_range(points().map(|(_, y)| y), chart.log_y));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    macro_rules! draw {
        ($context:expr) => {{
            let mut context = $context;
            context
                .configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style(("sans-serif", 13))
                .x_label_formatter(&|x| tick(*x))
                .y_label_formatter(&|y| tick(*y))
                .draw()
                .map_err(plot_error)?;
            for (index, series) in chart.series.iter().enumerate() {
                let style = color(index).stroke_width(2);
                context
                    .draw_series(LineSeries::new(
                        series.points.iter().copied().filter(visible),
                        style,
                    ))
                    .map_err(plot_error)?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            context
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(plot_error)?;
        }};
    }
    if chart.log_y {
        draw!(
            builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(plot_error)?
        );
    } else {
        draw!(
            builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_error)?
        );
    }
    Ok(())
}

/// An axis label: `1e-4` for the very small and very large, `2` rather than `2.0`, and at
/// most two decimals.
fn tick(value: f64) -> String {
    let magnitude = value.abs();
    if value != 0.0 && !(1e-2..1e4).contains(&magnitude) {
        return format!("{value:.0e}");
    }
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Blue for −1, white for 0, red for +1.
fn diverging(value: f32) -> RGBColor {
    let v = value.clamp(-1.0, 1.0);
    let fade = |full: u8| (255.0 - (255.0 - full as f32) * v.abs()) as u8;
    if v >= 0.0 {
        RGBColor(fade(180), fade(20), fade(30))
    } else {
        RGBColor(fade(20), fade(70), fade(180))
    }
}

fn draw_heatmap(area: &DrawingArea<BitMapBackend, Shift>, map: &Heatmap) -> Result<(), LabError> {
    let rows = map.values.len();
    let columns = map.values.first().map_or(0, Vec::len);
    let mut context = ChartBuilder::on(area)
        .caption(&map.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(24)
        .y_label_area_size(32)
        .build_cartesian_2d(0..columns.max(1), 0..rows.max(1))
        .map_err(plot_error)?;
    context
        .configure_mesh()
        .disable_mesh()
        .label_style(("sans-serif", 12))
        // Row 0 is drawn at the top: label the rows from there.
        .y_label_formatter(&|y| rows.saturating_sub(*y).to_string())
        .draw()
        .map_err(plot_error)?;
    let cells = map.values.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().map(move |(j, &value)| {
            // Row 0 at the top, as a matrix is read.
            let top = rows - i;
            Rectangle::new([(j, top), (j + 1, top - 1)], diverging(value).filled())
        })
    });
    context.draw_series(cells).map_err(plot_error)?;
    Ok(())
}

/// Writes `image` as a PNG.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<(), LabError> {
    image
        .save(path)
        .map_err(|err| LabError::Write(path.to_path_buf(), err.to_string()))
}

/// Writes `frames` (equal sizes) as an animated GIF that loops, `frame_ms` per frame.
pub fn save_gif(frames: &[RgbImage], frame_ms: u32, path: &Path) -> Result<(), LabError> {
    let failed = |err: String| LabError::Write(path.to_path_buf(), err);
    let file = File::create(path).map_err(|err| failed(err.to_string()))?;
    let mut encoder = GifEncoder::new_with_speed(BufWriter::new(file), 10);
    encoder
        .set_repeat(Repeat::Infinite)
        .map_err(|err| failed(err.to_string()))?;
    let delay = Delay::from_numer_denom_ms(frame_ms, 1);
    let frames = frames.iter().map(|frame| {
        let rgba = image::DynamicImage::ImageRgb8(frame.clone()).into_rgba8();
        Frame::from_parts(rgba, 0, 0, delay)
    });
    encoder
        .encode_frames(frames)
        .map_err(|err| failed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct_colors(image: &RgbImage) -> usize {
        let mut seen: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    #[test]
    fn a_line_chart_draws_its_lines_and_skips_what_cannot_be_drawn() {
        let chart = LineChart {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            log_y: true,
            series: vec![
                Series::new("a", vec![(0.0, 1.0), (1.0, 0.1), (2.0, 0.01)]),
                Series::new("diverged", vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, -1.0)]),
            ],
            ..LineChart::default()
        };
        let image = render(Some("figure"), &[Panel::Lines(chart)], 1, (400, 300)).unwrap();
        assert_eq!(image.dimensions(), (400, 340));
        // The first series' colour is on the canvas: the line was drawn.
        let blue = color(1).rgb();
        assert!(image.pixels().any(|p| p.0 == [blue.0, blue.1, blue.2]));
        assert!(distinct_colors(&image) > 10);
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(tick(9.999999999999999e-5), "1e-4");
        assert_eq!(tick(2.0), "2");
        assert_eq!(tick(0.1), "0.1");
        assert_eq!(tick(85.9375), "85.94");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(25000.0), "2e4");
        assert_eq!(tick(-0.5), "-0.5");
    }

    #[test]
    fn a_heatmap_maps_minus_one_to_blue_and_one_to_red() {
        assert_eq!(diverging(0.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(1.0), RGBColor(180, 20, 30));
        assert_eq!(diverging(-1.0), RGBColor(20, 70, 180));
        let map = Heatmap {
            title: "correlation".into(),
            values: vec![vec![1.0, -1.0], vec![-1.0, 1.0]],
        };
        let image = render(None, &[Panel::Heatmap(map)], 1, (200, 200)).unwrap();
        let red = image.pixels().filter(|p| p.0 == [180, 20, 30]).count();
        let blue = image.pixels().filter(|p| p.0 == [20, 70, 180]).count();
        assert!(red > 1000 && blue > 1000, "red {red}, blue {blue}");
    }

    #[test]
    fn frames_become_a_looping_gif() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gif");
        let frames = [
            RgbImage::new(8, 8),
            RgbImage::from_pixel(8, 8, image::Rgb([255, 0, 0])),
        ];
        save_gif(&frames, 100, &path).unwrap();
        let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
            File::open(&path).unwrap(),
        ))
        .unwrap();
        use image::AnimationDecoder;
        assert_eq!(decoder.into_frames().count(), 2);
    }
}
