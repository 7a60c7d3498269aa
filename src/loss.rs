//! Losses on logits: a numerically stable binary cross-entropy with logits that returns the
//! per-element loss, a softmax cross-entropy per finding (U-MultiClass), and the masked,
//! weighted reduction to a scalar.
//!
//! Every noisy-label technique acts on the per-element loss `[N, C]` before it is reduced:
//! policies decide targets and the mask, class weighting and MentorNet-style reweighting
//! supply per-element weights, conditional training narrows the mask. Hence the split between
//! [`bce_with_logits`] (no reduction) and [`reduce`].
//!
//! Why not `candle_nn::loss::binary_cross_entropy_with_logit`: it takes `sigmoid` then `log`,
//! which gives `inf` at logits of ±100, and it only returns the mean.
//!
//! Targets, masks and weights are cast to the logits' dtype, and every op stays on the logits'
//! device: nothing here is CPU- or f32-specific.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

fn same_shape(what: &str, a: &Tensor, b: &Tensor, b_name: &str) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::Other(format!(
            "{what}: {b_name} has shape {:?} but the logits have {:?}; they must match",
            b.dims(),
            a.dims()
        )));
    }
    Ok(())
}

/// `log(1 + exp(-|x|))`, finite and differentiable for every finite `x`.
fn log1p_exp_neg_abs(x: &Tensor) -> Result<Tensor> {
    Ok(x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)
}

/// Per-element binary cross-entropy with logits, PyTorch's
/// `F.binary_cross_entropy_with_logits(x, t, pos_weight=p, reduction="none")`, in the stable form
///
/// ```text
/// without pos_weight:  ℓ = max(x, 0) − x·t + log(1 + exp(−|x|))
/// with pos_weight p_c: ℓ = (1 − t)·x + (1 + (p_c − 1)·t) · (max(−x, 0) + log(1 + exp(−|x|)))
/// ```
///
/// which is `−p·t·log σ(x) − (1 − t)·log(1 − σ(x))`. Targets may be soft (in `[0, 1]`). Logits of
/// ±100 give finite losses and gradients. Loss unit: nats.
///
/// # Shapes
/// - `logits`: `[N, C]` (any shape, in fact; `targets` must match it)
/// - `targets`: same as `logits`
/// - `pos_weight`: `[C]`, broadcast over the leading dimensions
/// - returns: same as `logits`
pub fn bce_with_logits(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
) -> Result<Tensor> {
    same_shape("bce_with_logits", logits, targets, "targets")?;
    let dt = logits.dtype();
    let t = targets.to_dtype(dt)?;
    let l = log1p_exp_neg_abs(logits)?;
    match pos_weight {
        None => Ok(((logits.relu()? - (logits * &t)?)? + l)?),
        Some(p) => {
            let c = logits.dims().last().copied().unwrap_or(1);
            if p.dims() != [c] {
                return Err(Error::Other(format!(
                    "bce_with_logits: pos_weight has shape {:?}; it must be [{c}], one weight \
                     per finding",
                    p.dims()
                )));
            }
            let p = p.to_dtype(dt)?;
            // softplus(−x) = max(−x, 0) + log(1 + e^−|x|), written as max(x, 0) − x + ... so
            // that at x = 0 candle's subgradients (relu' = abs' = 1 there) give the true
            // derivative −σ(0) = −0.5; `relu(−x)` would give −1.5.
            let softplus_neg = ((logits.relu()? - logits)? + l)?;
            // 1 + (p − 1)·t
            let coef = t.broadcast_mul(&p.affine(1.0, -1.0)?)?.affine(1.0, 1.0)?;
            let one_minus_t = t.affine(-1.0, 1.0)?;
            Ok(((one_minus_t * logits)? + (coef * softplus_neg)?)?)
        }
    }
}

/// Per-group softmax cross-entropy with class-probability targets, PyTorch's
/// `F.cross_entropy(z, t, reduction="none")` with the classes moved to the last dimension:
/// `ℓ = −Σ_k t_k · log softmax(z)_k`. Used by U-MultiClass (K = 3 per finding). The log-softmax
/// is written out (shifted by the detached max) so that it has a gradient; candle's
/// `softmax_last_dim` has none.
///
/// # Shapes
/// - `logits`: `[N, G, K]`
/// - `targets`: `[N, G, K]`, each `[n, g, :]` a distribution (one-hot or soft)
/// - returns: `[N, G]`
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    same_shape("soft_cross_entropy", logits, targets, "targets")?;
    let t = targets.to_dtype(logits.dtype())?;
    let log_p = log_softmax(logits)?;
    Ok((t * log_p)?.sum(D::Minus1)?.neg()?)
}

/// Log-softmax over the last dimension with a gradient (max shift detached: it cancels).
///
/// # Shapes
/// `[..., K]` → `[..., K]`
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(z.broadcast_sub(&lse)?)
}

