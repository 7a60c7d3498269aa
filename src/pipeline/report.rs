//! The pipeline's one Markdown report: every stage's test metrics and, for relabel stages, the
//! label-noise rate before → after against the truth.

use super::state::StageResult;

fn f3(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "—".into())
}

fn f4(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "—".into())
}

/// The report over the stages that finished, in order.
pub fn markdown(title: &str, stages: &[StageResult]) -> String {
    let mut s = format!("# Pipeline {title}\n\n");
    if let Some(set) = stages.iter().find_map(|r| r.test.as_ref().map(|t| &t.set)) {
        s.push_str(&format!(
            "Test metrics: AUROC of each stage's best checkpoint (single model) on `{set}`; \
             mean over the 5 competition tasks and over every finding with a defined AUROC.\n\n"
        ));
    }
    s.push_str(
        "| # | stage | kind | test mean AUROC (5 tasks) | test mean AUROC (all) | tuning mean \
         AUROC (all) | label noise before → after | cells changed | seconds |\n\
         |---:|---|---|---:|---:|---:|---|---:|---:|\n",
    );
    for r in stages {
        let (noise, changed) = match &r.relabel {
            Some(x) => (
                match (x.noise_before, x.noise_after) {
                    (Some(b), Some(a)) => format!("{b:.4} → {a:.4} ({})", x.models),
                    _ => format!("no truth ({})", x.models),
                },
                x.changed.to_string(),
            ),
            None => (String::new(), String::new()),
        };
        let all = r
            .test
            .as_ref()
            .map(|t| format!("{} ({} findings)", f3(t.mean_auroc_all), t.n_findings_all));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.index,
            r.name,
            r.kind.as_str(),
            f3(r.test.as_ref().and_then(|t| t.mean_auroc_5)),
            all.unwrap_or_else(|| "—".into()),
            f3(r.tune.as_ref().and_then(|t| t.mean_auroc_all)),
            noise,
            changed,
            r.seconds
        ));
    }
    // Per finding, one column per stage with test metrics.
    let with_test: Vec<&StageResult> = stages.iter().filter(|r| r.test.is_some()).collect();
    if let Some(first) = with_test.first().and_then(|r| r.test.as_ref()) {
        s.push_str("\n## Test AUROC per finding\n\n| Finding |");
        for r in &with_test {
            s.push_str(&format!(" {}. {} |", r.index, r.name));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(with_test.len()));
        s.push('\n');
        for (k, (f, _)) in first.per_finding.iter().enumerate() {
            s.push_str(&format!("| {f} |"));
            for r in &with_test {
                let v = r
                    .test
                    .as_ref()
                    .and_then(|t| t.per_finding.get(k))
                    .and_then(|x| x.1);
                s.push_str(&format!(" {} |", f3(v)));
            }
            s.push('\n');
        }
    }
    for r in stages {
        if let Some(x) = &r.relabel {
            if x.per_finding.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "\n## Stage {} ({}): label noise per finding against the truth\n\n\
                 noise = stated cells that disagree + blanks hiding a positive + every -1, over \
                 all {} rows; {} cells changed, {} fixed, {} broken.\n\n\
                 | Finding | before | after |\n|---|---:|---:|\n",
                r.index,
                x.models,
                x.rows,
                x.changed,
                x.fixed.unwrap_or(0),
                x.broken.unwrap_or(0)
            ));
            for (f, b, a) in &x.per_finding {
                s.push_str(&format!("| {f} | {} | {} |\n", f4(Some(*b)), f4(Some(*a))));
            }
            s.push_str(&format!(
                "| **all** | **{}** | **{}** |\n",
                f4(x.noise_before),
                f4(x.noise_after)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::config::StageKind;
    use super::super::state::{Metrics, RelabelStats};
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn report_has_a_row_per_stage_and_the_noise_change() {
        let m = |v: f64| Metrics {
            set: "test.csv".into(),
            mean_auroc_5: Some(v),
            mean_auroc_all: Some(v - 0.01),
            n_findings_all: 14,
            per_finding: vec![("Edema".into(), Some(v))],
        };
        let base = StageResult {
            index: 1,
            name: "train".into(),
            kind: StageKind::Train,
            dir: PathBuf::from("o/01-train"),
            fingerprint: String::new(),
            checkpoint: None,
            evaluated: None,
            predictions: None,
            test: Some(m(0.8)),
            tune: None,
            relabel: None,
            seconds: 12.0,
        };
        let rel = StageResult {
            index: 2,
            name: "relabel".into(),
            kind: StageKind::Relabel,
            test: None,
            relabel: Some(RelabelStats {
                csv: PathBuf::from("r.csv"),
                rows: 10,
                changed: 3,
                models: "single model".into(),
                noise_before: Some(0.25),
                noise_after: Some(0.125),
                fixed: Some(3),
                broken: Some(0),
                per_finding: vec![("Edema".into(), 0.25, 0.125)],
            }),
            ..base.clone()
        };
        let head = StageResult {
            index: 3,
            name: "train_head".into(),
            kind: StageKind::TrainHead,
            test: Some(m(0.85)),
            ..base.clone()
        };
        let md = markdown("t", &[base, rel, head]);
        assert!(
            md.contains("| 1 | train | train | 0.800 | 0.790 (14 findings) |"),
            "{md}"
        );
        assert!(md.contains("0.2500 → 0.1250 (single model) | 3 |"), "{md}");
        assert!(md.contains("| Edema | 0.800 | 0.850 |"), "{md}");
        assert!(md.contains("| **all** | **0.2500** | **0.1250** |"), "{md}");
    }
}
