//! The RSS breakdown heaprof writes into its heap profiles (`heaprof.rss…` comments: where
//! the resident set went when the profile was written), for people: `top` prints it above
//! its table. Pure: comments in, text out; nothing for profiles without it (Go's, or
//! heaprof's other profiles).

use crate::units;

/// The breakdown's lines, or `None` when the comments carry none: the library's summary
/// line, then the details it is made of.
pub fn breakdown(comments: &[String]) -> Option<String> {
    let get = |key: &str| -> Option<&str> {
        comments.iter().find_map(|c| {
            let (k, v) = c.split_once(": ")?;
            (k == key).then_some(v)
        })
    };
    let bytes = |key: &str| -> Option<String> {
        get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| units::format(v, "bytes"))
    };
    let summary = get("heaprof.rss.summary")?;
    let mut out = format!("{summary}\n");
    if let Some(limit) = bytes("heaprof.rss.cgroup_limit") {
        let usage = bytes("heaprof.rss.cgroup_usage").unwrap_or_else(|| "?".into());
        out += &format!("  cgroup: limit {limit}, usage {usage}\n");
    } else if let Some(usage) = bytes("heaprof.rss.cgroup_usage") {
        out += &format!("  cgroup: no limit, usage {usage}\n");
    }
    if let (Some(used), Some(free), Some(mapped)) = (
        bytes("heaprof.rss.malloc_in_use"),
        bytes("heaprof.rss.malloc_free"),
        bytes("heaprof.rss.malloc_mmapped"),
    ) {
        out += &format!(
            "  glibc malloc: in use {used} (of which {mapped} in blocks mapped alone), free {free}\n"
        );
    }
    if let Some(own) = bytes("heaprof.rss.heaprof") {
        let part = |key: &str, what: &str| bytes(key).map(|b| format!(", {what} {b}"));
        out += &format!(
            "  heaprof: {own}{}{}{}{}\n",
            part("heaprof.rss.heaprof_tables", "tables").unwrap_or_default(),
            part("heaprof.rss.heaprof_arena", "arena").unwrap_or_default(),
            bytes("heaprof.rss.arena_committed")
                .map(|c| format!(" (of {c} committed, the rest sampled blocks)"))
                .unwrap_or_default(),
            part("heaprof.rss.heaprof_large_region", "large blocks' region").unwrap_or_default()
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prints_the_summary_and_its_parts() {
        let c = lines(&[
            "heaprof.stacks: 3 of 16384",
            "heaprof.rss: 1048576000",
            "heaprof.rss.cgroup_limit: 2147483648",
            "heaprof.rss.cgroup_usage: 1153433600",
            "heaprof.rss.malloc_in_use: 859832320",
            "heaprof.rss.malloc_free: 94371840",
            "heaprof.rss.malloc_mmapped: 104857600",
            "heaprof.rss.heaprof: 20971520",
            "heaprof.rss.heaprof_tables: 4194304",
            "heaprof.rss.heaprof_arena: 16777216",
            "heaprof.rss.arena_committed: 18874368",
            "heaprof.rss.summary: RSS 1000 MiB: heap 810 MiB (sampled, ±2.5%), other 80.0 MiB",
        ]);
        assert_eq!(
            breakdown(&c).unwrap(),
            "RSS 1000 MiB: heap 810 MiB (sampled, ±2.5%), other 80.0 MiB\n\
             \x20 cgroup: limit 2GiB, usage 1.07GiB\n\
             \x20 glibc malloc: in use 820MiB (of which 100MiB in blocks mapped alone), free 90MiB\n\
             \x20 heaprof: 20MiB, tables 4MiB, arena 16MiB (of 18MiB committed, the rest sampled blocks)\n"
        );
        assert_eq!(breakdown(&lines(&["heaprof.stacks: 3 of 16384"])), None);
        assert_eq!(breakdown(&[]), None);
    }
}
