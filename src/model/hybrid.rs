//! The token embedding of timm's hybrid ViTs (`HybridEmbed`): a ResNet backbone whose last map
//! is projected to the transformer width by a 1×1 conv with bias (`patch_embed.proj`), one
//! token per position. The transformer itself is [`super::vit::VisionTransformer`].
//!
//! - ResNet-V2 (GroupNorm, weight-standardised convs; [`super::resnetv2`]) as in timm:
//!   `vit_base_r50_s16_224`: R50 stages `[3, 4, 9]` → 14×14×1024 → 196 tokens of 768;
//!   `vit_small_r26_s32_224`: `[2, 2, 2, 2]` → 7×7×2048 → 49 tokens of 384.
//! - A torchvision-style ResNet with BatchNorm ([`super::resnet`], built without `fc`): the
//!   `hybrid_tiny` CPU preset, whose GroupNorm version did not learn from scratch on the noise
//!   lab (see `presets.rs`).

use candle_core::Tensor;

use super::drop::Ctx;
use super::init::Init;
use super::layers::{Conv2d, ConvCfg, Padding};
use super::resnet::{ResNet, ResNetCfg};
use super::resnetv2::{ResNetV2, ResNetV2Cfg};
use super::vars::Vb;
use crate::error::Result;

/// The backbone of a hybrid.
#[derive(Debug, Clone, PartialEq)]
pub enum BackboneCfg {
    /// timm's ResNet-V2 (the pretrained hybrids).
    V2(ResNetV2Cfg),
    /// A BatchNorm ResNet (its `num_classes` is ignored: no `fc` is built).
    ResNet(ResNetCfg),
}

#[derive(Debug)]
enum Backbone {
    V2(ResNetV2),
    ResNet(ResNet),
}

/// Backbone + 1×1 projection. Keys under `patch_embed.`: `backbone.*`, `proj.{weight,bias}`.
#[derive(Debug)]
pub struct HybridEmbed {
    backbone: Backbone,
    pub proj: Conv2d,
}

impl HybridEmbed {
    pub fn new(vb: &Vb, cfg: &BackboneCfg, dim: usize) -> Result<Self> {
        let bvb = vb.pp("backbone");
        let (backbone, out_chans) = match cfg {
            BackboneCfg::V2(c) => {
                let b = ResNetV2::new(c, &bvb)?;
                let o = b.out_chans();
                (Backbone::V2(b), o)
            }
            BackboneCfg::ResNet(c) => {
                let b = ResNet::new(
                    &ResNetCfg {
                        num_classes: 0,
                        ..c.clone()
                    },
                    &bvb,
                )?;
                let o = b.out_chans();
                (Backbone::ResNet(b), o)
            }
        };
        let proj = Conv2d::new(
            &vb.pp("proj"),
            out_chans,
            dim,
            1,
            ConvCfg {
                padding: Padding::Fixed(0),
                bias: true,
                init: Init::TorchDefault,
                ..Default::default()
            },
        )?;
        Ok(HybridEmbed { backbone, proj })
    }

    /// Token-grid side for a square input of `img_size`.
    pub fn grid(&self, img_size: usize) -> usize {
        match &self.backbone {
            Backbone::V2(b) => b.grid(img_size),
            Backbone::ResNet(b) => b.grid(img_size),
        }
    }

    /// # Shapes
    /// `[N, C, H, W]` → `[N, D, H / stride, W / stride]`
    pub fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let map = match &self.backbone {
            Backbone::V2(b) => b.forward(x, ctx)?,
            Backbone::ResNet(b) => b.forward_map(x, ctx)?,
        };
        self.proj.forward(&map)
    }
}
