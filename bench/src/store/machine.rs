//! The machine a store run measured: its processor, its cores, and how long its disk takes
//! for one synchronous 4 KiB write where the runs keep their data.
//!
//! Both systems make every commit durable, so the disk's synchronous write sets the pace of
//! one client and bounds the batching of many, and the cores bound the rest: a run on a disk
//! whose synchronous write takes 80 µs and one on a disk that takes 200 µs give different
//! numbers, and different ratios between the two systems. The report records both, so that
//! runs from different machines are not taken for one another.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchError, clear_dir, histogram};

/// Bytes of one probe write: the size of a small journal flush.
const BLOCK: usize = 4096;
/// Probe writes, one after the other: enough for a stable median, a fraction of a second
/// on a slow disk.
const WRITES: usize = 400;

#[derive(Serialize, Clone, Debug)]
pub struct Machine {
    /// The processor's model name, as the kernel gives it.
    pub cpu: String,
    pub cores: usize,
    /// One synchronous (`O_DSYNC`) overwrite of a 4 KiB block already written to the file,
    /// as the journal overwrites its pre-zeroed segments: median and 99th percentile, in µs.
    pub disk_sync_write_p50_us: u64,
    pub disk_sync_write_p99_us: u64,
}

impl Machine {
    /// The line the report prints.
    pub fn describe(&self) -> String {
        format!(
            "machine: {}, {} cores; synchronous 4 KiB write p50 {} µs, p99 {} µs",
            self.cpu, self.cores, self.disk_sync_write_p50_us, self.disk_sync_write_p99_us
        )
    }
}

/// Looks at the machine, timing the disk in a folder of its own under `base` (removed after).
pub fn probe(base: &Path) -> Result<Machine, BenchError> {
    let dir = base.join("disk-probe");
    clear_dir(&dir)?;
    std::fs::create_dir_all(&dir)?;
    let timed = time_sync_writes(&dir.join("blocks"));
    clear_dir(&dir)?;
    let timed = timed?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cpu_model(&text))
        .unwrap_or_else(|| "an unnamed processor".into());
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        disk_sync_write_p50_us: timed.value_at_quantile(0.50),
        disk_sync_write_p99_us: timed.value_at_quantile(0.99),
    })
}

/// Writes the file's blocks once and makes them durable, then overwrites each block with a
/// synchronous write and returns the times of those writes, in µs.
fn time_sync_writes(path: &Path) -> Result<Histogram<u64>, BenchError> {
    let block = vec![0x5a_u8; BLOCK];
    {
        let file = std::fs::File::create(path)?;
        for n in 0..WRITES {
            file.write_all_at(&block, (n * BLOCK) as u64)?;
        }
        file.sync_all()?;
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DSYNC.bits() as i32)
        .open(path)?;
    let mut hist = histogram();
    for n in 0..WRITES {
        let started = Instant::now();
        file.write_all_at(&block, (n * BLOCK) as u64)?;
        let _ = hist.record(started.elapsed().as_micros() as u64);
    }
    Ok(hist)
}

/// The first `model name` in the text of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name")
            .then(|| value.trim().to_owned())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
                    flags\t\t: fpu vme\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t:   \n"), None);
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn every_block_is_overwritten_and_timed() {
        let dir = std::env::temp_dir().join(format!("shoal-sync-writes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the blocks");
        let path = dir.join("blocks");
        let timed = time_sync_writes(&path).expect("the writes run");
        assert_eq!(timed.len(), WRITES as u64, "one time per write");
        let size = std::fs::metadata(&path).expect("the file").len();
        assert_eq!(size, (WRITES * BLOCK) as u64);
        std::fs::remove_dir_all(&dir).expect("the test's folder is removed");
    }

    #[test]
    fn a_probe_describes_the_machine_and_leaves_nothing_behind() {
        let base = std::env::temp_dir().join(format!("shoal-machine-probe-{}", std::process::id()));
        std::fs::create_dir_all(&base).expect("a folder for the probe");
        let machine = probe(&base).expect("the probe runs");
        assert!(
            !base.join("disk-probe").exists(),
            "the probe's folder is removed"
        );
        let line = machine.describe();
        assert!(line.contains(&machine.cpu), "{line}");
        assert!(
            line.contains(&format!("p99 {} µs", machine.disk_sync_write_p99_us)),
            "{line}"
        );
        std::fs::remove_dir_all(&base).expect("the test's folder is removed");
    }
}
