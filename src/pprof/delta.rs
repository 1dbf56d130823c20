//! Delta profiles: what changed in a profile between two snapshots, as Go's `net/http/pprof`
//! computes it for `?seconds=N` (the first snapshot scaled by −1 and merged with the second).
//!
//! Called by applications and the HTTP handler on bytes they hold; never by the allocator or a
//! signal handler. The input is untrusted: a malformed profile is an [`Error::InvalidProfile`],
//! never a panic.
//!
//! Matching: a sample of one snapshot is the same record as a sample of the other when their
//! stacks and labels are equal. A stack is compared location by location through what the
//! location means, not its id: its mapping's file, build ID and offset, its address relative
//! to that mapping, and its lines (function names, file, line). Labels are compared as
//! key/value sets, with one exception: heaprof's heap `bytes` label is the mean sampled size
//! of a record's size class, which moves as samples accumulate, so `bytes` is compared by its
//! size class (exact up to 32 bytes, then eight classes per power of two) and the delta
//! carries the second snapshot's value.

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use crate::alloc::buckets::size_class;
use crate::base::error::Error;
use crate::pprof::proto;
use crate::pprof::read;

/// The difference `after − before` of two snapshots of one profile, as gzip-compressed pprof
/// protobuf: Go's `seconds=N` delta profile, for code that serves or pushes profiles its own
/// way (an axum handler, a push client). Both inputs are what
/// [`Profile::write_to`](crate::Profile::write_to)`(w, 0)` writes (gzip or raw protobuf; Go's
/// profiles too).
///
/// Every value of every sample is the second snapshot's minus the first's, per stack and
/// labels; samples that net to zero in every value are dropped, and a record only in `before`
/// appears negated. For `heap` the in-use columns are differences too (what grew or shrank),
/// as Go's are. The result has `after`'s `time_nanos`, `duration_nanos` = the time between the
/// two snapshots, `after`'s comments and default sample type, and the larger `period`.
///
/// Errors: either input is not a profile, or their sample types or period types differ.
///
/// ```
/// use std::time::Duration;
/// let allocs = heaprof::lookup("allocs").unwrap();
/// let mut before = Vec::new();
/// allocs.write_to(&mut before, 0)?;
/// std::thread::sleep(Duration::from_millis(10));
/// let mut after = Vec::new();
/// allocs.write_to(&mut after, 0)?;
/// let delta = heaprof::profile_delta(&before, &after)?;
/// let d = heaprof::read_profile(&delta)?;
/// assert_eq!(d.sample_types[1].name, "alloc_space");
/// // No allocator is installed in this example, so nothing was allocated in between.
/// assert!(d.samples.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn profile_delta(before: &[u8], after: &[u8]) -> Result<Vec<u8>, Error> {
    let p0 = read::decode(before)?;
    let p1 = read::decode(after)?;
    let d = delta(&p0, &p1)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&d.encode_to_vec())?;
    Ok(gz.finish()?)
}

/// [`profile_delta`] on decoded profiles.
pub(crate) fn delta(
    before: &proto::Profile,
    after: &proto::Profile,
) -> Result<proto::Profile, Error> {
    let (b, a) = (Source::new(before)?, Source::new(after)?);
    check_compatible(&b, &a)?;
    let n = after.sample_type.len();
    // Per record key, in the order of first sight (the second snapshot's records first, in
    // its order, then those only in the first): the sample whose stack and labels the delta
    // takes (the second's when it has one: its `bytes` mean is the current one), and the
    // running difference.
    let mut order: Vec<SampleKey> = Vec::new();
    let mut records: HashMap<SampleKey, (bool, usize, Vec<i64>)> = HashMap::new();
    for (from_after, src, sign) in [(true, &a, 1i64), (false, &b, -1)] {
        for (i, s) in src.p.sample.iter().enumerate() {
            let key = src.sample_key(s)?;
            let e = records.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (from_after, i, vec![0; n])
            });
            for (t, v) in e.2.iter_mut().zip(&s.value) {
                *t = t.wrapping_add(sign.wrapping_mul(*v));
            }
        }
    }
    let mut out = Output::new(after);
    for key in &order {
        let (from_after, i, values) = &records[key];
        if values.iter().all(|&v| v == 0) {
            continue;
        }
        let src = if *from_after { &a } else { &b };
        out.add_sample(src, &src.p.sample[*i], values.clone())?;
    }
    let mut p = out.finish();
    p.period = before.period.max(after.period);
    p.time_nanos = after.time_nanos;
    p.duration_nanos = if before.time_nanos > 0 && after.time_nanos >= before.time_nanos {
        after.time_nanos - before.time_nanos
    } else {
        after.duration_nanos
    };
    Ok(p)
}

