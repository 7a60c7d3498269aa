//! The ablation table in the seed's layout: rows = findings, MEAN (5 tasks), MEAN (all
//! defined findings), the paired-bootstrap difference of each column's means from the
//! baseline, and (with an oracle) the share of the noise gap each column closes; columns =
//! runs. Pure functions of test-set [`Predictions`] (one per column and seed), rendered as
//! Markdown and CSV.
//!
//! **Cells** are the mean over seeds ± the *sample* standard deviation (n − 1) over seeds of
//! single-model test AUROCs (no ensembling).
//!
//! **Differences** pair by seed and by test study: every bootstrap resample draws the test
//! studies once and scores every model of every seed on that draw; in each resample the
//! column's difference is `mean_s(M(run_s)) − mean_s(M(baseline_s))` (M = a mean AUROC), so
//! the point estimate is exactly the difference of the table's MEAN cells. The percentile
//! interval covers test-set sampling; seed-to-seed variation is the ± of the cells. With one
//! seed this is [`crate::eval::compare`]'s paired difference (tested).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::bootstrap::{interval, Engine, Resamples};
use crate::eval::compare::Difference;
use crate::eval::summary::{mean_covers, Mean};
use crate::eval::{summarize, BootstrapConfig, Predictions};

/// Mean and spread of one cell over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Mean of the defined values; `None` if none is defined.
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1) of the defined values; `None` with fewer than two.
    pub std: Option<f64>,
    /// Number of defined values (seeds).
    pub n: usize,
}

