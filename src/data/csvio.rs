//! CSV tables read with polars, every column as text, with line-accurate structural checks.
//!
//! Readers look columns up **by name** ([`Table::col`]); a missing column is an error that lists
//! the columns found. Before polars parses the bytes, a quote-aware scan checks that every row
//! has as many fields as the header, so a malformed row fails with its line number instead of
//! being padded or truncated silently. Line numbers are 1-based with the header on line 1 and
//! assume no newlines inside quoted fields (true of CheXpert, MIMIC and NIH files).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{Error, Result};

/// How strictly row widths must match the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Every row has exactly the header's field count.
    Exact,
    /// Rows may carry extra *empty* trailing fields, or lack the header's trailing empty-named
    /// fields (NIH's `Data_Entry_2017.csv` copies with and without a trailing comma).
    TolerateTrailing,
}

/// A parsed CSV: its header and text columns.
pub struct Table {
    pub file: PathBuf,
    pub header: Vec<String>,
    df: DataFrame,
    /// Line number (1-based) of each data row.
    lines: Vec<usize>,
}

impl Table {
    /// Reads `path` with a header row; all columns as text. Fails with the line of the first
    /// row whose field count differs from the header's.
    pub fn read(path: &Path, width: Width) -> Result<Table> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, bytes, width)
    }

    /// Like [`Table::read`] from bytes already in memory; `path` names them in errors.
    pub fn from_bytes(path: &Path, mut bytes: Vec<u8>, width: Width) -> Result<Table> {
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        if std::str::from_utf8(&bytes).is_err() {
            return Err(Error::input(
                path,
                "not UTF-8 text; is this really a CSV file?",
            ));
        }
        let (rows, blank_lines) = scan_rows(&bytes);
        if !blank_lines.is_empty() {
            // polars would turn a blank line into a row of nulls: drop them (they hold no data).
            let mut kept = Vec::with_capacity(bytes.len());
            let mut at = 0;
            for (start, end) in blank_lines {
                kept.extend_from_slice(&bytes[at..start]);
                at = end;
            }
            kept.extend_from_slice(&bytes[at..]);
            bytes = kept;
        }
        let Some(header_row) = rows.first() else {
            return Err(Error::input(path, "empty file: expected a header row"));
        };
        let header_fields = header_row.fields;
        let mut lines = Vec::with_capacity(rows.len().saturating_sub(1));
        for r in &rows[1..] {
            let ok = match width {
                Width::Exact => r.fields == header_fields,
                Width::TolerateTrailing => {
                    r.fields == header_fields
                        || (r.fields > header_fields
                            && r.trailing_empty >= r.fields - header_fields)
                        || (r.fields < header_fields && header_fields - r.fields <= 1)
                }
            };
            if !ok {
                return Err(Error::csv(
                    path,
                    r.line,
                    format!(
                        "row has {} fields but the header has {header_fields}; \
                         fix or remove this row (unquoted comma or truncated line?)",
                        r.fields
                    ),
                ));
            }
            lines.push(r.line);
        }
        let mut parse = CsvParseOptions::default();
        if width == Width::TolerateTrailing {
            parse = parse.with_truncate_ragged_lines(true);
        }
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .with_parse_options(parse)
            .into_reader_with_file_handle(Cursor::new(bytes))
            .finish()
            .map_err(|e| Error::input(path, format!("CSV parse failed: {e}")))?;
        if df.height() != lines.len() {
            return Err(Error::input(
                path,
                format!(
                    "parsed {} rows but counted {} lines; a quoted field may span lines",
                    df.height(),
                    lines.len()
                ),
            ));
        }
        let header = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(Table {
            file: path.to_path_buf(),
            header,
            df,
            lines,
        })
    }

    /// Number of data rows.
    pub fn n_rows(&self) -> usize {
        self.df.height()
    }

    /// 1-based file line of data row `row`.
    pub fn line(&self, row: usize) -> usize {
        self.lines[row]
    }

    /// Whether a column of that exact name exists.
    pub fn has(&self, name: &str) -> bool {
        self.header.iter().any(|h| h == name)
    }

    /// The text column `name`; cells are `None` when empty.
    pub fn col(&self, name: &str) -> Result<&StringChunked> {
        if !self.has(name) {
            return Err(Error::input(
                &self.file,
                format!(
                    "missing column {name:?}; found columns {:?}. Is this the right file?",
                    self.header
                ),
            ));
        }
        self.df
            .column(name)
            .and_then(|c| c.str())
            .map_err(|e| Error::input(&self.file, format!("column {name:?}: {e}")))
    }

    /// Text of column `name` as a `Vec` of `&str` (empty cells as `""`).
    pub fn texts(&self, name: &str) -> Result<Vec<&str>> {
        Ok(self.col(name)?.iter().map(|c| c.unwrap_or("")).collect())
    }
}

