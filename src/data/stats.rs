//! Label and view counts of a dataset, printed as in DESIGN.md §2 (blank / -1 / 0 / 1 per finding).

use std::fmt::Write;

use super::record::{Dataset, Projection, View};

/// Counts of one dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    pub name: String,
    pub rows: usize,
    pub patients: usize,
    pub studies: usize,
    /// `(finding, [blank, uncertain, negative, positive])`.
    pub findings: Vec<(String, [usize; 4])>,
    pub frontal: usize,
    pub lateral: usize,
    pub view_unknown: usize,
    /// `(projection, count)` in a fixed order: AP, PA, LL, RL, other, none.
    pub projections: Vec<(String, usize)>,
    /// Rows skipped while reading (filters, unreadable rows).
    pub skipped: usize,
}

impl Stats {
    /// Counts `ds`; `name` labels the table (usually the CSV's file name).
    pub fn of(ds: &Dataset, name: &str) -> Stats {
        let mut counts = vec![[0usize; 4]; ds.findings.len()];
        let (mut frontal, mut lateral, mut unknown) = (0, 0, 0);
        let order = [
            Some(Projection::AP),
            Some(Projection::PA),
            Some(Projection::LL),
            Some(Projection::RL),
            Some(Projection::Other),
            None,
        ];
        let mut proj = [0usize; 6];
        let mut studies: Vec<&str> = Vec::with_capacity(ds.records.len());
        for r in &ds.records {
            for (k, o) in r.labels.iter().enumerate() {
                counts[k][o.slot()] += 1;
            }
            match r.view {
                Some(View::Frontal) => frontal += 1,
                Some(View::Lateral) => lateral += 1,
                None => unknown += 1,
            }
            let slot = order.iter().position(|p| *p == r.projection).unwrap_or(5);
            proj[slot] += 1;
            studies.push(&r.study);
        }
        studies.sort_unstable();
        studies.dedup();
        Stats {
            name: name.to_string(),
            rows: ds.records.len(),
            patients: ds.n_patients(),
            studies: studies.len(),
            findings: ds.findings.iter().cloned().zip(counts).collect(),
            frontal,
            lateral,
            view_unknown: unknown,
            projections: ["AP", "PA", "LL", "RL", "other", "none"]
                .iter()
                .map(|s| s.to_string())
                .zip(proj)
                .collect(),
            skipped: ds.skipped.len(),
        }
    }

    /// Markdown: a per-finding table of blank / -1 / 0 / 1 (with thousands separators) and a
    /// view summary.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## {}: {} rows, {} patients, {} studies{}\n",
            self.name,
            thousands(self.rows),
            thousands(self.patients),
            thousands(self.studies),
            if self.skipped > 0 {
                format!(", {} rows skipped", thousands(self.skipped))
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "| Finding | blank | -1 | 0 | 1 |\n|---|---:|---:|---:|---:|"
        );
        for (f, c) in &self.findings {
            let _ = writeln!(
                s,
                "| {f} | {} | {} | {} | {} |",
                thousands(c[0]),
                thousands(c[1]),
                thousands(c[2]),
                thousands(c[3])
            );
        }
        let _ = writeln!(
            s,
            "\nViews: Frontal {}, Lateral {}, unknown {}. Projections: {}.",
            thousands(self.frontal),
            thousands(self.lateral),
            thousands(self.view_unknown),
            self.projections
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(p, n)| format!("{p} {}", thousands(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s
    }

    /// CSV: `set,finding,blank,uncertain,negative,positive`, then view rows as
    /// `set,view:<name>,,,,count`.
    pub fn csv(&self, header: bool) -> String {
        let mut s = String::new();
        if header {
            s.push_str("set,finding,blank,uncertain,negative,positive\n");
        }
        for (f, c) in &self.findings {
            let _ = writeln!(s, "{},{f},{},{},{},{}", self.name, c[0], c[1], c[2], c[3]);
        }
        for (v, n) in [
            ("Frontal", self.frontal),
            ("Lateral", self.lateral),
            ("unknown", self.view_unknown),
        ] {
            let _ = writeln!(s, "{},view:{v},,,,{n}", self.name);
        }
        for (p, n) in &self.projections {
            let _ = writeln!(s, "{},projection:{p},,,,{n}", self.name);
        }
        s
    }
}

/// `223414` → `223,414`.
pub fn thousands(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::csvio::{Table, Width};
    use std::path::Path;

    #[test]
    fn counts_a_hand_made_csv() {
        let text = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices\n\
            CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,,0.0,,,1.0\n\
            CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,,,,,,,,,,,-1.0,,,\n\
            CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Male,50,Frontal,PA,,,,,,,,,-1.0,,1.0,,,\n";
        let t = Table::from_bytes(
            Path::new("train.csv"),
            text.as_bytes().to_vec(),
            Width::Exact,
        )
        .unwrap();
        let ds = crate::data::chexpert::from_table(&t, Path::new(".")).unwrap();
        let s = Stats::of(&ds, "train.csv");
        assert_eq!((s.rows, s.patients, s.studies), (3, 2, 2));
        // Pleural Effusion: one each of 0, -1, 1 and no blank.
        assert_eq!(
            s.findings[10],
            ("Pleural Effusion".to_string(), [0, 1, 1, 1])
        );
        // Atelectasis: two blanks and one -1.
        assert_eq!(s.findings[8].1, [2, 1, 0, 0]);
        assert_eq!((s.frontal, s.lateral, s.view_unknown), (2, 1, 0));
        assert_eq!(s.projections[0], ("AP".to_string(), 1));
        assert_eq!(s.projections[5], ("none".to_string(), 1));
        let md = s.markdown();
        assert!(md.contains("| Pleural Effusion | 0 | 1 | 1 | 1 |"), "{md}");
        assert!(s.csv(true).contains("train.csv,Pleural Effusion,0,1,1,1\n"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1328), "1,328");
        assert_eq!(thousands(223414), "223,414");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
