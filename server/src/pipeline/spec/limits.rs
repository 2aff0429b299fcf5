//! What a valid spec may expand to. Each bound is on the pipeline as it will be
//! created, after matrix expansion, so `<<` merges and a matrix cannot multiply
//! a small file into millions of rows: a 16×16 matrix over 7,000 merged steps
//! is 1.8 million steps, refused here with its count, not written.
//!
//! Bounds (each error says the limit, the actual count and where):
//! - [`MAX_JOBS`] jobs after the matrix,
//! - [`MAX_STEPS`] steps after the matrix (each job's steps × its combinations),
//! - [`MAX_COMMANDS`] commands in one step,
//! - [`MAX_SERVICES`] services in one job,
//! - [`MAX_NEEDS`] entries of `needs` after the matrix (a job that needs a
//!   matrix job waits for each of its instances),
//! - [`MAX_TEXT_BYTES`] bytes of job definitions after the matrix: what
//!   `create.rs` writes for every instance, counted as it copies it (the
//!   pipeline's, job's and matrix variables into every step and service,
//!   commands, images, build settings, artifacts, labels, needs).

use std::collections::HashMap;

use super::model::{JobSpec, PipelineSpec, Run, ServiceSpec, StepSpec};
use super::SpecError;

/// Jobs in one pipeline after matrix expansion.
pub const MAX_JOBS: usize = 500;
/// Steps in one pipeline after matrix expansion.
pub const MAX_STEPS: usize = 2_000;
/// Commands in one step.
pub const MAX_COMMANDS: usize = 1_000;
/// Services (containers beside the steps) in one job.
pub const MAX_SERVICES: usize = 20;
/// Entries of `needs` in one pipeline after matrix expansion.
pub const MAX_NEEDS: usize = 10_000;
/// Bytes of job definitions in one pipeline after matrix expansion.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// Every bound `spec` breaks, at the place that breaks it.
pub fn check(spec: &PipelineSpec, errors: &mut Vec<SpecError>) {
    let mut jobs = 0usize;
    let mut steps = 0usize;
    let mut needs = 0usize;
    let mut bytes = 0usize;
    // Where each total first went past its limit: (job, count so far).
    let mut jobs_over = None;
    let mut steps_over = None;
    let mut needs_over = None;
    let mut bytes_over = None;
    let by_name: HashMap<&str, &JobSpec> = spec.jobs.iter().map(|j| (j.name.as_str(), j)).collect();
    for job in &spec.jobs {
        if job.services.len() > MAX_SERVICES {
            errors.push(SpecError {
                span: job.span,
                message: format!(
                    "job {:?} has {} services; at most {MAX_SERVICES} are allowed",
                    job.name,
                    job.services.len()
                ),
            });
        }
        for step in &job.steps {
            if let Run::Commands(commands) = &step.run {
                if commands.len() > MAX_COMMANDS {
                    errors.push(SpecError {
                        span: step.span,
                        message: format!(
                            "step {:?} of job {:?} has {} commands; at most {MAX_COMMANDS} are allowed",
                            step.name,
                            job.name,
                            commands.len()
                        ),
                    });
                }
            }
        }
        let runs = combinations(job);
        let (need_count, need_bytes) = job_needs(&by_name, job);
        jobs = jobs.saturating_add(runs);
        steps = steps.saturating_add(runs.saturating_mul(job.steps.len()));
        needs = needs.saturating_add(runs.saturating_mul(need_count));
        bytes = bytes.saturating_add(
            runs.saturating_mul(instance_bytes(spec, job).saturating_add(need_bytes)),
        );
        if jobs > MAX_JOBS && jobs_over.is_none() {
            jobs_over = Some(job);
        }
        if steps > MAX_STEPS && steps_over.is_none() {
            steps_over = Some(job);
        }
        if needs > MAX_NEEDS && needs_over.is_none() {
            needs_over = Some(job);
        }
        if bytes > MAX_TEXT_BYTES && bytes_over.is_none() {
            bytes_over = Some(job);
        }
    }
    let mut over = |job: Option<&JobSpec>, what: &str, count: usize, max: usize| {
        if let Some(job) = job {
            errors.push(SpecError {
                span: job.span,
                message: format!(
                    "the pipeline expands to {count} {what}; at most {max} are allowed \
                     (job {:?} runs {} time(s) with {} step(s) and takes it past the limit)",
                    job.name,
                    combinations(job),
                    job.steps.len()
                ),
            });
        }
    };
    over(jobs_over, "jobs after the matrix", jobs, MAX_JOBS);
    over(steps_over, "steps after the matrix", steps, MAX_STEPS);
    over(
        needs_over,
        "entries of needs after the matrix",
        needs,
        MAX_NEEDS,
    );
    over(
        bytes_over,
        "bytes of job definitions after the matrix",
        bytes,
        MAX_TEXT_BYTES,
    );
}