/// Masked, weighted reduction: `Σ w·m·ℓ / max(Σ m, 1)`.
///
/// The denominator counts the cells that are present (`m = 1`), not the weights, so a weight
/// below 1 really lowers a cell's pull (MentorNet-style reweighting relies on that) and the
/// scale of the loss does not depend on how many cells were down-weighted. A batch whose mask is
/// all zero reduces to `0` (with a zero gradient), never NaN. `weights = None` means all ones.
///
/// # Shapes
/// - `loss`, `mask`, `weights`: `[N, C]` (any shape, all equal)
/// - returns: scalar `[]`
pub fn reduce(loss: &Tensor, mask: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    same_shape("reduce", loss, mask, "mask")?;
    let dt = loss.dtype();
    let m = mask.to_dtype(dt)?;
    let mut wl = (loss * &m)?;
    if let Some(w) = weights {
        same_shape("reduce", loss, w, "weights")?;
        wl = (wl * w.to_dtype(dt)?)?;
    }
    let den = m.sum_all()?.maximum(1.0)?;
    Ok(wl.sum_all()?.div(&den)?)
}

/// ChestX-ray8's weighted cross-entropy (Wang et al. 2017) as per-element weights, computed per
/// batch and finding over the cells present in the mask:
///
/// ```text
/// |P|_c = Σ_n m·t,   |N|_c = Σ_n m·(1 − t)
/// β_P = |N| / (|P| + |N|),   β_N = |P| / (|P| + |N|),   w = t·β_P + (1 − t)·β_N
/// ```
///
/// For hard targets `w` is β_P on positives and β_N on negatives; soft targets interpolate.
/// The paper writes β_P = (|P|+|N|)/|P| and β_N = (|P|+|N|)/|N|, the same ratio β_P/β_N scaled
/// by (|P|+|N|)²/(|P|·|N|); this bounded form keeps weights in `[0, 1]`. As the formula says, a
/// finding with no positive in the batch gives its negatives weight 0 (and vice versa); a
/// finding with no cell present gives weight 0 (its cells are masked anyway). Pass the targets'
/// positive-probability view (`HeadLayout::positive_target` for U-MultiClass heads).
///
/// # Shapes
/// - `targets`, `mask`: `[N, C]`
/// - returns: `[N, C]`, detached (weights carry no gradient)
pub fn chestxray8_weights(targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    same_shape("chestxray8_weights", targets, mask, "mask")?;
    let t = targets.detach();
    let m = mask.to_dtype(t.dtype())?;
    let pos = (&t * &m)?.sum_keepdim(0)?; // [1, C]
    let neg = (t.affine(-1.0, 1.0)? * &m)?.sum_keepdim(0)?;
    let total = (&pos + &neg)?.maximum(1e-12)?;
    let beta_p = neg.div(&total)?;
    let beta_n = pos.div(&total)?;
    let w = (t.broadcast_mul(&beta_p)? + t.affine(-1.0, 1.0)?.broadcast_mul(&beta_n)?)?;
    Ok(w.detach())
}

