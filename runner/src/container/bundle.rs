//! The OCI runtime spec (`config.json`) for one container: the image's config
//! merged with the caller's settings, with defaults like Docker's.
//!
//! - Process: args = entrypoint + cmd (the caller's override either), env = the
//!   image's, then the caller's on top; working dir and numeric user likewise.
//! - Isolation: pid, mount, ipc, uts and cgroup namespaces always; network per
//!   [`Network`]; a user namespace unless the caller turns it off; Docker's default capability set; `noNewPrivileges`; Docker's
//!   masked and read-only paths; no devices beyond runc's standard ones; a
//!   seccomp filter refusing the system calls Docker's default profile refuses
//!   to a container without extra capabilities (see [`SECCOMP_REFUSED`]).
//! - Limits: memory (no swap on top), pids, CPU quota; `RLIMIT_NOFILE` never above
//!   the host's hard limit (a container cannot start with more than that).

use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::LinuxIdMappingBuilder;

use super::userns::Mapping;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// Join an existing network namespace (a pod shared with service containers).
    Pod(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// CPUs as a fraction (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (and then the image's Cmd is not used).
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// `uid[:gid]`, numeric, or `root`.
    pub user: Option<String>,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<BindMount>,
    pub limits: Limits,
    /// Open files wanted; clamped to the host's hard limit.
    pub nofile: u64,
    /// Run in a user namespace with this mapping (the default), so container
    /// root is an unprivileged host uid; `None` shares the host's users.
    pub user_namespace: Option<Mapping>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            command: None,
            entrypoint: None,
            env: Vec::new(),
            workdir: None,
            user: None,
            hostname: "slipway".into(),
            network: Network::None,
            mounts: Vec::new(),
            limits: Limits::default(),
            nofile: 1 << 20,
            user_namespace: Some(Mapping::default()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("nothing to run: the image has no Entrypoint or Cmd and no command was given")]
    NoCommand,
    #[error("user {0:?} is not numeric (uid or uid:gid) or root; user names are not resolved yet")]
    User(String),
    #[error("mount destination {0:?} must be an absolute path without `..`")]
    MountDestination(String),
    #[error("invalid limit: {0}")]
    Limit(String),
    #[error("building the runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capabilities.
const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// System calls a container gets `EPERM` for, whatever its capabilities in
/// its own user namespace: kernel keyrings, loading modules or kernels, BPF,
/// perf, userfaultfd, io_uring, new namespaces, mounts, clocks, swap, quotas,
/// reboot and the kernel log. Docker's default profile refuses these too (it
/// allows a list instead; this refuses a list and allows the rest).
pub const SECCOMP_REFUSED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
];

/// `clone` flags that make new namespaces (`CLONE_NEWNS`, `NEWCGROUP`,
/// `NEWUTS`, `NEWIPC`, `NEWUSER`, `NEWPID`, `NEWNET`): refused like `unshare`.
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The filter: everything allowed but [`SECCOMP_REFUSED`], `clone` with a
/// namespace flag, and `clone3` (its flags are behind a pointer, so it answers
/// `ENOSYS` and C libraries fall back to `clone`, as under Docker).
fn seccomp() -> Result<LinuxSeccomp, BundleError> {
    let errno = |names: Vec<String>, errno: u32| -> Result<LinuxSyscall, BundleError> {
        Ok(LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
            .build()?)
    };
    let mut syscalls = vec![
        errno(
            SECCOMP_REFUSED.iter().map(|s| s.to_string()).collect(),
            EPERM,
        )?,
        errno(vec!["clone3".into()], ENOSYS)?,
    ];
    // The flags are the first argument of clone on x86 and arm64.
    for flag in CLONE_NAMESPACE_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![arg])
                .build()?,
        );
    }
    let architectures = if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    };
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures)
        .syscalls(syscalls)
        .build()?)
}

const MASKED: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, BundleError> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

fn parse_user(user: &str) -> Result<(u32, u32), BundleError> {
    if user == "root" {
        return Ok((0, 0));
    }
    let bad = || BundleError::User(user.to_owned());
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    Ok((
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    ))
}

/// The host's hard `RLIMIT_NOFILE`.
pub fn host_nofile_hard() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX)
}

