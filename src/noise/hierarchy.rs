//! Disease-hierarchy consistency: a positive child implies a positive parent
//! ([`crate::data::HIERARCHY`]: Lung Opacity → Edema, Consolidation, Pneumonia, Lung Lesion,
//! Atelectasis; Consolidation → Pneumonia; Enlarged Cardiomediastinum → Cardiomegaly).
//! Pairs whose findings the dataset lacks (e.g. NIH has no Lung Opacity) are left out.
//!
//! Two options, each one config line:
//!
//! - **Consistency loss** (`weight > 0`): `weight · (1/N) Σ_n Σ_(parent, child)
//!   max(0, p_child − p_parent)²` over the table's pairs, on predicted probabilities; zero when
//!   every child is at most as likely as its parent. Returns a scalar with gradient.
//! - **Conditional training** (`conditional = true`, Pham et al.): a child's loss counts only
//!   where every parent's target is positive (positive share > 0.5), so the child's output
//!   learns `p(child | parent)`. At inference the marginal is rebuilt along the chain,
//!   `p(child) = p(child | parent) · p(parent)`, e.g. `p(Pneumonia) = p(Pn | Cons) ·
//!   p(Cons | LO) · p(LO)`. For that product each finding keeps only its *nearest* parents
//!   (Lung Opacity → Pneumonia is implied by Lung Opacity → Consolidation → Pneumonia and would
//!   count Lung Opacity twice); the table then is a forest. Were a finding left with several
//!   parents, their marginals would be multiplied (exact only for a tree).
//!
//! ```toml
//! [noise.hierarchy]
//! weight = 0.1
//! conditional = false
//! ```

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::HIERARCHY;
use crate::error::{Error, Result};

/// `[noise.hierarchy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HierarchyConfig {
    /// Weight of the consistency loss term; 0 = off.
    pub weight: f32,
    /// Conditional training (child losses only where the parent's target is positive) and
    /// marginal probabilities at inference.
    pub conditional: bool,
}

impl HierarchyConfig {
    /// Checks values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::Config(format!(
                "noise.hierarchy.weight = {} must be a finite number >= 0 (0 = off)",
                self.weight
            )));
        }
        Ok(())
    }
}

/// A loss term added to the reduced per-element loss (the small trait the hierarchy
/// consistency term implements).
pub trait LossTerm {
    /// The term for predicted probabilities, or `None` when switched off.
    ///
    /// # Shapes
    /// `probs [N, C]` → scalar `[]`
    fn term(&self, probs: &Tensor) -> Result<Option<Tensor>>;
}

/// The hierarchy resolved against a dataset's findings.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    weight: f32,
    conditional: bool,
    n_findings: usize,
    /// (parent, child) finding indices present in the dataset.
    pairs: Vec<(usize, usize)>,
    /// Nearest parents of each finding (transitive reduction).
    near: Vec<Vec<usize>>,
    /// Findings in an order where every parent precedes its children.
    topo: Vec<usize>,
}

fn idx(v: &[usize], device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = v.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(v.clone(), v.len(), device)?)
}

impl Hierarchy {
    /// Resolves [`HIERARCHY`] for `findings` (dataset order).
    pub fn new(cfg: &HierarchyConfig, findings: &[String]) -> Result<Self> {
        Self::with_table(cfg, findings, &HIERARCHY)
    }

    /// Same as [`Hierarchy::new`] with another table (tests, other vocabularies).
    pub fn with_table(
        cfg: &HierarchyConfig,
        findings: &[String],
        table: &[(&str, &str)],
    ) -> Result<Self> {
        cfg.validate()?;
        let pos = |name: &str| findings.iter().position(|f| f == name);
        let pairs: Vec<(usize, usize)> = table
            .iter()
            .filter_map(|(p, c)| Some((pos(p)?, pos(c)?)))
            .collect();
        let c = findings.len();
        let mut parents = vec![Vec::new(); c];
        for &(p, ch) in &pairs {
            parents[ch].push(p);
        }
        // Topological order (Kahn); a cycle is a table error.
        let mut indeg: Vec<usize> = parents.iter().map(Vec::len).collect();
        let mut topo: Vec<usize> = (0..c).filter(|&i| indeg[i] == 0).collect();
        let mut k = 0;
        while k < topo.len() {
            let p = topo[k];
            for &(pp, ch) in &pairs {
                if pp == p {
                    indeg[ch] -= 1;
                    if indeg[ch] == 0 {
                        topo.push(ch);
                    }
                }
            }
            k += 1;
        }
        if topo.len() != c {
            return Err(Error::Config(
                "the disease hierarchy table has a cycle; it must be a parent → child DAG".into(),
            ));
        }
        // Ancestors (in topological order, parents are complete before children).
        let mut anc = vec![vec![false; c]; c];
        for &f in &topo {
            for &p in &parents[f] {
                anc[f][p] = true;
                for a in 0..c {
                    if anc[p][a] {
                        anc[f][a] = true;
                    }
                }
            }
        }
        let near = (0..c)
            .map(|f| {
                parents[f]
                    .iter()
                    .copied()
                    .filter(|&p| !parents[f].iter().any(|&q| q != p && anc[q][p]))
                    .collect()
            })
            .collect();
        Ok(Hierarchy {
            weight: cfg.weight,
            conditional: cfg.conditional,
            n_findings: c,
            pairs,
            near,
            topo,
        })
    }

