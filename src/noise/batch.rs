//! [`LabelBatch`]: the labels of one batch after the uncertainty policy, as every later technique
//! sees them (smoothing, mixup, MentorNet-style blank admission, conditional training).

use candle_core::Tensor;

use crate::error::Result;

/// Policy-applied labels of one batch.
///
/// `targets` follows the head layout ([`super::HeadLayout`]): one column per binary finding,
/// three per U-MultiClass finding. `mask`, `weight` and `blank` have one column per finding.
/// A masked cell (`mask = 0`) always carries the *negative* target, so un-masking it (MentorNet
/// blank admission) needs no second target table.
///
/// # Shapes
/// - `targets`: `[N, W]`, `W = layout.width()`, values in `[0, 1]`
/// - `mask`: `[N, C]`, 1 = the cell enters the loss, 0 = it does not
/// - `weight`: `[N, C]`, prior per-element weight (1, or `mentor.blank_weight` on admitted
///   blanks; mixup interpolates it)
/// - `blank`: `[N, C]`, 1 where the raw observation was blank (not mentioned)
#[derive(Debug, Clone)]
pub struct LabelBatch {
    pub targets: Tensor,
    pub mask: Tensor,
    pub weight: Tensor,
    pub blank: Tensor,
}

impl LabelBatch {
    /// Batch size `N`.
    pub fn len(&self) -> usize {
        self.mask.dims().first().copied().unwrap_or(0)
    }

    /// True for a batch of no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same labels with every tensor moved to `device`.
    pub fn to_device(&self, device: &candle_core::Device) -> Result<LabelBatch> {
        Ok(LabelBatch {
            targets: self.targets.to_device(device)?,
            mask: self.mask.to_device(device)?,
            weight: self.weight.to_device(device)?,
            blank: self.blank.to_device(device)?,
        })
    }
}
