//! DenseNet (Huang et al. 2017), the backbone of CheXNet, with torchvision / timm key names:
//! `features.{conv0,norm0}`, `features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}`,
//! `features.transition{b}.{norm,conv}`, `features.norm5`, `classifier`. Old torchvision
//! checkpoints spell `norm.1` / `conv.2`; [`super::weights`] remaps them.
//!
//! Initialisation follows torchvision: convs `kaiming_normal_()` (fan-in), BatchNorm 1 / 0,
//! `classifier` weight PyTorch's default and bias 0.

use candle_core::Tensor;

use super::drop::{dropout, Ctx, StepCounter};
use super::init::Init;
use super::layers::{Conv2d, ConvCfg, Linear, Padding};
use super::norm::BatchNorm2d;
use super::pool::{avg_pool2d, global_avg_pool, max_pool2d, PoolPad};
use super::vars::Vb;
use super::Classifier;
use crate::error::Result;
use crate::rng::hash_str;

/// Architecture of a DenseNet.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseNetCfg {
    /// Channels each dense layer adds (32).
    pub growth_rate: usize,
    /// Dense layers per block (DenseNet-121: `[6, 12, 24, 16]`).
    pub block_config: Vec<usize>,
    /// Stem output channels (64).
    pub num_init_features: usize,
    /// Bottleneck width factor: the 1×1 conv outputs `bn_size · growth_rate` (4).
    pub bn_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    /// Dropout after each dense layer (torchvision's `drop_rate`).
    pub drop_rate: f32,
}

fn conv(vb: &Vb, c_in: usize, c_out: usize, k: usize, stride: usize) -> Result<Conv2d> {
    Conv2d::new(
        vb,
        c_in,
        c_out,
        k,
        ConvCfg {
            stride,
            padding: Padding::Fixed(k / 2),
            init: Init::KaimingNormalFanIn,
            ..Default::default()
        },
    )
}

#[derive(Debug, Clone)]
struct DenseLayer {
    norm1: BatchNorm2d,
    conv1: Conv2d,
    norm2: BatchNorm2d,
    conv2: Conv2d,
    site: u64,
}

#[derive(Debug, Clone)]
struct Transition {
    norm: BatchNorm2d,
    conv: Conv2d,
}

/// A DenseNet classifier.
pub struct DenseNet {
    cfg: DenseNetCfg,
    conv0: Conv2d,
    norm0: BatchNorm2d,
    blocks: Vec<(Vec<DenseLayer>, Option<Transition>)>,
    norm5: BatchNorm2d,
    classifier: Linear,
    num_features: usize,
    seed: u64,
    steps: StepCounter,
}

impl DenseNet {
    pub fn new(cfg: &DenseNetCfg, vb: &Vb) -> Result<Self> {
        let f = vb.pp("features");
        let conv0 = conv(&f.pp("conv0"), cfg.in_chans, cfg.num_init_features, 7, 2)?;
        let norm0 = BatchNorm2d::new(&f.pp("norm0"), cfg.num_init_features)?;
        let mut c = cfg.num_init_features;
        let mut blocks = Vec::new();
        let nb = cfg.block_config.len();
        for (b, &n) in cfg.block_config.iter().enumerate() {
            let bvb = f.pp(format!("denseblock{}", b + 1));
            let mut layers = Vec::new();
            for l in 0..n {
                let lvb = bvb.pp(format!("denselayer{}", l + 1));
                let mid = cfg.bn_size * cfg.growth_rate;
                layers.push(DenseLayer {
                    norm1: BatchNorm2d::new(&lvb.pp("norm1"), c)?,
                    conv1: conv(&lvb.pp("conv1"), c, mid, 1, 1)?,
                    norm2: BatchNorm2d::new(&lvb.pp("norm2"), mid)?,
                    conv2: conv(&lvb.pp("conv2"), mid, cfg.growth_rate, 3, 1)?,
                    site: hash_str(&lvb.path("drop")),
                });
                c += cfg.growth_rate;
            }
            let trans = if b + 1 < nb {
                let tvb = f.pp(format!("transition{}", b + 1));
                let t = Transition {
                    norm: BatchNorm2d::new(&tvb.pp("norm"), c)?,
                    conv: conv(&tvb.pp("conv"), c, c / 2, 1, 1)?,
                };
                c /= 2;
                Some(t)
            } else {
                None
            };
            blocks.push((layers, trans));
        }
        let norm5 = BatchNorm2d::new(&f.pp("norm5"), c)?;
        let classifier = Linear::new(
            &vb.pp("classifier"),
            c,
            cfg.num_classes,
            Init::TorchDefault,
            Some(Init::Const(0.0)),
        )?;
        Ok(DenseNet {
            cfg: cfg.clone(),
            conv0,
            norm0,
            blocks,
            norm5,
            classifier,
            num_features: c,
            seed: vb.seed(),
            steps: StepCounter::default(),
        })
    }

    /// The final feature map (after `norm5` and ReLU).
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, F, H / 32, W / 32]` (four blocks)
    pub fn forward_map(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let y = self
            .norm0
            .forward(&self.conv0.forward(x)?, ctx.train)?
            .relu()?;
        let mut y = max_pool2d(&y, 3, 2, PoolPad::Fixed(1))?;
        for (layers, trans) in &self.blocks {
            let mut feats = vec![y.clone()];
            for l in layers {
                let inp = if feats.len() == 1 {
                    feats[0].clone()
                } else {
                    Tensor::cat(&feats, 1)?
                };
                let h = l
                    .conv1
                    .forward(&l.norm1.forward(&inp, ctx.train)?.relu()?)?;
                let h = l.conv2.forward(&l.norm2.forward(&h, ctx.train)?.relu()?)?;
                let h = dropout(&h, self.cfg.drop_rate, ctx, l.site)?;
                feats.push(h);
            }
            y = Tensor::cat(&feats, 1)?;
            if let Some(t) = trans {
                y = t.conv.forward(&t.norm.forward(&y, ctx.train)?.relu()?)?;
                y = avg_pool2d(&y, 2)?;
            }
        }
        Ok(self.norm5.forward(&y, ctx.train)?.relu()?)
    }
}

impl Classifier for DenseNet {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let ctx = self.steps.ctx(self.seed, train);
        global_avg_pool(&self.forward_map(x, ctx)?)
    }

    fn head(&self, f: &Tensor) -> Result<Tensor> {
        self.classifier.forward(f)
    }

    fn num_features(&self) -> usize {
        self.num_features
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn head_prefix(&self) -> &'static str {
        "classifier"
    }

    fn set_rng_step(&self, step: u64) {
        self.steps.set(step)
    }
}
