//! Vision Transformer (Dosovitskiy et al. 2021) with timm key names: `patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
//! `norm`, `head`. Pre-norm blocks, LayerNorm eps 1e-6, exact (erf) GELU, class-token pooling.
//! Two timm options for training from scratch (the `hybrid_tiny` preset): LayerScale
//! (`init_values`: `blocks.{i}.ls{1,2}.gamma`, each residual branch scaled per channel, starting
//! near zero so every block starts close to the identity) and average pooling
//! (`class_token=False, global_pool='avg'`: no `cls_token`, tokens averaged, then `fc_norm`
//! instead of `norm`).
//! The token embedding is either a strided patch conv or, for the hybrids, a ResNet backbone
//! followed by a 1×1 projection ([`super::hybrid::HybridEmbed`]).
//!
//! Initialisation follows timm (`init_weights_vit_timm`): linear weights trunc-normal(0.02),
//! biases 0, `pos_embed` trunc-normal(0.02), `cls_token` normal(1e-6), patch conv PyTorch's
//! default, LayerNorm 1 / 0.

use candle_core::Tensor;

use super::drop::{drop_path, dropout, Ctx, StepCounter};
use super::hybrid::BackboneCfg;
use super::hybrid::HybridEmbed;
use super::init::Init;
use super::layers::{linear, Conv2d, ConvCfg, Linear, Padding};
use super::norm::LayerNorm;
use super::vars::Vb;
use super::Classifier;
use crate::error::{Error, Result};
use crate::rng::hash_str;

const LN_EPS: f64 = 1e-6;

/// Architecture of a ViT (or hybrid, when `backbone` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct VitCfg {
    /// Patch side in pixels (1 for the hybrids: the backbone does the downsampling).
    pub patch: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    /// Square input side the position embedding is built for.
    pub img_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    /// Dropout before the head and after the position embedding.
    pub drop_rate: f32,
    /// Stochastic depth, linearly increasing to this rate over the blocks.
    pub drop_path_rate: f32,
    /// ResNet backbone of a hybrid; `None` for a plain ViT.
    pub backbone: Option<BackboneCfg>,
    /// LayerScale initial value (timm `init_values`); `None`: no LayerScale.
    pub layer_scale: Option<f32>,
    /// How the token sequence becomes one feature vector.
    pub pool: Pool,
}

/// Pooling of the tokens into the head's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// A class token, read after the final `norm` (timm's default).
    Token,
    /// No class token; the mean of the tokens, then `fc_norm` (timm `global_pool='avg'`).
    Avg,
}

