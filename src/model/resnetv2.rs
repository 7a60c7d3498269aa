//! The ResNet-V2-style backbone of timm's hybrid ViTs (`vision_transformer_hybrid._resnetv2`,
//! `preact=False`): weight-standardised convs (`StdConv2dSame`, eps 1e-8) with "SAME" padding,
//! GroupNorm (eps 1e-5) + ReLU, a 7×7 (configurable) stride-2 stem with a 3×3 stride-2 SAME max pool, and
//! non-pre-activation bottleneck stages (stride on the 3×3; the first block of a stage has a
//! standardised 1×1 conv + GroupNorm shortcut).
//!
//! Keys (under the hybrid's `patch_embed.backbone.`): `stem.conv`, `stem.norm`,
//! `stages.{s}.blocks.{i}.{conv1,norm1,conv2,norm2,conv3,norm3,downsample.conv,downsample.norm}`.
//!
//! Initialisation as timm's `ResNetV2` (`zero_init_last=False` for the hybrids): convs
//! `kaiming_normal_(fan_out, relu)`, GroupNorm 1 / 0.

use candle_core::Tensor;

use super::drop::{drop_path, Ctx};
use super::layers::{Conv2d, ConvCfg, Padding};
use super::norm::GroupNorm;
use super::pool::{max_pool2d, PoolPad};
use super::vars::Vb;
use crate::error::Result;
use crate::rng::hash_str;

/// Architecture of the backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetV2Cfg {
    /// Blocks per stage: R50 `[3, 4, 9]`, R26 `[2, 2, 2, 2]`.
    pub layers: Vec<usize>,
    /// Output channels per stage (`[256, 512, 1024, 2048]`); bottleneck width is a quarter.
    pub widths: Vec<usize>,
    /// Stem output channels (64).
    pub stem_width: usize,
    /// Stem conv kernel (7; stride 2, SAME padding).
    pub stem_kernel: usize,
    /// GroupNorm groups (32).
    pub groups: usize,
    pub in_chans: usize,
    pub drop_path_rate: f32,
}

const STD_EPS: f64 = 1e-8;
const GN_EPS: f64 = 1e-5;

fn std_conv(vb: &Vb, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        c_in,
        c_out,
        k,
        ConvCfg {
            stride,
            padding: Padding::Same,
            standardize: Some(STD_EPS),
            ..Default::default()
        },
    )
}

#[derive(Debug, Clone)]
struct Bottleneck {
    downsample: Option<(Conv2d, GroupNorm)>,
    conv1: Conv2d,
    norm1: GroupNorm,
    conv2: Conv2d,
    norm2: GroupNorm,
    conv3: Conv2d,
    norm3: GroupNorm,
    drop_path: f32,
    site: u64,
}

impl Bottleneck {
    fn new(
        vb: &Vb,
        c_in: usize,
        c_out: usize,
        stride: usize,
        groups: usize,
        dp: f32,
    ) -> Result<Self> {
        let mid = c_out / 4;
        let downsample = if stride != 1 || c_in != c_out {
            Some((
                std_conv(&vb.pp("downsample.conv"), c_in, c_out, 1, stride)?,
                GroupNorm::new(&vb.pp("downsample.norm"), groups, c_out, GN_EPS)?,
            ))
        } else {
            None
        };
        Ok(Bottleneck {
            downsample,
            conv1: std_conv(&vb.pp("conv1"), c_in, mid, 1, 1)?,
            norm1: GroupNorm::new(&vb.pp("norm1"), groups, mid, GN_EPS)?,
            conv2: std_conv(&vb.pp("conv2"), mid, mid, 3, stride)?,
            norm2: GroupNorm::new(&vb.pp("norm2"), groups, mid, GN_EPS)?,
            conv3: std_conv(&vb.pp("conv3"), mid, c_out, 1, 1)?,
            norm3: GroupNorm::new(&vb.pp("norm3"), groups, c_out, GN_EPS)?,
            drop_path: dp,
            site: hash_str(&vb.path("drop_path")),
        })
    }

    fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((c, n)) => n.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        let y = self.norm1.forward_act(&self.conv1.forward(x)?, true)?;
        let y = self.norm2.forward_act(&self.conv2.forward(&y)?, true)?;
        let y = self.norm3.forward(&self.conv3.forward(&y)?)?;
        let y = drop_path(&y, self.drop_path, ctx, self.site)?;
        crate::ops::add_relu(&y, &shortcut)
    }
}

/// The backbone.
#[derive(Debug, Clone)]
pub struct ResNetV2 {
    stem_conv: Conv2d,
    stem_norm: GroupNorm,
    stages: Vec<Vec<Bottleneck>>,
    out_chans: usize,
}

impl ResNetV2 {
    pub fn new(cfg: &ResNetV2Cfg, vb: &Vb) -> Result<Self> {
        let stem_conv = std_conv(
            &vb.pp("stem.conv"),
            cfg.in_chans,
            cfg.stem_width,
            cfg.stem_kernel,
            2,
        )?;
        let stem_norm = GroupNorm::new(&vb.pp("stem.norm"), cfg.groups, cfg.stem_width, GN_EPS)?;
        let total: usize = cfg.layers.iter().sum();
        let mut c_in = cfg.stem_width;
        let mut idx = 0usize;
        let mut stages = Vec::new();
        for (s, (&n, &w)) in cfg.layers.iter().zip(&cfg.widths).enumerate() {
            let mut blocks = Vec::new();
            for i in 0..n {
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                let dp = if total > 1 {
                    cfg.drop_path_rate * idx as f32 / (total - 1) as f32
                } else {
                    0.0
                };
                blocks.push(Bottleneck::new(
                    &vb.pp(format!("stages.{s}.blocks.{i}")),
                    c_in,
                    w,
                    stride,
                    cfg.groups,
                    dp,
                )?);
                c_in = w;
                idx += 1;
            }
            stages.push(blocks);
        }
        Ok(ResNetV2 {
            stem_conv,
            stem_norm,
            stages,
            out_chans: c_in,
        })
    }

    /// Channels of the output map.
    pub fn out_chans(&self) -> usize {
        self.out_chans
    }

    /// Output side for a square input of `img_size` (every stride-2 step with SAME padding
    /// rounds up).
    pub fn grid(&self, img_size: usize) -> usize {
        let mut g = img_size.div_ceil(2).div_ceil(2);
        for _ in 1..self.stages.len() {
            g = g.div_ceil(2);
        }
        g
    }

    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, out_chans, ceil(H / stride), ceil(W / stride)]`
    pub fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let y = self
            .stem_norm
            .forward_act(&self.stem_conv.forward(x)?, true)?;
        let mut y = max_pool2d(&y, 3, 2, PoolPad::Same)?;
        for stage in &self.stages {
            for b in stage {
                y = b.forward(&y, ctx)?;
            }
        }
        Ok(y)
    }
}
