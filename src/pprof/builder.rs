//! Turns raw stacks and values into a `perftools.profiles.Profile`: string interning, ids,
//! symbolized and deduplicated locations, mappings from `/proc/self/maps` with build IDs.
//!
//! Called by the heap, CPU and count profile writers (after they copied their data out of any
//! lock); knows no profile kinds. Never called from the allocator or a signal handler: it
//! allocates, symbolizes and reads files.
//!
//! Semantics (pprof's `profile.proto` and Go's `runtime/pprof/proto.go`): `string_table[0] = ""`; ids are 1..n in first-use order;
//! every sample has exactly `len(sample_type)` values; `mapping[0]` is the main executable;
//! a location's `address` is the looked-up PC (return address − 1 for callers, as Go stores
//! it) and its `mapping_id` the first mapping containing it (0 if none); lines are innermost
//! first; `Function{name: demangled, system_name: raw, filename}`. Locations are deduplicated
//! by address — more precisely by (address, inlined lines trimmed), which differs only when
//! leading-frame trimming cuts into an inlined PC. Mapping flags are set per flag: a mapping's
//! `has_functions` iff some location in it has named frames (Go requires all; but with the
//! flag clear, pprof re-symbolizes the whole mapping from the binary, which for a large debug
//! build takes minutes in Go 1.19's pprof, and resolves nothing we could not — a location we
//! left unnamed stays an address either way), `has_filenames` iff every frame
//! has a file, `has_line_numbers` iff every frame has a line, `has_inline_frames` iff both of
//! the last two (inlines come from DWARF). A mapping no location uses gets all four (vacuously
//! true), so pprof never goes looking for its file. Samples keep the caller's order.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::maps::MapEntry;
use super::proto;
use super::trim::{leading_trim, split_trim};
use crate::pprof::symbolize::{SymFrame, Symbolizer};

/// A sample label: a string, or a number with an optional unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Label {
    /// `{key, str}`.
    Str {
        /// Label key.
        key: String,
        /// Label value.
        value: String,
    },
    /// `{key, num, num_unit}`.
    Num {
        /// Label key.
        key: String,
        /// Label value.
        value: i64,
        /// Unit; `None` lets pprof infer it from the key.
        unit: Option<String>,
    },
}

struct RawSample {
    /// PCs to look up as is (already adjusted), leaf first; unused for pseudo samples.
    pcs: Vec<usize>,
    /// Name of the single pseudo frame, for [`ProfileBuilder::add_pseudo_sample`].
    pseudo: Option<String>,
    values: Vec<i64>,
    labels: Vec<Label>,
}

/// Builds one profile. Cheap to fill; all the work happens in [`ProfileBuilder::build`].
pub struct ProfileBuilder {
    sample_types: Vec<(String, String)>,
    period_type: (String, String),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<String>,
    default_sample_type: Option<String>,
    drop_frames: Option<String>,
    trim_leading: Option<fn(&str) -> bool>,
    samples: Vec<RawSample>,
}

/// A summary: the sample types and how many samples and comments were added.
impl std::fmt::Debug for ProfileBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileBuilder")
            .field("sample_types", &self.sample_types)
            .field("period_type", &self.period_type)
            .field("period", &self.period)
            .field("samples", &self.samples.len())
            .field("comments", &self.comments.len())
            .finish_non_exhaustive()
    }
}

impl ProfileBuilder {
    /// A profile with these `(type, unit)` sample types, period type and period. `time_nanos`
    /// starts as now.
    pub fn new(sample_types: &[(&str, &str)], period_type: (&str, &str), period: i64) -> Self {
        let time_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        ProfileBuilder {
            sample_types: sample_types
                .iter()
                .map(|&(t, u)| (t.into(), u.into()))
                .collect(),
            period_type: (period_type.0.into(), period_type.1.into()),
            period,
            time_nanos,
            duration_nanos: 0,
            comments: Vec::new(),
            default_sample_type: None,
            drop_frames: None,
            trim_leading: None,
            samples: Vec::new(),
        }
    }

