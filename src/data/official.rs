//! Official splits of the public datasets: MIMIC-CXR-JPG's `mimic-cxr-2.0.0-split.csv`
//! (`train` / `validate` / `test` per image) and NIH ChestX-ray14's `train_val_list.txt` /
//! `test_list.txt`. A reader given a split keeps that split's images only and counts the others
//! in [`super::Dataset::skipped`]; never guessed from paths.

use serde::{Deserialize, Serialize};

/// One side of a dataset's official split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfficialSplit {
    /// MIMIC `train`; NIH `train_val_list.txt` (NIH has no official validation part: carve a
    /// patient-level tuning set out of it with [`super::split::tune_split`]).
    Train,
    /// MIMIC `validate`. NIH has none.
    Validate,
    /// MIMIC `test`; NIH `test_list.txt`.
    Test,
}

impl OfficialSplit {
    /// Parses MIMIC's spelling (`train`, `validate`, `test`; also `valid`/`validation`,
    /// case-insensitive). Anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(OfficialSplit::Train),
            "validate" | "valid" | "validation" => Some(OfficialSplit::Validate),
            "test" => Some(OfficialSplit::Test),
            _ => None,
        }
    }

    /// Name as MIMIC's split CSV writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OfficialSplit::Train => "train",
            OfficialSplit::Validate => "validate",
            OfficialSplit::Test => "test",
        }
    }
}

impl std::fmt::Display for OfficialSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mimic_spellings_and_rejects_others() {
        assert_eq!(OfficialSplit::parse("train"), Some(OfficialSplit::Train));
        assert_eq!(
            OfficialSplit::parse(" Validate "),
            Some(OfficialSplit::Validate)
        );
        assert_eq!(OfficialSplit::parse("TEST"), Some(OfficialSplit::Test));
        assert_eq!(OfficialSplit::parse("holdout"), None);
        assert_eq!(OfficialSplit::parse(""), None);
        for s in [
            OfficialSplit::Train,
            OfficialSplit::Validate,
            OfficialSplit::Test,
        ] {
            assert_eq!(OfficialSplit::parse(s.as_str()), Some(s));
        }
    }
}
