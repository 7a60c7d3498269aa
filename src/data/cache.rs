//! A preprocessed cache of fitted images: one memory-mapped file, so that epochs after the
//! first decode nothing.
//!
//! The cache holds every image already fitted to the model's input geometry (crop / pad /
//! stretch to `size`×`size`), as 8 bits per pixel, before augmentation and normalisation — which
//! still happen per epoch. For 8-bit sources (all JPEGs and 8-bit PNGs of CheXpert, MIMIC-CXR-JPG
//! and NIH) a cached image is bit-identical to a freshly decoded one; 16-bit PNGs and DICOMs are
//! rounded to 8 bits. 320² CheXpert-small at 224² takes 50 KB per image (11 GB for all 223,414).
//!
//! # File layout (little-endian)
//! ```text
//! 0    16 B  magic "noisycxr-cache\0\0"
//! 16   u64   format version (1)
//! 24   u64   size (side in pixels)
//! 32   u64   resize mode (0 crop, 1 pad, 2 stretch)
//! 40   u64   n (images)
//! 48   32 B  SHA-256 key of (geometry, image paths in order)
//! 80   u64   offset of the failure list (JSON: [[index, reason], ...]), after the pixels
//! 88   u64   its length in bytes
//! 128  n B   status per image: 1 = decoded, 0 = failed
//! D    n × size² B  pixels, row-major, D = 128 + n rounded up to 64
//! ```
//! The key binds a cache to one list of paths and one geometry; opening it for anything else
//! is an error that says to rebuild. A file changed in place after the build is not detected.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::image::{Geometry, Gray};
use super::loader::{prepare_file, Source};
use super::preprocess::ResizeMode;
use crate::error::{Error, Result};

const MAGIC: &[u8; 16] = b"noisycxr-cache\0\0";
const VERSION: u64 = 1;
const HEADER: usize = 128;

/// An opened cache: a read-only memory map of the file.
pub struct Cache {
    path: PathBuf,
    paths: Vec<PathBuf>,
    geometry: Geometry,
    map: Mmap,
    data_offset: usize,
    failures: Vec<(usize, String)>,
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    pub images: usize,
    /// `(index, reason)` of every image that could not be decoded.
    pub failures: Vec<(usize, String)>,
    pub bytes: u64,
    pub seconds: f64,
}

fn resize_code(r: ResizeMode) -> u64 {
    match r {
        ResizeMode::Crop => 0,
        ResizeMode::Pad => 1,
        ResizeMode::Stretch => 2,
    }
}