    /// Collection time, ns since the Unix epoch.
    pub fn set_time_nanos(&mut self, t: i64) {
        self.time_nanos = t;
    }

    /// Collection duration in ns (Go sets it for CPU profiles and `seconds=N` deltas).
    pub fn set_duration_nanos(&mut self, d: i64) {
        self.duration_nanos = d;
    }

    /// A human-readable comment.
    pub fn add_comment(&mut self, c: &str) {
        self.comments.push(c.into());
    }

    /// The sample type readers show by default (e.g. `alloc_space` for `allocs`).
    pub fn set_default_sample_type(&mut self, t: &str) {
        self.default_sample_type = Some(t.into());
    }

    /// `drop_frames` regex (pprof anchors it); a backstop for allocator internals.
    pub fn set_drop_frames(&mut self, re: &str) {
        self.drop_frames = Some(re.into());
    }

    /// Drop leading (leaf-side) frames whose demangled function name satisfies `pred`, unless
    /// that would remove every frame (like Go strips `runtime.*`). Applies per inlined line
    /// too; an unresolved PC stops the trimming.
    pub fn set_trim_leading(&mut self, pred: fn(&str) -> bool) {
        self.trim_leading = Some(pred);
    }

    /// Adds a sample. `stack` is leaf first; all entries are return addresses (looked up as
    /// addr − 1), except `stack[0]` when `leaf_is_pc` (CPU samples: looked up as is). `values`
    /// is padded with zeros or cut to `len(sample_type)` so the profile stays valid.
    pub fn add_sample(
        &mut self,
        stack: &[usize],
        leaf_is_pc: bool,
        values: &[i64],
        labels: &[Label],
    ) {
        let pcs = stack
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                if i == 0 && leaf_is_pc {
                    a
                } else {
                    a.wrapping_sub(1)
                }
            })
            .collect();
        self.push(RawSample {
            pcs,
            pseudo: None,
            values: values.to_vec(),
            labels: labels.to_vec(),
        });
    }

    /// A sample whose only frame is the pseudo function `name` (e.g.
    /// `"heaprof::stack_table_overflow"`): a location with address 0 and no mapping.
    pub fn add_pseudo_sample(&mut self, name: &str, values: &[i64], labels: &[Label]) {
        self.push(RawSample {
            pcs: Vec::new(),
            pseudo: Some(name.into()),
            values: values.to_vec(),
            labels: labels.to_vec(),
        });
    }

    fn push(&mut self, mut s: RawSample) {
        s.values.resize(self.sample_types.len(), 0);
        self.samples.push(s);
    }

    /// Symbolizes and assembles the profile with a fresh [`Symbolizer`].
    pub fn build(self) -> proto::Profile {
        self.build_with(&mut Symbolizer::new())
    }

    /// Like [`ProfileBuilder::build`], reusing `sym` (and its cache).
    pub fn build_with(self, sym: &mut Symbolizer) -> proto::Profile {
        Assembler::new(sym).run(self)
    }

    /// Builds and writes gzip-compressed protobuf (flate2, fastest level, as Go's BestSpeed).
    pub fn write_gzip<W: Write>(self, w: W) -> io::Result<()> {
        let bytes = self.build().encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        gz.write_all(&bytes)?;
        gz.finish()?.flush()
    }
}

#[derive(Clone, Copy)]
struct Flags {
    /// No location seen in the mapping yet (then every flag is vacuously true).
    unused: bool,
    /// Some location in the mapping has named frames.
    any_named: bool,
    filenames: bool,
    lines: bool,
}

impl Flags {
    /// `m` with its `has_*` flags set from these.
    fn set_on(self, m: proto::Mapping) -> proto::Mapping {
        proto::Mapping {
            has_functions: self.unused || self.any_named,
            has_filenames: self.filenames,
            has_line_numbers: self.lines,
            has_inline_frames: self.filenames && self.lines,
            ..m
        }
    }
}

struct Assembler<'s> {
    sym: &'s mut Symbolizer,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    maps: Vec<MapEntry>,
    flags: Vec<Flags>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, String, String), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<(usize, usize), u64>,
    pseudo_ids: HashMap<String, u64>,
}

