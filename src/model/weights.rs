//! Importing timm / torchvision weights by key name into a model's trainable variables.
//!
//! Reads `.safetensors` and zip-format PyTorch files (`torch.save` since 1.6: `.pth`, `.pt`,
//! `.bin`, `.ckpt`). Legacy (pre-1.6, non-zip) pickles and whole pickled modules are refused
//! with a message that says how to convert them (`tools/convert_weights.py`).
//!
//! Matching, in order:
//! 1. the state dict is found (top level, or under `state_dict` / `model` / `model_state_dict`
//!    / `state_dict_ema` / `module` / `net`, or a key the caller names);
//! 2. a common key prefix such as `module.` (DataParallel) or `module.densenet121.`
//!    (CheXNet-style wrappers) is stripped when that makes more keys match;
//! 3. old torchvision DenseNet names are remapped (`denselayer1.norm.1.weight` →
//!    `denselayer1.norm1.weight`, same for `relu`/`conv` `.1`/`.2`);
//! 4. `num_batches_tracked` is ignored;
//! 5. each remaining tensor is copied into the variable of the same name, converted to its
//!    dtype and device: same shape → loaded; a ViT `pos_embed` for another grid → resampled
//!    ([`super::interp`]); a first conv with 3 input channels into a 1-channel model → summed
//!    over channels (timm's `adapt_input_conv`; 1 → 3 repeats and scales by 1/3); a head of
//!    another shape → left at its fresh initialisation ("reinitialised"); any other shape
//!    mismatch → an error naming every mismatched key.
//!
//! Every tensor the PyTorch reader cannot decode (an unsupported storage type, a
//! non-contiguous view) is an error, never silently dropped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, PthTensors, Stack};
use candle_core::{DType, Device, Tensor};

use super::interp::resample_pos_embed;
use super::vars::ModelVars;
use crate::error::{Error, Result};

/// Keys of first convolutions whose input channels may be adapted (timm's `first_conv`).
pub const FIRST_CONVS: &[&str] = &[
    "conv1.weight",
    "features.conv0.weight",
    "patch_embed.proj.weight",
    "patch_embed.backbone.stem.conv.weight",
];

/// Keys a state dict may be nested under.
const NESTING_KEYS: &[&str] = &[
    "state_dict",
    "model",
    "model_state_dict",
    "state_dict_ema",
    "module",
    "net",
];

/// Options of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Fail when any non-head variable is missing from the file or the file has unexpected
    /// tensors (default: report them).
    pub strict: bool,
    /// Key of the state dict inside a PyTorch checkpoint dict (default: found automatically).
    pub key: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportSummary {
    pub source: PathBuf,
    /// Variables set from the file (resampled / adapted ones included).
    pub loaded: Vec<String>,
    /// Model variables the file does not have (they keep their initialisation).
    pub missing: Vec<String>,
    /// File tensors the model does not have.
    pub unexpected: Vec<String>,
    /// Head variables whose shape differs from the file's: kept at their initialisation.
    pub reinitialised: Vec<String>,
    /// Loaded after an adaptation (`pos_embed` resampled, first conv channels folded).
    pub adapted: Vec<String>,
    /// File entries ignored on purpose (`num_batches_tracked`, non-tensor values).
    pub ignored: Vec<String>,
    /// Prefix stripped from the file's keys (e.g. `module.`).
    pub stripped_prefix: Option<String>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &[String]| -> String {
            let mut s = v.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 6 {
                s.push_str(&format!(", … ({} more)", v.len() - 6));
            }
            s
        };
        write!(
            f,
            "{}: loaded {} tensors",
            self.source.display(),
            self.loaded.len()
        )?;
        if let Some(p) = &self.stripped_prefix {
            write!(f, " (prefix {p:?} stripped)")?;
        }
        if !self.adapted.is_empty() {
            write!(
                f,
                "; adapted {}: {}",
                self.adapted.len(),
                show(&self.adapted)
            )?;
        }
        if !self.reinitialised.is_empty() {
            write!(
                f,
                "; head re-initialised (other shape): {}",
                show(&self.reinitialised)
            )?;
        }
        if !self.missing.is_empty() {
            write!(
                f,
                "; missing {} (kept initialisation): {}",
                self.missing.len(),
                show(&self.missing)
            )?;
        }
        if !self.unexpected.is_empty() {
            write!(
                f,
                "; unexpected {} (not used): {}",
                self.unexpected.len(),
                show(&self.unexpected)
            )?;
        }
        Ok(())
    }
}

