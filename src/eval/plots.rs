//! PNG figures: ROC curves of the competition tasks, reliability diagram, and per-epoch loss
//! and tuning AUROC of a run.
//!
//! Drawn with plotters into an RGB buffer and encoded with the `image` crate. Text uses
//! DejaVu Sans embedded in the binary (`assets/fonts/`, registered with plotters' `ab_glyph`
//! backend), so figures render the same on machines without fontconfig or system fonts.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle, RGBColor};
use serde::{Deserialize, Serialize};

use super::auroc::roc_curve;
use super::calibration::FindingCalibration;
use super::predictions::Predictions;
use crate::data::COMPETITION_TASKS;
use crate::error::{Error, Result};

/// DejaVu Sans 2.37 (Bitstream Vera licence; `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Series colours (Tableau 10), distinguishable in print.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const GRAY: RGBColor = RGBColor(170, 170, 170);

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the embedded DejaVu Sans font failed to load".to_string())
        })
        .clone()
        .map_err(Error::Other)
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Renders `draw` on a white `w x h` canvas and writes it as PNG to `path`.
fn render(path: &Path, (w, h): (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> Result<()> {
    ensure_font()?;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| Error::Other(format!("plot {}: {e}", path.display())))?;
        draw(&root).map_err(|e| Error::Other(format!("plot {}: {e}", path.display())))?;
        root.present()
            .map_err(|e| Error::Other(format!("plot {}: {e}", path.display())))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Other(format!("plot {}: buffer size mismatch", path.display())))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Other(format!("writing {}: {e}", path.display())))
}

/// Keeps at most `max` points (evenly spaced, first and last kept).
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let step = (points.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| points[((i as f64 * step).round() as usize).min(points.len() - 1)])
        .collect()
}

/// ROC curves of the competition tasks present with a defined AUROC (legend: AUROC), with the
/// chance diagonal. `title` should name the set and the model ("single model" / "ensemble of
/// N").
pub fn roc_plot(path: &Path, p: &Predictions, title: &str) -> Result<()> {
    let mut curves = Vec::new();
    for task in COMPETITION_TASKS {
        let Some(k) = p.finding_index(task) else {
            continue;
        };
        let c = p.column(k);
        let (Some(roc), Some(auc)) = (
            roc_curve(&c.scores, &c.labels),
            super::auroc::auroc(&c.scores, &c.labels),
        ) else {
            continue;
        };
        let pts = roc.fpr.into_iter().zip(roc.tpr).collect();
        curves.push((format!("{task} ({auc:.3})"), thin(pts, 2000)));
    }
    render(path, (720, 640), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("False positive rate (1 - specificity)")
            .y_desc("True positive rate (sensitivity)")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GRAY.stroke_width(1),
        ))?;
        for (i, (name, pts)) in curves.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Reliability diagram: observed fraction of positives against mean predicted probability
