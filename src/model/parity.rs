//! Parity with timm / torchvision: small random-initialised reference models, exported with
//! their real key names by `tests/fixtures/models/make_fixtures.py` (torch 2.15.0, timm
//! 1.0.31), imported through [`super::weights::import`] and compared in eval mode (and, for
//! BatchNorm models, one training-mode forward and the running statistics it leaves).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};

use super::densenet::{DenseNet, DenseNetCfg};
use super::hybrid::BackboneCfg;
use super::pool::{max_pool2d, max_pool2d_composed, PoolPad};
use super::resnet::{BlockKind, ResNet, ResNetCfg};
use super::resnetv2::ResNetV2Cfg;
use super::vit::{Pool, VisionTransformer, VitCfg};
use super::weights::{import, ImportOptions};
use super::{Classifier, ModelVars};
use crate::error::Result;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn io(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).expect("fixture")
}

/// `|a - b| <= 1e-4 · max(|b|, 0.05 · max|b|)` element-wise: 1e-4 relative, with a floor
/// at 5% of the tensor's largest magnitude so that entries near zero (relative error
/// meaningless there) are compared at the tensor's scale.
fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_close_tol(what, a, b, 1e-4, 0.05)
}

/// Gradients: `|a - b| <= rtol · max(|b|, floor · max|b|)` with rtol 1e-3 and floor 0.2 — one
/// backward through training-mode BatchNorm on batch-2 inputs (statistics over as few as 8
/// values) cancels heavily, so f32 summation order shows at ~1e-4 of the tensor's scale.
fn assert_grad_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_close_tol(what, a, b, 1e-3, 0.2)
}

fn assert_close_tol(what: &str, a: &Tensor, b: &Tensor, rtol: f32, floor_frac: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let a: Vec<f32> = a
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = b
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let floor = floor_frac * b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let r = (x - y).abs() / y.abs().max(floor);
        if r > worst.0 || r.is_nan() {
            worst = (r, i);
        }
    }
    assert!(
        worst.0 <= rtol,
        "{what}: relative error {} at {} (ours {}, reference {})",
        worst.0,
        worst.1,
        a[worst.1],
        b[worst.1]
    );
}

/// Gradients of `sum(train_logits * grad_w)` match PyTorch's for every parameter.
fn check_grads(
    name: &str,
    vars: &ModelVars,
    train_logits: &Tensor,
    io: &HashMap<String, Tensor>,
) -> Result<()> {
    let grads = (train_logits * &io["grad_w"])?.sum_all()?.backward()?;
    let mut n = 0;
    for (k, want) in io {
        if let Some(key) = k.strip_prefix("grad.") {
            let var = vars
                .get(key)
                .unwrap_or_else(|| panic!("{name}: {key} missing"));
            let got = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
            assert_grad_close(&format!("{name} gradient of {key}"), got, want);
            n += 1;
        }
    }
    assert_eq!(
        n,
        vars.trainable().len(),
        "{name}: every parameter's gradient compared"
    );
    Ok(())
}

fn resnet_cfg(block: BlockKind, layers: Vec<usize>, planes: Vec<usize>) -> ResNetCfg {
    ResNetCfg {
        block,
        layers,
        planes,
        stem_width: 64,
        stem_kernel: 7,
        stem_stride: 2,
        stem_pool: true,
        in_chans: 3,
        num_classes: 5,
        drop_rate: 0.0,
        drop_path_rate: 0.0,
    }
}

fn check_cnn(name: &str, vars: &ModelVars, model: &dyn Classifier) -> Result<()> {
    let s = import(
        &fixture(&format!("{name}.safetensors")),
        vars,
        model.head_prefix(),
        &ImportOptions {
            strict: true,
            key: None,
        },
    )?;
    assert!(s.missing.is_empty() && s.unexpected.is_empty(), "{s}");
    let io = io(&format!("{name}_io.safetensors"));
    let x = &io["x"];
    assert_close(
        &format!("{name} features"),
        &model.features(x, false)?,
        &io["features"],
    );
    assert_close(
        &format!("{name} logits"),
        &model.forward(x, false)?,
        &io["logits"],
    );
    // One training-mode forward: batch statistics, and running statistics updated like
    // PyTorch's (momentum 0.1, unbiased variance); then its gradients.
    let train_logits = model.forward(x, true)?;
    assert_close(
        &format!("{name} train logits"),
        &train_logits,
        &io["train_logits"],
    );
    check_grads(name, vars, &train_logits, &io)?;
    let mut n = 0;
    for (k, v) in &io {
        if let Some(key) = k.strip_prefix("after_train.") {
            let var = vars.get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert_close(k, var.as_tensor(), v);
            n += 1;
        }
    }
    assert!(n >= 10, "{name}: only {n} running statistics compared");
    Ok(())
}

