//! The token embedding of timm's hybrid ViTs (`HybridEmbed`): a ResNet-V2 backbone
//! ([`super::resnetv2`]) whose last map is projected to the transformer width by a 1×1 conv
//! with bias (`patch_embed.proj`), one token per position. `vit_base_r50_s16_224`: R50 stages
//! `[3, 4, 9]` → 14×14×1024 → 196 tokens of 768; `vit_small_r26_s32_224`: `[2, 2, 2, 2]` →
//! 7×7×2048 → 49 tokens of 384. The transformer itself is [`super::vit::VisionTransformer`].

use candle_core::Tensor;

use super::drop::Ctx;
use super::init::Init;
use super::layers::{Conv2d, ConvCfg, Padding};
use super::resnetv2::{ResNetV2, ResNetV2Cfg};
use super::vars::Vb;
use crate::error::Result;

/// Backbone + 1×1 projection. Keys under `patch_embed.`: `backbone.*`, `proj.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct HybridEmbed {
    pub backbone: ResNetV2,
    pub proj: Conv2d,
    n_stages: usize,
}

impl HybridEmbed {
    pub fn new(vb: &Vb, cfg: &ResNetV2Cfg, dim: usize) -> Result<Self> {
        let backbone = ResNetV2::new(cfg, &vb.pp("backbone"))?;
        let proj = Conv2d::new(
            &vb.pp("proj"),
            backbone.out_chans(),
            dim,
            1,
            ConvCfg {
                padding: Padding::Fixed(0),
                bias: true,
                init: Init::TorchDefault,
                ..Default::default()
            },
        )?;
        Ok(HybridEmbed {
            backbone,
            proj,
            n_stages: cfg.layers.len(),
        })
    }

    /// Token-grid side for a square input of `img_size` (every stride-2 step with SAME padding
    /// rounds up).
    pub fn grid(&self, img_size: usize) -> usize {
        let mut g = img_size.div_ceil(2).div_ceil(2);
        for _ in 1..self.n_stages {
            g = g.div_ceil(2);
        }
        g
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, D, H / stride, W / stride]`
    pub fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        self.proj.forward(&self.backbone.forward(x, ctx)?)
    }
}
