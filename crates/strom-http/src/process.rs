//! The process's own CPU time, resident memory and open file descriptors, read from
//! `/proc/self` at scrape time (Linux). Elsewhere, or if `/proc` cannot be read, the values
//! are absent rather than wrong.

/// What a scrape reports about the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
}

pub(crate) fn read() -> ProcessStats {
    ProcessStats {
        cpu_seconds: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| cpu_seconds(&s, clock_ticks())),
        resident_bytes: std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| resident_bytes(&s, page_size())),
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// utime + stime of `/proc/self/stat`, in seconds. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn cpu_seconds(stat: &str, ticks: u64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks as f64)
}

/// The second field of `/proc/self/statm` (resident pages), in bytes.
fn resident_bytes(statm: &str, page: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (strom (x) y) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 9 0 100 200 300";
        assert_eq!(cpu_seconds(stat, 100), Some(4.0));
        assert_eq!(cpu_seconds("garbage", 100), None);
        assert_eq!(resident_bytes("1000 25 3 4 0 5 0", 4096), Some(25 * 4096));
        assert_eq!(resident_bytes("", 4096), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let stats = read();
        if cfg!(target_os = "linux") {
            assert!(stats.resident_bytes.is_some_and(|b| b > 0));
            assert!(stats.cpu_seconds.is_some());
            assert!(stats.open_fds.is_some_and(|n| n > 0));
        }
    }
}
