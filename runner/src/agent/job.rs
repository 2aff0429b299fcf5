//! Running one leased job: workspace from the server's source tar, services in
//! a pod, steps in order with the execution engine, logs shipped as they come,
//! a heartbeat that renews the lease and carries cancellation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;

use super::client::{retry, ClientError};
use super::logship::{ship, LogTarget};
use super::mask::Masker;
use super::Agent;
use crate::api::{Command, JobReport, JobStatus, Lease, StepReport, StepStatus};
use crate::container::{BindMount, Cancel, Network, RunOptions, RunRequest, Stream};
use crate::image::{obtain, resolve, PullPolicy};

/// Between SIGTERM and SIGKILL when a step or service is stopped (cancel,
/// timeout, end of job): CI processes rarely need more, and a cancel should
/// be quick.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Give up on reporting to the server after this long.
const REPORT_FOR: Duration = Duration::from_secs(600);

/// `'…'` for sh, with embedded quotes escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The commands as one `sh` script that stops at the first failure and echoes
/// each command before it runs it.
fn script(commands: &[String]) -> String {
    let mut s = String::from("set -e\n");
    for c in commands {
        s.push_str(&format!("printf '+ %s\\n' {}\n{c}\n", sh_quote(c)));
    }
    s
}

fn entry_and_args(command: &Command) -> (Option<Vec<String>>, Option<Vec<String>>) {
    match command {
        Command::Commands(c) => (
            Some(vec!["/bin/sh".into(), "-c".into()]),
            Some(vec![script(c)]),
        ),
        Command::Exec { entrypoint, args } => {
            (entrypoint.clone(), (!args.is_empty()).then(|| args.clone()))
        }
    }
}

/// Make `root` and everything below it belong to `uid` (container root in
/// the user namespace), without following symlinks.
fn chown_tree(root: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(uid), Some(uid))?;
    if root.symlink_metadata()?.is_dir() {
        for entry in std::fs::read_dir(root)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// Unpack a tar from the server into the workspace (the tar crate keeps every
/// entry inside it), owned by container root.
async fn unpack_into(
    workspace: &Path,
    tar: bytes::Bytes,
    mapping: Option<crate::container::Mapping>,
    what: &str,
) -> Result<(), String> {
    let workspace = workspace.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive.unpack(&workspace)?;
        if let Some(m) = mapping {
            chown_tree(&workspace, m.host_root())?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("unpacking {what}: {e}"))
}

/// Run the leased job to its end and report it. Never panics on a bad job; a
/// lost lease ends it quietly (the server has given it to someone else).
pub async fn run(agent: Arc<Agent>, lease: Lease) {
    let job = lease.job_id;
    let attempt = lease.attempt;
    let dir = agent.work_dir.join("jobs").join(format!("{job}-{attempt}"));
    let cancel = Cancel::default();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = {
        let (client, cancel, lost) = (agent.client.clone(), cancel.clone(), lost.clone());
        let every = Duration::from_millis((lease.lease_ms / 4).clamp(200, 1000));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match client.heartbeat(job, attempt).await {
                    Ok(r) if r.cancel => cancel.cancel(),
                    Ok(_) => {}
                    Err(ClientError::Stale { .. }) => {
                        tracing::warn!(job, attempt, "lease lost; stopping the job");
                        lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        cancel.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(job, error = %e, "heartbeat failed"),
                }
            }
        })
    };
    let outcome = run_steps(&agent, &lease, &dir, &cancel).await;
    heartbeat.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let (status, reason) = match outcome {
        Ok(status) => (status, None),
        Err(reason) => (JobStatus::Error, Some(reason)),
    };
    let report = JobReport {
        attempt,
        status,
        reason,
    };
    if let Err(e) = retry(REPORT_FOR, || agent.client.finish(job, &report)).await {
        tracing::error!(job, error = %e, "could not report the job's end");
    }
}

async fn report_step(
    agent: &Agent,
    job: i64,
    position: i64,
    report: StepReport,
) -> Result<(), String> {
    retry(REPORT_FOR, || agent.client.step(job, position, &report))
        .await
        .map_err(|e| e.to_string())
}