/// Loads `path` into `vars` (see the module docs). `head_prefix` is the model's
/// [`super::Classifier::head_prefix`].
pub fn import(
    path: &Path,
    vars: &ModelVars,
    head_prefix: &str,
    opts: &ImportOptions,
) -> Result<ImportSummary> {
    let tensors = read_weights(path, opts.key.as_deref())?;
    import_tensors(tensors, path, vars, head_prefix, opts)
}

/// Reads every tensor of a `.safetensors` or zip-format PyTorch file onto the CPU.
pub fn read_weights(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        let s = path.to_string_lossy();
        let known_ext = [".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar"]
            .iter()
            .any(|e| s.ends_with(e));
        let repo_like = s.starts_with("hf-hub:")
            || (s.matches('/').count() == 1
                && !s.starts_with('.')
                && !s.starts_with('/')
                && !known_ext);
        let hint = if repo_like {
            " — it looks like a Hugging Face repo id; this build cannot download, so fetch the repo's \
             model.safetensors (or run tools/convert_weights.py --timm NAME --pretrained where Python \
             is online) and pass the file's path"
        } else {
            ""
        };
        return Err(Error::input(path, format!("weights file not found{hint}")));
    }
    let mut magic = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| Error::io(path, e))?;
    let magic = &magic[..n];
    if magic.starts_with(b"PK\x03\x04") {
        return read_pth(path, key);
    }
    if magic.first() == Some(&0x80) || magic.starts_with(&[0x8a, 0x0a]) {
        return Err(Error::input(
            path,
            "legacy (pre-1.6, non-zip) PyTorch pickle, which cannot be read here; convert it with \
             `python tools/convert_weights.py --pth FILE --out model.safetensors` or re-save it with \
             torch.save(state_dict, path) from PyTorch >= 1.6",
        ));
    }
    // safetensors: 8-byte little-endian header length then a JSON header.
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        Error::input(
            path,
            format!("not a readable safetensors or zip-format PyTorch file: {e}"),
        )
    })?;
    let mut v: Vec<(String, Tensor)> = tensors.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn is_tensor_rebuild(obj: &Object) -> bool {
    match obj {
        Object::Reduce { callable, .. } => matches!(
            callable.as_ref(),
            Object::Class { module_name, class_name }
                if (module_name == "torch._utils" && class_name.starts_with("_rebuild"))
                    || (module_name == "torch._tensor" && class_name.starts_with("_rebuild"))
        ),
        _ => false,
    }
}

fn looks_like_state_dict(kv: &[(Object, Object)]) -> bool {
    kv.iter().any(|(_, v)| is_tensor_rebuild(v))
}

