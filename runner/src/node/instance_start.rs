//! Starting an instance: its directory, network namespace (loopback only,
//! bind-mounted under the directory so it outlives the agent), runtime spec
//! with the steps' confinement, root filesystem, then the shim running runc.
//! A start that fails at any step removes everything it made.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::image::ImageConfiguration;

use super::monitor::ShimProcess;
use super::record::{Record, ShimRecord};
use super::shim::{self, ShimArgs};
use super::{
    container_id, valid_id, Inner, Instance, InstanceSpec, InstanceState, Live, NodeError,
    Supervisor, DEFAULT_PIDS,
};
use crate::container::{
    check_searchable, host_nofile_hard, pod, rootfs, runtime_spec, userns, Limits, Network,
    RunOptions,
};

/// Deadline for runc to create and start a container; the action: kill the
/// shim and runc, fail the start and remove everything.
const RUNC_START_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for a shim whose runc failed to finish writing runc's error into
/// the log; the action: report the error without those lines.
const FAILED_SHIM_DEADLINE: Duration = Duration::from_secs(5);

/// The cgroup (in every hierarchy) of instance containers: `/<this>/<container id>`.
pub(super) const CGROUP_PARENT: &str = "slipway-instances";

const RUNC_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn io(id: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> NodeError {
    let id = id.to_owned();
    move |source| NodeError::Io { id, what, source }
}

fn validate(spec: &InstanceSpec) -> Result<(), NodeError> {
    if !valid_id(&spec.id) {
        return Err(NodeError::BadId(spec.id.clone()));
    }
    let path = &spec.health;
    if !path.starts_with('/') || path.len() > 1024 || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(NodeError::BadHealthPath {
            id: spec.id.clone(),
            path: path.clone(),
        });
    }
    if spec.port == 0 {
        return Err(NodeError::BadPort(spec.id.clone()));
    }
    Ok(())
}

impl Supervisor {
    /// Start instance `spec.id`: returns once its container runs (it is then
    /// `Starting`; [`status`](Self::status) says when it is `Ready`).
    pub async fn start(&self, spec: InstanceSpec) -> Result<(), NodeError> {
        validate(&spec)?;
        let inner = &self.inner;
        let id = spec.id.clone();
        let dir = inner.instances_dir().join(&id);
        let record = Record {
            id: id.clone(),
            container_id: container_id(&id),
            port: spec.port,
            health: spec.health.clone(),
            image: spec.image.reference.clone(),
            layers: spec.image.layers.iter().map(|l| l.digest()).collect(),
            restarts: 0,
            shim: None,
            stopping: false,
        };
        let instance = Arc::new(Instance {
            id: id.clone(),
            container_id: record.container_id.clone(),
            dir: dir.clone(),
            port: spec.port,
            health: spec.health.clone(),
            image: spec.image.reference.clone(),
            live: Mutex::new(Live {
                state: InstanceState::Starting,
                restarts: 0,
                ready_since: None,
                last_health: None,
                failures: 0,
                pid: None,
            }),
            record: Mutex::new(record),
            leases: Mutex::new(Vec::new()),
            shim: Mutex::new(None),
            stop: tokio::sync::watch::channel(false).0,
            task: Mutex::new(None),
        });
        {
            let mut instances = inner.instances.lock().unwrap();
            if instances.contains_key(&id) || dir.exists() {
                return Err(NodeError::Exists(id));
            }
            instances.insert(id.clone(), instance.clone());
        }
        inner.notify();

        let started = async {
            let (inner2, instance2) = (inner.clone(), instance.clone());
            tokio::task::spawn_blocking(move || prepare(&inner2, &instance2, spec))
                .await
                .map_err(|e| io(&id, "preparing")(std::io::Error::other(e)))??;
            launch(inner, &instance).await
        }
        .await;
        match started {
            Ok(shim) => {
                super::monitor::spawn(inner.clone(), instance, shim);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "start failed; removing the instance");
                if let Err(left) = super::instance_stop::teardown(inner, &instance).await {
                    tracing::error!(instance = %id, error = %left, "removing a failed start");
                }
                inner.instances.lock().unwrap().remove(&id);
                inner.notify();
                Err(e)
            }
        }
    }
}

