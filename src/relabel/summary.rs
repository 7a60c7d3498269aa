//! Summary of a relabel: changes per finding and direction (`blank->1`, `-1->0`, ...), rows
//! without a prediction, saved as JSON and Markdown.

use super::policy::RelabelPolicy;
use crate::data::labels::Observation;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Short name of a cell value in transition keys: `blank`, `-1`, `0`, `1`; `p` for a soft value.
pub fn short(o: Observation) -> &'static str {
    match o {
        Observation::Blank => "blank",
        Observation::Uncertain => "-1",
        Observation::Negative => "0",
        Observation::Positive => "1",
    }
}

/// Fixed column order of transitions in the Markdown table.
const ORDER: [&str; 4] = ["blank", "-1", "0", "1"];
const TO: [&str; 4] = ["1", "0", "-1", "p"];

/// Counts for one finding.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FindingSummary {
    pub finding: String,
    /// Cells of predicted rows that the policy's `cells` scope lets change.
    pub in_scope: usize,
    /// Cells written with a new value.
    pub changed: usize,
    /// `"from->to"` → count, e.g. `"blank->1"`, `"-1->0"`, `"blank->p"` (soft).
    pub transitions: BTreeMap<String, usize>,
}

/// What a relabel did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub input: String,
    pub output: String,
    pub checkpoint: String,
    /// `chexpert` or `mimic`.
    pub format: String,
    pub policy: RelabelPolicy,
    /// Data rows of the input CSV.
    pub rows: usize,
    /// Rows that received a prediction (their own image's, or their study's when aggregating).
    pub rows_predicted: usize,
    /// Of those, rows with no prediction of their own that took their study's aggregate
    /// (CheXpert with `aggregate = max|mean`, e.g. lateral views when only frontals were predicted).
    pub rows_from_study: usize,
    /// Rows kept unchanged because neither they nor their study had a prediction.
    pub rows_without_prediction: usize,
    /// Up to 5 of those, as `line N: key`.
    pub unpredicted_examples: Vec<String>,
    /// Cells changed over all findings.
    pub changed: usize,
    pub findings: Vec<FindingSummary>,
}

impl Summary {
    /// Counts one changed cell.
    pub(crate) fn count(&mut self, k: usize, from: Observation, to: &str) {
        let f = &mut self.findings[k];
        f.changed += 1;
        *f.transitions
            .entry(format!("{}->{to}", short(from)))
            .or_insert(0) += 1;
        self.changed += 1;
    }

    /// The summary as a Markdown report (one table row per finding, one column per direction).
    pub fn markdown(&self) -> String {
        let mut cols: Vec<String> = Vec::new();
        for from in ORDER {
            for to in TO {
                let key = format!("{from}->{to}");
                if self
                    .findings
                    .iter()
                    .any(|f| f.transitions.contains_key(&key))
                {
                    cols.push(key);
                }
            }
        }
        let mut s = String::new();
        s.push_str("# Relabel summary\n\n");
        s.push_str(&format!(
            "- input: `{}`\n- output: `{}`\n- checkpoint: `{}`\n- format: {}\n",
            self.input, self.output, self.checkpoint, self.format
        ));
        let p = &self.policy;
        s.push_str(&format!(
            "- policy: cells = {:?}, low = {}, high = {}, between = {:?}, output = {:?}, \
             aggregate = {:?}{}\n",
            p.cells,
            p.low,
            p.high,
            p.between,
            p.output,
            p.aggregate,
            if p.cutoffs.is_empty() {
                String::new()
            } else {
                format!(
                    ", per-finding cut-offs for {:?}",
                    p.cutoffs.keys().collect::<Vec<_>>()
                )
            }
        ));
        s.push_str(&format!(
            "- rows: {} ({} predicted, of which {} from their study; {} without prediction, \
             kept unchanged)\n- cells changed: {}\n\n",
            self.rows,
            self.rows_predicted,
            self.rows_from_study,
            self.rows_without_prediction,
            self.changed
        ));
        if !self.unpredicted_examples.is_empty() {
            s.push_str(&format!(
                "Rows without prediction, e.g.: {}\n\n",
                self.unpredicted_examples.join("; ")
            ));
        }
        s.push_str("| Finding | in scope | changed |");
        for c in &cols {
            s.push_str(&format!(" {} |", c.replace("->", "→")));
        }
        s.push_str("\n|---|---:|---:|");
        for _ in &cols {
            s.push_str("---:|");
        }
        s.push('\n');
        for f in &self.findings {
            s.push_str(&format!(
                "| {} | {} | {} |",
                f.finding, f.in_scope, f.changed
            ));
            for c in &cols {
                s.push_str(&format!(
                    " {} |",
                    f.transitions.get(c).copied().unwrap_or(0)
                ));
            }
            s.push('\n');
        }
        let total =
            |g: &dyn Fn(&FindingSummary) -> usize| -> usize { self.findings.iter().map(g).sum() };
        s.push_str(&format!(
            "| **total** | {} | {} |",
            total(&|f| f.in_scope),
            total(&|f| f.changed)
        ));
        for c in &cols {
            s.push_str(&format!(
                " {} |",
                total(&|f| f.transitions.get(c).copied().unwrap_or(0))
            ));
        }
        s.push('\n');
        s
    }

    /// The summary as pretty JSON (with a final newline).
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map(|t| t + "\n")
            .map_err(|e| Error::Other(format!("relabel summary: {e}")))
    }
}