impl<'s> Assembler<'s> {
    fn new(sym: &'s mut Symbolizer) -> Self {
        let mut maps = sym.maps().to_vec();
        // mapping[0] must be the main executable: move its entries first, order otherwise kept.
        if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
            let exe = exe.to_string_lossy().into_owned();
            maps.sort_by_key(|m| m.path != exe);
        }
        let flags = vec![
            Flags {
                unused: true,
                any_named: false,
                filenames: true,
                lines: true
            };
            maps.len().max(1)
        ];
        Assembler {
            sym,
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            maps,
            flags,
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            pseudo_ids: HashMap::new(),
        }
    }

    fn s(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, (t, u): &(String, String)) -> proto::ValueType {
        proto::ValueType {
            r#type: self.s(t),
            unit: self.s(u),
        }
    }

    fn function(&mut self, name: &str, system_name: &str, file: &str) -> u64 {
        let key = (name.to_string(), system_name.to_string(), file.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let f = proto::Function {
            id,
            name: self.s(name),
            system_name: self.s(system_name),
            filename: self.s(file),
            start_line: 0,
        };
        self.functions.push(f);
        self.function_ids.insert(key, id);
        id
    }

    /// Index into `maps`/`flags` of the mapping holding `pc`; with no maps at all, the single
    /// fake mapping 0.
    fn mapping_index(&self, pc: usize) -> Option<usize> {
        if self.maps.is_empty() {
            return Some(0);
        }
        self.maps.iter().position(|m| m.contains(pc as u64))
    }

    fn location(&mut self, pc: usize, frames: &[SymFrame], skip: usize) -> u64 {
        if let Some(&id) = self.location_ids.get(&(pc, skip)) {
            return id;
        }
        let mi = self.mapping_index(pc);
        if let Some(mi) = mi {
            let f = &mut self.flags[mi];
            f.unused = false;
            f.any_named |= frames.iter().any(|x| !x.name.is_empty());
            f.filenames &= !frames.is_empty() && frames.iter().all(|x| x.file.is_some());
            f.lines &= !frames.is_empty() && frames.iter().all(|x| x.line > 0);
        }
        let line = frames[skip.min(frames.len())..]
            .iter()
            .map(|f| proto::Line {
                function_id: self.function(
                    &f.name,
                    &f.system_name,
                    f.file.as_deref().unwrap_or(""),
                ),
                line: i64::from(f.line),
                column: 0,
            })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id: mi.map_or(0, |i| i as u64 + 1),
            address: pc as u64,
            line,
            is_folded: false,
        });
        self.location_ids.insert((pc, skip), id);
        id
    }

    fn pseudo_location(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.pseudo_ids.get(name) {
            return id;
        }
        let function_id = self.function(name, name, "");
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id: 0,
            address: 0,
            line: vec![proto::Line {
                function_id,
                line: 0,
                column: 0,
            }],
            is_folded: false,
        });
        self.pseudo_ids.insert(name.to_string(), id);
        id
    }

    fn label(&mut self, l: &Label) -> proto::Label {
        match l {
            Label::Str { key, value } => proto::Label {
                key: self.s(key),
                str: self.s(value),
                num: 0,
                num_unit: 0,
            },
            Label::Num { key, value, unit } => proto::Label {
                key: self.s(key),
                str: 0,
                num: *value,
                num_unit: unit.as_deref().map_or(0, |u| self.s(u)),
            },
        }
    }

    /// The profile: sample and period types, the samples (which make the locations and
    /// functions), the mappings, then the comments and the profile's other strings. Strings
    /// are interned in that order.
    fn run(mut self, b: ProfileBuilder) -> proto::Profile {
        let sample_type = b.sample_types.iter().map(|t| self.value_type(t)).collect();
        let period_type = Some(self.value_type(&b.period_type));
        let sample = b
            .samples
            .iter()
            .map(|raw| self.sample(raw, b.trim_leading))
            .collect();
        let mapping = self.mappings();
        let comment = b.comments.iter().map(|c| self.s(c)).collect();
        let default_sample_type = b.default_sample_type.as_deref().map_or(0, |t| self.s(t));
        let drop_frames = b.drop_frames.as_deref().map_or(0, |t| self.s(t));
        proto::Profile {
            sample_type,
            sample,
            mapping,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            drop_frames,
            keep_frames: 0,
            time_nanos: b.time_nanos,
            duration_nanos: b.duration_nanos,
            period_type,
            period: b.period,
            comment,
            default_sample_type,
            doc_url: 0,
        }
    }

    /// One sample: its locations, its values as given, its labels.
    fn sample(&mut self, raw: &RawSample, trim: Option<fn(&str) -> bool>) -> proto::Sample {
        let location_id = match &raw.pseudo {
            Some(name) => vec![self.pseudo_location(name)],
            None => self.stack_locations(&raw.pcs, trim),
        };
        let label = raw.labels.iter().map(|l| self.label(l)).collect();
        proto::Sample {
            location_id,
            value: raw.values.clone(),
            label,
        }
    }

    /// The locations of a stack of PCs, leaf first: each PC symbolized, the leading frames
    /// `trim` matches dropped (whole PCs, then inlined frames of the next one).
    fn stack_locations(&mut self, pcs: &[usize], trim: Option<fn(&str) -> bool>) -> Vec<u64> {
        let frames: Vec<Vec<SymFrame>> = pcs
            .iter()
            .map(|&pc| self.sym.resolve(pc).to_vec())
            .collect();
        let refs: Vec<&[SymFrame]> = frames.iter().map(Vec::as_slice).collect();
        let (drop_pcs, skip) = split_trim(&refs, leading_trim(&refs, trim));
        (drop_pcs..pcs.len())
            .map(|i| {
                let skip = if i == drop_pcs { skip } else { 0 };
                self.location(pcs[i], &frames[i], skip)
            })
            .collect()
    }

    /// The mappings, `mapping[0]` the main executable; with no maps file, one fake all-zero
    /// mapping covers every location (as Go does).
    fn mappings(&mut self) -> Vec<proto::Mapping> {
        let maps = std::mem::take(&mut self.maps);
        if maps.is_empty() {
            return vec![self.flags[0].set_on(proto::Mapping {
                id: 1,
                ..Default::default()
            })];
        }
        maps.iter()
            .enumerate()
            .map(|(i, m)| self.mapping(i, m))
            .collect()
    }

    /// Mapping `i`, made of maps entry `m`, with its file's build ID.
    fn mapping(&mut self, i: usize, m: &MapEntry) -> proto::Mapping {
        let build_id = if m.is_file() {
            self.sym.build_id(&m.path)
        } else {
            String::new()
        };
        self.flags[i].set_on(proto::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: self.s(&m.path),
            build_id: self.s(&build_id),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::elf;

    /// Return addresses of the current stack, leaf first (backtrace's own frames included).
    #[inline(never)]
    fn builder_test_leaf() -> Vec<usize> {
        let mut v = Vec::new();
        let _sym = crate::pprof::symbolize::sym_lock(); // no fork while backtrace's lock is held
        backtrace::trace(|f| {
            v.push(f.ip() as usize);
            true
        });
        v.retain(|&ip| ip != 0);
        std::hint::black_box(v)
    }

    #[inline(never)]
    fn builder_test_caller() -> Vec<usize> {
        std::hint::black_box(builder_test_leaf())
    }

    fn decode(p: &proto::Profile) -> proto::Profile {
        let bytes = p.encode_to_vec();
        proto::Profile::decode(bytes.as_slice()).unwrap()
    }

    fn s(p: &proto::Profile, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    fn func_names(p: &proto::Profile, loc_id: u64) -> Vec<&str> {
        let loc = &p.location[loc_id as usize - 1];
        loc.line
            .iter()
            .map(|l| s(p, p.function[l.function_id as usize - 1].name))
            .collect()
    }

    fn check_invariants(p: &proto::Profile) {
        assert_eq!(p.string_table[0], "");
        let mut seen = std::collections::HashSet::new();
        assert!(
            p.string_table.iter().all(|x| seen.insert(x)),
            "strings interned once"
        );
        let n = p.string_table.len() as i64;
        let ok = |i: i64| (0..n).contains(&i);
        for (k, m) in p.mapping.iter().enumerate() {
            assert_eq!(m.id, k as u64 + 1);
            assert!(ok(m.filename) && ok(m.build_id));
        }
        for (k, l) in p.location.iter().enumerate() {
            assert_eq!(l.id, k as u64 + 1);
            assert!(l.mapping_id as usize <= p.mapping.len());
            for line in &l.line {
                assert!(line.function_id >= 1 && line.function_id as usize <= p.function.len());
            }
        }
        for (k, f) in p.function.iter().enumerate() {
            assert_eq!(f.id, k as u64 + 1);
            assert!(ok(f.name) && ok(f.system_name) && ok(f.filename));
        }
        for smp in &p.sample {
            assert_eq!(smp.value.len(), p.sample_type.len());
            for &id in &smp.location_id {
                assert!(id >= 1 && id as usize <= p.location.len());
            }
            for l in &smp.label {
                assert!(ok(l.key) && ok(l.str) && ok(l.num_unit));
            }
        }
        let mut addrs = std::collections::HashSet::new();
        for l in p.location.iter().filter(|l| l.address != 0) {
            assert!(addrs.insert(l.address), "locations deduplicated by address");
        }
    }

    #[test]
    fn builds_a_valid_symbolized_profile() {
        let stack = builder_test_caller();
        let p = decode(&two_samples_and_a_pseudo(&stack).build());
        check_invariants(&p);
        check_header_and_samples(&p, &stack);
        let leaf = check_symbolized(&p, &stack);
        check_main_mapping(&p, leaf);
        check_pseudo_sample(&p);
    }

    /// A builder with every header field set, two samples of `stack` (one with too few values,
    /// each with a label) and a pseudo sample with too many values.
    fn two_samples_and_a_pseudo(stack: &[usize]) -> ProfileBuilder {
        let mut b = ProfileBuilder::new(
            &[("objects", "count"), ("space", "bytes")],
            ("space", "bytes"),
            512,
        );
        b.set_time_nanos(42);
        b.set_duration_nanos(7);
        b.add_comment("hello");
        b.set_default_sample_type("space");
        b.add_sample(
            stack,
            false,
            &[1, 100],
            &[Label::Num {
                key: "bytes".into(),
                value: 100,
                unit: None,
            }],
        );
        b.add_sample(
            stack,
            false,
            &[2],
            &[Label::Str {
                key: "k".into(),
                value: "v".into(),
            }],
        );
        b.add_pseudo_sample("heaprof::stack_table_overflow", &[3, 300, 9], &[]);
        b
    }

    /// The header fields as set; values padded or cut to the sample types; one stack, one
    /// list of locations; the labels.
    fn check_header_and_samples(p: &proto::Profile, stack: &[usize]) {
        assert_eq!(s(p, p.sample_type[1].r#type), "space");
        assert_eq!(s(p, p.period_type.as_ref().unwrap().unit), "bytes");
        assert_eq!((p.period, p.time_nanos, p.duration_nanos), (512, 42, 7));
        assert_eq!(s(p, p.comment[0]), "hello");
        assert_eq!(s(p, p.default_sample_type), "space");
        assert_eq!(p.sample.len(), 3);
        assert_eq!(p.sample[1].value, [2, 0], "padded to len(sample_type)");
        assert_eq!(p.sample[2].value, [3, 300], "cut to len(sample_type)");
        assert_eq!(
            p.sample[0].location_id, p.sample[1].location_id,
            "same stack, same locations"
        );
        assert_eq!(p.sample[0].location_id.len(), stack.len());
        assert_eq!(s(p, p.sample[0].label[0].key), "bytes");
        assert_eq!(p.sample[0].label[0].num, 100);
        assert_eq!(s(p, p.sample[1].label[0].str), "v");
    }

    /// Addresses are return address − 1; our functions are named, demangled, with files.
    /// Returns the location of `builder_test_leaf`.
    fn check_symbolized<'p>(p: &'p proto::Profile, stack: &[usize]) -> &'p proto::Location {
        let locs: Vec<&proto::Location> = p.sample[0]
            .location_id
            .iter()
            .map(|&id| &p.location[id as usize - 1])
            .collect();
        for (l, &ra) in locs.iter().zip(stack) {
            assert_eq!(l.address, ra as u64 - 1);
        }
        let names: Vec<&str> = p.sample[0]
            .location_id
            .iter()
            .flat_map(|&id| func_names(p, id))
            .collect();
        let leaf = names
            .iter()
            .position(|n| n.ends_with("builder::tests::builder_test_leaf"))
            .unwrap();
        assert!(
            names[leaf + 1].ends_with("builder::tests::builder_test_caller"),
            "{names:?}"
        );
        let f = p
            .function
            .iter()
            .find(|f| s(p, f.name).ends_with("builder_test_leaf"))
            .unwrap();
        assert!(s(p, f.filename).ends_with("builder.rs"));
        assert_ne!(s(p, f.system_name), s(p, f.name));
        locs[leaf]
    }

    /// mapping[0] is this executable, with its build ID; `leaf` (ours) is in it and resolved.
    fn check_main_mapping(p: &proto::Profile, leaf: &proto::Location) {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let m0 = &p.mapping[0];
        assert_eq!(s(p, m0.filename), exe.to_str().unwrap());
        assert_eq!(s(p, m0.build_id), elf::build_id(&exe));
        assert!(m0.has_functions);
        assert_eq!(leaf.mapping_id, 1);
    }

    /// The pseudo sample: one location, no mapping, the named function.
    fn check_pseudo_sample(p: &proto::Profile) {
        let pl = p.sample[2].location_id[0];
        assert_eq!(p.sample[2].location_id.len(), 1);
        assert_eq!(p.location[pl as usize - 1].mapping_id, 0);
        assert_eq!(func_names(p, pl), ["heaprof::stack_table_overflow"]);
    }

    #[test]
    fn trims_leading_frames_unless_all_would_go() {
        let stack = builder_test_caller();
        let mut b = ProfileBuilder::new(&[("n", "count")], ("n", "count"), 1);
        b.set_trim_leading(|n| n.starts_with("backtrace::") || n.ends_with("builder_test_leaf"));
        b.add_sample(&stack, false, &[1], &[]);
        let p = b.build();
        let first = func_names(&p, p.sample[0].location_id[0]);
        assert!(
            first[0].ends_with("builder::tests::builder_test_caller"),
            "{first:?}"
        );

        let mut b = ProfileBuilder::new(&[("n", "count")], ("n", "count"), 1);
        b.set_trim_leading(|_| true);
        b.add_sample(&stack, false, &[1], &[]);
        let p = b.build();
        assert_eq!(
            p.sample[0].location_id.len(),
            stack.len(),
            "nothing trimmed when all match"
        );
    }

    #[test]
    fn leaf_pc_is_looked_up_as_is() {
        let f = builder_test_leaf as fn() -> Vec<usize> as usize;
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            10_000_000,
        );
        b.add_sample(&[f, f + 1], true, &[1, 10_000_000], &[]);
        let p = b.build();
        let ids = &p.sample[0].location_id;
        assert_eq!(ids.len(), 2);
        assert_eq!(
            ids[0], ids[1],
            "PC f and return address f+1 are one location"
        );
        assert_eq!(p.location.len(), 1);
        assert_eq!(p.location[ids[0] as usize - 1].address, f as u64);
        assert!(func_names(&p, ids[0])[0].ends_with("builder_test_leaf"));
    }

    #[test]
    fn gzip_output_decodes() {
        let mut b = ProfileBuilder::new(&[("n", "count")], ("n", "count"), 1);
        b.add_sample(&builder_test_caller(), false, &[5], &[]);
        let mut buf = Vec::new();
        b.write_gzip(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&buf[..]), &mut raw).unwrap();
        let p = proto::Profile::decode(raw.as_slice()).unwrap();
        check_invariants(&p);
        assert_eq!(p.sample[0].value, [5]);
    }
}