#[test]
fn resnet_basic_matches_timm() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = ResNet::new(
        &resnet_cfg(BlockKind::Basic, vec![1, 1, 1, 1], vec![8, 16, 24, 32]),
        &vars.root(),
    )?;
    check_cnn("resnet_basic", &vars, &m)
}

#[test]
fn resnet_bottleneck_matches_timm() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = ResNet::new(
        &resnet_cfg(BlockKind::Bottleneck, vec![1, 2, 1, 1], vec![8, 16, 16, 24]),
        &vars.root(),
    )?;
    check_cnn("resnet_bottleneck", &vars, &m)
}

fn densenet_cfg() -> DenseNetCfg {
    DenseNetCfg {
        growth_rate: 8,
        block_config: vec![2, 2],
        num_init_features: 16,
        bn_size: 2,
        in_chans: 3,
        num_classes: 5,
        drop_rate: 0.0,
    }
}

#[test]
fn densenet_matches_torchvision() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = DenseNet::new(&densenet_cfg(), &vars.root())?;
    check_cnn("densenet", &vars, &m)
}

#[test]
fn densenet_old_torchvision_names_are_remapped_from_a_zip_pth() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = DenseNet::new(&densenet_cfg(), &vars.root())?;
    let s = import(
        &fixture("densenet_oldnames.pth"),
        &vars,
        "classifier",
        &ImportOptions {
            strict: true,
            key: None,
        },
    )?;
    assert!(s.missing.is_empty() && s.unexpected.is_empty(), "{s}");
    let io = io("densenet_io.safetensors");
    assert_close(
        "densenet (old names) logits",
        &m.forward(&io["x"], false)?,
        &io["logits"],
    );
    Ok(())
}

