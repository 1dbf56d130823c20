//! Reading profiles back: [`read_profile`] turns any pprof file (ours or Go's) into plain
//! stacks of function names and values, so a user sees a result without installing Go (the
//! `top` table of [`top_table`](crate::pprof::top::top_table) reads through [`decode`]). The
//! `heaprof` command-line viewer (`heaprof-cli/`) is built on [`read_profile`].
//!
//! Readers' side only: called by applications and tools on bytes they hold; never runs in
//! the allocator, and never trusts its input (every bad file is an [`Error::InvalidProfile`]
//! saying what was wrong).

use std::collections::HashMap;
use std::io::Read;

use prost::Message;

use crate::base::error::Error;
use crate::pprof::proto;

/// Decodes a pprof profile: gzip-compressed or raw protobuf. Each way a file can fail to be a
/// profile has its own message: empty, truncated or corrupt gzip, gzip whose content is not
/// a profile, legacy text, neither gzip nor protobuf.
pub(crate) fn decode(bytes: &[u8]) -> Result<proto::Profile, Error> {
    let mut raw = Vec::new();
    let gzipped = bytes.starts_with(&[0x1f, 0x8b]);
    let body: &[u8] = if gzipped {
        // Multi-member, like Go's gzip.Reader (pprof reads files with it).
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| {
                Error::InvalidProfile(format!("gzip stream is truncated or corrupt: {e}"))
            })?;
        &raw
    } else {
        bytes
    };
    if body.is_empty() {
        return Err(Error::InvalidProfile(if gzipped {
            "gzip-compressed, but empty inside: not a pprof profile".into()
        } else {
            "empty input: not a pprof profile".into()
        }));
    }
    let what = if gzipped {
        "gzip-compressed, but the content is not a pprof protobuf"
    } else if body.starts_with(b"heap profile:")
        || body.windows(10).take(64).any(|w| w == b" profile: ")
    {
        "legacy text profile (debug=1), not a pprof protobuf: write it with debug=0"
    } else {
        "neither gzip-compressed nor a pprof protobuf"
    };
    let p =
        proto::Profile::decode(body).map_err(|e| Error::InvalidProfile(format!("{what} ({e})")))?;
    if p.string_table.first().map(String::as_str) != Some("") || p.sample_type.is_empty() {
        return Err(Error::InvalidProfile(format!(
            "{what}: no string table or sample types"
        )));
    }
    Ok(p)
}

/// A sample type (or the period type) of a profile: what a value counts, in which unit,
/// e.g. `inuse_space` in `bytes`, `cpu` in `nanoseconds`, `threadcreate` in `count`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SampleType {
    /// The type, e.g. `alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`.
    pub name: String,
    /// The unit, e.g. `count`, `bytes`, `nanoseconds`.
    pub unit: String,
}

/// One sample of a profile: a call stack and one value per [`ProfileData::sample_types`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSample {
    /// Function names, **leaf first** (the function that allocated, then its caller, … up to
    /// the root), inlined frames expanded like pprof does. A location without function
    /// information (an unsymbolized profile) is shown as its address, `0x…`.
    pub stack: Vec<String>,
    /// One value per sample type, in the order of [`ProfileData::sample_types`].
    pub values: Vec<i64>,
}

/// A pprof profile reduced to what a viewer needs: the sample types and every sample as a
/// stack of function names with its values. Made by [`read_profile`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfileData {
    /// What each value of a sample counts (never empty).
    pub sample_types: Vec<SampleType>,
    /// The profile's `default_sample_type` if it sets one (Go's `allocs` sets
    /// `alloc_space`; `heap` leaves it unset). See [`ProfileData::default_sample_index`].
    pub default_sample_type: Option<String>,
    /// What one sampling event is, e.g. `space`/`bytes` for heap profiles, if set.
    pub period_type: Option<SampleType>,
    /// Events per sample (heap: the sampling rate in bytes; CPU: nanoseconds per sample).
    pub period: i64,
    /// When the profile was taken, nanoseconds since the Unix epoch (0 if unknown).
    pub time_nanos: i64,
    /// How long it covers, in nanoseconds (0 if not set, as in heap profiles).
    pub duration_nanos: i64,
    /// The samples, in file order.
    pub samples: Vec<StackSample>,
    /// The profile's free-form comments, in file order. heaprof's heap profiles carry
    /// `key: value` lines: table statistics (`heaprof.stacks: …`) and the RSS breakdown
    /// (`heaprof.rss: <bytes>`, `heaprof.rss.heap_sampled: <bytes>`, …,
    /// `heaprof.rss.summary: RSS …`).
    pub comments: Vec<String>,
}

