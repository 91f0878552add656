//! CPU time and resident memory of running processes, from `/proc`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Spread;
use crate::shell::{cmd, stdout_of};

/// How often a run samples a process's resident memory.
pub const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The largest resident memory of `pid`, in KiB, seen while `child` runs.
pub fn peak_rss_until_exit(child: &mut std::process::Child, pid: u32) -> Result<u64> {
    let mut peak = zilla_tests::rss_kib(pid)?;
    while child.try_wait()?.is_none() {
        std::thread::sleep(RSS_SAMPLE_INTERVAL);
        peak = peak.max(zilla_tests::rss_kib(pid)?);
    }
    Ok(peak)
}

/// The user and system CPU time a process has used so far, as counted in `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32, ticks_per_second: u64) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let fields = stat_fields(&stat).with_context(|| format!("unexpected {path}: {stat}"))?;
    Ok(ticks_to_duration(
        fields.user_ticks + fields.system_ticks,
        ticks_per_second,
    ))
}

/// The CPU time of `pid` and its direct children together (nginx's master and its workers).
pub fn tree_cpu_time(pid: u32, ticks_per_second: u64) -> Result<Duration> {
    let mut total = cpu_time(pid, ticks_per_second)?;
    for child in children(pid) {
        // A child may exit between the listing and the read; it then has nothing to add.
        total += cpu_time(child, ticks_per_second).unwrap_or_default();
    }
    Ok(total)
}

/// User and system CPU time apart, and context switches, of a set of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    /// Voluntary and involuntary context switches of every thread, added up.
    pub context_switches: u64,
}

impl Usage {
    /// What `pid` has used so far, with its direct children when `tree` (nginx's master and
    /// its workers).
    pub fn of(pid: u32, tree: bool, ticks_per_second: u64) -> Result<Self> {
        let mut pids = vec![pid];
        if tree {
            pids.extend(children(pid));
        }
        let mut usage = Self::default();
        for (index, pid) in pids.into_iter().enumerate() {
            let path = format!("/proc/{pid}/stat");
            let stat = match std::fs::read_to_string(&path) {
                Ok(stat) => stat,
                // A child may exit between the listing and the read; it then has nothing to add.
                Err(_) if index > 0 => continue,
                Err(error) => return Err(error).with_context(|| format!("cannot read {path}")),
            };
            let fields =
                stat_fields(&stat).with_context(|| format!("unexpected {path}: {stat}"))?;
            usage.user += ticks_to_duration(fields.user_ticks, ticks_per_second);
            usage.system += ticks_to_duration(fields.system_ticks, ticks_per_second);
            usage.context_switches += context_switches(pid);
        }
        Ok(usage)
    }

    /// What was used between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
            context_switches: self
                .context_switches
                .saturating_sub(before.context_switches),
        }
    }

    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// Reads what a process (with its direct children when `tree`) and the machine used from
/// [`Meter::start`] to [`Meter::stop`]: one measured run of a load generator.
pub struct Meter {
    pid: u32,
    tree: bool,
    ticks_per_second: u64,
    usage: Usage,
    machine: MachineCpu,
    started: Instant,
}

impl Meter {
    pub fn start(pid: u32, tree: bool, ticks_per_second: u64) -> Result<Self> {
        Ok(Self {
            pid,
            tree,
            ticks_per_second,
            usage: Usage::of(pid, tree, ticks_per_second)?,
            machine: MachineCpu::now()?,
            started: Instant::now(),
        })
    }

    pub fn stop(&self) -> Result<Measured> {
        let wall = self.started.elapsed();
        let machine_idle = MachineCpu::now()?.idle_share_since(&self.machine);
        let usage = Usage::of(self.pid, self.tree, self.ticks_per_second)?.since(&self.usage);
        Ok(Measured {
            usage,
            wall,
            machine_idle,
        })
    }
}

/// What a process used over one measured run.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub usage: Usage,
    pub wall: Duration,
    /// The share of the machine's CPU time left idle during the run.
    pub machine_idle: f64,
}

