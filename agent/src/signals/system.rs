//! System readings from Linux's `/proc`: memory in use, CPU use between two samples, and
//! seconds since the kernel started. Parsing is separate from reading, so it is tested on
//! fixed text.

use std::path::Path;

/// `MemTotal - MemAvailable` in KiB, from the text of `/proc/meminfo`.
pub fn memory_in_use_kib(meminfo: &str) -> Option<u64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(field("MemTotal")?.saturating_sub(field("MemAvailable")?))
}

/// The aggregate CPU times of `/proc/stat`'s first line: (busy, total) in clock ticks.
pub fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    // counted in user and nice, so only the first eight are summed.
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// CPU use between two samples of [`cpu_times`], in permille (0–1000).
pub fn cpu_permille(before: (u64, u64), after: (u64, u64)) -> Option<u64> {
    let busy = after.0.checked_sub(before.0)?;
    let total = after.1.checked_sub(before.1)?;
    (total > 0).then(|| (busy * 1000 / total).min(1000))
}

/// Whole seconds since the kernel started, from the text of `/proc/uptime`.
pub fn uptime_secs(uptime: &str) -> Option<u64> {
    let first = uptime.split_whitespace().next()?;
    first.split('.').next()?.parse().ok()
}

/// Reads a `/proc` file; `None` where there is none (not Linux, a restricted container).
pub fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(path)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let meminfo =
            "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    6000000 kB\n";
        assert_eq!(memory_in_use_kib(meminfo), Some(2_000_000));
        assert_eq!(memory_in_use_kib("MemTotal: 5 kB\n"), None);
        let a = cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, (200, 1000));
        let b = cpu_times("cpu  150 0 150 1500 200 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_permille(a, b), Some(100));
        assert_eq!(cpu_permille(a, a), None);
        assert_eq!(uptime_secs("12345.67 54321.00\n"), Some(12345));
    }
}
