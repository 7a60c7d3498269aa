//! `Preprocess`: how an image becomes a model input. Model presets supply one (mean/std follow
//! the *weights*: ImageNet statistics for timm/torchvision ResNets and DenseNets, 0.5/0.5 for
//! timm ViTs and hybrids) and checkpoints store the one they were trained with.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How to fit an image into the square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Keep the aspect ratio, scale the long side to `size`, pad the rest with black.
    Pad,
    /// Keep the aspect ratio, scale the short side to `size`, crop the centre.
    Crop,
    /// Stretch to `size`×`size` (no aspect ratio kept).
    Stretch,
}

/// Input specification of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Square input side in pixels.
    pub size: usize,
    /// Input channels: 1 (grayscale) or 3 (grayscale replicated, as ImageNet weights expect).
    pub channels: usize,
    /// Per-channel mean subtracted after scaling pixels to [0, 1]; one value per channel.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    pub std: Vec<f32>,
    pub resize: ResizeMode,
}

impl Preprocess {
    /// ImageNet statistics (torchvision / timm ResNets, DenseNets).
    pub fn imagenet(size: usize) -> Self {
        Preprocess {
            size,
            channels: 3,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            resize: ResizeMode::Crop,
        }
    }

    /// mean = std = 0.5 (timm ViTs and hybrids).
    pub fn half(size: usize) -> Self {
        Preprocess {
            size,
            channels: 3,
            mean: vec![0.5; 3],
            std: vec![0.5; 3],
            resize: ResizeMode::Crop,
        }
    }

    /// Checks sizes and statistics; names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > 4096 {
            return Err(Error::Config(format!(
                "preprocess.size = {} must be in 1..=4096",
                self.size
            )));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::Config(format!(
                "preprocess.channels = {} must be 1 or 3",
                self.channels
            )));
        }
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return Err(Error::Config(format!(
                "preprocess.mean and preprocess.std need {} values each (one per channel)",
                self.channels
            )));
        }
        if self.std.iter().any(|s| !(*s > 0.0) || !s.is_finite()) {
            return Err(Error::Config(
                "preprocess.std values must be positive".into(),
            ));
        }
        Ok(())
    }
}