/// Make the instance's directory, network namespace, runtime spec and root
/// filesystem (blocking).
fn prepare(inner: &Inner, instance: &Instance, spec: InstanceSpec) -> Result<(), NodeError> {
    let id = &instance.id;
    let dir = &instance.dir;
    std::fs::create_dir(dir).map_err(io(id, "creating the instance directory"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(io(id, "setting the instance directory's mode"))?;
    instance
        .record
        .lock()
        .unwrap()
        .save(dir)
        .map_err(io(id, "writing instance.json"))?;
    let mapping = inner.options.mapping;
    if mapping.is_some() {
        check_searchable(dir).map_err(|source| NodeError::Engine {
            id: id.clone(),
            source,
        })?;
    }

    let netns = instance.netns();
    std::fs::File::create(&netns).map_err(io(id, "creating the netns file"))?;
    pod::bind_new_netns(&netns).map_err(io(id, "creating the network namespace"))?;

    let config = ImageConfiguration::from_reader(spec.image.config.as_bytes()).map_err(|e| {
        NodeError::BadImage {
            id: id.clone(),
            image: spec.image.reference.clone(),
            what: format!("its config is not a valid image config: {e}"),
        }
    })?;
    let mut env = spec.env;
    env.push(("PORT".to_owned(), spec.port.to_string()));
    let options = RunOptions {
        entrypoint: spec.entrypoint,
        command: spec.command,
        env,
        hostname: id.clone(),
        network: Network::Pod(netns),
        limits: Limits {
            memory_bytes: spec
                .memory_bytes
                .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            pids: Some(i64::try_from(spec.pids.unwrap_or(DEFAULT_PIDS)).unwrap_or(i64::MAX)),
            cpus: spec.cpus,
        },
        user_namespace: mapping,
        ..Default::default()
    };
    let bundle_error = |source| NodeError::Bundle {
        id: id.clone(),
        source,
    };
    let mut runtime =
        runtime_spec(&config, "rootfs", &options, host_nofile_hard()).map_err(bundle_error)?;
    if let Some(linux) = runtime.linux_mut() {
        linux.set_cgroups_path(Some(
            format!(
                "/{CGROUP_PARENT}/{}",
                inner.cgroup_name(&instance.container_id)
            )
            .into(),
        ));
    }
    let bundle = dir.join("bundle");
    std::fs::create_dir(&bundle).map_err(io(id, "creating the bundle directory"))?;
    let config_json = bundle.join("config.json");
    // It holds the environment, secrets included: 0600 from its creation.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config_json)
            .map_err(io(id, "creating config.json"))?;
        let mut writer = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut writer, &runtime)
            .map_err(|e| io(id, "writing config.json")(std::io::Error::other(e)))?;
        std::io::Write::flush(&mut writer).map_err(io(id, "writing config.json"))?;
    }

    let layers: Vec<PathBuf> = spec
        .image
        .layers
        .iter()
        .map(|l| l.path().to_owned())
        .collect();
    *instance.leases.lock().unwrap() = spec.image.layers;
    let mut lower = Vec::new();
    match mapping {
        Some(mapping) => {
            let userns = inner.userns(mapping).map_err(|source| NodeError::Io {
                id: id.clone(),
                what: "creating the user namespace for idmapped layers",
                source,
            })?;
            for (i, layer) in layers.iter().enumerate() {
                let view = dir.join("lower").join(i.to_string());
                std::fs::create_dir_all(&view).map_err(io(id, "creating a layer mount point"))?;
                userns::idmapped_mount(layer, &view, &userns)
                    .map_err(io(id, "idmapping a layer"))?;
                lower.push(view);
            }
        }
        None => lower = layers,
    }
    let lower: Vec<&Path> = lower.iter().map(PathBuf::as_path).collect();
    rootfs::mount_overlay(
        &lower,
        &dir.join("empty"),
        &dir.join("upper"),
        &dir.join("work"),
        &bundle.join("rootfs"),
        mapping.map(|m| (m.host_root(), m.host_root())),
    )
    .map_err(io(id, "mounting the root filesystem"))?;
    Ok(())
}

