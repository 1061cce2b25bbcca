//! The `process_*` metrics Prometheus client libraries export, read from `/proc` at each
//! scrape (Linux; elsewhere none are reported).

use std::fmt::Write;

/// `/proc/self/stat` counts CPU time and the start time in USER_HZ ticks, which the
/// kernel fixes at 100 on every architecture Rust targets on Linux.
const USER_HZ: f64 = 100.0;

#[derive(Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let system = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Self::parse(&stat, &status, &limits, &system, open_fds)
    }

    fn parse(stat: &str, status: &str, limits: &str, system: &str, open_fds: u64) -> Option<Self> {
        // The command name (field 2) may hold spaces and parentheses: fields are counted
        // from the last ')', so the first one after it is field 3 (state).
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let kib = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        };
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        let boot_time: f64 = system
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / USER_HZ,
            resident_bytes: kib("VmRSS:")? * 1024,
            virtual_bytes: kib("VmSize:")? * 1024,
            open_fds,
            max_fds,
            start_time_seconds: boot_time + field(22)? / USER_HZ,
        })
    }

    /// Prometheus text exposition, HELP and TYPE included.
    pub fn render(&self, out: &mut String) {
        let families: [(&str, &str, &str, f64); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds as f64,
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "42 (a) b (c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0 12345 100000 500";
        let status = "Name:\tx\nVmSize:\t   2048 kB\nVmRSS:\t    1024 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n";
        let system = "cpu  1 2 3\nbtime 1700000000\n";
        let stats = ProcessStats::parse(stat, status, limits, system, 7);
        assert_eq!(
            stats,
            Some(ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 1024 * 1024,
                virtual_bytes: 2048 * 1024,
                open_fds: 7,
                max_fds: 1024,
                start_time_seconds: 1_700_000_000.0 + 123.45,
            })
        );
    }

    #[test]
    fn garbage_gives_none_rather_than_a_panic() {
        assert_eq!(ProcessStats::parse("", "", "", "", 0), None);
        assert_eq!(ProcessStats::parse("1 (x", "", "", "", 0), None);
    }
}
