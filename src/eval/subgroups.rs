//! AUROC by subgroup — sex, age band, projection (AP/PA/…) — when the CSV records them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::predictions::Predictions;
use super::summary::{summarize, Summary};
use crate::data::{Record, Sex};
use crate::error::{Error, Result};

/// Default age-band edges in years: `<40`, `40-59`, `60-79`, `>=80`.
pub const DEFAULT_AGE_EDGES: [f32; 3] = [40.0, 60.0, 80.0];

/// The metrics of one subgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subgroup {
    /// `sex`, `age` or `projection`.
    pub attribute: String,
    /// e.g. `Female`, `40-59`, `AP`.
    pub group: String,
    pub n_rows: usize,
    pub summary: Summary,
}

/// Name of the age band holding `age` for ascending `edges`.
pub fn age_band(age: f32, edges: &[f32]) -> String {
    let i = edges.partition_point(|&e| e <= age);
    match i {
        0 => format!("<{}", edges.first().copied().unwrap_or(0.0)),
        i if i == edges.len() => format!(">={}", edges[i - 1]),
        i => format!("{}-{}", edges[i - 1], edges[i] - 1.0),
    }
}

/// Per-subgroup metrics of `p`, whose rows are matched to `records` by path. An attribute is
/// reported only when at least one row records it; rows with the value missing or unknown
/// are left out of that attribute's groups. Groups are sorted by name within an attribute.
///
/// `age_edges` must be ascending (e.g. [`DEFAULT_AGE_EDGES`]).
pub fn subgroups(p: &Predictions, records: &[Record], age_edges: &[f32]) -> Result<Vec<Subgroup>> {
    if age_edges.windows(2).any(|w| w[0] >= w[1]) || age_edges.iter().any(|e| !e.is_finite()) {
        return Err(Error::Config(format!(
            "subgroups.age_edges = {age_edges:?}: give finite, strictly ascending ages"
        )));
    }
    let by_path: HashMap<&str, &Record> = records.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut rows: Vec<&Record> = Vec::with_capacity(p.n_rows());
    for path in &p.paths {
        match by_path.get(path.as_str()) {
            Some(r) => rows.push(r),
            None => {
                return Err(Error::Other(format!(
                    "subgroups: no record for predicted image {path}; pass the records of the \
                     evaluated CSV"
                )))
            }
        }
    }
    let attributes: [(&str, Box<dyn Fn(&Record) -> Option<String>>); 3] = [
        (
            "sex",
            Box::new(|r: &Record| match r.sex {
                Some(Sex::Female) => Some("Female".into()),
                Some(Sex::Male) => Some("Male".into()),
                _ => None,
            }),
        ),
        (
            "age",
            Box::new(|r: &Record| r.age.map(|a| age_band(a, age_edges))),
        ),
        (
            "projection",
            Box::new(|r: &Record| r.projection.map(|x| x.as_str().to_string())),
        ),
    ];
    let mut out = Vec::new();
    for (name, key) in attributes.iter() {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            if let Some(g) = key(r) {
                groups.entry(g).or_default().push(i);
            }
        }
        for (group, idx) in groups {
            let sub = p.select_rows(&idx);
            out.push(Subgroup {
                attribute: name.to_string(),
                group,
                n_rows: idx.len(),
                summary: summarize(&sub),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Observation, Projection};

    fn rec(path: &str, sex: Option<Sex>, age: Option<f32>, proj: Option<Projection>) -> Record {
        Record {
            path: path.into(),
            patient: "p".into(),
            study: path.into(),
            sex,
            age,
            view: None,
            projection: proj,
            labels: vec![Observation::Blank],
            line: 2,
        }
    }

    #[test]
    fn bands_and_groups() {
        assert_eq!(age_band(39.0, &DEFAULT_AGE_EDGES), "<40");
        assert_eq!(age_band(40.0, &DEFAULT_AGE_EDGES), "40-59");
        assert_eq!(age_band(79.5, &DEFAULT_AGE_EDGES), "60-79");
        assert_eq!(age_band(90.0, &DEFAULT_AGE_EDGES), ">=80");
        let p = Predictions::new(
            (0..6).map(|i| format!("img{i}")).collect(),
            (0..6).map(|i| format!("s{i}")).collect(),
            vec!["Edema".into()],
            vec![0.9, 0.1, 0.8, 0.7, 0.2, 0.6],
            vec![
                Some(true),
                Some(false),
                Some(true),
                Some(false),
                Some(false),
                Some(true),
            ],
        )
        .unwrap();
        let f = Some(Sex::Female);
        let m = Some(Sex::Male);
        let recs = vec![
            rec("img0", f, Some(30.0), Some(Projection::AP)),
            rec("img1", f, Some(35.0), Some(Projection::AP)),
            rec("img2", m, Some(70.0), Some(Projection::PA)),
            rec("img3", m, Some(71.0), Some(Projection::PA)),
            rec("img4", Some(Sex::Unknown), None, None),
            rec("img5", m, Some(72.0), None),
        ];
        let g = subgroups(&p, &recs, &DEFAULT_AGE_EDGES).unwrap();
        let names: Vec<String> = g
            .iter()
            .map(|s| format!("{}:{}:{}", s.attribute, s.group, s.n_rows))
            .collect();
        assert_eq!(
            names,
            vec![
                "sex:Female:2",
                "sex:Male:3",
                "age:60-79:3",
                "age:<40:2",
                "projection:AP:2",
                "projection:PA:2"
            ]
        );
        // Male: positives 0.8, 0.6 vs negative 0.7 -> 0.5.
        assert_eq!(g[1].summary.per_finding[0].auroc, Some(0.5));
        // PA: positive 0.8 vs negative 0.7 -> 1.0.
        assert_eq!(g[5].summary.per_finding[0].auroc, Some(1.0));
        let e = subgroups(&p, &recs[..3], &DEFAULT_AGE_EDGES)
            .unwrap_err()
            .to_string();
        assert!(e.contains("img3"), "{e}");
        assert!(subgroups(&p, &recs, &[60.0, 40.0]).is_err());
    }
}