impl Inner {
    fn userns(
        &self,
        mapping: crate::container::Mapping,
    ) -> std::io::Result<Arc<std::os::fd::OwnedFd>> {
        let mut userns = self.userns.lock().unwrap();
        if let Some(fd) = userns.as_ref() {
            return Ok(fd.clone());
        }
        let fd = Arc::new(mapping.namespace()?);
        *userns = Some(fd.clone());
        Ok(fd)
    }
}

fn cstring(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// Run the prepared instance's container under a new shim; returns once runc
/// has started it. Used for the first start and for restarts.
pub(super) async fn launch(
    inner: &Arc<Inner>,
    instance: &Arc<Instance>,
) -> Result<Arc<ShimProcess>, NodeError> {
    let id = instance.id.clone();
    let (inner2, instance2) = (inner.clone(), instance.clone());
    let spawned = tokio::task::spawn_blocking(move || spawn_shim(&inner2, &instance2))
        .await
        .map_err(|e| io(&id, "starting the shim")(std::io::Error::other(e)))??;
    let shim = ShimProcess::with_pidfd(spawned.pid, spawned.start_time, spawned.pidfd);
    if spawned.runc_status != 0 {
        if let Ok(shim) = &shim {
            // Its log copy ends with runc's error message.
            let _ = tokio::time::timeout(FAILED_SHIM_DEADLINE, shim.exited()).await;
        }
        return Err(NodeError::Runc {
            id,
            status: spawned.runc_status,
            log: super::log::tail(&instance.dir, 5).join(" | "),
        });
    }
    let shim = Arc::new(shim.map_err(io(&id, "watching the shim"))?);
    let pid = std::fs::read_to_string(instance.dir.join("init.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    {
        let mut record = instance.record.lock().unwrap();
        record.shim = Some(ShimRecord {
            pid: shim.pid,
            start_time: shim.start_time,
        });
        record
            .save(&instance.dir)
            .map_err(io(&id, "writing instance.json"))?;
    }
    *instance.shim.lock().unwrap() = Some(shim.clone());
    instance.live.lock().unwrap().pid = pid;
    Ok(shim)
}

fn spawn_shim(inner: &Inner, instance: &Instance) -> Result<shim::Spawned, NodeError> {
    let id = &instance.id;
    let dir = &instance.dir;
    for stale in ["exit", "init.pid"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let c = |p: &Path| cstring(p).map_err(io(id, "a path with a NUL byte"));
    let mut argv = vec![c(&inner.runc)?];
    for arg in [
        "--root",
        "RUNC_ROOT",
        "run",
        "--detach",
        "--pid-file",
        "PID",
        "--bundle",
        "B",
    ] {
        argv.push(match arg {
            "RUNC_ROOT" => c(&inner.runc_root())?,
            "PID" => c(&dir.join("init.pid"))?,
            "B" => c(&dir.join("bundle"))?,
            _ => CString::new(arg).expect("no NUL"),
        });
    }
    argv.push(CString::new(instance.container_id.clone()).expect("validated id"));
    let leases = instance.leases.lock().unwrap();
    let keep = leases
        .iter()
        .filter_map(|l| l.lock_file())
        .map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd))
        .collect();
    let args = ShimArgs {
        argv,
        env: vec![CString::new(RUNC_PATH_ENV).expect("no NUL")],
        log: c(&dir.join("log"))?,
        log_rotated: c(&dir.join("log.1"))?,
        log_cap: inner.options.log_cap_bytes.max(4096),
        exit_tmp: c(&dir.join("exit.tmp"))?,
        exit: c(&dir.join("exit"))?,
        keep,
    };
    let spawned = shim::spawn(&args, RUNC_START_DEADLINE).map_err(io(id, "running runc"))?;
    drop(leases);
    Ok(spawned)
}
