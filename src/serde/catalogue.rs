//! The schema catalogue in `schemas/`: `<family dir>/<RecordName>.v<N>.avsc`, one file per
//! version, versions numbered 1, 2, ... without gaps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;

use super::avro::full_name;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: file name must be <RecordName>.v<N>.avsc")]
    Name { path: String },
    #[error("{path}: not a valid Avro schema: {detail}")]
    Parse { path: String, detail: String },
    #[error("{path}: the schema is named `{found}`, the file says `{expected}`")]
    Mismatch { path: String, found: String, expected: String },
    #[error("{family}: versions must be 1..N without gaps, found {found:?}")]
    Gap { family: String, found: Vec<u32> },
}

#[derive(Debug)]
pub struct Version {
    pub number: u32,
    pub path: PathBuf,
    pub schema: Schema,
}

/// All versions of one record, oldest first.
#[derive(Debug)]
pub struct Family {
    pub full_name: String,
    pub versions: Vec<Version>,
}

/// Loads every `.avsc` under `dir`.
///
/// # Errors
/// [`Error`] naming the file and what is wrong with it.
pub fn load(dir: &Path) -> Result<Vec<Family>, Error> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut families: BTreeMap<(PathBuf, String), Vec<Version>> = BTreeMap::new();
    for path in files {
        let p = path.display().to_string();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        let stem = file.strip_suffix(".avsc").ok_or_else(|| Error::Name { path: p.clone() })?;
        let (name, version) = stem.rsplit_once(".v").ok_or_else(|| Error::Name { path: p.clone() })?;
        let number: u32 = version.parse().map_err(|_| Error::Name { path: p.clone() })?;
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: p.clone(), source })?;
        let schema = Schema::parse_str(&text).map_err(|e| Error::Parse { path: p.clone(), detail: e.to_string() })?;
        let full = full_name(&schema);
        if full.rsplit('.').next() != Some(name) {
            return Err(Error::Mismatch { path: p, found: full, expected: name.to_owned() });
        }
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        families.entry((parent, full)).or_default().push(Version { number, path, schema });
    }
    let mut out = Vec::new();
    for ((_, full_name), mut versions) in families {
        versions.sort_by_key(|v| v.number);
        let numbers: Vec<u32> = versions.iter().map(|v| v.number).collect();
        if numbers.iter().enumerate().any(|(i, &n)| n != i as u32 + 1) {
            return Err(Error::Gap { family: full_name, found: numbers });
        }
        out.push(Family { full_name, versions });
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    for e in entries {
        let path = e.map_err(|source| Error::Io { path: dir.display().to_string(), source })?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "avsc") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_loads_and_every_family_evolves_fully_compatibly() {
        let families = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.full_name.as_str()).collect();
        for expected in [
            "io.keyflow.document.DocumentUploaded",
            "io.keyflow.workflow.WorkflowState",
            "io.keyflow.dlq.DeadLetter",
            "io.keyflow.task.HumanTaskCompleted",
        ] {
            assert!(names.contains(&expected), "{names:?}");
        }
        for f in &families {
            for (i, v) in f.versions.iter().enumerate().skip(1) {
                let previous: Vec<Schema> = f.versions[..i].iter().map(|p| p.schema.clone()).collect();
                assert!(
                    super::super::compat::check(super::super::compat::Level::FullTransitive, &v.schema, &previous).is_empty(),
                    "{}",
                    v.path.display()
                );
            }
        }
    }

    #[test]
    fn a_misnamed_or_gapped_catalogue_is_refused_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let schema = r#"{"type":"record","name":"A","fields":[]}"#;
        std::fs::write(dir.path().join("A.v1.avsc"), schema).unwrap();
        std::fs::write(dir.path().join("A.v3.avsc"), schema).unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Gap { .. })));
        std::fs::write(dir.path().join("A.v3.avsc"), r#"{"type":"record","name":"B","fields":[]}"#).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("A.v3.avsc") && e.contains("`B`"), "{e}");
    }
}