fn check_compatible(b: &Source, a: &Source) -> Result<(), Error> {
    let types = |s: &Source| -> Result<Vec<(String, String)>, Error> {
        s.p.sample_type.iter().map(|t| s.value_type(t)).collect()
    };
    let (tb, ta) = (types(b)?, types(a)?);
    if tb != ta {
        return Err(Error::InvalidProfile(format!(
            "the two profiles have different sample types: {tb:?} and {ta:?}"
        )));
    }
    let period = |s: &Source| {
        s.p.period_type
            .as_ref()
            .map(|t| s.value_type(t))
            .transpose()
    };
    let (pb, pa) = (period(b)?, period(a)?);
    if pb.is_some() && pa.is_some() && pb != pa {
        return Err(Error::InvalidProfile(format!(
            "the two profiles have different period types: {pb:?} and {pa:?}"
        )));
    }
    Ok(())
}

/// What identifies a mapping across snapshots: file, build ID, file offset.
type MappingKey = (String, String, u64);
/// A function: name, system name, file.
type FunctionKey = (String, String, String);
/// A location: its mapping (if any), its address relative to the mapping's start (absolute
/// without one), and its lines (function, line number).
type LocationKey = (Option<MappingKey>, u64, Vec<(FunctionKey, i64)>);
/// A label: key, string value, numeric value (the size class for `bytes`), numeric unit.
type LabelKey = (String, String, i64, String);
/// A sample record: its stack and its sorted labels.
type SampleKey = (Vec<LocationKey>, Vec<LabelKey>);

/// One input profile with its id lookups, validated on use.
struct Source<'p> {
    p: &'p proto::Profile,
    locations: HashMap<u64, &'p proto::Location>,
    functions: HashMap<u64, &'p proto::Function>,
    mappings: HashMap<u64, &'p proto::Mapping>,
}

impl<'p> Source<'p> {
    fn new(p: &'p proto::Profile) -> Result<Self, Error> {
        if p.string_table.first().map(String::as_str) != Some("") {
            return Err(bad("string_table[0] is not empty"));
        }
        Ok(Source {
            p,
            locations: p.location.iter().map(|l| (l.id, l)).collect(),
            functions: p.function.iter().map(|f| (f.id, f)).collect(),
            mappings: p.mapping.iter().map(|m| (m.id, m)).collect(),
        })
    }