    /// The (parent, child) index pairs in use.
    pub fn pairs(&self) -> &[(usize, usize)] {
        &self.pairs
    }

    /// Whether conditional training is on.
    pub fn is_conditional(&self) -> bool {
        self.conditional
    }

    fn check(&self, what: &str, t: &Tensor) -> Result<usize> {
        match t.dims() {
            [n, c] if *c == self.n_findings => Ok(*n),
            d => Err(Error::Other(format!(
                "hierarchy: {what} has shape {d:?}; expected [N, {}]",
                self.n_findings
            ))),
        }
    }

    /// `(1/N) Σ_n Σ_pairs max(0, p_child − p_parent)²`, unweighted; zero for no pairs.
    ///
    /// # Shapes
    /// `probs [N, C]` → scalar `[]`
    pub fn violation(&self, probs: &Tensor) -> Result<Tensor> {
        let n = self.check("probabilities", probs)?;
        if self.pairs.is_empty() || n == 0 {
            return Ok(Tensor::zeros((), probs.dtype(), probs.device())?);
        }
        let dev = probs.device();
        let par: Vec<usize> = self.pairs.iter().map(|p| p.0).collect();
        let ch: Vec<usize> = self.pairs.iter().map(|p| p.1).collect();
        let d =
            (probs.index_select(&idx(&ch, dev)?, 1)? - probs.index_select(&idx(&par, dev)?, 1)?)?;
        Ok(d.relu()?.sqr()?.sum_all()?.affine(1.0 / n as f64, 0.0)?)
    }

    /// Conditional training mask: `mask` with a child's cell zeroed where any parent's
    /// positive-target share is not above 0.5. Unchanged when conditional training is off.
    ///
    /// # Shapes
    /// `mask [N, C]`, `positive_target [N, C]` → `[N, C]`
    pub fn conditional_mask(&self, mask: &Tensor, positive_target: &Tensor) -> Result<Tensor> {
        if !self.conditional || self.pairs.is_empty() {
            return Ok(mask.clone());
        }
        self.check("mask", mask)?;
        self.check("targets", positive_target)?;
        let parent_pos = positive_target.gt(0.5)?.to_dtype(mask.dtype())?;
        let mut cols = Vec::with_capacity(self.n_findings);
        for f in 0..self.n_findings {
            let mut col = mask.narrow(1, f, 1)?;
            for &(p, ch) in &self.pairs {
                if ch == f {
                    col = (col * parent_pos.narrow(1, p, 1)?)?;
                }
            }
            cols.push(col);
        }
        Ok(Tensor::cat(&cols, 1)?)
    }

    /// Marginal probabilities from conditional ones along the chain,
    /// `p(child) = p(child | nearest parents) · Π p(parent)` in topological order. Identity when
    /// conditional training is off.
    ///
    /// # Shapes
    /// `probs [N, C]` → `[N, C]`
    pub fn marginals(&self, probs: &Tensor) -> Result<Tensor> {
        if !self.conditional || self.pairs.is_empty() {
            return Ok(probs.clone());
        }
        self.check("probabilities", probs)?;
        let mut cols: Vec<Option<Tensor>> = vec![None; self.n_findings];
        for &f in &self.topo {
            let mut col = probs.narrow(1, f, 1)?;
            for &p in &self.near[f] {
                let pm = cols[p]
                    .as_ref()
                    .ok_or_else(|| Error::Other("hierarchy: parent after child".into()))?;
                col = (col * pm)?;
            }
            cols[f] = Some(col);
        }
        let cols: Vec<Tensor> = cols.into_iter().flatten().collect();
        Ok(Tensor::cat(&cols, 1)?)
    }
}

