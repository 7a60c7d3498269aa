//! Model probabilities per image, the input of a relabel.

use std::collections::HashMap;

use crate::data::labels::chexpert_index;
use crate::error::{Error, Result};

/// Probabilities for `paths.len()` images and `findings.len()` findings.
///
/// # Shapes
/// - `paths`: `[N]`, image paths exactly as the CSV writes them (CheXpert's `Path` column;
///   for MIMIC-CXR the reader's `files/p10/p10000032/s50414267/<dicom_id>.jpg`).
/// - `findings`: `[C]`, CheXpert names (the CSV's column names).
/// - `probs`: `[N * C]`, row-major: `probs[i * C + k]` is P(finding `k` | image `i`), in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    pub paths: Vec<String>,
    pub findings: Vec<String>,
    pub probs: Vec<f32>,
}

impl Probabilities {
    /// Checks shapes, values in `[0, 1]`, known and distinct findings, and distinct paths.
    pub fn new(paths: Vec<String>, findings: Vec<String>, probs: Vec<f32>) -> Result<Self> {
        let (n, c) = (paths.len(), findings.len());
        if c == 0 {
            return Err(Error::Other(
                "probabilities: no findings; the model must predict at least one".into(),
            ));
        }
        if probs.len() != n * c {
            return Err(Error::Other(format!(
                "probabilities: {} values for {n} images x {c} findings (expected {})",
                probs.len(),
                n * c
            )));
        }
        for (k, f) in findings.iter().enumerate() {
            if chexpert_index(f).is_none() {
                return Err(Error::Other(format!(
                    "probabilities: finding {f:?} is not a CheXpert name; relabel writes \
                     CheXpert-named columns"
                )));
            }
            if findings[..k].contains(f) {
                return Err(Error::Other(format!(
                    "probabilities: finding {f:?} appears twice"
                )));
            }
        }
        if let Some(i) = probs
            .iter()
            .position(|p| !p.is_finite() || !(0.0..=1.0).contains(p))
        {
            return Err(Error::Other(format!(
                "probabilities: value {} for image {:?}, finding {:?} is not a probability in \
                 [0, 1]; pass sigmoid outputs, not logits",
                probs[i],
                paths[i / c],
                findings[i % c]
            )));
        }
        let mut seen = HashMap::with_capacity(n);
        for (i, p) in paths.iter().enumerate() {
            if let Some(j) = seen.insert(p.as_str(), i) {
                return Err(Error::Other(format!(
                    "probabilities: image {p:?} is predicted twice (rows {j} and {i}); \
                     predict each image once"
                )));
            }
        }
        Ok(Probabilities {
            paths,
            findings,
            probs,
        })
    }

    /// Like [`Probabilities::new`] from one `Vec` per image (e.g. `tensor.to_vec2()`).
    pub fn from_rows(
        paths: Vec<String>,
        findings: Vec<String>,
        rows: Vec<Vec<f32>>,
    ) -> Result<Self> {
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != findings.len())
        {
            return Err(Error::Other(format!(
                "probabilities: row {i} has {} values for {} findings",
                r.len(),
                findings.len()
            )));
        }
        Self::new(paths, findings, rows.concat())
    }

    /// Number of images `N`.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The `[C]` probabilities of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.findings.len();
        &self.probs[i * c..(i + 1) * c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn checks_shape_values_and_names() {
        let ok = Probabilities::from_rows(
            s(&["a.jpg", "b.jpg"]),
            s(&["Edema", "Cardiomegaly"]),
            vec![vec![0.1, 0.2], vec![0.3, 1.0]],
        )
        .unwrap();
        assert_eq!(ok.row(1), &[0.3, 1.0]);
        let f = s(&["Edema"]);
        assert!(Probabilities::new(s(&["a"]), f.clone(), vec![0.1, 0.2]).is_err());
        let e = Probabilities::new(s(&["a"]), f.clone(), vec![1.5]).unwrap_err();
        assert!(e.to_string().contains("logits"), "{e}");
        assert!(Probabilities::new(s(&["a"]), f.clone(), vec![f32::NAN]).is_err());
        let e = Probabilities::new(s(&["a", "a"]), f, vec![0.1, 0.2]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(Probabilities::new(s(&["a"]), s(&["Effusion"]), vec![0.1]).is_err());
        assert!(Probabilities::new(s(&["a"]), s(&["Edema", "Edema"]), vec![0.1, 0.1]).is_err());
    }
}