impl ProfileData {
    /// The index pprof shows by default: the sample type named by `default_sample_type`,
    /// else the **last** sample type (for a heap profile, `inuse_space`).
    ///
    /// ```
    /// let mut pb = Vec::new();
    /// heaprof::write_heap_profile(&mut pb).unwrap();
    /// let p = heaprof::read_profile(&pb).unwrap();
    /// assert_eq!(p.sample_types[p.default_sample_index()].name, "inuse_space");
    /// ```
    pub fn default_sample_index(&self) -> usize {
        self.default_sample_type
            .as_deref()
            .and_then(|d| self.sample_types.iter().position(|t| t.name == d))
            .unwrap_or(self.sample_types.len() - 1)
    }

    /// The index of a sample type given by name (`inuse_space`) or by number (`3`), like
    /// pprof's `-sample_index`. An unknown one is an [`Error::InvalidConfig`] listing the
    /// types the profile has.
    ///
    /// ```
    /// let mut pb = Vec::new();
    /// heaprof::write_heap_profile(&mut pb).unwrap();
    /// let p = heaprof::read_profile(&pb).unwrap();
    /// assert_eq!(p.sample_index("alloc_space").unwrap(), 1);
    /// assert_eq!(p.sample_index("0").unwrap(), 0);
    /// assert!(p.sample_index("cpu").is_err());
    /// ```
    pub fn sample_index(&self, name_or_number: &str) -> Result<usize, Error> {
        if let Some(i) = self
            .sample_types
            .iter()
            .position(|t| t.name == name_or_number)
        {
            return Ok(i);
        }
        match name_or_number.parse::<usize>() {
            Ok(i) if i < self.sample_types.len() => Ok(i),
            _ => Err(Error::InvalidConfig(format!(
                "sample index {name_or_number:?} not in this profile; it has: {}",
                self.sample_types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("{i} {}", t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// Reads a pprof profile — gzip-compressed or raw protobuf, written by heaprof, Go or any
/// other pprof producer — into [`ProfileData`]: sample types and stacks of function names.
///
/// Fails with [`Error::InvalidProfile`] saying what is wrong: empty input, truncated or
/// corrupt gzip, gzip whose content is not a profile, legacy text, neither gzip nor
/// protobuf, or a profile that breaks pprof's rules (a sample with the wrong number of
/// values, an id that refers to nothing).
///
/// ```
/// let mut pb = Vec::new();
/// heaprof::write_heap_profile(&mut pb).unwrap();
/// let p = heaprof::read_profile(&pb).unwrap();
/// let names: Vec<&str> = p.sample_types.iter().map(|t| t.name.as_str()).collect();
/// assert_eq!(names, ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]);
/// assert!(p.samples.iter().all(|s| s.values.len() == 4));
/// assert!(heaprof::read_profile(b"not a profile").is_err());
/// ```
pub fn read_profile(bytes: &[u8]) -> Result<ProfileData, Error> {
    let p = decode(bytes)?;
    let strings = &p.string_table;
    let sample_types = p
        .sample_type
        .iter()
        .map(|t| sample_type(strings, t))
        .collect::<Result<Vec<_>, _>>()?;
    let locs = location_names(&p)?;
    let samples = p
        .sample
        .iter()
        .enumerate()
        .map(|(n, sample)| stack_sample(n, sample, &locs, sample_types.len()))
        .collect::<Result<_, _>>()?;
    let default_sample_type = match p.default_sample_type {
        0 => None,
        i => Some(string(strings, i)?),
    };
    let period_type = match &p.period_type {
        Some(t) if t.r#type != 0 || t.unit != 0 => Some(sample_type(strings, t)?),
        _ => None,
    };
    let comments = p
        .comment
        .iter()
        .map(|&i| string(strings, i))
        .collect::<Result<_, _>>()?;
    Ok(ProfileData {
        sample_types,
        default_sample_type,
        period_type,
        period: p.period,
        time_nanos: p.time_nanos,
        duration_nanos: p.duration_nanos,
        samples,
        comments,
    })
}

/// String `i` of the string table; an index outside it is an error.
fn string(strings: &[String], i: i64) -> Result<String, Error> {
    usize::try_from(i)
        .ok()
        .and_then(|i| strings.get(i))
        .cloned()
        .ok_or_else(|| {
            Error::InvalidProfile(format!("string index {i} is outside the string table"))
        })
}

/// A sample type (or the period type) with its strings looked up.
fn sample_type(strings: &[String], t: &proto::ValueType) -> Result<SampleType, Error> {
    Ok(SampleType {
        name: string(strings, t.r#type)?,
        unit: string(strings, t.unit)?,
    })
}

/// Each location's function names by location id, innermost inlined frame first; a
/// location without lines is named by its address.
fn location_names(p: &proto::Profile) -> Result<HashMap<u64, Vec<String>>, Error> {
    let funcs: HashMap<u64, String> = p
        .function
        .iter()
        .map(|f| Ok((f.id, string(&p.string_table, f.name)?)))
        .collect::<Result<_, Error>>()?;
    p.location
        .iter()
        .map(|l| Ok((l.id, function_names(l, &funcs)?)))
        .collect()
}

/// The names of location `l`'s lines, from `funcs`; its address if it has no lines.
fn function_names(l: &proto::Location, funcs: &HashMap<u64, String>) -> Result<Vec<String>, Error> {
    if l.line.is_empty() {
        return Ok(vec![format!("{:#x}", l.address)]);
    }
    l.line
        .iter()
        .map(|line| {
            funcs.get(&line.function_id).cloned().ok_or_else(|| {
                Error::InvalidProfile(format!(
                    "location {} refers to function id {}, which is not in the profile",
                    l.id, line.function_id
                ))
            })
        })
        .collect()
}

/// Sample number `n` as a stack of names: its locations' names in order, each location
/// expanded to its inlined frames. It must have one value per sample type.
fn stack_sample(
    n: usize,
    sample: &proto::Sample,
    locs: &HashMap<u64, Vec<String>>,
    sample_types: usize,
) -> Result<StackSample, Error> {
    if sample.value.len() != sample_types {
        return Err(Error::InvalidProfile(format!(
            "sample {n} has {} values for {sample_types} sample types",
            sample.value.len(),
        )));
    }
    let mut stack = Vec::with_capacity(sample.location_id.len());
    for id in &sample.location_id {
        let names = locs.get(id).ok_or_else(|| {
            Error::InvalidProfile(format!(
                "sample {n} refers to location id {id}, which is not in the profile"
            ))
        })?;
        stack.extend(names.iter().cloned());
    }
    Ok(StackSample {
        stack,
        values: sample.value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_profile() {
        let e = decode(b"").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = decode(&[0x1f, 0x8b, 8, 0]).unwrap_err().to_string();
        assert!(e.contains("gzip"), "{e}");
        let e = decode(b"hello world, this is text")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither gzip-compressed nor a pprof"), "{e}");
        let e = decode(b"heap profile: 1: 2 [3: 4] @ heap/1048576\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("legacy text"), "{e}");
        let gz = |body: &[u8]| {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut w, body).unwrap();
            w.finish().unwrap()
        };
        let e = decode(&gz(b"hello world, this is text"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gzip-compressed, but the content is not"), "{e}");
        let e = decode(&gz(b"")).unwrap_err().to_string();
        assert!(e.contains("empty inside"), "{e}");
    }

    /// A profile built by our own builder, with an inlined frame, read back as names.
    fn built(values: &[i64]) -> Vec<u8> {
        use crate::pprof::proto::*;
        let p = Profile {
            sample_type: vec![
                ValueType { r#type: 1, unit: 2 },
                ValueType { r#type: 3, unit: 2 },
            ],
            sample: vec![Sample {
                location_id: vec![1, 2],
                value: values.to_vec(),
                label: vec![],
            }],
            location: vec![
                Location {
                    id: 1,
                    line: vec![
                        Line {
                            function_id: 10,
                            line: 1,
                            column: 0,
                        },
                        Line {
                            function_id: 11,
                            line: 2,
                            column: 0,
                        },
                    ],
                    ..Default::default()
                },
                Location {
                    id: 2,
                    address: 0x1234,
                    ..Default::default()
                },
            ],
            function: vec![
                Function {
                    id: 10,
                    name: 4,
                    ..Default::default()
                },
                Function {
                    id: 11,
                    name: 5,
                    ..Default::default()
                },
            ],
            string_table: ["", "a_space", "bytes", "b_space", "inner", "outer"]
                .map(String::from)
                .to_vec(),
            default_sample_type: 1,
            ..Default::default()
        };
        p.encode_to_vec()
    }

    #[test]
    fn reads_stacks_leaf_first_with_inlines_and_addresses() {
        let p = read_profile(&built(&[5, 7])).unwrap();
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.samples[0].stack, ["inner", "outer", "0x1234"]);
        assert_eq!(p.samples[0].values, [5, 7]);
        assert_eq!(p.default_sample_type.as_deref(), Some("a_space"));
        assert_eq!(p.default_sample_index(), 0);
        assert_eq!(p.sample_types[1].unit, "bytes");
        assert_eq!(p.sample_index("b_space").unwrap(), 1);
        let e = p.sample_index("c_space").unwrap_err().to_string();
        assert!(e.contains("0 a_space, 1 b_space"), "{e}");
        let e = read_profile(&built(&[5])).unwrap_err().to_string();
        assert!(
            e.contains("sample 0 has 1 values for 2 sample types"),
            "{e}"
        );
    }

    #[test]
    fn reports_dangling_ids() {
        let mut p = crate::pprof::proto::Profile::decode(built(&[1, 2]).as_slice()).unwrap();
        p.sample[0].location_id.push(99);
        let e = read_profile(&p.encode_to_vec()).unwrap_err().to_string();
        assert!(e.contains("location id 99"), "{e}");
        p.sample[0].location_id.pop();
        p.function.pop();
        let e = read_profile(&p.encode_to_vec()).unwrap_err().to_string();
        assert!(e.contains("function id 11"), "{e}");
    }
}