impl LossTerm for Hierarchy {
    fn term(&self, probs: &Tensor) -> Result<Option<Tensor>> {
        if self.weight == 0.0 {
            return Ok(None);
        }
        Ok(Some(
            self.violation(probs)?.affine(self.weight as f64, 0.0)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::CHEXPERT_FINDINGS;
    use crate::loss::host_f32;
    use candle_core::{DType, Var};

    fn chexpert() -> Vec<String> {
        CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect()
    }

    fn col(name: &str) -> usize {
        crate::data::labels::chexpert_index(name).unwrap()
    }

    fn on(weight: f32, conditional: bool) -> HierarchyConfig {
        HierarchyConfig {
            weight,
            conditional,
        }
    }

    #[test]
    fn resolves_every_table_pair_for_chexpert_and_drops_missing_findings() -> Result<()> {
        let h = Hierarchy::new(&on(1.0, false), &chexpert())?;
        assert_eq!(h.pairs().len(), 7);
        let nih: Vec<String> = ["Atelectasis", "Cardiomegaly", "Consolidation", "Pneumonia"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let h = Hierarchy::new(&on(1.0, false), &nih)?;
        assert_eq!(h.pairs(), &[(2, 3)]); // only Consolidation → Pneumonia
        Ok(())
    }

    /// Consistent probabilities (every child ≤ its parents) give exactly 0; an inconsistent
    /// batch gives the hand-computed value, and the gradient pushes child down, parent up.
    #[test]
    fn penalty_zero_when_consistent_positive_by_hand_when_not() -> Result<()> {
        let f = chexpert();
        let h = Hierarchy::new(&on(2.0, false), &f)?;
        let mut p = vec![vec![0.1f32; 14]; 2];
        for r in &mut p {
            r[col("Lung Opacity")] = 0.9;
            r[col("Consolidation")] = 0.6;
            r[col("Pneumonia")] = 0.5;
            r[col("Enlarged Cardiomediastinum")] = 0.4;
            r[col("Cardiomegaly")] = 0.4; // equal is consistent
        }
        let t = Tensor::new(p.clone(), &Device::Cpu)?;
        assert_eq!(h.term(&t)?.unwrap().to_scalar::<f32>()?, 0.0);
        // Row 1 breaks two pairs: Pneumonia 0.8 > Consolidation 0.6 (0.2) and Pneumonia 0.8 <
        // Lung Opacity 0.9 (fine); Cardiomegaly 0.7 > Enlarged Cardiomediastinum 0.4 (0.3).
        // violation = (0.2² + 0.3²) / N = (0.04 + 0.09) / 2 = 0.065; term = 2 · 0.065 = 0.13.
        p[1][col("Pneumonia")] = 0.8;
        p[1][col("Cardiomegaly")] = 0.7;
        let v = Var::from_tensor(&Tensor::new(p, &Device::Cpu)?)?;
        let term = h.term(v.as_tensor())?.unwrap();
        assert!((term.to_scalar::<f32>()? - 0.13).abs() < 1e-6);
        let g = host_f32(term.backward()?.get(v.as_tensor()).unwrap())?;
        // d/dp_child = 2·w·d/N = 2·2·0.3/2 = 0.6 for Cardiomegaly; −0.6 for its parent.
        assert!((g[14 + col("Cardiomegaly")] - 0.6).abs() < 1e-5, "{g:?}");
        assert!((g[14 + col("Enlarged Cardiomediastinum")] + 0.6).abs() < 1e-5);
        assert!((g[14 + col("Pneumonia")] - 0.4).abs() < 1e-5);
        assert_eq!(g[col("Pneumonia")], 0.0);
        assert!(Hierarchy::new(&on(0.0, false), &f)?
            .term(v.as_tensor())?
            .is_none());
        Ok(())
    }

    #[test]
    fn conditional_mask_and_marginals_along_the_chain() -> Result<()> {
        let names: Vec<String> = ["Lung Opacity", "Consolidation", "Pneumonia", "Fracture"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let h = Hierarchy::new(&on(0.0, true), &names)?;
        let dev = Device::Cpu;
        // Row 0: LO pos, Cons pos → Pneumonia kept. Row 1: LO pos, Cons 0.3 → Pneumonia
        // masked, Cons kept. Row 2: LO negative → Cons and Pneumonia masked; Fracture kept.
        let t = Tensor::new(
            &[[1f32, 1., 0., 1.], [0.9, 0.3, 1., 0.], [0., 1., 1., 0.]],
            &dev,
        )?;
        let m = Tensor::ones((3, 4), DType::F32, &dev)?;
        let cm = host_f32(&h.conditional_mask(&m, &t)?)?;
        assert_eq!(cm, [1., 1., 1., 1., 1., 1., 0., 1., 1., 0., 0., 1.]);
        // p(LO) = 0.8, p(Cons | LO) = 0.5, p(Pn | Cons) = 0.5 → 0.8, 0.4, 0.2 (Lung Opacity
        // counted once, via Consolidation).
        let p = Tensor::new(&[[0.8f32, 0.5, 0.5, 0.3]], &dev)?;
        let mg = host_f32(&h.marginals(&p)?)?;
        for (g, w) in mg.iter().zip([0.8, 0.4, 0.2, 0.3]) {
            assert!((g - w).abs() < 1e-6, "{mg:?}");
        }
        // Off: identity.
        let off = Hierarchy::new(&on(0.0, false), &names)?;
        assert_eq!(host_f32(&off.marginals(&p)?)?, host_f32(&p)?);
        assert_eq!(host_f32(&off.conditional_mask(&m, &t)?)?, [1.; 12]);
        Ok(())
    }

    #[test]
    fn cycles_are_config_errors() {
        let names: Vec<String> = ["A", "B"].iter().map(|s| s.to_string()).collect();
        let e =
            Hierarchy::with_table(&on(1.0, false), &names, &[("A", "B"), ("B", "A")]).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }
}