/// per bin, one line per given finding (legend: ECE), with the diagonal of perfect
/// calibration. Empty bins are skipped.
pub fn reliability_plot(path: &Path, findings: &[FindingCalibration], title: &str) -> Result<()> {
    render(path, (720, 640), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("Mean predicted probability")
            .y_desc("Fraction positive")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GRAY.stroke_width(1),
        ))?;
        for (i, f) in findings.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = f
                .bins
                .iter()
                .filter_map(|b| Some((b.mean_prob?, b.frac_pos?)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let label = match f.ece {
                Some(e) => format!("{} (ECE {e:.3})", f.finding),
                None => f.finding.clone(),
            };
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// One epoch of a training run, as the trainer records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Loss on the tuning split, if measured.
    pub tune_loss: Option<f64>,
    /// Mean tuning AUROC over the competition tasks, if defined.
    pub tune_auroc: Option<f64>,
}

/// Two panels: training (and tuning) loss per epoch, and tuning AUROC per epoch.
pub fn training_plot(path: &Path, epochs: &[EpochPoint], title: &str) -> Result<()> {
    if epochs.is_empty() {
        return Err(Error::Other(format!(
            "plot {}: no epochs to draw",
            path.display()
        )));
    }
    let x_max = epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1) as f64;
    let x_min = epochs.iter().map(|e| e.epoch).min().unwrap_or(0) as f64;
    let x_range = if x_max > x_min {
        x_min..x_max
    } else {
        x_min - 0.5..x_max + 0.5
    };
    let losses: Vec<f64> = epochs
        .iter()
        .flat_map(|e| [Some(e.train_loss), e.tune_loss])
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    let l_max = losses.iter().copied().fold(f64::MIN, f64::max).max(1e-6) * 1.05;
    let aucs: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| Some((e.epoch as f64, e.tune_auroc?)))
        .collect();
    let a_min = aucs.iter().map(|a| a.1).fold(1.0, f64::min).min(0.5);
    render(path, (1200, 520), |root| {
        let root = root.titled(title, ("sans-serif", 20))?;
        let (left, right) = root.split_horizontally(600);
        let mut c = ChartBuilder::on(&left)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range.clone(), 0f64..l_max)?;
        c.configure_mesh()
            .x_desc("Epoch")
            .y_desc("Loss")
            .label_style(("sans-serif", 14))
            .draw()?;
        let train: Vec<(f64, f64)> = epochs
            .iter()
            .map(|e| (e.epoch as f64, e.train_loss))
            .collect();
        c.draw_series(LineSeries::new(train, COLORS[0].stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], COLORS[0].stroke_width(2))
            });
        let tune: Vec<(f64, f64)> = epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64, e.tune_loss?)))
            .collect();
        if !tune.is_empty() {
            c.draw_series(LineSeries::new(tune, COLORS[1].stroke_width(2)))?
                .label("tuning")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], COLORS[1].stroke_width(2))
                });
        }
        c.configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        let mut c = ChartBuilder::on(&right)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range, a_min..1f64)?;
        c.configure_mesh()
            .x_desc("Epoch")
            .y_desc("Tuning AUROC (competition-task mean)")
            .label_style(("sans-serif", 14))
            .draw()?;
        if !aucs.is_empty() {
            c.draw_series(aucs.iter().map(|&p| Circle::new(p, 3, COLORS[2].filled())))?;
            c.draw_series(LineSeries::new(aucs, COLORS[2].stroke_width(2)))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::synthetic;
    use crate::eval::calibration::calibration_table;

    fn decode(path: &Path) -> image::DynamicImage {
        image::open(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
    }

    /// Count of pixels that are neither white nor gray-ish: something was drawn in colour.
    fn coloured_pixels(img: &image::DynamicImage) -> usize {
        img.to_rgb8()
            .pixels()
            .filter(|p| {
                let [r, g, b] = p.0;
                r.max(g).max(b) - r.min(g).min(b) > 60
            })
            .count()
    }

    #[test]
    fn figures_are_written_and_decode() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = synthetic(2000, 14, 3);
        p.n_models = 3;
        let roc = dir.path().join("roc.png");
        roc_plot(
            &roc,
            &p,
            &format!("synthetic test set, {}", p.model_label()),
        )
        .unwrap();
        let img = decode(&roc);
        assert_eq!((img.width(), img.height()), (720, 640));
        assert!(coloured_pixels(&img) > 2000, "ROC curves not drawn");
        let cal = calibration_table(&p, 10);
        let tasks: Vec<FindingCalibration> = cal
            .into_iter()
            .filter(|c| COMPETITION_TASKS.contains(&c.finding.as_str()))
            .collect();
        let rel = dir.path().join("reliability.png");
        reliability_plot(&rel, &tasks, "synthetic test set, reliability").unwrap();
        assert!(coloured_pixels(&decode(&rel)) > 1000);
        let epochs: Vec<EpochPoint> = (1..=6)
            .map(|e| EpochPoint {
                epoch: e,
                train_loss: 0.7 / e as f64,
                tune_loss: Some(0.75 / e as f64 + 0.05),
                tune_auroc: (e > 1).then(|| 0.7 + 0.03 * e as f64),
            })
            .collect();
        let tr = dir.path().join("training.png");
        training_plot(&tr, &epochs, "run: loss and tuning AUROC").unwrap();
        let img = decode(&tr);
        assert_eq!((img.width(), img.height()), (1200, 520));
        assert!(coloured_pixels(&img) > 500);
        assert!(training_plot(&tr, &[], "empty").is_err());
        if let Ok(keep) = std::env::var("NOISYCXR_KEEP_PLOTS") {
            for f in ["roc.png", "reliability.png", "training.png"] {
                std::fs::copy(dir.path().join(f), Path::new(&keep).join(f)).unwrap();
            }
        }
    }

    #[test]
    fn thinning_keeps_ends() {
        let pts: Vec<(f64, f64)> = (0..10_001).map(|i| (i as f64, 0.0)).collect();
        let t = thin(pts, 2000);
        assert_eq!(t.len(), 2000);
        assert_eq!((t[0].0, t[1999].0), (0.0, 10_000.0));
    }
}
