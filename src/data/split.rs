//! Patient-level, seeded splits: a tuning set carved out of train (used for checkpoint selection,
//! thresholds and calibration, so the reported set is never the one tuned on) and K folds for
//! out-of-fold relabeling. A patient's images always land on one side together.

use super::record::Dataset;
use crate::rng::hash_str;

/// Patients ordered by a seeded hash of their id: independent of row order.
fn ranked_patients(ds: &Dataset, seed: u64) -> Vec<&str> {
    let mut p: Vec<&str> = ds.records.iter().map(|r| r.patient.as_str()).collect();
    p.sort_unstable();
    p.dedup();
    p.sort_by_key(|id| (hash_str(id) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), *id));
    p
}

/// Splits record indices into `(train, tune)`; `round(fraction × patients)` patients go to tune
/// (at least one when `fraction > 0` and there are two or more patients).
pub fn tune_split(ds: &Dataset, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let patients = ranked_patients(ds, seed);
    let mut n_tune = (fraction * patients.len() as f64).round() as usize;
    if fraction > 0.0 && n_tune == 0 && patients.len() > 1 {
        n_tune = 1;
    }
    let tune: std::collections::HashSet<&str> = patients[..n_tune.min(patients.len())]
        .iter()
        .copied()
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, r) in ds.records.iter().enumerate() {
        if tune.contains(r.patient.as_str()) {
            b.push(i);
        } else {
            a.push(i);
        }
    }
    (a, b)
}

/// Fold (0..k) of every record, assigning patients round-robin in seeded hash order so fold sizes
/// differ by at most one patient.
pub fn patient_folds(ds: &Dataset, k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let patients = ranked_patients(ds, seed);
    let fold: std::collections::HashMap<&str, usize> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i % k))
        .collect();
    ds.records
        .iter()
        .map(|r| fold[r.patient.as_str()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::{DatasetKind, Record};
    use std::path::PathBuf;

    fn ds(n_patients: usize, per: usize) -> Dataset {
        let mut records = Vec::new();
        for p in 0..n_patients {
            for s in 0..per {
                records.push(Record {
                    path: format!("x/patient{p:05}/study{s}/view1_frontal.jpg"),
                    patient: format!("patient{p:05}"),
                    study: format!("patient{p:05}/study{s}"),
                    sex: None,
                    age: None,
                    view: None,
                    projection: None,
                    labels: vec![],
                    line: records.len() + 2,
                });
            }
        }
        Dataset {
            kind: DatasetKind::CheXpert,
            csv: PathBuf::from("t.csv"),
            image_root: PathBuf::new(),
            findings: vec![],
            records,
            skipped: vec![],
        }
    }

    #[test]
    fn tune_split_is_patient_level_sized_and_seeded() {
        let d = ds(100, 3);
        let (a, b) = tune_split(&d, 0.1, 7);
        assert_eq!(b.len(), 30);
        assert_eq!(a.len() + b.len(), 300);
        let tp: std::collections::HashSet<_> = b.iter().map(|&i| &d.records[i].patient).collect();
        assert!(a.iter().all(|&i| !tp.contains(&d.records[i].patient)));
        assert_eq!(tune_split(&d, 0.1, 7), (a.clone(), b.clone()));
        assert_ne!(tune_split(&d, 0.1, 8).1, b);
        // Row order does not change who is in tune.
        let mut rev = d.clone();
        rev.records.reverse();
        let (_, rb) = tune_split(&rev, 0.1, 7);
        let rp: std::collections::HashSet<_> =
            rb.iter().map(|&i| &rev.records[i].patient).collect();
        assert_eq!(rp, tp);
    }

    #[test]
    fn folds_keep_patients_together_and_balance() {
        let d = ds(10, 2);
        let f = patient_folds(&d, 3, 1);
        for r in d.records.chunks(2).zip(f.chunks(2)) {
            assert_eq!(r.1[0], r.1[1]);
        }
        let mut counts = [0; 3];
        for x in &f {
            counts[*x] += 1;
        }
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 2);
    }
}