/// Build the runtime spec for a container whose root filesystem is `rootfs`
/// (relative to the bundle, or absolute).
pub fn runtime_spec(
    image: &ImageConfiguration,
    rootfs: &str,
    opts: &RunOptions,
    host_nofile_hard: u64,
) -> Result<Spec, BundleError> {
    let config = image.config().clone().unwrap_or_default();

    let entrypoint = match &opts.entrypoint {
        Some(e) => e.clone(),
        None => config.entrypoint().clone().unwrap_or_default(),
    };
    let cmd = match (&opts.command, &opts.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => config.cmd().clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }

    let mut env: Vec<String> = config.env().clone().unwrap_or_default();
    for (key, value) in &opts.env {
        let prefix = format!("{key}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(format!("{key}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }

    let cwd = opts
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    let user_text = opts
        .user
        .clone()
        .or_else(|| config.user().clone())
        .filter(|u| !u.is_empty());
    let (uid, gid) = match &user_text {
        Some(u) => parse_user(u)?,
        None => (0, 0),
    };

    let nofile = opts.nofile.min(host_nofile_hard);
    let caps: std::collections::HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()?])
        .build()?;

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        // sysfs can only be mounted in a user namespace that owns the network
        // namespace; with the host's or a pod's network, bind the host's. The
        // bind must be recursive (its submounts are locked in the user
        // namespace), and `rro` makes them all read-only, not just the top
        // (mount_setattr: Linux 5.12, runc 1.1).
        if opts.user_namespace.is_some() && opts.network != Network::None {
            mount(
                "/sys",
                "bind",
                "/sys",
                &["rbind", "nosuid", "noexec", "nodev", "ro", "rro"],
            )?
        } else {
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            )?
        },
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];
    for bind in &opts.mounts {
        let dest = &bind.destination;
        if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
            return Err(BundleError::MountDestination(dest.clone()));
        }
        let mut options = vec!["rbind", "rprivate", "nosuid", "nodev"];
        if bind.read_only {
            options.push("ro");
        }
        mounts.push(mount(
            dest,
            "bind",
            &bind.source.to_string_lossy(),
            &options,
        )?);
    }

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid)?,
        namespace(LinuxNamespaceType::Mount)?,
        namespace(LinuxNamespaceType::Ipc)?,
        namespace(LinuxNamespaceType::Uts)?,
        namespace(LinuxNamespaceType::Cgroup)?,
    ];
    match &opts.network {
        Network::None => namespaces.push(namespace(LinuxNamespaceType::Network)?),
        Network::Host => {}
        Network::Pod(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }

    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?]);
    if let Some(bytes) = opts.limits.memory_bytes {
        if bytes < 4 << 20 {
            return Err(BundleError::Limit(format!(
                "memory limit {bytes} bytes is below the 4 MiB minimum"
            )));
        }
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()?,
        );
    }
    if let Some(pids) = opts.limits.pids {
        if pids < 1 {
            return Err(BundleError::Limit(format!(
                "pids limit {pids} must be at least 1"
            )));
        }
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    if let Some(cpus) = opts.limits.cpus {
        if !(cpus > 0.0 && cpus.is_finite()) {
            return Err(BundleError::Limit(format!(
                "cpus {cpus} must be a positive number"
            )));
        }
        // What the kernel accepts (a 1 ms quota) up to what the host has.
        // Read once (it reads cgroup files), not on every container start.
        static AVAILABLE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let available =
            *AVAILABLE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if !(0.01..=available as f64).contains(&cpus) {
            return Err(BundleError::Limit(format!(
                "cpus {cpus} is out of range: from 0.01 to {available} (the CPUs this host has)"
            )));
        }
        let period: u64 = 100_000;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpus * period as f64) as i64)
                .build()?,
        );
    }

    let mut linux = LinuxBuilder::default();
    if let Some(map) = opts.user_namespace {
        namespaces.push(namespace(LinuxNamespaceType::User)?);
        let ids = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(map.host_base)
            .size(map.size)
            .build()?;
        linux = linux.uid_mappings(vec![ids]).gid_mappings(vec![ids]);
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(resources.build()?)
        .masked_paths(MASKED.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .readonly_paths(READ_ONLY.iter().map(|p| p.to_string()).collect::<Vec<_>>())
        .seccomp(seccomp()?)
        .build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(opts.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}