/// `f32` copy of a tensor, flattened (host side; for tests).
#[cfg(test)]
pub(crate) fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use serde_json::Value;

    fn fixture(name: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/loss")
            .join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn flat(v: &Value) -> Vec<f32> {
        match v {
            Value::Array(a) => a.iter().flat_map(flat).collect(),
            Value::Number(n) => vec![n.as_f64().unwrap() as f32],
            other => panic!("not a number: {other}"),
        }
    }

    fn dims(v: &Value) -> Vec<usize> {
        let mut d = Vec::new();
        let mut cur = v;
        while let Value::Array(a) = cur {
            d.push(a.len());
            cur = &a[0];
        }
        d
    }

    fn tensor(v: &Value) -> Tensor {
        Tensor::from_vec(flat(v), dims(v), &Device::Cpu).unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(g.is_finite(), "{what}[{i}] = {g} is not finite");
            let err = (g - w).abs() / w.abs().max(1.0);
            assert!(err <= tol, "{what}[{i}]: got {g}, PyTorch {w}");
        }
    }

    /// Every case of `bce.json` (made by `tests/fixtures/loss/make_fixtures.py` with PyTorch's
    /// `F.binary_cross_entropy_with_logits`): per-element loss, masked weighted reduction and
    /// its gradient with respect to the logits, with logits of ±100 and soft targets.
    #[test]
    fn bce_matches_pytorch_with_masks_weights_pos_weight_and_extreme_logits() -> Result<()> {
        let f = fixture("bce.json");
        let cases = f["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let x = Var::from_tensor(&tensor(&case["logits"]))?;
            let t = tensor(&case["targets"]);
            let m = tensor(&case["mask"]);
            let w = tensor(&case["weights"]);
            let p = match &case["pos_weight"] {
                Value::Null => None,
                v => Some(tensor(v)),
            };
            let el = bce_with_logits(x.as_tensor(), &t, p.as_ref())?;
            assert_close(&host_f32(&el)?, &flat(&case["loss"]), 1e-5, name);
            let red = reduce(&el, &m, Some(&w))?;
            let want = case["reduced"].as_f64().unwrap() as f32;
            assert_close(&host_f32(&red)?, &[want], 1e-5, name);
            let grads = red.backward()?;
            let g = grads.get(x.as_tensor()).expect("logits get a gradient");
            assert_close(&host_f32(g)?, &flat(&case["grad"]), 1e-5, name);
        }
        Ok(())
    }

    /// `cross_entropy.json`: PyTorch `F.cross_entropy` with class-probability targets.
    #[test]
    fn soft_cross_entropy_matches_pytorch() -> Result<()> {
        let f = fixture("cross_entropy.json");
        let z = Var::from_tensor(&tensor(&f["logits"]))?;
        let t = tensor(&f["targets"]);
        let m = tensor(&f["mask"]);
        let el = soft_cross_entropy(z.as_tensor(), &t)?;
        assert_eq!(el.dims(), &[4, 3]);
        assert_close(&host_f32(&el)?, &flat(&f["loss"]), 1e-5, "ce");
        let red = reduce(&el, &m, None)?;
        let want = f["reduced"].as_f64().unwrap() as f32;
        assert_close(&host_f32(&red)?, &[want], 1e-5, "ce reduced");
        let grads = red.backward()?;
        let g = grads.get(z.as_tensor()).unwrap();
        assert_close(&host_f32(g)?, &flat(&f["grad"]), 1e-5, "ce grad");
        Ok(())
    }

    #[test]
    fn all_zero_mask_reduces_to_zero_not_nan() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[100f32, -3.0], [0.5, -100.0]], &dev)?)?;
        let t = Tensor::new(&[[0f32, 1.0], [1.0, 1.0]], &dev)?;
        let el = bce_with_logits(x.as_tensor(), &t, None)?;
        let red = reduce(&el, &t.zeros_like()?, None)?;
        assert_eq!(red.to_scalar::<f32>()?, 0.0);
        let g = host_f32(red.backward()?.get(x.as_tensor()).unwrap())?;
        assert!(g.iter().all(|v| *v == 0.0), "{g:?}");
        Ok(())
    }

    #[test]
    fn shape_mismatches_are_errors_not_panics() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let t = Tensor::zeros((3, 2), DType::F32, &dev).unwrap();
        let e = bce_with_logits(&x, &t, None).unwrap_err().to_string();
        assert!(e.contains("targets") && e.contains("[3, 2]"), "{e}");
        let p = Tensor::ones(2, DType::F32, &dev).unwrap();
        let e = bce_with_logits(&x, &x, Some(&p)).unwrap_err().to_string();
        assert!(e.contains("pos_weight"), "{e}");
        assert!(reduce(&x, &t, None).is_err());
    }

    /// Hand-computed: finding 0 has 1 positive and 3 negatives present (row 4 masked):
    /// β_P = 3/4, β_N = 1/4. Finding 1 has soft targets 0.5, 1, 0, 0 (present) →
    /// |P| = 1.5, |N| = 2.5, β_P = 2.5/4 = 0.625, β_N = 0.375; w(t = 0.5) = 0.5.
    #[test]
    fn chestxray8_weights_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let t = Tensor::new(
            &[[1f32, 0.5], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]],
            &dev,
        )?;
        let m = Tensor::new(
            &[[1f32, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]],
            &dev,
        )?;
        let w = host_f32(&chestxray8_weights(&t, &m)?)?;
        let want = [
            0.75, 0.5, 0.25, 0.625, 0.25, 0.375, 0.25, 0.375, 0.75, 0.625,
        ];
        assert_close(&w, &want, 1e-6, "chestxray8");
        Ok(())
    }

    /// dtype follows the logits: f64 logits with f32 targets, mask and pos_weight work and
    /// agree with the f32 computation.
    #[test]
    fn dtype_follows_the_logits() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[100f32, -2.5, 0.3], [-100.0, 1.0, 0.0]], &dev)?;
        let t = Tensor::new(&[[0f32, 1.0, 0.5], [0.0, 0.0, 1.0]], &dev)?;
        let p = Tensor::new(&[2f32, 1.0, 0.5], &dev)?;
        let a = bce_with_logits(&x, &t, Some(&p))?;
        let b = bce_with_logits(&x.to_dtype(DType::F64)?, &t, Some(&p))?;
        assert_eq!(b.dtype(), DType::F64);
        assert_close(&host_f32(&a)?, &host_f32(&b)?, 1e-6, "f64 vs f32");
        let r = reduce(&b, &t.ones_like()?, Some(&t))?;
        assert_eq!(r.dtype(), DType::F64);
        Ok(())
    }
}
