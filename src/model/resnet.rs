//! ResNet (He et al. 2016) with torchvision / timm key names: `conv1`, `bn1`,
//! `layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3],downsample.{0,1}}`, `fc`.
//! BasicBlock for ResNet-18/34, Bottleneck (stride on the 3×3, "v1.5") for ResNet-50.
//!
//! Initialisation follows torchvision: convs `kaiming_normal_(fan_out, relu)`, BatchNorm 1 / 0
//! (no zero-init of the last norm in a block, so every parameter gets a gradient on the first
//! step), `fc` PyTorch's default.

use candle_core::Tensor;

use super::drop::{drop_path, dropout, Ctx, StepCounter};
use super::layers::{Conv2d, ConvCfg, Linear, Padding};
use super::norm::BatchNorm2d;
use super::pool::{global_avg_pool, max_pool2d, PoolPad};
use super::vars::Vb;
use super::Classifier;
use crate::error::Result;
use crate::rng::hash_str;

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convs (expansion 1).
    Basic,
    /// 1×1 → 3×3 (strided) → 1×1 (expansion 4).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Architecture of a ResNet.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetCfg {
    pub block: BlockKind,
    /// Blocks per stage (ResNet-50: `[3, 4, 6, 3]`).
    pub layers: Vec<usize>,
    /// Base width ("planes") per stage; a stage outputs `planes · expansion` channels.
    pub planes: Vec<usize>,
    /// Stem output channels (64).
    pub stem_width: usize,
    /// Stem kernel (7) and stride (2); padding is `kernel / 2`.
    pub stem_kernel: usize,
    pub stem_stride: usize,
    /// 3×3 stride-2 max pool after the stem.
    pub stem_pool: bool,
    pub in_chans: usize,
    /// Outputs of `fc`; 0 builds no `fc` (a feature extractor, e.g. a hybrid's backbone).
    pub num_classes: usize,
    /// Dropout before the head.
    pub drop_rate: f32,
    /// Stochastic depth, linearly increasing to this rate over the blocks.
    pub drop_path_rate: f32,
}

#[derive(Debug, Clone)]
struct Block {
    kind: BlockKind,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Option<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
    drop_path: f32,
    site: u64,
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
            ..Default::default()
        },
    )
}

impl Block {
    fn new(
        vb: &Vb,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        stride: usize,
        drop_path: f32,
    ) -> Result<Self> {
        let c_out = planes * kind.expansion();
        let downsample = if stride != 1 || c_in != c_out {
            Some((
                conv(&vb.pp("downsample.0"), c_in, c_out, 1, stride)?,
                BatchNorm2d::new(&vb.pp("downsample.1"), c_out)?,
            ))
        } else {
            None
        };
        let site = hash_str(&vb.path("drop_path"));
        Ok(match kind {
            BlockKind::Basic => Block {
                kind,
                conv1: conv(&vb.pp("conv1"), c_in, planes, 3, stride)?,
                bn1: BatchNorm2d::new(&vb.pp("bn1"), planes)?,
                conv2: conv(&vb.pp("conv2"), planes, planes, 3, 1)?,
                bn2: BatchNorm2d::new(&vb.pp("bn2"), planes)?,
                conv3: None,
                downsample,
                drop_path,
                site,
            },
            BlockKind::Bottleneck => Block {
                kind,
                conv1: conv(&vb.pp("conv1"), c_in, planes, 1, 1)?,
                bn1: BatchNorm2d::new(&vb.pp("bn1"), planes)?,
                conv2: conv(&vb.pp("conv2"), planes, planes, 3, stride)?,
                bn2: BatchNorm2d::new(&vb.pp("bn2"), planes)?,
                conv3: Some((
                    conv(&vb.pp("conv3"), planes, c_out, 1, 1)?,
                    BatchNorm2d::new(&vb.pp("bn3"), c_out)?,
                )),
                downsample,
                drop_path,
                site,
            },
        })
    }

    fn forward(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward(&c.forward(x)?, ctx.train)?,
            None => x.clone(),
        };
        let mut y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, ctx.train, true)?;
        // A bottleneck's bn2 is followed by a ReLU (fused into the norm); a basic block's is not.
        let bottleneck = self.conv3.is_some();
        y = self
            .bn2
            .forward_act(&self.conv2.forward(&y)?, ctx.train, bottleneck)?;
        if let Some((c3, bn3)) = &self.conv3 {
            debug_assert_eq!(self.kind, BlockKind::Bottleneck);
            y = bn3.forward(&c3.forward(&y)?, ctx.train)?;
        }
        y = drop_path(&y, self.drop_path, ctx, self.site)?;
        crate::ops::add_relu(&y, &shortcut)
    }
}