/// The steps; `Err` is a reason the job could not run at all.
async fn run_steps(
    agent: &Agent,
    lease: &Lease,
    dir: &Path,
    cancel: &Cancel,
) -> Result<JobStatus, String> {
    let job = lease.job_id;
    let attempt = lease.attempt;
    let mapping = agent.mapping;
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).map_err(|e| format!("creating the workspace: {e}"))?;
    // Container root must be able to reach and write the workspace.
    for d in [agent.work_dir.join("jobs"), dir.to_path_buf()] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711));
    }
    let tar = retry(REPORT_FOR, || agent.client.source(job, attempt))
        .await
        .map_err(|e| format!("getting the source: {e}"))?;
    unpack_into(&workspace, tar, mapping, "the source").await?;
    // Artifacts of the jobs this one needs.
    for from in &lease.artifacts_from {
        let tar = retry(REPORT_FOR, || agent.client.artifacts(job, attempt, *from))
            .await
            .map_err(|e| format!("getting the artifacts of job {from}: {e}"))?;
        unpack_into(
            &workspace,
            tar,
            mapping,
            &format!("the artifacts of job {from}"),
        )
        .await?;
    }

    let context = &lease.context;
    let base_env = vec![
        ("CI".to_owned(), "true".to_owned()),
        ("SLIPWAY".to_owned(), "true".to_owned()),
        ("SLIPWAY_COMMIT".to_owned(), context.commit.clone()),
        ("SLIPWAY_REF".to_owned(), context.git_ref.clone()),
        ("SLIPWAY_REPO".to_owned(), context.repo.clone()),
        (
            "SLIPWAY_PIPELINE".to_owned(),
            context.pipeline_number.to_string(),
        ),
        ("SLIPWAY_JOB".to_owned(), context.job.clone()),
    ];

    // Services share a pod with the steps, so they are on localhost; a
    // verify job's pod has the relay to its environment there too.
    let pod = if lease.job.services.is_empty() && lease.job.reach.is_none() {
        None
    } else {
        Some(agent.engine.create_pod().map_err(|e| e.to_string())?)
    };
    let network = pod.as_ref().map(|p| p.network()).unwrap_or(Network::None);
    let relay = match (&lease.job.reach, &pod) {
        (Some(reach), Some(pod)) => Some(
            super::reach::open(pod.netns_path(), reach)
                .await
                .map_err(|e| {
                    format!("opening the way to the environment ({}): {e}", reach.target)
                })?,
        ),
        _ => None,
    };
    let services_cancel = Cancel::default();
    let mut services = Vec::new();
    for service in &lease.job.services {
        let image = pull(agent, lease, &service.image)
            .await
            .map_err(|e| format!("service {}: {e}", service.name))?;
        let (entrypoint, command) = entry_and_args(&service.command);
        let options = RunOptions {
            entrypoint,
            command,
            env: service.env.clone(),
            network: network.clone(),
            hostname: service.name.clone(),
            user_namespace: mapping,
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let engine = agent.engine.clone();
        let stop = services_cancel.clone();
        let name = service.name.clone();
        services.push(tokio::spawn(async move {
            // Service output is drained (not shipped yet: services have no step).
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let request = RunRequest {
                image: &image.config,
                layers: image.layers.iter().map(|l| l.path()).collect(),
                options,
                timeout: None,
                grace: STOP_GRACE,
                cancel: stop,
                output: tx,
            };
            let result = engine.run(request).await;
            let _ = drain.await;
            if let Err(e) = result {
                tracing::warn!(service = %name, error = %e, "service failed");
            }
        }));
    }

    let mut status = JobStatus::Success;
    for step in &lease.job.steps {
        let position = step.position;
        if step.skip {
            report_step(
                agent,
                job,
                position,
                StepReport {
                    attempt,
                    status: StepStatus::Skipped,
                    exit_code: None,
                },
            )
            .await?;
            continue;
        }
        if status != JobStatus::Success {
            break; // the rest are marked skipped (or cancelled) by the server
        }
        report_step(
            agent,
            job,
            position,
            StepReport {
                attempt,
                status: StepStatus::Running,
                exit_code: None,
            },
        )
        .await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let masker = Masker::new(step.secrets.iter().map(|(_, v)| v.as_str()));
        let shipper = tokio::spawn(ship(
            LogTarget {
                client: agent.client.clone(),
                job,
                position,
                attempt,
            },
            masker,
            rx,
        ));
        let mut env = base_env.clone();
        env.extend(step.env.iter().cloned());
        env.extend(step.secrets.iter().cloned());
        let (entrypoint, command) = entry_and_args(&step.command);
        let mut exit = None;
        let mut note = None;
        #[allow(clippy::reversed_empty_ranges)]
        let not_again = 1..=0;
        let tries = if let Some(why) = &step.refused {
            let _ = tx.send(format!("slipway: not run: {why}\n").into_bytes());
            exit = Some(1);
            not_again
        } else if !step.withheld.is_empty() {
            let _ = tx.send(
                format!(
                    "slipway: not run: secret{} {} {} not available to this run (not defined for the repository, or withheld from a fork's pull request)\n",
                    if step.withheld.len() == 1 { "" } else { "s" },
                    step.withheld.join(", "),
                    if step.withheld.len() == 1 { "is" } else { "are" }
                )
                .into_bytes(),
            );
            exit = Some(1);
            not_again
        } else if let Some(build) = &step.build {
            let (code, stopped) =
                super::build::run(agent, lease, step, build, &workspace, cancel, &tx).await;
            exit = Some(code);
            note = stopped;
            not_again
        } else {
            0..=step.retry
        };
        for try_number in tries {
            if try_number > 0 {
                let _ = tx
                    .send(format!("\n--- retry {try_number} of {} ---\n", step.retry).into_bytes());
            }
            let image = match pull(agent, lease, &step.image).await {
                Ok(image) => image,
                Err(e) => {
                    let _ = tx.send(format!("slipway: pulling {}: {e}\n", step.image).into_bytes());
                    exit = Some(125);
                    continue;
                }
            };
            let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<(Stream, Vec<u8>)>();
            let forward = {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some((_, bytes)) = out_rx.recv().await {
                        let _ = tx.send(bytes);
                    }
                })
            };
            let request = RunRequest {
                image: &image.config,
                layers: image.layers.iter().map(|l| l.path()).collect(),
                options: RunOptions {
                    entrypoint: entrypoint.clone(),
                    command: command.clone(),
                    env: env.clone(),
                    workdir: Some("/workspace".into()),
                    network: network.clone(),
                    mounts: vec![BindMount {
                        source: workspace.clone(),
                        destination: "/workspace".into(),
                        read_only: false,
                    }],
                    user_namespace: mapping,
                    ..Default::default()
                },
                timeout: step.timeout_secs.map(Duration::from_secs),
                grace: STOP_GRACE,
                cancel: cancel.clone(),
                output: out_tx,
            };
            let result = agent.engine.run(request).await;
            let _ = forward.await;
            match result {
                Ok(outcome) => {
                    exit = Some(outcome.exit_code);
                    note = outcome.stopped.clone();
                    if let Some(why) = &outcome.stopped {
                        let _ = tx.send(
                            format!("\nslipway: {why} (exit {})\n", outcome.exit_code).into_bytes(),
                        );
                    }
                    if outcome.exit_code == 0 || note.as_deref() == Some("cancelled") {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(format!("slipway: {e}\n").into_bytes());
                    exit = Some(125);
                }
            }
        }
        drop(tx);
        match shipper.await {
            Ok(Ok(_)) => {}
            Ok(Err(ClientError::Stale { .. })) => return Ok(JobStatus::Cancelled),
            Ok(Err(e)) => tracing::error!(job, position, error = %e, "log output lost"),
            Err(e) => tracing::error!(job, position, error = %e, "log shipper failed"),
        }
        let step_status = if note.as_deref() == Some("cancelled") {
            status = JobStatus::Cancelled;
            StepStatus::Cancelled
        } else if exit == Some(0) {
            StepStatus::Success
        } else {
            status = JobStatus::Failure;
            StepStatus::Failure
        };
        report_step(
            agent,
            job,
            position,
            StepReport {
                attempt,
                status: step_status,
                exit_code: exit,
            },
        )
        .await?;
    }
    services_cancel.cancel();
    for s in services {
        let _ = s.await;
    }
    drop(relay);
    drop(pod);
    if status == JobStatus::Success && !lease.job.artifacts.is_empty() {
        let paths = lease.job.artifacts.clone();
        let root = workspace.clone();
        let tar = tokio::task::spawn_blocking(move || super::artifacts::pack(&root, &paths))
            .await
            .map_err(|e| e.to_string())??;
        retry(REPORT_FOR, || {
            agent.client.upload_artifacts(job, attempt, tar.clone())
        })
        .await
        .map_err(|e| format!("uploading the artifacts: {e}"))?;
    }
    Ok(status)
}

