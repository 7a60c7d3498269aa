//! NIH ChestX-ray14 `BBox_List_2017.csv`: 984 radiologist boxes over 8 findings, in pixels of
//! the 1024×1024 original image.
//!
//! Header `Image Index,Finding Label,Bbox [x,y,w,h]` — the bracket's unquoted commas split it into
//! six fields, and the release adds empty trailing fields (`,,,`). Rows are read by position:
//! image, finding, then `x,y,w,h`; any further fields must be empty. The file spells
//! `Infiltration` as `Infiltrate`; it is mapped to the [`NIH_FINDINGS`] name.

use std::path::Path;

use super::nih::{nih_index, NIH_FINDINGS};
use super::textfile;
use crate::error::{Error, Result};

/// One box.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BBox {
    /// Image name, e.g. `00013118_008.png`.
    pub image: String,
    /// Finding name as in [`NIH_FINDINGS`].
    pub finding: String,
    /// Left, top, width, height in pixels of the 1024×1024 original.
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    /// 1-based line in the file.
    pub line: usize,
}

/// Reads `BBox_List_2017.csv` (plain or `.gz`).
pub fn read(path: &Path) -> Result<Vec<BBox>> {
    let bytes = textfile::read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::input(path, "not UTF-8 text; is this really a CSV file?"))?;
    parse(path, &text)
}

/// Parses the file's text; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<Vec<BBox>> {
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            None => return Err(Error::input(path, "empty file: expected a header row")),
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l.trim_start_matches('\u{feff}'),
        }
    };
    let h: Vec<&str> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    if h.len() < 6 || h[0] != "Image Index" || h[1] != "Finding Label" {
        return Err(Error::input(
            path,
            format!(
                "header {header:?} is not BBox_List_2017.csv's \
                 (Image Index,Finding Label,Bbox [x,y,w,h])"
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, l) in lines {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split(',').map(|c| c.trim().trim_matches('"')).collect();
        if f.len() < 6 || f[6..].iter().any(|c| !c.is_empty()) {
            return Err(Error::csv(
                path,
                line,
                format!(
                    "expected image,finding,x,y,w,h (then only empty fields), got {} fields: {l:?}",
                    f.len()
                ),
            ));
        }
        let finding = match f[1] {
            "Infiltrate" => "Infiltration",
            other => other,
        };
        if nih_index(finding).is_none() {
            return Err(Error::csv(
                path,
                line,
                format!(
                    "unknown finding {:?}; expected one of {NIH_FINDINGS:?}",
                    f[1]
                ),
            ));
        }
        let mut v = [0f32; 4];
        for (k, name) in ["x", "y", "w", "h"].iter().enumerate() {
            v[k] = f[2 + k]
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    Error::csv(
                        path,
                        line,
                        format!("box {name} value {:?} is not a number", f[2 + k]),
                    )
                })?;
        }
        if v[2] <= 0.0 || v[3] <= 0.0 {
            return Err(Error::csv(
                path,
                line,
                format!("box width/height {} x {} must be positive", v[2], v[3]),
            ));
        }
        if f[0].is_empty() {
            return Err(Error::csv(path, line, "empty Image Index field"));
        }
        out.push(BBox {
            image: f[0].to_string(),
            finding: finding.to_string(),
            x: v[0],
            y: v[1],
            w: v[2],
            h: v[3],
            line,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_rows_with_trailing_fields_and_infiltrate() {
        let text = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n\
                    00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,\n\
                    00029817_009.png,Infiltrate,334.8,358.2,190.4,278.0\n";
        let b = parse(Path::new("BBox_List_2017.csv"), text).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].image, "00013118_008.png");
        assert_eq!(b[0].finding, "Atelectasis");
        assert!((b[0].x - 225.08475).abs() < 1e-3 && (b[0].h - 79.18647).abs() < 1e-3);
        assert_eq!(b[1].finding, "Infiltration");
        assert_eq!(b[1].line, 3);
    }

    #[test]
    fn release_fixture_matches_pandas() {
        // tests/fixtures/readers/make_fixtures.py: pandas.read_csv(header=None, skiprows=1).
        let e: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/readers/expected.json"))
                .unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/readers/nih/BBox_List_2017.csv");
        let b = read(&path).unwrap();
        let want = e["nih"]["bbox"].as_array().unwrap();
        assert_eq!(b.len(), want.len());
        for (x, w) in b.iter().zip(want) {
            assert_eq!(x.image, w["image"].as_str().unwrap());
            let f = w["finding"].as_str().unwrap();
            assert_eq!(
                x.finding,
                if f == "Infiltrate" { "Infiltration" } else { f }
            );
            let xywh: Vec<f32> = w["xywh"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(vec![x.x, x.y, x.w, x.h], xywh);
        }
    }

    #[test]
    fn bad_rows_name_line_and_value() {
        let h = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n";
        let e = parse(Path::new("b.csv"), &format!("{h}a.png,Mass,1,2,x,4\n")).unwrap_err();
        assert!(
            e.to_string().contains("b.csv:2:") && e.to_string().contains("\"x\""),
            "{e}"
        );
        let e = parse(Path::new("b.csv"), &format!("{h}a.png,Tumour,1,2,3,4\n")).unwrap_err();
        assert!(e.to_string().contains("Tumour"), "{e}");
        assert!(parse(Path::new("b.csv"), &format!("{h}a.png,Mass,1,2,3\n")).is_err());
        assert!(parse(Path::new("b.csv"), &format!("{h}a.png,Mass,1,2,3,4,5\n")).is_err());
        assert!(parse(Path::new("b.csv"), &format!("{h}a.png,Mass,1,2,0,4\n")).is_err());
        assert!(parse(Path::new("b.csv"), "Path,x\n").is_err());
    }
}