impl Measured {
    /// CPU time over wall time, in % of one core.
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.usage.total().as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// What one proxy cost over several measured runs, each with the requests it completed.
pub struct ProxyCost {
    /// CPU time over wall time, in % of one core.
    pub cpu_percent: Spread,
    /// User and system CPU time per completed request, in µs.
    pub user_per_request: Spread,
    pub system_per_request: Spread,
    pub total_per_request: Spread,
    /// Context switches of all the proxy's threads per completed request.
    pub switches_per_request: Spread,
    /// The share of the machine's CPU time left idle during the run, in %.
    pub machine_idle: Spread,
}

impl ProxyCost {
    /// The spreads over `runs`: what each used, and how many requests it completed.
    pub fn of<'a>(runs: impl IntoIterator<Item = (&'a Measured, u64)>) -> Self {
        let runs: Vec<(&Measured, f64)> = runs
            .into_iter()
            .map(|(measured, requests)| (measured, requests.max(1) as f64))
            .collect();
        let spread = |figure: &dyn Fn(&Measured, f64) -> f64| {
            Spread::of(
                &runs
                    .iter()
                    .map(|(measured, requests)| figure(measured, *requests))
                    .collect::<Vec<_>>(),
            )
        };
        let micros = |time: Duration, requests: f64| time.as_secs_f64() * 1e6 / requests;
        Self {
            cpu_percent: spread(&|measured, _| measured.cpu_percent()),
            user_per_request: spread(&|measured, requests| micros(measured.usage.user, requests)),
            system_per_request: spread(&|measured, requests| {
                micros(measured.usage.system, requests)
            }),
            total_per_request: spread(&|measured, requests| {
                micros(measured.usage.total(), requests)
            }),
            switches_per_request: spread(&|measured, requests| {
                measured.usage.context_switches as f64 / requests
            }),
            machine_idle: spread(&|measured, _| measured.machine_idle * 100.0),
        }
    }

    /// `13.1 µs/request (9.0 user + 4.1 system), 0.52 context switches/request, ...`.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} µs/request ({:.1} user + {:.1} system), {:.2} context switches/request, {:.0} % CPU, machine {:.0} % idle",
            self.total_per_request.median,
            self.user_per_request.median,
            self.system_per_request.median,
            self.switches_per_request.median,
            self.cpu_percent.median,
            self.machine_idle.median
        )
    }

    /// `13.1 (9.0 + 4.1)`: µs per request, total (user + system).
    pub fn per_request(&self) -> String {
        format!(
            "{:.1} ({:.1} + {:.1})",
            self.total_per_request.median,
            self.user_per_request.median,
            self.system_per_request.median
        )
    }
}

/// Context switches of every thread of `pid`, from `/proc/<pid>/task/*/status` (the
/// process's own status counts its main thread only).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| switches_in_status(&status))
        .sum()
}

fn switches_in_status(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            let value = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))?;
            value.trim().parse::<u64>().ok()
        })
        .sum()
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat"))
                .ok()
                .and_then(|stat| stat_fields(&stat))
                .is_some_and(|fields| fields.parent == pid)
        })
        .collect()
}

/// CPU time of the whole machine: busy (every state but idle and waiting for I/O) and total,
/// added up over all cores, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineCpu {
    pub busy_ticks: u64,
    pub total_ticks: u64,
}

impl MachineCpu {
    /// The share of the machine's CPU time (all cores) left idle between `before` and `self`.
    pub fn idle_share_since(&self, before: &Self) -> f64 {
        let total = self.total_ticks.saturating_sub(before.total_ticks);
        let busy = self.busy_ticks.saturating_sub(before.busy_ticks);
        if total == 0 {
            return 0.0;
        }
        1.0 - busy as f64 / total as f64
    }

    /// The machine's counters now.
    pub fn now() -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        machine_cpu(&stat).with_context(|| format!("unexpected /proc/stat: {stat}"))
    }
}

fn machine_cpu(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
    // already counted in user and nice.
    let counted = ticks.get(..8)?;
    let total: u64 = counted.iter().sum();
    let idle = counted[3] + counted[4];
    Some(MachineCpu {
        busy_ticks: total - idle,
        total_ticks: total,
    })
}

