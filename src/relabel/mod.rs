//! Relabeling a training CSV with model probabilities (issue 6, the part independent of
//! training).
//!
//! Given each row's predicted probabilities ([`Probabilities`]) and a [`RelabelPolicy`], write a
//! new CSV in the input's own format (CheXpert or MIMIC-CXR labels) with only the chosen cells
//! changed and every other byte as it was, a companion CSV of changes and a summary
//! ([`relabel_file`]); on the noise lab, score the result against the truth ([`score::score`]).
//!
//! - [`policy`]: which cells may change, cut-offs, `between`, hard/soft, aggregation;
//! - [`probs`]: the probabilities input; [`aggregate`]: study-level max/mean;
//! - [`rawcsv`]: byte-exact field spans; [`writer`]: the relabeled CSV and its companions;
//! - [`summary`]: changes per finding and direction; [`mod@score`]: noise before/after vs truth.

pub mod aggregate;
pub mod folds;
pub mod job;
pub mod policy;
pub mod predictor;
pub mod probs;
pub mod rawcsv;
pub mod score;
pub mod summary;
pub mod writer;

pub use policy::{Aggregate, Between, Cells, Cutoffs, Decision, Output, RelabelPolicy};
pub use probs::Probabilities;
pub use score::{score, score_files, Score};
pub use summary::Summary;
pub use writer::{relabel_bytes, relabel_file, Format, Outputs, Relabeled};