/// An image by the pull policy, from the server's registry unless the
/// reference names another. The server's images are checked with the job's
/// token even when stored here: another job's pull does not let this one
/// start an image outside its repository and pull allowlist.
async fn pull(
    agent: &Agent,
    lease: &Lease,
    image: &str,
) -> Result<crate::image::PulledImage, String> {
    let reference = resolve(image, &agent.registry_host).map_err(|e| e.to_string())?;
    let (auth, policy) = if reference.resolve_registry() == agent.registry_host {
        (
            RegistryAuth::Bearer(lease.registry_token.clone()),
            PullPolicy::Verify,
        )
    } else {
        // A stored image starts without a registry client.
        if let Some(image) = crate::image::local(&reference, &agent.images, &agent.cache) {
            return Ok(image);
        }
        (RegistryAuth::Anonymous, PullPolicy::Missing)
    };
    obtain(
        &agent.registry_client(),
        &reference,
        &auth,
        &agent.cache,
        &agent.images,
        policy,
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_echo_and_stop_at_the_first_failure() {
        let s = script(&["echo it's".into(), "false".into()]);
        assert_eq!(s, "set -e\nprintf '+ %s\\n' 'echo it'\\''s'\necho it's\nprintf '+ %s\\n' 'false'\nfalse\n");
    }
}
