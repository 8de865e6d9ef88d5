//! Facts about this machine, read once at start.

use std::path::Path;

/// What the Node object reports about the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineFacts {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub os_image: String,
    pub kernel_version: String,
    pub architecture: String,
    pub machine_id: String,
    pub boot_id: String,
    pub container_runtime_version: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| sysinfo::System::long_os_version().unwrap_or_default())
}

/// Go's name for the architecture, as Kubernetes reports it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Reads the machine's facts. The container runtime's version is filled in when Docker answers.
pub fn read() -> MachineFacts {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    MachineFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: sys.total_memory(),
        os_image: os_image(),
        kernel_version: sysinfo::System::kernel_version().unwrap_or_default(),
        architecture: go_arch(std::env::consts::ARCH).to_owned(),
        machine_id: read_trimmed("/etc/machine-id"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: docker_version(Path::new("/var/run/docker.sock"))
            .map(|v| format!("docker://{v}"))
            .unwrap_or_default(),
    }
}

/// The Docker engine's version, if its socket answers (a plain HTTP/1.0 `GET /version`).
fn docker_version(socket: &Path) -> Option<String> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.take(1 << 20).read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["Version"].as_str().map(str::to_owned)
}