fn key(paths: &[PathBuf], g: &Geometry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{}|{}|", g.size, resize_code(g.resize)).as_bytes());
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

fn data_offset(n: usize) -> usize {
    (HEADER + n).div_ceil(64) * 64
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Cache {
    /// Decodes and fits every image of `paths` on `threads` threads and writes the cache file
    /// at `out` (replacing it). Unreadable images are recorded as failures, not fatal.
    pub fn build(
        out: &Path,
        paths: &[PathBuf],
        g: Geometry,
        threads: usize,
    ) -> Result<BuildReport> {
        let t0 = std::time::Instant::now();
        let n = paths.len();
        let px = g.size * g.size;
        let d = data_offset(n);
        let body = d + n * px;
        let io = |e| Error::io(out, e);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = out.with_extension("partial");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.set_len(body as u64).map_err(|e| Error::io(&tmp, e))?;
        // SAFETY: the file was just created by us and is not shared while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| Error::io(&tmp, e))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| Error::Other(format!("cache: thread pool: {e}")))?;
        let (head, pixels) = map.split_at_mut(d);
        let results: Vec<Option<String>> = pool.install(|| {
            pixels
                .par_chunks_mut(px.max(1))
                .zip(paths.par_iter())
                .map(|(slot, p)| match prepare_file(p, &g) {
                    Ok(img) => {
                        slot.copy_from_slice(&img.to_u8());
                        None
                    }
                    Err(e) => Some(e.to_string()),
                })
                .collect()
        });
        let failures: Vec<(usize, String)> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.clone().map(|m| (i, m)))
            .collect();
        let trailer = serde_json::to_vec(&failures)
            .map_err(|e| Error::Other(format!("cache: failure list: {e}")))?;
        head[..16].copy_from_slice(MAGIC);
        for (at, v) in [
            (16, VERSION),
            (24, g.size as u64),
            (32, resize_code(g.resize)),
            (40, n as u64),
            (80, body as u64),
            (88, trailer.len() as u64),
        ] {
            head[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        head[48..80].copy_from_slice(&key(paths, &g));
        for (i, r) in results.iter().enumerate() {
            head[HEADER + i] = r.is_none() as u8;
        }
        map.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(map);
        let mut file = file;
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(body as u64))
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(&trailer).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, out).map_err(io)?;
        Ok(BuildReport {
            images: n,
            failures,
            bytes: (body + trailer.len()) as u64,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Opens the cache at `file`, checking that it was built for exactly `paths` and `g`.
    pub fn open(file: &Path, paths: &[PathBuf], g: Geometry) -> Result<Cache> {
        let bad = |m: String| Error::input(file, m);
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        // SAFETY: the cache is written once by `build` (through a rename) and only read here.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(file, e))?;
        if map.len() < HEADER || &map[..16] != MAGIC {
            return Err(bad(
                "not a noisycxr image cache (bad magic); delete it".into()
            ));
        }
        let version = u64_at(&map, 16);
        if version != VERSION {
            return Err(bad(format!(
                "cache format version {version}, this build reads {VERSION}; delete it to rebuild"
            )));
        }
        let n = u64_at(&map, 40) as usize;
        let (size, mode) = (u64_at(&map, 24) as usize, u64_at(&map, 32));
        if n != paths.len()
            || size != g.size
            || mode != resize_code(g.resize)
            || map[48..80] != key(paths, &g)
        {
            return Err(bad(format!(
                "cache was built for {n} images at {size}px (mode {mode}), not for these {} \
                 images at {:?}; delete it to rebuild",
                paths.len(),
                g
            )));
        }
        let d = data_offset(n);
        let (t_off, t_len) = (u64_at(&map, 80) as usize, u64_at(&map, 88) as usize);
        if t_off != d + n * size * size || map.len() < t_off + t_len {
            return Err(bad("cache file is truncated; delete it to rebuild".into()));
        }
        let failures: Vec<(usize, String)> = serde_json::from_slice(&map[t_off..t_off + t_len])
            .map_err(|e| bad(format!("cache failure list: {e}; delete it to rebuild")))?;
        Ok(Cache {
            path: file.to_path_buf(),
            paths: paths.to_vec(),
            geometry: g,
            map,
            data_offset: d,
            failures,
        })
    }

    /// Opens the cache at `file` if it matches, else builds it first.
    pub fn open_or_build(
        file: &Path,
        paths: &[PathBuf],
        g: Geometry,
        threads: usize,
    ) -> Result<Cache> {
        match Cache::open(file, paths, g) {
            Ok(c) => Ok(c),
            Err(_) => {
                Cache::build(file, paths, g, threads)?;
                Cache::open(file, paths, g)
            }
        }
    }

    /// Images that failed to decode at build time, with the reason.
    pub fn failures(&self) -> &[(usize, String)] {
        &self.failures
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Source for Cache {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn prepared(&self, i: usize) -> Result<Gray> {
        if self.map[HEADER + i] != 1 {
            let why = self
                .failures
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, m)| m.as_str())
                .unwrap_or("failed when the cache was built");
            return Err(Error::image(&self.paths[i], format!("(cached) {why}")));
        }
        let px = self.geometry.size * self.geometry.size;
        let at = self.data_offset + i * px;
        let s = self.geometry.size;
        Gray::from_u8(s, s, self.map[at..at + px].to_vec())
            .ok_or_else(|| Error::input(&self.path, format!("cache slot {i} has the wrong size")))
    }

    fn name(&self, i: usize) -> String {
        self.paths[i].display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::fixtures::dir;
    use crate::data::loader::Files;

    fn paths() -> Vec<PathBuf> {
        [
            "gray.jpg",
            "missing.png",
            "tall8.png",
            "mono1_window.dcm",
            "big.jpg",
            "gray16.png",
        ]
        .iter()
        .map(|f| dir().join(f))
        .collect()
    }

    #[test]
    fn cached_images_equal_decoded_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("c/train.cache");
        let g = Geometry {
            size: 24,
            resize: ResizeMode::Crop,
        };
        let report = Cache::build(&file, &paths(), g, 2).unwrap();
        assert_eq!(report.images, 6);
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.failures[0].0, 1);
        let cache = Cache::open(&file, &paths(), g).unwrap();
        let files = Files {
            paths: paths(),
            geometry: g,
        };
        for i in 0..6 {
            match (cache.prepared(i), files.prepared(i)) {
                (Ok(c), Ok(f)) => {
                    // 8-bit sources bit-identical; 16-bit and DICOM rounded to 8 bits.
                    assert_eq!(c.to_u8(), f.to_u8(), "image {i}");
                }
                (Err(c), Err(_)) => assert!(c.to_string().contains("missing.png"), "{c}"),
                (c, f) => panic!("image {i}: cache {:?} vs files {:?}", c.is_ok(), f.is_ok()),
            }
        }
        assert_eq!(cache.failures().len(), 1);
    }

    #[test]
    fn a_cache_for_other_images_or_geometry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("x.cache");
        let g = Geometry {
            size: 16,
            resize: ResizeMode::Pad,
        };
        Cache::build(&file, &paths(), g, 1).unwrap();
        let other = Geometry {
            size: 16,
            resize: ResizeMode::Crop,
        };
        let e = Cache::open(&file, &paths(), other).err().unwrap();
        assert!(e.to_string().contains("rebuild"), "{e}");
        let e = Cache::open(&file, &paths()[1..], g).err().unwrap();
        assert!(e.to_string().contains("rebuild"), "{e}");
        // open_or_build rebuilds for the new geometry.
        let c = Cache::open_or_build(&file, &paths(), other, 1).unwrap();
        assert_eq!(c.geometry(), other);
        // A truncated file is refused, not read past its end.
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
        let e = Cache::open(&file, &paths(), other).err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
        std::fs::write(&file, b"garbage").unwrap();
        assert!(Cache::open(&file, &paths(), other).is_err());
    }
}
