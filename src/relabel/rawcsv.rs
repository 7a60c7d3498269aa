//! A CSV kept as its raw bytes, with the byte span of every field, so that a few cells can be
//! replaced while every other byte — quotes, spacing, `\r\n` or `\n` line ends, blank lines, a
//! UTF-8 BOM, a missing final newline — is written back exactly as it was read.
//!
//! Fields are split on unquoted commas; a `"` toggles quoting (so `""` inside a quoted field
//! keeps it quoted). Line numbers are 1-based physical lines with the header on line 1, as in
//! [`crate::data::csvio`].

use std::path::Path;

use crate::error::{Error, Result};

/// One non-blank row: its 1-based line and the byte span of each field (without the line end).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub line: usize,
    pub fields: Vec<(usize, usize)>,
}

/// The bytes of a CSV file and its rows; `rows[0]` is the header.
#[derive(Debug, Clone)]
pub struct RawCsv {
    pub bytes: Vec<u8>,
    pub rows: Vec<RawRow>,
}

impl RawCsv {
    /// Splits `bytes` into rows and fields; every row must have as many fields as the header.
    /// `file` names the input in errors.
    pub fn parse(file: &Path, bytes: Vec<u8>) -> Result<RawCsv> {
        if std::str::from_utf8(&bytes).is_err() {
            return Err(Error::input(
                file,
                "not UTF-8 text; is this really a CSV file?",
            ));
        }
        let start = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let mut rows = Vec::new();
        let mut line = 1usize;
        let mut row_line = 1usize;
        let mut in_quotes = false;
        let mut field_start = start;
        let mut fields: Vec<(usize, usize)> = Vec::new();
        let mut has_content = false;
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    in_quotes = !in_quotes;
                    has_content = true;
                }
                b',' if !in_quotes => {
                    fields.push((field_start, i));
                    field_start = i + 1;
                    has_content = true;
                }
                b'\n' if !in_quotes => {
                    let end = if i > field_start && bytes[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    fields.push((field_start, end));
                    if has_content {
                        rows.push(RawRow {
                            line: row_line,
                            fields: std::mem::take(&mut fields),
                        });
                    } else {
                        fields.clear();
                    }
                    line += 1;
                    row_line = line;
                    field_start = i + 1;
                    has_content = false;
                }
                b'\n' => line += 1,
                b'\r' => {}
                _ => has_content = true,
            }
            i += 1;
        }
        if in_quotes {
            return Err(Error::csv(
                file,
                row_line,
                "a quoted field is never closed; fix the quotes in this row",
            ));
        }
        if has_content {
            let end = if bytes.len() > field_start && bytes[bytes.len() - 1] == b'\r' {
                bytes.len() - 1
            } else {
                bytes.len()
            };
            fields.push((field_start, end));
            rows.push(RawRow {
                line: row_line,
                fields,
            });
        }
        let Some(header) = rows.first() else {
            return Err(Error::input(file, "empty file: expected a header row"));
        };
        let n = header.fields.len();
        for r in &rows[1..] {
            if r.fields.len() != n {
                return Err(Error::csv(
                    file,
                    r.line,
                    format!(
                        "row has {} fields but the header has {n}; fix or remove this row \
                         (unquoted comma or truncated line?)",
                        r.fields.len()
                    ),
                ));
            }
        }
        Ok(RawCsv { bytes, rows })
    }

    /// The raw text of field `col` of row `row`, quotes included.
    pub fn raw(&self, row: usize, col: usize) -> &str {
        let (a, b) = self.rows[row].fields[col];
        // Spans start and end at ASCII bytes of valid UTF-8, so this cannot fail.
        std::str::from_utf8(&self.bytes[a..b]).unwrap_or("")
    }

    /// The value of field `col` of row `row`: surrounding quotes removed, `""` unescaped.
    pub fn value(&self, row: usize, col: usize) -> String {
        unquote(self.raw(row, col))
    }

    /// Header names (unquoted, trimmed).
    pub fn header(&self) -> Vec<String> {
        (0..self.rows[0].fields.len())
            .map(|c| self.value(0, c).trim().to_string())
            .collect()
    }

    /// Index of the header column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header().iter().position(|h| h == name)
    }

    /// Whether field `col` of row `row` is written in quotes.
    pub fn is_quoted(&self, row: usize, col: usize) -> bool {
        let t = self.raw(row, col).trim();
        t.len() >= 2 && t.starts_with('"') && t.ends_with('"')
    }

    /// The file with the given cells replaced: `edits` are `(row, col, new value)`; a quoted
    /// field stays quoted. Every byte outside the replaced fields is copied unchanged.
    pub fn with_edits(&self, edits: &[(usize, usize, String)]) -> Vec<u8> {
        let mut spans: Vec<(usize, usize, String)> = edits
            .iter()
            .map(|(r, c, v)| {
                let (a, b) = self.rows[*r].fields[*c];
                let text = if self.is_quoted(*r, *c) {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v.clone()
                };
                (a, b, text)
            })
            .collect();
        spans.sort_by_key(|s| s.0);
        let mut out = Vec::with_capacity(self.bytes.len() + 8 * spans.len());
        let mut at = 0;
        for (a, b, text) in spans {
            out.extend_from_slice(&self.bytes[at..a]);
            out.extend_from_slice(text.as_bytes());
            at = b;
        }
        out.extend_from_slice(&self.bytes[at..]);
        out
    }
}

/// `"a""b"` → `a"b`; an unquoted field is returned as it is.
pub fn unquote(raw: &str) -> String {
    let t = raw.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        raw.to_string()
    }
}

/// A value written as one CSV field: quoted when it holds a comma, quote or line break.
pub fn escape(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<RawCsv> {
        RawCsv::parse(Path::new("t.csv"), t.as_bytes().to_vec())
    }

    #[test]
    fn spans_cover_quoted_fields_and_crlf() {
        let c = parse("\u{feff}a,\"b,c\"\r\n1,\"x \"\"y\"\"\"\r\n\r\n2,\r\n").unwrap();
        assert_eq!(c.header(), vec!["a", "b,c"]);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.raw(1, 1), "\"x \"\"y\"\"\"");
        assert_eq!(c.value(1, 1), "x \"y\"");
        assert_eq!(c.rows[2].line, 4);
        assert_eq!(c.value(2, 1), "");
        assert_eq!(c.with_edits(&[]), c.bytes);
    }

    #[test]
    fn edits_replace_only_their_field() {
        let text = "a,b,c\r\n1,\"2\",3\r\n4,,6";
        let c = parse(text).unwrap();
        let out = c.with_edits(&[(1, 1, "9.0".into()), (2, 1, "0.0".into())]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b,c\r\n1,\"9.0\",3\r\n4,0.0,6"
        );
    }

    #[test]
    fn structural_errors_name_the_line() {
        let e = parse("a,b\n1,2\n\n1,2,3\n").unwrap_err().to_string();
        assert!(e.contains("t.csv:4:") && e.contains("3 fields"), "{e}");
        let e = parse("a,b\n1,\"2\n").unwrap_err().to_string();
        assert!(e.contains("t.csv:2:") && e.contains("never closed"), "{e}");
        assert!(parse("").is_err());
        assert!(RawCsv::parse(Path::new("t.csv"), vec![0xff, 0xfe]).is_err());
    }

    #[test]
    fn escape_quotes_only_when_needed() {
        assert_eq!(escape("a/b.jpg"), "a/b.jpg");
        assert_eq!(escape("a,b"), "\"a,b\"");
        assert_eq!(escape("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
