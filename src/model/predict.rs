//! Inference: logits or probabilities for a batch, in eval mode, and the output column names.

use candle_core::{DType, Tensor};

use super::Classifier;
use crate::data::labels::CHEXPERT_FINDINGS;
use crate::error::{Error, Result};

/// What [`predict`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `sigmoid(logits)`, independent per finding (multi-label).
    Probabilities,
    /// Raw logits.
    Logits,
}

/// Runs `model` in eval mode (running BatchNorm statistics, no dropout) on `x`, in chunks of
/// at most `batch_size` samples, and returns F32 on the model's device.
///
/// # Shapes
/// `x`: `[N, C, H, W]` (already preprocessed) → `[N, K]`
pub fn predict(
    model: &dyn Classifier,
    x: &Tensor,
    output: Output,
    batch_size: usize,
) -> Result<Tensor> {
    let (n, _, _, _) = x.dims4()?;
    if n == 0 {
        return Err(Error::Other("predict: empty batch".into()));
    }
    let bs = batch_size.max(1);
    let mut outs = Vec::new();
    let mut i = 0;
    while i < n {
        let m = bs.min(n - i);
        let logits = model
            .forward(&x.narrow(0, i, m)?, false)?
            .to_dtype(DType::F32)?;
        outs.push(match output {
            Output::Logits => logits,
            Output::Probabilities => candle_nn::ops::sigmoid(&logits)?,
        });
        i += m;
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Output column names: the 14 CheXpert findings when the head has 14 outputs, otherwise
/// `out_0`, `out_1`, ...
pub fn output_names(num_outputs: usize) -> Vec<String> {
    if num_outputs == CHEXPERT_FINDINGS.len() {
        CHEXPERT_FINDINGS.iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_outputs).map(|i| format!("out_{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build, ModelConfig, ModelVars};
    use candle_core::Device;

    #[test]
    fn probabilities_are_sigmoid_of_logits_and_chunking_does_not_change_results() -> Result<()> {
        let vars = ModelVars::new(1, DType::F32, &Device::Cpu);
        let model = build(&ModelConfig::new("vit_tiny", 3), &vars)?;
        let x = Tensor::arange(0f32, (5 * 64 * 64) as f32, &Device::Cpu)?
            .reshape((5, 1, 64, 64))?
            .affine(1e-3, 0.0)?
            .cos()?;
        let l = predict(model.as_ref(), &x, Output::Logits, 2)?;
        let l5 = predict(model.as_ref(), &x, Output::Logits, 5)?;
        assert_eq!(l.dims(), &[5, 3]);
        let d = (&l - &l5)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{d}");
        let p = predict(model.as_ref(), &x, Output::Probabilities, 5)?.to_vec2::<f32>()?;
        for (pr, lr) in p.iter().zip(l.to_vec2::<f32>()?) {
            for (a, b) in pr.iter().zip(lr) {
                assert!((a - 1.0 / (1.0 + (-b).exp())).abs() < 1e-6);
            }
        }
        assert_eq!(output_names(14)[0], "No Finding");
        assert_eq!(output_names(2), vec!["out_0", "out_1"]);
        Ok(())
    }
}