/// Mean ± sample standard deviation (n − 1) of the defined values.
pub fn spread(values: &[Option<f64>]) -> Spread {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    let n = v.len();
    if n == 0 {
        return Spread {
            mean: None,
            std: None,
            n,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = (n >= 2).then(|| {
        let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Spread {
        mean: Some(mean),
        std,
        n,
    }
}

/// Share of the noise gap a run closes: `(run − baseline) / (oracle − baseline)`. `None`
/// when a value is missing or the oracle is not better than the baseline (no gap to close).
pub fn gap_closed(run: Option<f64>, baseline: Option<f64>, oracle: Option<f64>) -> Option<f64> {
    let (r, b, o) = (run?, baseline?, oracle?);
    let gap = o - b;
    (gap > 0.0).then(|| (r - b) / gap)
}

/// Seed-averaged paired differences `run − baseline` of the competition-task mean and of the
/// all-findings mean (see the module docs).
///
/// `runs[s]` and `baselines[s]` are the same seed's test predictions; every model must hold
/// the same rows (checked).
pub fn seed_averaged_difference(
    runs: &[&Predictions],
    baselines: &[&Predictions],
    config: &BootstrapConfig,
) -> Result<(Difference, Difference)> {
    config.validate()?;
    let s = runs.len();
    if s == 0 || s != baselines.len() {
        return Err(Error::Other(format!(
            "ablation difference: {s} run seeds but {} baseline seeds",
            baselines.len()
        )));
    }
    let models: Vec<&Predictions> = runs.iter().chain(baselines.iter()).copied().collect();
    let engine = Engine::new(&models)?;
    let point = engine.point();
    let (comp_idx, all_idx, _, _) = mean_covers(&models[0].findings, &point[0]);
    let res = engine.resample_aurocs(Resamples::Seeded {
        seed: config.seed,
        n: config.resamples,
    })?;
    // Mean over seeds of M(run_s) − M(baseline_s); undefined if any term is.
    let diff = |aurocs: &[Vec<Option<f64>>], idx: &[usize]| -> Option<f64> {
        let mut d = 0.0;
        for k in 0..s {
            d += Mean::of(&aurocs[k], idx)? - Mean::of(&aurocs[s + k], idx)?;
        }
        Some(d / s as f64)
    };
    let make = |idx: &[usize]| {
        let p = diff(&point, idx);
        let diffs: Vec<Option<f64>> = res.iter().map(|r| diff(r, idx)).collect();
        let defined: Vec<f64> = diffs.iter().flatten().copied().collect();
        let p_bootstrap = (!defined.is_empty()).then(|| {
            let n = defined.len() as f64;
            let le = defined.iter().filter(|&&d| d <= 0.0).count() as f64 / n;
            let ge = defined.iter().filter(|&&d| d >= 0.0).count() as f64 / n;
            (2.0 * le.min(ge)).min(1.0)
        });
        Difference {
            point: p,
            ci: p.and_then(|_| interval(diffs, config.level)),
            p_bootstrap,
        }
    };
    Ok((make(&comp_idx), make(&all_idx)))
}

/// One column's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnResult {
    pub name: String,
    pub oracle: bool,
    /// Per finding, in table order.
    pub per_finding: Vec<Spread>,
    pub mean_competition: Spread,
    pub mean_all: Spread,
    /// Against the baseline (`None` for the baseline itself).
    pub diff_competition: Option<Difference>,
    pub diff_all: Option<Difference>,
    /// With an oracle column: share of the gap closed (baseline 0, oracle 1).
    pub gap_competition: Option<f64>,
    pub gap_all: Option<f64>,
}

/// A whole ablation table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AblationTable {
    pub name: String,
    pub description: String,
    pub baseline: String,
    pub seeds: Vec<u64>,
    /// The reported set (a test CSV; never the tuning split).
    pub test_set: String,
    pub n_images: usize,
    pub n_studies: usize,
    pub findings: Vec<String>,
    pub competition_covers: Vec<String>,
    pub all_covers: Vec<String>,
    pub bootstrap: BootstrapConfig,
    pub has_oracle: bool,
    pub columns: Vec<ColumnResult>,
}

/// The inputs of one column: its name, whether it is the oracle, and one test-set prediction
/// per seed (same seed order in every column).
pub struct ColumnInput {
    pub name: String,
    pub oracle: bool,
    pub seeds: Vec<Predictions>,
}

/// Header of an experiment's table (what [`build`] does not compute).
pub struct TableMeta<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub baseline: &'a str,
    pub seeds: &'a [u64],
    pub test_set: &'a str,
    pub bootstrap: &'a BootstrapConfig,
}

/// Computes every cell, difference and gap.
pub fn build(meta: &TableMeta, cols: &[ColumnInput]) -> Result<AblationTable> {
    let base = cols
        .iter()
        .find(|c| c.name == meta.baseline)
        .ok_or_else(|| Error::Other(format!("baseline column {:?} missing", meta.baseline)))?;
    let first = base
        .seeds
        .first()
        .ok_or_else(|| Error::Other("ablation table: no seeds".into()))?;
    for c in cols {
        if c.seeds.len() != meta.seeds.len() {
            return Err(Error::Other(format!(
                "column {:?} has {} seeds' predictions, expected {}",
                c.name,
                c.seeds.len(),
                meta.seeds.len()
            )));
        }
    }
    let findings = first.findings.clone();
    let first_sum = summarize(first);
    let base_refs: Vec<&Predictions> = base.seeds.iter().collect();
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        let sums: Vec<_> = c.seeds.iter().map(summarize).collect();
        let per_finding = (0..findings.len())
            .map(|k| {
                spread(
                    &sums
                        .iter()
                        .map(|s| s.per_finding.get(k).and_then(|f| f.auroc))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let mean_competition = spread(
            &sums
                .iter()
                .map(|s| s.mean_competition.value)
                .collect::<Vec<_>>(),
        );
        let mean_all = spread(&sums.iter().map(|s| s.mean_all.value).collect::<Vec<_>>());
        let (diff_competition, diff_all) = if c.name == meta.baseline {
            (None, None)
        } else {
            let refs: Vec<&Predictions> = c.seeds.iter().collect();
            let (a, b) = seed_averaged_difference(&refs, &base_refs, meta.bootstrap)?;
            (Some(a), Some(b))
        };
        columns.push(ColumnResult {
            name: c.name.clone(),
            oracle: c.oracle,
            per_finding,
            mean_competition,
            mean_all,
            diff_competition,
            diff_all,
            gap_competition: None,
            gap_all: None,
        });
    }
    let has_oracle = cols.iter().any(|c| c.oracle);
    if has_oracle {
        let pick = |f: fn(&ColumnResult) -> Option<f64>, oracle: bool| {
            columns
                .iter()
                .find(|c| {
                    if oracle {
                        c.oracle
                    } else {
                        c.name == meta.baseline
                    }
                })
                .and_then(f)
        };
        let m5 = |c: &ColumnResult| c.mean_competition.mean;
        let ma = |c: &ColumnResult| c.mean_all.mean;
        let (b5, o5, ba, oa) = (
            pick(m5, false),
            pick(m5, true),
            pick(ma, false),
            pick(ma, true),
        );
        for c in &mut columns {
            c.gap_competition = gap_closed(c.mean_competition.mean, b5, o5);
            c.gap_all = gap_closed(c.mean_all.mean, ba, oa);
        }
    }
    let (_, n_studies) = first.study_index();
    Ok(AblationTable {
        name: meta.name.to_string(),
        description: meta.description.to_string(),
        baseline: meta.baseline.to_string(),
        seeds: meta.seeds.to_vec(),
        test_set: meta.test_set.to_string(),
        n_images: first.n_rows(),
        n_studies,
        findings,
        competition_covers: first_sum.mean_competition.covers,
        all_covers: first_sum.mean_all.covers,
        bootstrap: meta.bootstrap.clone(),
        has_oracle,
        columns,
    })
}

fn fmt_spread(s: &Spread) -> String {
    match (s.mean, s.std) {
        (None, _) => "—".into(),
        (Some(m), Some(sd)) => format!("{m:.3} ± {sd:.3}"),
        (Some(m), None) => format!("{m:.3}"),
    }
}

fn signed(x: f64) -> String {
    if x < 0.0 {
        format!("−{:.3}", -x)
    } else {
        format!("+{x:.3}")
    }
}

fn fmt_diff(d: &Option<Difference>) -> String {
    match d {
        None => "(baseline)".into(),
        Some(Difference { point: None, .. }) => "undefined".into(),
        Some(Difference {
            point: Some(p),
            ci: Some(ci),
            ..
        }) => format!("{} [{}, {}]", signed(*p), signed(ci.lo), signed(ci.hi)),
        Some(Difference { point: Some(p), .. }) => signed(*p),
    }
}

fn fmt_gap(g: Option<f64>) -> String {
    g.map(|g| format!("{:.0}%", 100.0 * g).replace('-', "−"))
        .unwrap_or_else(|| "—".into())
}

fn opt(x: Option<f64>) -> String {
    x.map(|v| format!("{v}")).unwrap_or_default()
}

impl AblationTable {
    /// Label of the all-findings mean row.
    pub fn all_label(&self) -> String {
        format!("MEAN ({} findings)", self.all_covers.len())
    }

    /// Label of the competition-task mean row.
    pub fn competition_label(&self) -> String {
        format!("MEAN ({} tasks)", self.competition_covers.len())
    }

    /// The table as Markdown, with the notes saying what every number is; `footer` is
    /// appended (command, commit, machine).
    pub fn markdown(&self, footer: &str) -> String {
        let b = &self.bootstrap;
        let mut s = format!("# Ablation `{}`\n\n", self.name);
        if !self.description.is_empty() {
            s.push_str(&format!("{}\n\n", self.description.trim()));
        }
        s.push_str(&format!(
            "- **Set**: test split `{}`, {} images of {} studies (the tuning split only \
             chose each run's best epoch).\n\
             - **Cells**: AUROC of **single models** (no ensembling), mean over seeds {:?} ± \
             sample standard deviation (n − 1) over those seeds.\n\
             - **Δ rows**: seed-averaged difference of the mean AUROC from the baseline `{}` \
             (column − baseline; each seed paired with the baseline's same seed) with a {:.0}% \
             percentile interval from {} paired study-bootstrap resamples of the test set \
             (seed {}; every model of every seed scored on the same draws). The interval covers \
             test-set sampling; seed-to-seed variation is the ±.\n",
            self.test_set,
            self.n_images,
            self.n_studies,
            self.seeds,
            self.baseline,
            100.0 * b.level,
            b.resamples,
            b.seed
        ));
        if self.has_oracle {
            s.push_str(
                "- **Gap closed**: (column − baseline) / (oracle − baseline) of the \
                 seed-averaged means; the oracle is the baseline's model trained on the clean \
                 truth (`train_clean.csv`); — where the oracle is not better than the \
                 baseline.\n",
            );
        }
        s.push_str(&format!(
            "- {}: {}. {}: every finding with a defined AUROC.\n\n",
            self.competition_label(),
            self.competition_covers.join(", "),
            self.all_label()
        ));
        s.push_str("| Finding |");
        for c in &self.columns {
            let tag = if c.name == self.baseline {
                " (baseline)"
            } else {
                ""
            };
            s.push_str(&format!(" {}{tag} |", c.name));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(self.columns.len()));
        s.push('\n');
        let mut row = |label: String, cells: Vec<String>| {
            s.push_str(&format!("| {label} |"));
            for c in cells {
                s.push_str(&format!(" {c} |"));
            }
            s.push('\n');
        };
        for (k, f) in self.findings.iter().enumerate() {
            row(
                f.clone(),
                self.columns
                    .iter()
                    .map(|c| fmt_spread(&c.per_finding[k]))
                    .collect(),
            );
        }
        let bold = |x: String| format!("**{x}**");
        row(
            bold(self.competition_label()),
            self.columns
                .iter()
                .map(|c| bold(fmt_spread(&c.mean_competition)))
                .collect(),
        );
        row(
            bold(self.all_label()),
            self.columns
                .iter()
                .map(|c| bold(fmt_spread(&c.mean_all)))
                .collect(),
        );
        let lvl = format!("{:.0}% CI", 100.0 * b.level);
        row(
            format!("Δ {} vs baseline [{lvl}]", self.competition_label()),
            self.columns
                .iter()
                .map(|c| fmt_diff(&c.diff_competition))
                .collect(),
        );
        row(
            format!("Δ {} vs baseline [{lvl}]", self.all_label()),
            self.columns.iter().map(|c| fmt_diff(&c.diff_all)).collect(),
        );
        if self.has_oracle {
            row(
                format!("Gap closed, {}", self.competition_label()),
                self.columns
                    .iter()
                    .map(|c| fmt_gap(c.gap_competition))
                    .collect(),
            );
            row(
                format!("Gap closed, {}", self.all_label()),
                self.columns.iter().map(|c| fmt_gap(c.gap_all)).collect(),
            );
        }
        if !footer.is_empty() {
            s.push('\n');
            s.push_str(footer.trim_end());
            s.push('\n');
        }
        s
    }

    /// The table as CSV: `row`, then per column `<name>_mean`, `_std`, `_n`, `_lo`, `_hi`
    /// (`_lo`/`_hi` only on the Δ rows; `_mean` of a Δ row is its point estimate, of a gap
    /// row the share closed as a fraction).
    pub fn csv(&self) -> String {
        let mut s = String::from("row");
        for c in &self.columns {
            for f in ["mean", "std", "n", "lo", "hi"] {
                s.push_str(&format!(",{}_{f}", c.name));
            }
        }
        s.push('\n');
        let spread_row = |label: &str, get: &dyn Fn(&ColumnResult) -> Spread| {
            let mut r = csv_field(label);
            for c in &self.columns {
                let v = get(c);
                r.push_str(&format!(",{},{},{},,", opt(v.mean), opt(v.std), v.n));
            }
            r.push('\n');
            r
        };
        for (k, f) in self.findings.iter().enumerate() {
            s.push_str(&spread_row(f, &|c| c.per_finding[k]));
        }
        s.push_str(&spread_row(&self.competition_label(), &|c| {
            c.mean_competition
        }));
        s.push_str(&spread_row(&self.all_label(), &|c| c.mean_all));
        let n = self.seeds.len();
        let diff_row = |label: String, get: &dyn Fn(&ColumnResult) -> &Option<Difference>| {
            let mut r = csv_field(&label);
            for c in &self.columns {
                match get(c) {
                    None => r.push_str(",,,,,"),
                    Some(d) => r.push_str(&format!(
                        ",{},,{n},{},{}",
                        opt(d.point),
                        opt(d.ci.map(|i| i.lo)),
                        opt(d.ci.map(|i| i.hi))
                    )),
                }
            }
            r.push('\n');
            r
        };
        s.push_str(&diff_row(
            format!("delta {} vs {}", self.competition_label(), self.baseline),
            &|c| &c.diff_competition,
        ));
        s.push_str(&diff_row(
            format!("delta {} vs {}", self.all_label(), self.baseline),
            &|c| &c.diff_all,
        ));
        if self.has_oracle {
            for (label, get) in [
                (
                    format!("gap closed {}", self.competition_label()),
                    (|c: &ColumnResult| c.gap_competition) as fn(&ColumnResult) -> Option<f64>,
                ),
                (format!("gap closed {}", self.all_label()), |c| c.gap_all),
            ] {
                s.push_str(&csv_field(&label));
                for c in &self.columns {
                    s.push_str(&format!(",{},,,,", opt(get(c))));
                }
                s.push('\n');
            }
        }
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bootstrap::tests::{fixture, fixture_sets};
    use crate::eval::compare::compare;

    #[test]
    fn mean_and_sample_std_match_numpy() {
        // numpy: x = [0.81, 0.84, 0.83]; x.mean() = 0.8266666666666667,
        // x.std(ddof=1) = 0.015275252316519468
        let s = spread(&[Some(0.81), Some(0.84), None, Some(0.83)]);
        assert_eq!(s.n, 3);
        assert!((s.mean.unwrap() - 0.8266666666666667).abs() < 1e-15);
        assert!((s.std.unwrap() - 0.015275252316519468).abs() < 1e-15);
        let one = spread(&[Some(0.7)]);
        assert_eq!((one.mean, one.std, one.n), (Some(0.7), None, 1));
        assert_eq!(spread(&[None]).mean, None);
    }

    #[test]
    fn gap_closed_is_the_share_of_the_oracle_gap() {
        // (0.85 - 0.80) / (0.90 - 0.80) = 0.5
        assert!((gap_closed(Some(0.85), Some(0.80), Some(0.90)).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(gap_closed(Some(0.80), Some(0.80), Some(0.90)), Some(0.0));
        assert!((gap_closed(Some(0.90), Some(0.80), Some(0.90)).unwrap() - 1.0).abs() < 1e-12);
        // Worse than the baseline: negative share.
        assert!((gap_closed(Some(0.78), Some(0.80), Some(0.90)).unwrap() + 0.2).abs() < 1e-12);
        // No gap (oracle not better): undefined.
        assert_eq!(gap_closed(Some(0.85), Some(0.80), Some(0.80)), None);
        assert_eq!(gap_closed(Some(0.85), Some(0.80), Some(0.79)), None);
        assert_eq!(gap_closed(None, Some(0.80), Some(0.9)), None);
    }

    #[test]
    fn one_seed_difference_is_the_eval_modules_paired_difference() {
        let f = fixture();
        let (a, b, _) = fixture_sets(&f);
        let cfg = BootstrapConfig {
            resamples: 300,
            seed: 11,
            level: 0.95,
        };
        let want = compare(&a, &b, "a", "b", &cfg).unwrap();
        let (d5, dall) = seed_averaged_difference(&[&a], &[&b], &cfg).unwrap();
        assert_eq!(d5, want.mean_competition);
        assert_eq!(dall, want.mean_all);
        // Two identical seeds average to the same difference and interval.
        let (d5b, _) = seed_averaged_difference(&[&a, &a], &[&b, &b], &cfg).unwrap();
        assert_eq!(d5b.point, d5.point);
        let (x, y) = (d5b.ci.unwrap(), d5.ci.unwrap());
        assert!((x.lo - y.lo).abs() < 1e-12 && (x.hi - y.hi).abs() < 1e-12);
        // Swapping the seeds of one side only changes the pairing, not the averaged point.
        let (d1, _) = seed_averaged_difference(&[&a, &b], &[&b, &a], &cfg).unwrap();
        let (d2, _) = seed_averaged_difference(&[&b, &a], &[&b, &a], &cfg).unwrap();
        assert!(d1.point.unwrap().abs() < 1e-12 && d2.point.unwrap().abs() < 1e-12);
        assert!(seed_averaged_difference(&[&a], &[&b, &b], &cfg).is_err());
    }

    #[test]
    fn table_has_the_seed_layout_and_hand_checked_cells() {
        let f = fixture();
        let (a, b, _) = fixture_sets(&f);
        let cfg = BootstrapConfig {
            resamples: 50,
            seed: 1,
            level: 0.95,
        };
        let cols = vec![
            ColumnInput {
                name: "base".into(),
                oracle: false,
                seeds: vec![b.clone(), b.clone()],
            },
            ColumnInput {
                name: "new".into(),
                oracle: false,
                seeds: vec![a.clone(), b.clone()],
            },
            ColumnInput {
                name: "oracle".into(),
                oracle: true,
                seeds: vec![a.clone(), a.clone()],
            },
        ];
        let meta = TableMeta {
            name: "t",
            description: "",
            baseline: "base",
            seeds: &[0, 1],
            test_set: "test.csv",
            bootstrap: &cfg,
        };
        let t = build(&meta, &cols).unwrap();
        let (sa, sb) = (summarize(&a), summarize(&b));
        let (ma, mb) = (sa.mean_all.value.unwrap(), sb.mean_all.value.unwrap());
        // "new" = one seed like the oracle, one like the baseline: halfway.
        let new = &t.columns[1];
        assert!((new.mean_all.mean.unwrap() - (ma + mb) / 2.0).abs() < 1e-12);
        let sd = ((ma - mb).abs() / 2.0_f64.sqrt()).abs();
        assert!((new.mean_all.std.unwrap() - sd).abs() < 1e-12);
        assert!((new.diff_all.as_ref().unwrap().point.unwrap() - (ma - mb) / 2.0).abs() < 1e-12);
        if ma > mb {
            assert!((new.gap_all.unwrap() - 0.5).abs() < 1e-12);
            assert!((t.columns[2].gap_all.unwrap() - 1.0).abs() < 1e-12);
            assert_eq!(t.columns[0].gap_all, Some(0.0));
        }
        assert_eq!(t.columns[0].std_all_is_zero(), true);
        assert!(t.columns[0].diff_all.is_none());

        let md = t.markdown("footer line");
        let n_f = a.n_findings();
        let rows = md.lines().filter(|l| l.starts_with("| ")).count();
        // Header + findings + 2 means + 2 Δ + 2 gap rows.
        assert_eq!(rows, 1 + n_f + 6, "{md}");
        assert!(md.contains("base (baseline)") && md.contains("single models"));
        assert!(md.contains("test split `test.csv`") && md.ends_with("footer line\n"));
        let csv = t.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + n_f + 6);
        for l in &lines {
            assert_eq!(l.split(',').count(), 1 + 3 * 5, "{l}");
        }
        assert!(lines[0].starts_with("row,base_mean,base_std,base_n,base_lo,base_hi,new_mean"));
    }

    impl ColumnResult {
        fn std_all_is_zero(&self) -> bool {
            self.mean_all.std == Some(0.0)
        }
    }
}