/// How many times the job runs: the product of its matrix's value counts.
fn combinations(job: &JobSpec) -> usize {
    job.matrix.iter().fold(1usize, |n, (_, values)| {
        n.saturating_mul(values.len().max(1))
    })
}

/// Entries and bytes of one instance's `needs`: every instance of each job
/// it names.
fn job_needs(by_name: &HashMap<&str, &JobSpec>, job: &JobSpec) -> (usize, usize) {
    job.needs
        .iter()
        .filter_map(|n| by_name.get(n.as_str()).copied())
        .fold((0usize, 0usize), |(count, bytes), needed| {
            let runs = combinations(needed);
            (
                count.saturating_add(runs),
                bytes.saturating_add(runs.saturating_mul(instance_name_bytes(needed))),
            )
        })
}

fn pairs(env: &[(String, String)]) -> usize {
    env.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The most bytes one combination's variables take (each variable at its
/// longest value): an upper bound for every instance.
fn matrix_bytes(job: &JobSpec) -> usize {
    job.matrix
        .iter()
        .map(|(k, values)| k.len() + values.iter().map(String::len).max().unwrap_or(0))
        .sum()
}

/// An instance's name: the job's, then ` [K=v, ...]`.
fn instance_name_bytes(job: &JobSpec) -> usize {
    job.name.len() + matrix_bytes(job) + 4 * job.matrix.len() + 3
}

/// What `create.rs` writes for one instance of the job (at most): every step
/// and service gets the pipeline's, the job's and the matrix's variables.
fn instance_bytes(spec: &PipelineSpec, job: &JobSpec) -> usize {
    let inherited = pairs(&spec.env) + pairs(&job.env) + matrix_bytes(job);
    let steps: usize = job.steps.iter().map(|s| inherited + step_bytes(s)).sum();
    let services: usize = job
        .services
        .iter()
        .map(|s| inherited + service_bytes(s))
        .sum();
    instance_name_bytes(job)
        + steps
        + services
        + job.artifacts.iter().map(String::len).sum::<usize>()
        + job.runs_on.iter().map(String::len).sum::<usize>()
}

fn run_bytes(run: &Run) -> usize {
    match run {
        Run::Commands(commands) => commands.iter().map(String::len).sum(),
        Run::Exec { entrypoint, args } => {
            entrypoint.iter().flatten().map(String::len).sum::<usize>()
                + args.iter().map(String::len).sum::<usize>()
        }
    }
}

fn step_bytes(step: &StepSpec) -> usize {
    let build = step.build.as_ref().map_or(0, |b| {
        b.context.len()
            + b.file.as_ref().map_or(0, String::len)
            + b.image.as_ref().map_or(0, String::len)
            + b.tags.iter().map(String::len).sum::<usize>()
            + pairs(&b.args)
            + b.target.as_ref().map_or(0, String::len)
    });
    step.name.len()
        + step.image.len()
        + run_bytes(&step.run)
        + pairs(&step.env)
        + step.secrets.iter().map(String::len).sum::<usize>()
        + build
}

fn service_bytes(service: &ServiceSpec) -> usize {
    service.name.len() + service.image.len() + run_bytes(&service.run) + pairs(&service.env)
}
