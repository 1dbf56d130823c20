//! Files → what the views show: reads one profile (and optionally a base to compare with)
//! through `heaprof::read_profile`, picks the sample type, and keeps each sample as
//! (stack leaf-first, value). Called by `main` once per command; it owns every message about
//! a file that cannot be read or is not a profile, and never panics on bad input.

use std::path::Path;

use heaprof::{ProfileData, SampleType};

/// One sample reduced to the chosen sample type: function names leaf first, and the value.
pub struct Sample {
    pub stack: Vec<String>,
    pub value: i64,
}

/// What a command shows: the samples of one sample type of a profile, and of its base.
pub struct View {
    /// The profile's file name as given on the command line.
    pub file: String,
    /// The base's file name, when comparing.
    pub base_file: Option<String>,
    /// The sample type shown (the same name in both profiles).
    pub sample_type: SampleType,
    /// When the (new) profile was taken, ns since the Unix epoch; 0 if unknown.
    pub time_nanos: i64,
    pub samples: Vec<Sample>,
    /// The base's samples (empty when not comparing).
    pub base_samples: Vec<Sample>,
    /// The (new) profile's comments (heaprof's heap profiles carry the RSS breakdown).
    pub comments: Vec<String>,
}

impl View {
    /// Reads `file` (and `base`), choosing `sample_index` (name or number) or the
    /// profile's default. The base must have the same sample type, looked up by name.
    pub fn open(
        file: &Path,
        base: Option<&Path>,
        sample_index: Option<&str>,
    ) -> Result<View, String> {
        let new = read(file)?;
        let index = match sample_index {
            Some(s) => new
                .sample_index(s)
                .map_err(|e| format!("{}: {e}", file.display()))?,
            None => new.default_sample_index(),
        };
        let sample_type = new.sample_types[index].clone();
        let base_samples = match base {
            None => Vec::new(),
            Some(base) => {
                let b = read(base)?;
                let Some(bi) = b
                    .sample_types
                    .iter()
                    .position(|t| t.name == sample_type.name)
                else {
                    return Err(format!(
                        "{}: has no sample type {:?} to compare with {}; it has: {}",
                        base.display(),
                        sample_type.name,
                        file.display(),
                        names(&b)
                    ));
                };
                if b.sample_types[bi].unit != sample_type.unit {
                    return Err(format!(
                        "{}: sample type {:?} is in {:?}, but in {:?} in {}",
                        base.display(),
                        sample_type.name,
                        b.sample_types[bi].unit,
                        sample_type.unit,
                        file.display()
                    ));
                }
                reduce(b, bi)
            }
        };
        let time_nanos = new.time_nanos;
        let comments = new.comments.clone();
        Ok(View {
            file: file.display().to_string(),
            base_file: base.map(|b| b.display().to_string()),
            sample_type,
            time_nanos,
            samples: reduce(new, index),
            base_samples,
            comments,
        })
    }

    /// Sum of the new profile's values.
    pub fn total(&self) -> i64 {
        self.samples.iter().map(|s| s.value).sum()
    }

    /// Sum of the base's values (0 when not comparing).
    pub fn base_total(&self) -> i64 {
        self.base_samples.iter().map(|s| s.value).sum()
    }
}

fn read(path: &Path) -> Result<ProfileData, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    heaprof::read_profile(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn names(p: &ProfileData) -> String {
    p.sample_types
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn reduce(p: ProfileData, index: usize) -> Vec<Sample> {
    p.samples
        .into_iter()
        .map(|s| Sample {
            value: s.values[index],
            stack: s.stack,
        })
        .collect()
}