/// A ResNet classifier.
#[derive(Debug)]
pub struct ResNet {
    cfg: ResNetCfg,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Block>>,
    fc: Option<Linear>,
    num_features: usize,
    seed: u64,
    steps: StepCounter,
}

impl ResNet {
    pub fn new(cfg: &ResNetCfg, vb: &Vb) -> Result<Self> {
        let conv1 = Conv2d::new(
            &vb.pp("conv1"),
            cfg.in_chans,
            cfg.stem_width,
            cfg.stem_kernel,
            ConvCfg {
                stride: cfg.stem_stride,
                padding: Padding::Fixed(cfg.stem_kernel / 2),
                ..Default::default()
            },
        )?;
        let bn1 = BatchNorm2d::new(&vb.pp("bn1"), cfg.stem_width)?;
        let total: usize = cfg.layers.iter().sum();
        let mut c_in = cfg.stem_width;
        let mut idx = 0usize;
        let mut stages = Vec::new();
        for (s, (&n, &planes)) in cfg.layers.iter().zip(&cfg.planes).enumerate() {
            let svb = vb.pp(format!("layer{}", s + 1));
            let mut blocks = Vec::new();
            for i in 0..n {
                let stride = if i == 0 && s > 0 { 2 } else { 1 };
                let dp = if total > 1 {
                    cfg.drop_path_rate * idx as f32 / (total - 1) as f32
                } else {
                    0.0
                };
                blocks.push(Block::new(&svb.pp(i), cfg.block, c_in, planes, stride, dp)?);
                c_in = planes * cfg.block.expansion();
                idx += 1;
            }
            stages.push(blocks);
        }
        let fc = match cfg.num_classes {
            0 => None,
            k => Some(Linear::torch(&vb.pp("fc"), c_in, k)?),
        };
        Ok(ResNet {
            cfg: cfg.clone(),
            conv1,
            bn1,
            stages,
            fc,
            num_features: c_in,
            seed: vb.seed(),
            steps: StepCounter::default(),
        })
    }

    /// Channels of the last feature map.
    pub fn out_chans(&self) -> usize {
        self.num_features
    }

    /// Side of the last feature map for a square input of `img_size`: the stem conv, the
    /// optional max pool and each later stage's stride-2 conv, all padded `k / 2`.
    pub fn grid(&self, img_size: usize) -> usize {
        let out = |n: usize, k: usize, s: usize| (n + 2 * (k / 2) - k) / s + 1;
        let mut g = out(img_size, self.cfg.stem_kernel, self.cfg.stem_stride);
        if self.cfg.stem_pool {
            g = out(g, 3, 2);
        }
        for _ in 1..self.stages.len() {
            g = out(g, 3, 2);
        }
        g
    }

    /// The last feature map before pooling.
    ///
    /// # Shapes
    /// `[N, C_in, H, W]` → `[N, F, H / 32, W / 32]` (full presets)
    pub fn forward_map(&self, x: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let mut y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, ctx.train, true)?;
        if self.cfg.stem_pool {
            y = max_pool2d(&y, 3, 2, PoolPad::Fixed(1))?;
        }
        for stage in &self.stages {
            for b in stage {
                y = b.forward(&y, ctx)?;
            }
        }
        Ok(y)
    }
}

impl Classifier for ResNet {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let ctx = self.steps.ctx(self.seed, train);
        let f = global_avg_pool(&self.forward_map(x, ctx)?)?;
        dropout(&f, self.cfg.drop_rate, ctx, hash_str("head_drop"))
    }

    fn head(&self, f: &Tensor) -> Result<Tensor> {
        match &self.fc {
            Some(fc) => fc.forward(f),
            None => Err(crate::error::Error::Other(
                "this ResNet was built without a head (num_classes = 0)".into(),
            )),
        }
    }

    fn num_features(&self) -> usize {
        self.num_features
    }

    fn num_classes(&self) -> usize {
        self.cfg.num_classes
    }

    fn head_prefix(&self) -> &'static str {
        "fc"
    }

    fn set_rng_step(&self, step: u64) {
        self.steps.set(step)
    }
}