fn lin(vb: &Vb, d_in: usize, d_out: usize) -> Result<Linear> {
    Linear::new(
        vb,
        d_in,
        d_out,
        Init::TruncNormal { std: 0.02 },
        Some(Init::Const(0.0)),
    )
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    /// # Shapes
    /// `[B, T, D]` → `[B, T, D]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let y = crate::ops::attention(&qkv, self.heads)?;
        self.proj.forward(&y)
    }

    /// The output of token 0 alone: its query against every token's key and value. The `qkv`
    /// weight is split so that queries are computed for token 0 only.
    ///
    /// # Shapes
    /// `x`: `[B, T, D]` → `[B, 1, D]`
    fn forward_first(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let (w, bias) = (&self.qkv.weight, self.qkv.bias.as_ref());
        let part = |t: &Tensor, from: usize, len: usize| -> Result<Tensor> {
            let bias = bias.map(|b| b.narrow(0, from, len)).transpose()?;
            linear(t, &w.narrow(0, from, len)?, bias.as_ref())
        };
        // [B, 1, D] -> q: [B, heads, 1, hd]; [B, T, 2D] -> k, v: [B, heads, T, hd].
        let q = part(&x.narrow(1, 0, 1)?, 0, d)?
            .reshape((b, 1, self.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let kv = part(x, d, 2 * d)?
            .reshape((b, t, 2, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let y = crate::ops::attention::attend(
            &q,
            &kv.get(0)?.contiguous()?,
            &kv.get(1)?.contiguous()?,
        )?;
        self.proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    /// LayerScale `gamma`s `[D]` of the attention and MLP branches.
    ls: Option<(Tensor, Tensor)>,
    drop_path: f32,
    site: u64,
}

impl Block {
    fn new(vb: &Vb, cfg: &VitCfg, dp: f32) -> Result<Self> {
        let (dim, heads, mlp_ratio) = (cfg.dim, cfg.heads, cfg.mlp_ratio);
        let ls = match cfg.layer_scale {
            None => None,
            Some(v) => Some((
                vb.param(&[dim], "ls1.gamma", Init::Const(v))?,
                vb.param(&[dim], "ls2.gamma", Init::Const(v))?,
            )),
        };
        Ok(Block {
            norm1: LayerNorm::new(&vb.pp("norm1"), dim, LN_EPS)?,
            attn: Attention {
                qkv: lin(&vb.pp("attn.qkv"), dim, 3 * dim)?,
                proj: lin(&vb.pp("attn.proj"), dim, dim)?,
                heads,
            },
            norm2: LayerNorm::new(&vb.pp("norm2"), dim, LN_EPS)?,
            fc1: lin(&vb.pp("mlp.fc1"), dim, dim * mlp_ratio)?,
            fc2: lin(&vb.pp("mlp.fc2"), dim * mlp_ratio, dim)?,
            ls,
            drop_path: dp,
            site: hash_str(&vb.path("drop_path")),
        })
    }

    /// # Shapes
    /// `[B, T, D]` → `[B, T, D]`
    fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let y = self.attn.forward(&self.norm1.forward(x)?)?;
        self.finish(x, y, ctx)
    }

    /// [`Block::forward`]'s output for token 0 only (the class token), which is all that
    /// class-token pooling reads from the last block: the other tokens serve as keys and values,
    /// and the rest of the block (projection, MLP: three quarters of its GEMM work) runs on one
    /// token per image. Same values and gradients as `forward(x).narrow(1, 0, 1)`.
    ///
    /// # Shapes
    /// `[B, T, D]` → `[B, 1, D]`
    fn forward_first(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let y = self.attn.forward_first(&self.norm1.forward(x)?)?;
        self.finish(&x.narrow(1, 0, 1)?, y, ctx)
    }

    /// The two residual branches after attention: `x + ls1·y`, then the MLP branch.
    ///
    /// # Shapes
    /// `x`, `y`: `[B, T, D]` → `[B, T, D]`
    fn finish(&self, x: &Tensor, y: Tensor, ctx: Ctx) -> Result<Tensor> {
        let scale = |y: Tensor, g: Option<&Tensor>| -> Result<Tensor> {
            Ok(match g {
                Some(g) => y.broadcast_mul(g)?,
                None => y,
            })
        };
        let y = scale(y, self.ls.as_ref().map(|l| &l.0))?;
        let x = (x + drop_path(&y, self.drop_path, ctx, self.site)?)?;
        let y = self.fc2.forward(&crate::ops::gelu_erf(
            &self.fc1.forward(&self.norm2.forward(&x)?)?,
        )?)?;
        let y = scale(y, self.ls.as_ref().map(|l| &l.1))?;
        Ok((&x + drop_path(&y, self.drop_path, ctx, self.site ^ 1)?)?)
    }
}

#[derive(Debug)]
enum Embed {
    Patch(Conv2d),
    Hybrid(Box<HybridEmbed>),
}

/// A ViT / hybrid classifier.
pub struct VisionTransformer {
    cfg: VitCfg,
    embed: Embed,
    /// `[1, 1, D]` ([`Pool::Token`] only).
    cls_token: Option<Tensor>,
    /// `[1, tokens, D]`: `1 + grid²` with a class token, `grid²` without.
    pos_embed: Tensor,
    blocks: Vec<Block>,
    /// `norm` ([`Pool::Token`]: on every token) or `fc_norm` ([`Pool::Avg`]: after pooling).
    norm: LayerNorm,
    head: Linear,
    grid: usize,
    seed: u64,
    steps: StepCounter,
}

impl VisionTransformer {
    pub fn new(cfg: &VitCfg, vb: &Vb) -> Result<Self> {
        if cfg.heads == 0 || cfg.dim % cfg.heads != 0 {
            return Err(Error::Config(format!(
                "vit: dim {} is not divisible by heads {}",
                cfg.dim, cfg.heads
            )));
        }
        let (embed, grid) = match &cfg.backbone {
            None => {
                if cfg.patch == 0 || cfg.img_size % cfg.patch != 0 {
                    return Err(Error::Config(format!(
                        "model img_size {} is not a multiple of the patch size {}",
                        cfg.img_size, cfg.patch
                    )));
                }
                let proj = Conv2d::new(
                    &vb.pp("patch_embed.proj"),
                    cfg.in_chans,
                    cfg.dim,
                    cfg.patch,
                    ConvCfg {
                        stride: cfg.patch,
                        padding: Padding::Fixed(0),
                        bias: true,
                        init: Init::TorchDefault,
                        ..Default::default()
                    },
                )?;
                (Embed::Patch(proj), cfg.img_size / cfg.patch)
            }
            Some(bcfg) => {
                let h = HybridEmbed::new(&vb.pp("patch_embed"), bcfg, cfg.dim)?;
                let g = h.grid(cfg.img_size);
                (Embed::Hybrid(Box::new(h)), g)
            }
        };
        let cls_token = match cfg.pool {
            Pool::Token => {
                Some(vb.param(&[1, 1, cfg.dim], "cls_token", Init::Normal { std: 1e-6 })?)
            }
            Pool::Avg => None,
        };
        let n_cls = usize::from(cls_token.is_some());
        let pos_embed = vb.param(
            &[1, grid * grid + n_cls, cfg.dim],
            "pos_embed",
            Init::TruncNormal { std: 0.02 },
        )?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let dp = if cfg.depth > 1 {
                    cfg.drop_path_rate * i as f32 / (cfg.depth - 1) as f32
                } else {
                    0.0
                };
                Block::new(&vb.pp(format!("blocks.{i}")), cfg, dp)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VisionTransformer {
            cfg: cfg.clone(),
            embed,
            cls_token,
            pos_embed,
            blocks,
            norm: LayerNorm::new(
                &vb.pp(match cfg.pool {
                    Pool::Token => "norm",
                    Pool::Avg => "fc_norm",
                }),
                cfg.dim,
                LN_EPS,
            )?,
            head: lin(&vb.pp("head"), cfg.dim, cfg.num_classes)?,
            grid,
            seed: vb.seed(),
            steps: StepCounter::default(),
        })
    }

    /// Side of the token grid the position embedding was built for.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// All tokens after the last block, and after the final `norm` with [`Pool::Token`].
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, 1 + grid², D]` ([`Pool::Token`]) or `[N, grid², D]` ([`Pool::Avg`])
    pub fn forward_tokens(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let mut x = self.embed_tokens(x, ctx)?;
        for b in &self.blocks {
            x = b.forward(&x, ctx)?;
        }
        match self.cfg.pool {
            Pool::Token => self.norm.forward(&x),
            Pool::Avg => Ok(x),
        }
    }

    /// The token sequence entering the first block: embedded patches, the class token in front
    /// ([`Pool::Token`]), plus the position embedding, then dropout.
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, 1 + grid², D]` ([`Pool::Token`]) or `[N, grid², D]` ([`Pool::Avg`])
    fn embed_tokens(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let map = match &self.embed {
            Embed::Patch(p) => p.forward(x)?,
            Embed::Hybrid(h) => h.forward(x, ctx)?,
        };
        let (n, d, gh, gw) = map.dims4()?;
        if gh * gw != self.grid * self.grid {
            let (_, _, h, w) = x.dims4()?;
            return Err(Error::Other(format!(
                "input {h}x{w} gives a {gh}x{gw} token grid but the model was built for img_size {} ({}x{}); build it with img_size = {h}",
                self.cfg.img_size, self.grid, self.grid
            )));
        }
        let tokens = map.flatten_from(2)?.transpose(1, 2)?;
        let x = match &self.cls_token {
            Some(c) => Tensor::cat(&[&c.broadcast_as((n, 1, d))?, &tokens], 1)?,
            None => tokens,
        }
        .broadcast_add(&self.pos_embed)?;
        dropout(&x, self.cfg.drop_rate, ctx, hash_str("pos_drop"))
    }

    /// The class token after the last block and the final `norm` ([`Pool::Token`]): what
    /// `forward_tokens(x).narrow(1, 0, 1)` gives, with the last block run for that token only
    /// ([`Block::forward_first`]).
    ///
    /// # Shapes
    /// `[N, C, H, W]` → `[N, D]`
    fn forward_class_token(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let mut x = self.embed_tokens(x, ctx)?;
        let Some((last, rest)) = self.blocks.split_last() else {
            return self.norm.forward(&x.narrow(1, 0, 1)?.squeeze(1)?);
        };
        for b in rest {
            x = b.forward(&x, ctx)?;
        }
        self.norm.forward(&last.forward_first(&x, ctx)?.squeeze(1)?)
    }
}

impl Classifier for VisionTransformer {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let ctx = self.steps.ctx(self.seed, train);
        let f = match self.cfg.pool {
            Pool::Token => self.forward_class_token(x, ctx)?,
            Pool::Avg => self.norm.forward(&self.forward_tokens(x, ctx)?.mean(1)?)?,
        };
        dropout(&f, self.cfg.drop_rate, ctx, hash_str("head_drop"))
    }

    fn head(&self, f: &Tensor) -> Result<Tensor> {
        self.head.forward(f)
    }

    fn num_features(&self) -> usize {
        self.cfg.dim
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn head_prefix(&self) -> &'static str {
        "head"
    }

    fn set_rng_step(&self, step: u64) {
        self.steps.set(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelVars;
    use crate::ops::testutil::{max_rel_err, random};
    use candle_core::{DType, Device};

    /// The class-token path (last block on token 0 only) against the full token sequence, in
    /// training mode with stochastic depth, with and without LayerScale: same features, same
    /// gradient for every parameter.
    #[test]
    fn class_token_path_matches_full_sequence_with_gradients() -> Result<()> {
        for layer_scale in [None, Some(0.5)] {
            let vars = ModelVars::new(7, DType::F32, &Device::Cpu);
            let cfg = VitCfg {
                patch: 4,
                dim: 16,
                depth: 2,
                heads: 2,
                mlp_ratio: 4,
                img_size: 16,
                in_chans: 1,
                num_classes: 3,
                drop_rate: 0.0,
                drop_path_rate: 0.5,
                backbone: None,
                layer_scale,
                pool: Pool::Token,
            };
            let model = VisionTransformer::new(&cfg, &vars.root())?;
            let x = random(&[4, 1, 16, 16], 1);
            let ctx = Ctx {
                train: true,
                seed: 3,
                step: 5,
            };
            let ours = model.forward_class_token(&x, ctx)?;
            let full = model.forward_tokens(&x, ctx)?.narrow(1, 0, 1)?.squeeze(1)?;
            assert_eq!(ours.dims(), &[4, 16]);
            let e = max_rel_err(&ours, &full);
            assert!(
                e < 1e-5,
                "features rel err {e} (layer scale {layer_scale:?})"
            );
            let up = random(&[4, 16], 2);
            let g1 = ours.mul(&up)?.sum_all()?.backward()?;
            let g2 = full.mul(&up)?.sum_all()?.backward()?;
            for (name, var) in vars.trainable() {
                let (a, b) = match (g1.get(var.as_tensor()), g2.get(var.as_tensor())) {
                    (Some(a), Some(b)) => (a, b),
                    // The head is not part of the features.
                    (None, None) if name.starts_with("head.") => continue,
                    (a, b) => panic!(
                        "{name}: gradient {} / reference {}",
                        a.is_some(),
                        b.is_some()
                    ),
                };
                let e = max_rel_err(a, b);
                assert!(
                    e < 1e-4,
                    "{name}: grad rel err {e} (layer scale {layer_scale:?})"
                );
            }
        }
        Ok(())
    }
}
