//! Study-level aggregation: the probabilities of a study's images combined per finding (max or
//! mean) before the relabel decision, since CheXpert and MIMIC-CXR labels are given per study.

use std::collections::HashMap;

use super::policy::Aggregate;
use super::probs::Probabilities;
use crate::error::{Error, Result};

/// Combines the rows of `probs` that share a key.
///
/// # Shapes
/// - `keys`: `[N]`, the study of each image of `probs`.
/// - returns: key → `[C]` combined probabilities.
///
/// With [`Aggregate::None`] each key must have exactly one image (an error names the first key
/// with more and says to set `relabel.aggregate`).
pub fn by_key(
    probs: &Probabilities,
    keys: &[String],
    how: Aggregate,
) -> Result<HashMap<String, Vec<f32>>> {
    if keys.len() != probs.len() {
        return Err(Error::Other(format!(
            "aggregate: {} keys for {} images",
            keys.len(),
            probs.len()
        )));
    }
    let c = probs.findings.len();
    // key → (sum or max, count)
    let mut acc: HashMap<String, (Vec<f32>, usize)> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let row = probs.row(i);
        match acc.get_mut(key) {
            None => {
                acc.insert(key.clone(), (row.to_vec(), 1));
            }
            Some((v, n)) => {
                if how == Aggregate::None {
                    return Err(Error::Config(format!(
                        "relabel.aggregate = \"none\" but study {key:?} has several predicted \
                         images (e.g. {:?}); its labels are per study: set aggregate = \"max\" \
                         or \"mean\"",
                        probs.paths[i]
                    )));
                }
                *n += 1;
                for k in 0..c {
                    v[k] = match how {
                        Aggregate::Max => v[k].max(row[k]),
                        _ => v[k] + row[k],
                    };
                }
            }
        }
    }
    Ok(acc
        .into_iter()
        .map(|(key, (mut v, n))| {
            if how == Aggregate::Mean {
                // Sum in f32 then divide: exact enough for probabilities of a handful of views.
                v.iter_mut().for_each(|x| *x /= n as f32);
            }
            (key, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn max_and_mean_per_study_and_finding() {
        // Study A has two images, B one. Expected by hand:
        // A max = (0.8, 0.3), A mean = ((0.2+0.8)/2, (0.3+0.1)/2) = (0.5, 0.2); B = its own row.
        let p = Probabilities::from_rows(
            s(&["a1", "a2", "b1"]),
            s(&["Edema", "Atelectasis"]),
            vec![vec![0.2, 0.3], vec![0.8, 0.1], vec![0.6, 0.9]],
        )
        .unwrap();
        let keys = s(&["A", "A", "B"]);
        let max = by_key(&p, &keys, Aggregate::Max).unwrap();
        assert_eq!(max["A"], vec![0.8, 0.3]);
        assert_eq!(max["B"], vec![0.6, 0.9]);
        let mean = by_key(&p, &keys, Aggregate::Mean).unwrap();
        assert!((mean["A"][0] - 0.5).abs() < 1e-6 && (mean["A"][1] - 0.2).abs() < 1e-6);
        assert_eq!(mean["B"], vec![0.6, 0.9]);
        let e = by_key(&p, &keys, Aggregate::None).unwrap_err().to_string();
        assert!(
            e.contains("relabel.aggregate") && e.contains("\"A\""),
            "{e}"
        );
        let one = by_key(&p, &s(&["A", "B", "C"]), Aggregate::None).unwrap();
        assert_eq!(one["B"], vec![0.8, 0.1]);
    }
}
