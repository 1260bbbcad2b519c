//! The layering of the crate, enforced: every source file may use modules of
//! its own layer or below, never above. The layers are read from the table
//! in docs/ARCHITECTURE.md, so the document and the check cannot drift.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module name -> layer number, from the rows `| n | `a`, `b` | ... |` of
/// the layer table.
fn layers() -> BTreeMap<String, usize> {
    let doc = crate_dir().join("../../docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "", number, modules, ...
        let (Some(n), Some(modules)) = (cells.get(1).and_then(|c| c.parse::<usize>().ok()), cells.get(2)) else {
            continue;
        };
        for m in modules.split(',') {
            let m = m.trim().trim_matches('`');
            assert!(!m.is_empty(), "empty module name in layer {n}: {line}");
            assert!(out.insert(m.to_string(), n).is_none(), "module {m} listed twice");
        }
    }
    assert!(out.len() > 5, "no layer table found in {}", doc.display());
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's code names through `crate::` paths
/// (`crate::x::...`, `$crate::x`, `crate::{x, y::z}`), comments and test
/// modules left out.
fn used_modules(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if !name.is_empty() {
                        out.push((i + 1, name));
                    }
                }
            } else {
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push((i + 1, name));
                }
            }
            rest = after;
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let layers = layers();
    let src = crate_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unlisted = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue; // the crate root re-exports every layer
        }
        let Some(&own) = layers.get(&module) else {
            unlisted.push(module);
            continue;
        };
        let source = std::fs::read_to_string(file).unwrap();
        for (line, used) in used_modules(&source) {
            // Items of the crate root (re-exports) count as the top layer.
            let theirs = layers.get(&used).copied().unwrap_or(usize::MAX);
            if theirs > own {
                violations.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `crate::{used}` (layer {})",
                    rel.display(),
                    if theirs == usize::MAX { "root".to_string() } else { theirs.to_string() }
                ));
            }
        }
    }
    unlisted.sort();
    unlisted.dedup();
    assert!(unlisted.is_empty(), "modules missing from the layer table in docs/ARCHITECTURE.md: {unlisted:?}");
    assert!(violations.is_empty(), "{} upward imports:\n{}", violations.len(), violations.join("\n"));
}

#[test]
fn the_scanner_sees_every_form_of_crate_path() {
    let src = "use crate::{ops, graph::Tensor};\nlet x = crate::backend::cpu::f(); // crate::nn in a comment\n\
               m!($crate::op::X);\n#[cfg(test)]\nuse crate::nn;";
    let found: Vec<String> = used_modules(src).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["ops", "graph", "backend", "op"]);
}