/// One physical row: its 1-based line, field count and number of empty trailing fields.
struct RowShape {
    line: usize,
    fields: usize,
    trailing_empty: usize,
}

/// Quote-aware count of fields per row. Blank lines are not rows; their byte ranges
/// (`start..end`, newline included) are returned so they can be removed before parsing.
fn scan_rows(bytes: &[u8]) -> (Vec<RowShape>, Vec<(usize, usize)>) {
    let mut rows = Vec::new();
    let mut blanks = Vec::new();
    let mut row_start = 0usize;
    let mut line = 1usize;
    let mut row_line = 1usize;
    let mut in_quotes = false;
    let mut fields = 1usize;
    let mut field_len = 0usize;
    let mut trailing_empty = 0usize;
    let mut row_has_content = false;
    let end_row =
        |rows: &mut Vec<RowShape>, row_line: usize, fields: usize, te: usize, has: bool| {
            if has {
                rows.push(RowShape {
                    line: row_line,
                    fields,
                    trailing_empty: te,
                });
            }
        };
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => {
                in_quotes = !in_quotes;
                field_len += 1;
                row_has_content = true;
            }
            b',' if !in_quotes => {
                trailing_empty = if field_len == 0 {
                    trailing_empty + 1
                } else {
                    0
                };
                fields += 1;
                field_len = 0;
                row_has_content = true;
            }
            b'\n' if !in_quotes => {
                let te = if field_len == 0 {
                    trailing_empty + 1
                } else {
                    0
                };
                end_row(&mut rows, row_line, fields, te, row_has_content);
                if !row_has_content {
                    blanks.push((row_start, i + 1));
                }
                row_start = i + 1;
                line += 1;
                row_line = line;
                fields = 1;
                field_len = 0;
                trailing_empty = 0;
                row_has_content = false;
            }
            b'\n' => line += 1,
            b'\r' => {}
            _ => {
                field_len += 1;
                row_has_content = true;
            }
        }
    }
    let te = if field_len == 0 {
        trailing_empty + 1
    } else {
        0
    };
    end_row(&mut rows, row_line, fields, te, row_has_content);
    (rows, blanks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str, width: Width) -> Result<Table> {
        Table::from_bytes(Path::new("t.csv"), text.as_bytes().to_vec(), width)
    }

    #[test]
    fn reads_columns_by_name_with_quotes_and_blanks() {
        let t = table("a,b,c\n1,\"x,y\",\n\n2,,3\r\n", Width::Exact).unwrap();
        assert_eq!(t.n_rows(), 2);
        assert_eq!(t.texts("b").unwrap(), vec!["x,y", ""]);
        assert_eq!(t.texts("c").unwrap(), vec!["", "3"]);
        assert_eq!(t.line(0), 2);
        assert_eq!(t.line(1), 4);
    }

    #[test]
    fn wrong_width_names_the_line() {
        let e = table("a,b,c\n1,2,3\n1,2\n", Width::Exact).err().unwrap();
        let s = e.to_string();
        assert!(s.contains("t.csv:3:") && s.contains("2 fields"), "{s}");
        let e = table("a,b\n1,2\n1,2,3\n", Width::Exact).err().unwrap();
        assert!(e.to_string().contains("t.csv:3:"), "{e}");
    }

    #[test]
    fn missing_column_lists_what_was_found() {
        let t = table("a,b\n1,2\n", Width::Exact).unwrap();
        let e = t.col("Path").err().unwrap().to_string();
        assert!(e.contains("\"Path\"") && e.contains("\"a\""), "{e}");
    }

    #[test]
    fn trailing_fields_tolerated_only_when_asked() {
        let text = "a,b\n1,2,\n3,4\n";
        assert!(table(text, Width::Exact).is_err());
        let t = table(text, Width::TolerateTrailing).unwrap();
        assert_eq!(t.texts("b").unwrap(), vec!["2", "4"]);
        assert!(table("a,b\n1,2,9\n", Width::TolerateTrailing).is_err());
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(table("", Width::Exact).is_err());
    }
}