fn read_pth(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    let zerr =
        |e: zip::result::ZipError| Error::input(path, format!("zip-format PyTorch file: {e}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zerr)?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok().map(|s| s.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| Error::input(path, "zip file without a data.pkl: not a torch.save file"))?;
    let dir = PathBuf::from(pkl.trim_end_matches(".pkl"));
    let obj = {
        let reader = zip.by_name(&pkl).map_err(zerr)?;
        let mut reader = std::io::BufReader::new(reader);
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut reader)
            .map_err(|e| Error::input(path, format!("cannot parse the pickle: {e}")))?;
        stack
            .finalize()
            .map_err(|e| Error::input(path, format!("cannot parse the pickle: {e}")))?
    };
    let top = match obj {
        Object::Dict(kv) => kv,
        Object::Build { callable, .. } | Object::Reduce { callable, .. } => {
            let class = match callable.as_ref() {
                Object::Reduce { callable, .. } | Object::Build { callable, .. } => {
                    format!("{callable:?}")
                }
                other => format!("{other:?}"),
            };
            return Err(Error::input(
                path,
                format!(
                    "holds a whole pickled object ({class}), not a state dict; convert it with \
                     `python tools/convert_weights.py --pth FILE --out model.safetensors`"
                ),
            ));
        }
        other => {
            return Err(Error::input(
                path,
                format!(
                    "top-level object is not a dict: {:?}",
                    std::mem::discriminant(&other)
                ),
            ));
        }
    };
    // Find the state dict.
    let (dict, used_key) = if let Some(k) = key {
        let v = top
            .into_iter()
            .find(|(kk, _)| *kk == Object::Unicode(k.to_string()))
            .map(|(_, v)| v)
            .ok_or_else(|| Error::input(path, format!("no entry {k:?} in the checkpoint dict")))?;
        match v {
            Object::Dict(kv) => (kv, Some(k.to_string())),
            _ => {
                return Err(Error::input(
                    path,
                    format!("entry {k:?} is not a dict of tensors"),
                ))
            }
        }
    } else if looks_like_state_dict(&top) {
        (top, None)
    } else {
        let mut found = None;
        for (k, v) in top.iter() {
            if let (Object::Unicode(k), Object::Dict(kv)) = (k, v) {
                if NESTING_KEYS.contains(&k.as_str()) && looks_like_state_dict(kv) {
                    found = Some((kv.clone(), Some(k.clone())));
                    break;
                }
            }
        }
        found.ok_or_else(|| {
            let keys: Vec<String> = top
                .iter()
                .filter_map(|(k, _)| {
                    if let Object::Unicode(s) = k {
                        Some(s.clone())
                    } else {
                        None
                    }
                })
                .take(10)
                .collect();
            Error::input(
                path,
                format!(
                    "no state dict found (top-level keys: {keys:?}); name the entry that holds it"
                ),
            )
        })?
    };
    // Enumerate, so that nothing the reader would skip goes unnoticed.
    let mut skipped = Vec::new();
    let mut names = Vec::new();
    for (k, v) in dict {
        let name = match &k {
            Object::Unicode(s) => s.clone(),
            other => {
                if is_tensor_rebuild(&v) {
                    skipped.push(format!("{other:?} (non-string key)"));
                }
                continue;
            }
        };
        let tensorish = is_tensor_rebuild(&v);
        match v.into_tensor_info(k, &dir) {
            Ok(Some(info)) => {
                if !info.layout.is_contiguous() && !info.layout.is_fortran_contiguous() {
                    skipped.push(format!("{name} (non-contiguous view)"));
                } else {
                    names.push(name)
                }
            }
            Ok(None) if tensorish => {
                skipped.push(format!("{name} (tensor type the reader does not support)"))
            }
            Ok(None) => {}
            Err(e) => skipped.push(format!("{name} ({e})")),
        }
    }
    if !skipped.is_empty() {
        return Err(Error::input(
            path,
            format!(
                "{} tensor(s) cannot be read: {}; convert the file with tools/convert_weights.py",
                skipped.len(),
                skipped.join("; ")
            ),
        ));
    }
    let pth = PthTensors::new(path, used_key.as_deref())
        .map_err(|e| Error::input(path, e.to_string()))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match pth
            .get(&name)
            .map_err(|e| Error::input(path, format!("{name}: {e}")))?
        {
            Some(t) => out.push((name, t)),
            None => {
                return Err(Error::input(
                    path,
                    format!("{name}: listed but not readable"),
                ))
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Old torchvision DenseNet names: `denselayerN.norm.1.weight` → `denselayerN.norm1.weight`.
pub fn remap_key(key: &str) -> String {
    if !key.contains("denselayer") {
        return key.to_string();
    }
    let mut s = key.to_string();
    for l in ["norm", "relu", "conv"] {
        for i in ["1", "2"] {
            s = s.replace(&format!(".{l}.{i}."), &format!(".{l}{i}."));
        }
    }
    s
}

/// The prefix whose removal makes the most file keys name model variables.
fn best_prefix(file_keys: &[String], vars: &ModelVars) -> Option<String> {
    let count = |p: &str| {
        file_keys
            .iter()
            .filter(|k| {
                k.strip_prefix(p)
                    .map(|r| vars.get(&remap_key(r)).is_some())
                    .unwrap_or(false)
            })
            .count()
    };
    let mut best = (count(""), String::new());
    let mut cands: Vec<String> = Vec::new();
    for k in file_keys {
        let parts: Vec<&str> = k.split('.').collect();
        for n in 1..=2.min(parts.len().saturating_sub(1)) {
            let p = format!("{}.", parts[..n].join("."));
            if !cands.contains(&p) {
                cands.push(p);
            }
        }
        if cands.len() > 64 {
            break;
        }
    }
    for p in cands {
        let c = count(&p);
        if c > best.0 {
            best = (c, p);
        }
    }
    if best.1.is_empty() {
        None
    } else {
        Some(best.1)
    }
}

/// [`import`] on tensors already read (e.g. from another source). `source` names them in
/// messages.
pub fn import_tensors(
    tensors: Vec<(String, Tensor)>,
    source: &Path,
    vars: &ModelVars,
    head_prefix: &str,
    opts: &ImportOptions,
) -> Result<ImportSummary> {
    let mut sum = ImportSummary {
        source: source.to_path_buf(),
        ..Default::default()
    };
    let keys: Vec<String> = tensors.iter().map(|(k, _)| k.clone()).collect();
    let prefix = best_prefix(&keys, vars);
    sum.stripped_prefix = prefix.clone();
    let is_head = |k: &str| k.starts_with(&format!("{head_prefix}."));
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut mismatched = Vec::new();
    let mut updates: Vec<(String, Tensor)> = Vec::new();
    for (raw, t) in tensors {
        let stripped = match &prefix {
            Some(p) => match raw.strip_prefix(p.as_str()) {
                Some(r) => r.to_string(),
                None => {
                    sum.unexpected.push(raw);
                    continue;
                }
            },
            None => raw.clone(),
        };
        let key = remap_key(&stripped);
        if key.ends_with("num_batches_tracked") {
            sum.ignored.push(raw);
            continue;
        }
        let var = match vars.get(&key) {
            Some(v) => v,
            None => {
                sum.unexpected.push(raw);
                continue;
            }
        };
        seen.insert(key.clone(), ());
        let want = var.dims().to_vec();
        let have = t.dims().to_vec();
        let value = if want == have {
            t
        } else if key == "pos_embed" && want.len() == 3 && have.len() == 3 && want[2] == have[2] {
            let g = (((want[1] - 1) as f64).sqrt()).round() as usize;
            sum.adapted
                .push(format!("pos_embed {have:?} -> {want:?} (bicubic)"));
            resample_pos_embed(&t, 1, g, &Device::Cpu)?
        } else if FIRST_CONVS.contains(&key.as_str())
            && want.len() == 4
            && have.len() == 4
            && want[0] == have[0]
            && want[2..] == have[2..]
            && ((have[1] == 3 && want[1] == 1) || (have[1] == 1 && want[1] == 3))
        {
            let tf = t.to_dtype(DType::F32)?;
            let v = if want[1] == 1 {
                tf.sum_keepdim(1)?
            } else {
                (tf.repeat((1, 3, 1, 1))? / 3.0)?
            };
            sum.adapted
                .push(format!("{key} in_chans {} -> {}", have[1], want[1]));
            v
        } else if is_head(&key) {
            sum.reinitialised
                .push(format!("{key} (file {have:?}, model {want:?})"));
            continue;
        } else {
            mismatched.push(format!("{key}: file {have:?}, model {want:?}"));
            continue;
        };
        updates.push((key, value));
    }
    if !mismatched.is_empty() {
        return Err(Error::input(
            source,
            format!(
                "{} backbone tensor(s) have another shape than the model (wrong preset or file?): {}",
                mismatched.len(),
                mismatched.join("; ")
            ),
        ));
    }
    if updates.is_empty() {
        return Err(Error::input(
            source,
            format!(
                "no tensor matches the model's variables (file keys start like {:?}); wrong preset or file?",
                keys.iter().take(3).collect::<Vec<_>>()
            ),
        ));
    }
    let all: HashMap<String, ()> = vars.named_tensors().into_keys().map(|k| (k, ())).collect();
    let mut missing: Vec<String> = all
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .cloned()
        .collect();
    missing.sort();
    sum.missing = missing;
    if opts.strict {
        let bad: Vec<&String> = sum
            .missing
            .iter()
            .filter(|k| !is_head(k))
            .chain(sum.unexpected.iter())
            .collect();
        if !bad.is_empty() {
            return Err(Error::input(
                source,
                format!(
                    "strict import: {} missing or unexpected key(s): {bad:?}",
                    bad.len()
                ),
            ));
        }
    }
    for (key, value) in updates {
        let var = vars
            .get(&key)
            .ok_or_else(|| Error::Other(format!("variable {key} vanished during import")))?;
        let v = value.to_dtype(var.dtype())?.to_device(var.device())?;
        var.set(&v)?;
        sum.loaded.push(key);
    }
    sum.unexpected.sort();
    Ok(sum)
}