#[test]
fn wrapped_pth_prefix_is_stripped_and_bad_files_are_refused() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = ResNet::new(
        &resnet_cfg(BlockKind::Basic, vec![1, 1, 1, 1], vec![8, 16, 24, 32]),
        &vars.root(),
    )?;
    let s = import(
        &fixture("resnet_basic_wrapped.pth"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )?;
    assert_eq!(s.stripped_prefix.as_deref(), Some("module."));
    assert!(s.missing.is_empty() && s.unexpected.is_empty(), "{s}");
    let io = io("resnet_basic_io.safetensors");
    assert_close(
        "wrapped pth logits",
        &m.forward(&io["x"], false)?,
        &io["logits"],
    );
    let e = import(
        &fixture("legacy.pth"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("legacy") && e.contains("convert_weights.py"),
        "{e}"
    );
    let e = import(
        &fixture("whole_module.pth"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("whole pickled object") && e.contains("Linear"),
        "{e}"
    );
    let e = import(
        &fixture("vit.safetensors"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no tensor matches"), "{e}");
    let e = import(
        &fixture("nope.safetensors"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not found"), "{e}");
    let hub = std::path::Path::new("timm/vit_base_patch16_224.augreg_in21k");
    let e = import(hub, &vars, "fc", &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Hugging Face") && e.contains("model.safetensors"),
        "{e}"
    );
    Ok(())
}

#[test]
fn backbone_shape_mismatch_is_an_error_and_head_mismatch_reinitialises() -> Result<()> {
    // Wider stage 4 than the file: a backbone mismatch.
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    ResNet::new(
        &resnet_cfg(BlockKind::Basic, vec![1, 1, 1, 1], vec![8, 16, 24, 40]),
        &vars.root(),
    )?;
    let e = import(
        &fixture("resnet_basic.safetensors"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("layer4.0.conv1.weight") && e.contains("[40, 24, 3, 3]"),
        "{e}"
    );
    // 14 outputs instead of 5: the head keeps its initialisation, the backbone loads.
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let mut cfg = resnet_cfg(BlockKind::Basic, vec![1, 1, 1, 1], vec![8, 16, 24, 32]);
    cfg.num_classes = 14;
    let m = ResNet::new(&cfg, &vars.root())?;
    let before = vars
        .get("fc.weight")
        .unwrap()
        .as_tensor()
        .flatten_all()?
        .to_vec1::<f32>()?;
    let s = import(
        &fixture("resnet_basic.safetensors"),
        &vars,
        "fc",
        &ImportOptions::default(),
    )?;
    assert_eq!(s.reinitialised.len(), 2, "{s}");
    assert_eq!(
        vars.get("fc.weight")
            .unwrap()
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?,
        before
    );
    let io = io("resnet_basic_io.safetensors");
    assert_close(
        "features with a new head",
        &m.features(&io["x"], false)?,
        &io["features"],
    );
    Ok(())
}

fn vit_cfg(img: usize, in_chans: usize) -> VitCfg {
    VitCfg {
        patch: 8,
        dim: 32,
        depth: 2,
        heads: 2,
        mlp_ratio: 4,
        img_size: img,
        in_chans,
        num_classes: 5,
        drop_rate: 0.0,
        drop_path_rate: 0.0,
        backbone: None,
        layer_scale: None,
        pool: Pool::Token,
    }
}

#[test]
fn vit_matches_timm() -> Result<()> {
    let io = io("vit_io.safetensors");
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = VisionTransformer::new(&vit_cfg(32, 3), &vars.root())?;
    let s = import(
        &fixture("vit.safetensors"),
        &vars,
        "head",
        &ImportOptions {
            strict: true,
            key: None,
        },
    )?;
    assert!(
        s.missing.is_empty() && s.unexpected.is_empty() && s.adapted.is_empty(),
        "{s}"
    );
    assert_close(
        "vit features",
        &m.features(&io["x"], false)?,
        &io["features"],
    );
    assert_close("vit logits", &m.forward(&io["x"], false)?, &io["logits"]);
    check_grads("vit", &vars, &m.forward(&io["x"], true)?, &io)?;
    Ok(())
}

#[test]
fn vit_one_channel_folds_the_patch_conv_like_timm() -> Result<()> {
    let io = io("vit_io.safetensors");
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = VisionTransformer::new(&vit_cfg(32, 1), &vars.root())?;
    let s = import(
        &fixture("vit.safetensors"),
        &vars,
        "head",
        &ImportOptions::default(),
    )?;
    assert_eq!(s.adapted.len(), 1, "{s}");
    assert_close(
        "vit in_chans=1 logits",
        &m.forward(&io["in1_x"], false)?,
        &io["in1_logits"],
    );
    Ok(())
}

#[test]
fn vit_other_input_size_resamples_pos_embed_like_timm() -> Result<()> {
    let io = io("vit_io.safetensors");
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let m = VisionTransformer::new(&vit_cfg(48, 3), &vars.root())?;
    let s = import(
        &fixture("vit.safetensors"),
        &vars,
        "head",
        &ImportOptions::default(),
    )?;
    assert!(s.adapted.iter().any(|a| a.starts_with("pos_embed")), "{s}");
    assert_close(
        "vit 48px logits",
        &m.forward(&io["s48_x"], false)?,
        &io["s48_logits"],
    );
    // The 32px input no longer fits the 48px model: a clear error, not a broadcast failure.
    let e = m.forward(&io["x"], false).unwrap_err().to_string();
    assert!(e.contains("img_size"), "{e}");
    Ok(())
}

#[test]
fn hybrid_matches_timm() -> Result<()> {
    let io = io("hybrid_io.safetensors");
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let cfg = VitCfg {
        patch: 1,
        img_size: 36,
        backbone: Some(BackboneCfg::V2(ResNetV2Cfg {
            layers: vec![1, 1],
            widths: vec![32, 64],
            stem_width: 16,
            stem_kernel: 7,
            groups: 8,
            in_chans: 3,
            drop_path_rate: 0.0,
        })),
        ..vit_cfg(36, 3)
    };
    let m = VisionTransformer::new(&cfg, &vars.root())?;
    assert_eq!(m.grid(), 5);
    let s = import(
        &fixture("hybrid.safetensors"),
        &vars,
        "head",
        &ImportOptions {
            strict: true,
            key: None,
        },
    )?;
    assert!(
        s.missing.is_empty() && s.unexpected.is_empty() && s.adapted.is_empty(),
        "{s}"
    );
    assert_close(
        "hybrid features",
        &m.features(&io["x"], false)?,
        &io["features"],
    );
    assert_close("hybrid logits", &m.forward(&io["x"], false)?, &io["logits"]);
    check_grads("hybrid", &vars, &m.forward(&io["x"], true)?, &io)?;
    Ok(())
}

/// The `hybrid_tiny` layout: a BatchNorm ResNet's first three stages under a ViT with
/// LayerScale and average pooling (`make_fixtures.py`, "hybrid_bn"): eval and training
/// forward, every gradient, the backbone's running statistics.
#[test]
fn hybrid_with_batchnorm_backbone_layerscale_and_avg_pool_matches_timm() -> Result<()> {
    let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
    let cfg = VitCfg {
        patch: 1,
        img_size: 36,
        backbone: Some(BackboneCfg::ResNet(resnet_cfg(
            BlockKind::Basic,
            vec![1, 1, 1],
            vec![8, 16, 24],
        ))),
        layer_scale: Some(0.1),
        pool: Pool::Avg,
        ..vit_cfg(36, 3)
    };
    let m = VisionTransformer::new(&cfg, &vars.root())?;
    assert_eq!(m.grid(), 3);
    check_cnn("hybrid_bn", &vars, &m)
}

#[test]
fn max_pool_matches_pytorch_forward_and_backward() -> Result<()> {
    let io = io("ops_io.safetensors");
    for (p, pad) in [("pool", PoolPad::Fixed(1)), ("same", PoolPad::Same)] {
        let x = Var::from_tensor(&io[&format!("{p}_x")])?;
        let w = &io[&format!("{p}_w")];
        let (_, _, h, wd) = x.dims4()?;
        let (ph, pw) = match pad {
            PoolPad::Fixed(q) => ((q, q), (q, q)),
            PoolPad::Same => (
                super::layers::same_padding(h, 3, 2, 1),
                super::layers::same_padding(wd, 3, 2, 1),
            ),
        };
        for (kind, y) in [
            ("cpu op", max_pool2d(&x, 3, 2, pad)?),
            ("composed", max_pool2d_composed(&x, 3, 2, ph, pw)?),
        ] {
            assert_close(&format!("{p} {kind} forward"), &y, &io[&format!("{p}_y")]);
            let g = (y * w)?.sum_all()?.backward()?;
            assert_close(
                &format!("{p} {kind} grad"),
                g.get(x.as_tensor()).unwrap(),
                &io[&format!("{p}_grad")],
            );
        }
    }
    Ok(())
}

#[test]
fn pos_embed_resampling_matches_timm() -> Result<()> {
    let io = io("ops_io.safetensors");
    let up = super::interp::resample_pos_embed(&io["pe"], 1, 8, &Device::Cpu)?;
    assert_close("pos_embed 5->8", &up, &io["pe_up8"]);
    let down = super::interp::resample_pos_embed(&io["pe"], 1, 3, &Device::Cpu)?;
    assert_close("pos_embed 5->3", &down, &io["pe_down3"]);
    Ok(())
}

/// Every full preset has exactly the parameter / buffer names and shapes of its timm /
/// torchvision reference (`manifest.json`, made with pretrained=False, 1000 classes).
#[test]
fn full_presets_match_the_reference_manifest() -> Result<()> {
    let text = std::fs::read_to_string(fixture("manifest.json")).expect("manifest");
    let manifest: HashMap<String, HashMap<String, Vec<usize>>> =
        serde_json::from_str(&text).expect("manifest json");
    for (preset, want) in &manifest {
        let vars = ModelVars::new(0, DType::F32, &Device::Cpu);
        super::presets::build(&super::ModelConfig::new(preset, 1000), &vars)?;
        let have: HashMap<String, Vec<usize>> = vars
            .named_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.dims().to_vec()))
            .collect();
        let mut diff = Vec::new();
        for (k, s) in want {
            match have.get(k) {
                None => diff.push(format!("missing {k}")),
                Some(h) if h != s => diff.push(format!("{k}: ours {h:?}, reference {s:?}")),
                _ => {}
            }
        }
        for k in have.keys() {
            if !want.contains_key(k) {
                diff.push(format!("extra {k}"));
            }
        }
        assert!(
            diff.is_empty(),
            "{preset}: {} differences: {:?}",
            diff.len(),
            &diff[..diff.len().min(10)]
        );
    }
    assert_eq!(manifest.len(), 10);
    Ok(())
}
