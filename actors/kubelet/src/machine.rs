//! Facts about this machine, read once at start.

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

/// Reads the machine's facts. The container runtime's version is asked for separately
/// ([`container_runtime_version`]), each time the node posts its status.
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
        container_runtime_version: String::new(),
    }
}

/// The container runtime's version as Kubernetes reports it (`docker://20.10.24`), when the
/// Docker engine answers within a second; empty otherwise.
pub async fn container_runtime_version() -> String {
    let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
        return String::new();
    };
    let ask = async {
        let docker = docker.negotiate_version().await.ok()?;
        docker.version().await.ok()?.version
    };
    match tokio::time::timeout(std::time::Duration::from_secs(1), ask).await {
        Ok(Some(version)) => format!("docker://{version}"),
        _ => String::new(),
    }
}