/// The CPU time of this process and of its children that have been waited for (with theirs),
/// from `/proc/self/stat`: everything a benchmark started and has stopped.
pub fn own_cpu_with_children(ticks_per_second: u64) -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    let fields =
        stat_fields(&stat).with_context(|| format!("unexpected /proc/self/stat: {stat}"))?;
    Ok(ticks_to_duration(
        fields.user_ticks + fields.system_ticks + fields.children_ticks,
        ticks_per_second,
    ))
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The clock ticks per second that `/proc/<pid>/stat` counts in (`getconf CLK_TCK`; 100 on
/// every common Linux).
pub fn ticks_per_second() -> u64 {
    stdout_of(&mut cmd("getconf", ["CLK_TCK"]))
        .and_then(|ticks| ticks.parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

fn ticks_to_duration(ticks: u64, ticks_per_second: u64) -> Duration {
    let ticks_per_second = ticks_per_second.max(1);
    Duration::from_secs(ticks / ticks_per_second)
        + Duration::from_nanos((ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second)
}

#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    parent: u32,
    user_ticks: u64,
    system_ticks: u64,
    /// User and system time of waited-for children.
    children_ticks: u64,
}

/// The fields of a `/proc/<pid>/stat` line this module reads. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after the last
/// `)`: state is field 3, the parent pid 4, user time 14, system time 15, and the children's
/// 16 and 17.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(StatFields {
        parent: fields.get(1)?.parse().ok()?,
        user_ticks: fields.get(11)?.parse().ok()?,
        system_ticks: fields.get(12)?.parse().ok()?,
        children_ticks: fields.get(13)?.parse::<u64>().ok()?
            + fields.get(14)?.parse::<u64>().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (nginx: worker) process)) S 4240 4240 100 0 -1 4194624 731 0 0 0 \
                    1234 567 8 12 20 0 1 0 98765 12345678 900 18446744073709551615";
        assert_eq!(
            stat_fields(stat),
            Some(StatFields {
                parent: 4240,
                user_ticks: 1234,
                system_ticks: 567,
                children_ticks: 20,
            })
        );
        assert_eq!(stat_fields("4242 (truncated"), None);
        assert_eq!(stat_fields("4242 (x) S 1 2"), None);
    }

    #[test]
    fn machine_time_leaves_out_idle_and_guest() {
        let stat = "cpu  100 5 50 1000 20 3 2 10 40 0\ncpu0 50 2 25 500 10 1 1 5 20 0\nintr 1\n";
        assert_eq!(
            machine_cpu(stat),
            Some(MachineCpu {
                busy_ticks: 170,
                total_ticks: 1190,
            })
        );
        assert_eq!(machine_cpu("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(machine_cpu("cpu  1 2 3\n"), None);
        assert!(MachineCpu::now().is_ok_and(|cpu| cpu.total_ticks >= cpu.busy_ticks));
    }

    #[test]
    fn both_kinds_of_context_switch_are_added() {
        let status =
            "Name:\tnginx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in_status(status), 127);
        assert_eq!(switches_in_status("Name:\tx\n"), 0);
        let usage = Usage::of(std::process::id(), false, ticks_per_second());
        assert!(usage.is_ok_and(|usage| usage.context_switches > 0));
    }

    #[test]
    fn idle_share_is_what_busy_time_leaves() {
        let before = MachineCpu {
            busy_ticks: 100,
            total_ticks: 1000,
        };
        let after = MachineCpu {
            busy_ticks: 250,
            total_ticks: 1200,
        };
        assert!((after.idle_share_since(&before) - 0.25).abs() < 1e-9);
        assert_eq!(before.idle_share_since(&before), 0.0);
    }

    #[test]
    fn ticks_become_durations() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(1, 3), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn a_spawned_process_is_a_child_and_cpu_time_is_readable() -> Result<()> {
        let ticks = ticks_per_second();
        assert!(cpu_time(std::process::id(), ticks).is_ok());
        let mut child = std::process::Command::new("sleep").arg("5").spawn()?;
        let found = children(std::process::id()).contains(&child.id());
        child.kill()?;
        child.wait()?;
        assert!(found);
        Ok(())
    }
}
