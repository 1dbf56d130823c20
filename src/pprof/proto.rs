//! Hand-written prost messages for `perftools.profiles` (google/pprof `proto/profile.proto`).
//!
//! Owns only the wire format: field numbers and proto types, nothing else. Built by
//! [`super::builder::ProfileBuilder`]; decoded back in tests. No build script or protoc.
//! All string-valued fields are indices into [`Profile::string_table`] (index 0 = `""`).

/// The root message: `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Profile {
    /// 1: one entry per value in each sample.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// 2: the samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// 3: memory mappings; `mapping[0]` is the main binary.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// 4: locations referenced by samples (by id).
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// 5: functions referenced by lines (by id).
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// 6: all strings; `string_table[0]` must be `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// 7: regex (string index) of frames to drop.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// 8: regex (string index) of frames to keep.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// 9: collection time, ns since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// 10: collection duration in ns.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// 11: the kind of event sampled.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// 12: events per sample.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// 13: free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// 14: preferred sample type (string index); 0 = the last one.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// 15: documentation URL (string index).
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// `ValueType`: a type and its unit, both string indices.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ValueType {
    /// 1: e.g. "alloc_space".
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// 2: e.g. "bytes".
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`: a stack (leaf first) and its values.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Sample {
    /// 1: location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// 2: exactly `len(sample_type)` values.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// 3: labels.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `Label`: `str` or `num` (+ optional `num_unit`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Label {
    /// 1: key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// 2: string value (string index).
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// 3: numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// 4: unit of `num` (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// `Mapping`: one executable mapping of the process.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Mapping {
    /// 1: nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 2: start address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// 3: limit address (exclusive).
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// 4: file offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// 5: path (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// 6: GNU build ID as lowercase hex (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// 7: every location here has function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// 8: every location here has file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// 9: every location here has line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// 10: inlined frames are expanded.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`: one PC, with its (inlined) lines.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Location {
    /// 1: nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 2: containing mapping; 0 = unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// 3: the looked-up PC (return address − 1 for callers).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// 4: innermost inlined frame first, the real function last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// 5: folded (not used).
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// `Line`: a function and a line in it.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Line {
    /// 1: function id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// 2: source line; 0 = unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// 3: column; 0 = unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Function {
    /// 1: nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 2: demangled name without hash (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// 3: raw (mangled) symbol name (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// 4: source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// 5: first line of the function; 0 = unknown.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