    fn s(&self, i: i64) -> Result<&'p str, Error> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.p.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| bad(&format!("string index {i} out of range")))
    }

    fn value_type(&self, t: &proto::ValueType) -> Result<(String, String), Error> {
        Ok((self.s(t.r#type)?.to_string(), self.s(t.unit)?.to_string()))
    }

    fn location(&self, id: u64) -> Result<&'p proto::Location, Error> {
        self.locations
            .get(&id)
            .copied()
            .ok_or_else(|| bad(&format!("sample refers to missing location {id}")))
    }

    fn function(&self, id: u64) -> Result<&'p proto::Function, Error> {
        self.functions
            .get(&id)
            .copied()
            .ok_or_else(|| bad(&format!("line refers to missing function {id}")))
    }

    /// The location's mapping; `None` for mapping id 0.
    fn mapping(&self, id: u64) -> Result<Option<&'p proto::Mapping>, Error> {
        if id == 0 {
            return Ok(None);
        }
        self.mappings
            .get(&id)
            .copied()
            .map(Some)
            .ok_or_else(|| bad(&format!("location refers to missing mapping {id}")))
    }

    fn mapping_key(&self, m: &proto::Mapping) -> Result<MappingKey, Error> {
        Ok((
            self.s(m.filename)?.to_string(),
            self.s(m.build_id)?.to_string(),
            m.file_offset,
        ))
    }

    fn function_key(&self, f: &proto::Function) -> Result<FunctionKey, Error> {
        Ok((
            self.s(f.name)?.to_string(),
            self.s(f.system_name)?.to_string(),
            self.s(f.filename)?.to_string(),
        ))
    }

    fn location_key(&self, l: &proto::Location) -> Result<LocationKey, Error> {
        let m = self.mapping(l.mapping_id)?;
        let lines = l
            .line
            .iter()
            .map(|ln| Ok((self.function_key(self.function(ln.function_id)?)?, ln.line)))
            .collect::<Result<_, Error>>()?;
        Ok(match m {
            Some(m) => (
                Some(self.mapping_key(m)?),
                l.address.wrapping_sub(m.memory_start),
                lines,
            ),
            None => (None, l.address, lines),
        })
    }

    fn sample_key(&self, s: &proto::Sample) -> Result<SampleKey, Error> {
        if s.value.len() != self.p.sample_type.len() {
            return Err(bad("a sample's value count differs from the sample types'"));
        }
        let stack = s
            .location_id
            .iter()
            .map(|&id| self.location_key(self.location(id)?))
            .collect::<Result<_, Error>>()?;
        let mut labels = s
            .label
            .iter()
            .map(|l| {
                let key = self.s(l.key)?.to_string();
                let num = if key == "bytes" && l.str == 0 {
                    i64::from(size_class(l.num.max(0) as u64))
                } else {
                    l.num
                };
                Ok((
                    key,
                    self.s(l.str)?.to_string(),
                    num,
                    self.s(l.num_unit)?.to_string(),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        labels.sort();
        Ok((stack, labels))
    }
}

fn bad(msg: &str) -> Error {
    Error::InvalidProfile(msg.to_string())
}

/// The delta profile being assembled: the tables of both inputs merged, each entry imported
/// once, on first use, with fresh ids 1..n.
struct Output {
    p: proto::Profile,
    strings: HashMap<String, i64>,
    mappings: HashMap<MappingKey, (u64, u64)>,
    functions: HashMap<FunctionKey, u64>,
    locations: HashMap<LocationKey, u64>,
}

impl Output {
    /// An empty profile with `after`'s header (sample types, period type, comments, …).
    fn new(after: &proto::Profile) -> Self {
        let mut o = Output {
            p: proto::Profile::default(),
            strings: HashMap::new(),
            mappings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
        };
        o.s("");
        let s = |i: i64| {
            after
                .string_table
                .get(i as usize)
                .cloned()
                .unwrap_or_default()
        };
        let vt = |o: &mut Output, t: &proto::ValueType| proto::ValueType {
            r#type: o.s(&s(t.r#type)),
            unit: o.s(&s(t.unit)),
        };
        o.p.sample_type = after.sample_type.iter().map(|t| vt(&mut o, t)).collect();
        o.p.period_type = after.period_type.as_ref().map(|t| vt(&mut o, t));
        o.p.comment = after.comment.iter().map(|&c| o.s(&s(c))).collect();
        o.p.default_sample_type = nonzero(after.default_sample_type, |i| o.s(&s(i)));
        o.p.drop_frames = nonzero(after.drop_frames, |i| o.s(&s(i)));
        o.p.keep_frames = nonzero(after.keep_frames, |i| o.s(&s(i)));
        o.p.doc_url = nonzero(after.doc_url, |i| o.s(&s(i)));
        o
    }

    fn s(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.strings.get(v) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(v.to_string());
        self.strings.insert(v.to_string(), i);
        i
    }

    /// Imports `m` (once per key); returns its new id and memory start.
    fn mapping(&mut self, src: &Source, m: &proto::Mapping) -> Result<(u64, u64), Error> {
        let key = src.mapping_key(m)?;
        if let Some(&v) = self.mappings.get(&key) {
            return Ok(v);
        }
        let id = self.p.mapping.len() as u64 + 1;
        let new = proto::Mapping {
            id,
            filename: self.s(&key.0),
            build_id: self.s(&key.1),
            ..m.clone()
        };
        self.p.mapping.push(new);
        self.mappings.insert(key, (id, m.memory_start));
        Ok((id, m.memory_start))
    }

    fn function(&mut self, src: &Source, f: &proto::Function) -> Result<u64, Error> {
        let key = src.function_key(f)?;
        if let Some(&id) = self.functions.get(&key) {
            return Ok(id);
        }
        let id = self.p.function.len() as u64 + 1;
        let new = proto::Function {
            id,
            name: self.s(&key.0),
            system_name: self.s(&key.1),
            filename: self.s(&key.2),
            start_line: f.start_line,
        };
        self.p.function.push(new);
        self.functions.insert(key, id);
        Ok(id)
    }

    fn location(&mut self, src: &Source, l: &proto::Location) -> Result<u64, Error> {
        let key = src.location_key(l)?;
        if let Some(&id) = self.locations.get(&key) {
            return Ok(id);
        }
        // The address moves with its mapping when the two snapshots map it differently.
        let (mapping_id, address) = match src.mapping(l.mapping_id)? {
            Some(m) => {
                let (id, start) = self.mapping(src, m)?;
                (id, start.wrapping_add(key.1))
            }
            None => (0, l.address),
        };
        let mut line = Vec::with_capacity(l.line.len());
        for ln in &l.line {
            let function_id = self.function(src, src.function(ln.function_id)?)?;
            line.push(proto::Line {
                function_id,
                ..ln.clone()
            });
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: l.is_folded,
        });
        self.locations.insert(key, id);
        Ok(id)
    }

    fn add_sample(
        &mut self,
        src: &Source,
        s: &proto::Sample,
        value: Vec<i64>,
    ) -> Result<(), Error> {
        let location_id = s
            .location_id
            .iter()
            .map(|&id| self.location(src, src.location(id)?))
            .collect::<Result<_, Error>>()?;
        let label = s
            .label
            .iter()
            .map(|l| {
                Ok(proto::Label {
                    key: self.s(src.s(l.key)?),
                    str: self.s(src.s(l.str)?),
                    num: l.num,
                    num_unit: self.s(src.s(l.num_unit)?),
                })
            })
            .collect::<Result<_, Error>>()?;
        self.p.sample.push(proto::Sample {
            location_id,
            value,
            label,
        });
        Ok(())
    }

    fn finish(self) -> proto::Profile {
        self.p
    }
}

/// `f(i)` for a set string field, 0 (unset) otherwise.
fn nonzero(i: i64, f: impl FnOnce(i64) -> i64) -> i64 {
    if i == 0 {
        0
    } else {
        f(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::builder::{Label, ProfileBuilder};

    fn heapish(
        samples: &[(&[usize], [i64; 2], Option<i64>)],
        time: i64,
        period: i64,
    ) -> proto::Profile {
        let mut b = ProfileBuilder::new(
            &[("alloc_space", "bytes"), ("inuse_space", "bytes")],
            ("space", "bytes"),
            period,
        );
        b.set_time_nanos(time);
        b.add_comment(&format!("taken at {time}"));
        for (stack, v, bytes) in samples {
            let labels: Vec<Label> = bytes
                .iter()
                .map(|&n| Label::Num {
                    key: "bytes".into(),
                    value: n,
                    unit: None,
                })
                .collect();
            b.add_sample(stack, false, v, &labels);
        }
        b.build()
    }

    /// Return addresses inside this test binary's functions (so they resolve and map).
    fn ra(f: fn()) -> usize {
        f as usize + 1
    }

    fn site_a() {}
    fn site_b() {}
    fn site_c() {}

    fn by_leaf(p: &proto::Profile) -> HashMap<u64, (Vec<i64>, Vec<i64>)> {
        p.sample
            .iter()
            .map(|s| {
                let loc = &p.location[s.location_id[0] as usize - 1];
                (
                    loc.address,
                    (s.value.clone(), s.label.iter().map(|l| l.num).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn difference_per_record_zeros_dropped_and_first_only_negated() {
        let (a, b, c) = (ra(site_a), ra(site_b), ra(site_c));
        let before = heapish(
            &[
                (&[a], [100, 50], Some(49)),
                (&[b], [10, 10], Some(8)),
                (&[c], [7, 7], None),
            ],
            1_000,
            512,
        );
        // a grew (its mean size moved within its class), b is unchanged, c is gone.
        let after = heapish(
            &[(&[b], [10, 10], Some(8)), (&[a], [300, 20], Some(50))],
            4_000,
            1024,
        );
        let d = delta(&before, &after).unwrap();
        let got = by_leaf(&d);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[&(a as u64 - 1)], (vec![200, -30], vec![50]));
        assert_eq!(got[&(c as u64 - 1)], (vec![-7, -7], vec![]));
        assert_eq!(
            (d.time_nanos, d.duration_nanos, d.period),
            (4_000, 3_000, 1024)
        );
        assert_eq!(d.string_table[d.comment[0] as usize], "taken at 4000");
        // Only what the delta's samples use is kept.
        assert_eq!(d.location.len(), 2);
        assert!(d.sample.iter().all(|s| s.value.len() == 2));
    }

    #[test]
    fn different_size_classes_and_stacks_stay_apart() {
        let (a, b) = (ra(site_a), ra(site_b));
        let before = heapish(&[(&[a], [64, 64], Some(64))], 1, 1);
        let after = heapish(
            &[
                (&[a], [64, 64], Some(64)),
                (&[a], [4096, 0], Some(4096)),
                (&[b, a], [5, 5], None),
            ],
            2,
            1,
        );
        let d = delta(&before, &after).unwrap();
        assert_eq!(d.sample.len(), 2);
        assert_eq!(d.sample[0].value, [4096, 0]);
        assert_eq!(d.sample[1].location_id.len(), 2);
    }

    #[test]
    fn bytes_in_and_out_roundtrip_and_bad_input_is_an_error() {
        let a = ra(site_a);
        let enc = |p: &proto::Profile| p.encode_to_vec();
        let before = heapish(&[(&[a], [1, 1], None)], 10, 1);
        let after = heapish(&[(&[a], [3, 1], None)], 30, 1);
        let out = profile_delta(&enc(&before), &enc(&after)).unwrap();
        let d = read::decode(&out).unwrap();
        assert_eq!(d.sample[0].value, [2, 0]);
        assert_eq!(d.duration_nanos, 20);

        assert!(profile_delta(b"junk", &enc(&after)).is_err());
        let mut other = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
        other.add_sample(&[a], false, &[1], &[]);
        let e = profile_delta(&enc(&other.build()), &enc(&after)).unwrap_err();
        assert!(e.to_string().contains("different sample types"), "{e}");
        // A sample pointing at a location that does not exist.
        let mut broken = after.clone();
        broken.sample[0].location_id = vec![999];
        let e = profile_delta(&enc(&before), &enc(&broken)).unwrap_err();
        assert!(e.to_string().contains("missing location 999"), "{e}");
        let mut broken = after.clone();
        broken.function[0].name = 1 << 40;
        assert!(profile_delta(&enc(&before), &enc(&broken)).is_err());
    }
}
