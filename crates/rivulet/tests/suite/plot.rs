//! Pictures (`rivulet::plot`): heat maps in memory, as PNG and as GIF
//! frames, and line plots, read back and checked pixel by pixel: size, the
//! colormap's ends, the NaN color, the colorbar, and the errors.

use rivulet::plot::{self, Animation, Colormap, HeatMap, LinePlot, Series, NAN_COLOR};
use rivulet::{ErrorKind, Tensor};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rivulet-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// 20 x 30: 0 on the left half, 1 on the right, NaN in the top-left corner.
fn halves() -> Tensor {
    let (rows, cols) = (20, 30);
    let v: Vec<f64> = (0..rows * cols)
        .map(|p| {
            let (r, c) = (p / cols, p % cols);
            if r >= 15 && c < 5 {
                f64::NAN
            } else if c < 15 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_vec(v, vec![rows, cols]).unwrap()
}

fn count(p: &plot::Picture, color: [u8; 3]) -> usize {
    p.rgb.chunks(3).filter(|c| c == &color).count()
}

#[test]
fn colormaps_have_their_published_ends() {
    // viridis runs from dark purple to yellow; the diverging map from blue through white to red.
    let [r, g, b] = Colormap::Viridis.color(0.0);
    assert!(r < 80 && g < 10 && b > 70, "viridis(0) = {:?}", [r, g, b]);
    let [r, g, b] = Colormap::Viridis.color(1.0);
    assert!(r > 240 && g > 220 && b < 50, "viridis(1) = {:?}", [r, g, b]);
    let [r, g, b] = Colormap::Diverging.color(0.0);
    assert!(b > r + 60, "diverging(0) is blue: {:?}", [r, g, b]);
    let [r, g, b] = Colormap::Diverging.color(1.0);
    assert!(r > b + 60, "diverging(1) is red: {:?}", [r, g, b]);
    assert!(Colormap::Diverging.color(0.5).iter().all(|&c| c > 235), "diverging(0.5) is near white");
    assert_eq!(Colormap::Viridis.color(f64::NAN), NAN_COLOR);
    assert_eq!(Colormap::Viridis.color(7.0), Colormap::Viridis.color(1.0));
}

#[test]
fn heat_maps_color_every_cell_and_draw_a_colorbar() {
    let opts = HeatMap { title: "halves".into(), ..HeatMap::default() };
    let p = plot::heat_map(&halves(), &opts).unwrap();
    assert_eq!((p.width, p.height, p.rgb.len()), (640, 520, 640 * 520 * 3));
    let (lo, hi, nan) = (Colormap::Viridis.color(0.0), Colormap::Viridis.color(1.0), NAN_COLOR);
    let (n_lo, n_hi, n_nan) = (count(&p, lo), count(&p, hi), count(&p, nan));
    // The plot area is about 470 x 420 pixels: each half a bit under half of
    // it (the NaN corner is 1/24 of the field), plus the colorbar's ends.
    assert!(n_lo > 80_000 && n_hi > 90_000, "{n_lo} low and {n_hi} high pixels");
    assert!((n_lo as f64 / n_hi as f64 - 0.92).abs() < 0.08, "the halves' areas: {n_lo} vs {n_hi}");
    assert!(n_nan > 5_000 && n_nan < 12_000, "{n_nan} NaN pixels");
    // Rows of the colorbar (right of the plot) run through the colormap from the bottom up.
    let x = p.width - 35;
    let colored: Vec<u32> = (0..p.height).filter(|&y| p.pixel(x, y) != Some([255, 255, 255])).collect();
    let (top, bottom) = (colored[0], colored[colored.len() - 1]);
    assert!(bottom - top > 300, "a colorbar of {} pixels", bottom - top);
    let (ct, cb) = (p.pixel(x, top).unwrap(), p.pixel(x, bottom).unwrap());
    let dist = |a: [u8; 3], b: [u8; 3]| a.iter().zip(&b).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
    assert!(dist(ct, hi) < 4 && dist(cb, lo) < 4, "colorbar top {ct:?}, bottom {cb:?}");
    // Row 0 is at the bottom: the NaN corner (top rows of the field) shows near the top left.
    let left_top = (0..p.height / 2).filter(|&y| p.pixel(120, y) == Some(nan)).count();
    assert!(left_top > 40, "{left_top} NaN pixels in the upper left column");
    // A diverging map centres zero: a field of ±1 uses both ends.
    let signed = Tensor::from_vec(vec![-1.0f32, 1.0, 1.0, -1.0], vec![2, 2]).unwrap();
    let d = plot::heat_map(&signed, &HeatMap { colormap: Colormap::Diverging, ..HeatMap::default() }).unwrap();
    assert!(count(&d, Colormap::Diverging.color(0.0)) > 40_000 && count(&d, Colormap::Diverging.color(1.0)) > 40_000);
}

#[test]
fn pngs_gifs_and_line_plots_read_back() {
    let png = scratch("halves.png");
    plot::save_heat_map(&png, &halves(), &HeatMap { size: (400, 300), ..HeatMap::default() }).unwrap();
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (400, 300));
    assert!(img.pixels().any(|p| p.0 == Colormap::Viridis.color(1.0)));
    // Three frames of a moving bump.
    let gif = scratch("bump.gif");
    let mut anim = Animation::create(&gif, (320, 240), 100).unwrap();
    for k in 0..3 {
        let v: Vec<f32> =
            (0..16 * 16).map(|p| (-(((p % 16) as f32 - 4.0 * k as f32 - 3.0).powi(2)) / 4.0).exp()).collect();
        let t = Tensor::from_vec(v, vec![16, 16]).unwrap();
        anim.frame(&t, &HeatMap { size: (320, 240), title: format!("frame {k}"), ..HeatMap::default() }).unwrap();
    }
    drop(anim);
    use image::AnimationDecoder;
    let file = std::io::BufReader::new(std::fs::File::open(&gif).unwrap());
    let frames = image::codecs::gif::GifDecoder::new(file).unwrap().into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].buffer().dimensions(), (320, 240));
    assert_ne!(frames[0].buffer(), frames[2].buffer(), "the frames differ");
    // A loss curve on a log axis, and two profiles in one plot with a legend.
    let loss = Series {
        name: "loss".into(),
        x: (0..50).map(f64::from).collect(),
        y: (0..50).map(|k| (-0.1 * k as f64).exp()).collect(),
    };
    let path = scratch("loss.png");
    plot::save_line_plot(&path, std::slice::from_ref(&loss), &LinePlot { log_y: true, ..LinePlot::default() }).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 480));
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(ink > 3_000, "{ink} drawn pixels");
    let other = Series { name: "other".into(), x: vec![0.0, 49.0], y: vec![1.0, 0.5] };
    plot::save_line_plot(scratch("two.png"), &[loss, other], &LinePlot::default()).unwrap();
    std::fs::remove_dir_all(png.parent().unwrap()).unwrap();
}

#[test]
fn plot_errors_are_errors() {
    let kind = |r: rivulet::Result<()>| r.unwrap_err().kind();
    let line = Tensor::from_vec(vec![1.0f32, 2.0], vec![2]).unwrap();
    assert_eq!(plot::heat_map(&line, &HeatMap::default()).unwrap_err().kind(), ErrorKind::Shape);
    let bad = HeatMap { range: Some((1.0, 1.0)), ..HeatMap::default() };
    assert_eq!(plot::heat_map(&halves(), &bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let tiny = HeatMap { size: (10, 10), ..HeatMap::default() };
    assert_eq!(plot::heat_map(&halves(), &tiny).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let uneven = Series { name: "u".into(), x: vec![0.0, 1.0], y: vec![1.0] };
    assert_eq!(kind(plot::save_line_plot(scratch("u.png"), &[uneven], &LinePlot::default())), ErrorKind::Shape);
    let negative = Series { name: "n".into(), x: vec![0.0, 1.0], y: vec![-1.0, 0.0] };
    let log = LinePlot { log_y: true, ..LinePlot::default() };
    assert_eq!(kind(plot::save_line_plot(scratch("n.png"), &[negative], &log)), ErrorKind::InvalidArgument);
}
