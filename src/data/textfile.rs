//! Reading dataset side files that may be gzip-compressed: PhysioNet ships MIMIC-CXR-JPG's
//! CSVs as `mimic-cxr-2.0.0-*.csv.gz`. Files are recognised by the gzip magic bytes, not the
//! name, so a renamed file still reads.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The whole file, gunzipped when it starts with the gzip magic bytes `1f 8b`.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::input(
                    path,
                    format!("gzip data is corrupt or truncated ({e}); download the file again"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// `dir/name` if it is a file, else `dir/name.gz` if that is; `None` when neither exists.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_and_gzipped_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"a,b\n1,2\n";
        std::fs::write(dir.path().join("x.csv"), text).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text).unwrap();
        std::fs::write(dir.path().join("y.csv.gz"), enc.finish().unwrap()).unwrap();
        assert_eq!(read_bytes(&dir.path().join("x.csv")).unwrap(), text);
        assert_eq!(read_bytes(&dir.path().join("y.csv.gz")).unwrap(), text);
        assert_eq!(find(dir.path(), "y.csv"), Some(dir.path().join("y.csv.gz")));
        assert_eq!(find(dir.path(), "x.csv"), Some(dir.path().join("x.csv")));
        assert_eq!(find(dir.path(), "z.csv"), None);
    }

    #[test]
    fn truncated_gzip_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'x'; 4096]).unwrap();
        let mut gz = enc.finish().unwrap();
        gz.truncate(gz.len() / 2);
        let p = dir.path().join("t.csv.gz");
        std::fs::write(&p, gz).unwrap();
        let e = read_bytes(&p).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("t.csv.gz"), "{e}");
    }
}
