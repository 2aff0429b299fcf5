//! What a valid spec may expand to. Each bound is on the pipeline as it will be
//! created, after matrix expansion, so `<<` merges and a matrix cannot multiply
//! a small file into millions of rows: a 16×16 matrix over 7,000 merged steps
//! is 1.8 million steps, refused here with its count, not written.
//!
//! Bounds (each error says the limit, the actual count and where):
//! - [`MAX_JOBS`] jobs after the matrix,
//! - [`MAX_STEPS`] steps after the matrix (each job's steps × its combinations),
//! - [`MAX_COMMANDS`] commands in one step,
//! - [`MAX_TEXT_BYTES`] bytes of step and service text after the matrix
//!   (commands, arguments, images, environment).

use super::model::{JobSpec, PipelineSpec, Run, ServiceSpec, StepSpec};
use super::SpecError;

/// Jobs in one pipeline after matrix expansion.
pub const MAX_JOBS: usize = 500;
/// Steps in one pipeline after matrix expansion.
pub const MAX_STEPS: usize = 2_000;
/// Commands in one step.
pub const MAX_COMMANDS: usize = 1_000;
/// Bytes of step and service definitions after matrix expansion.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// Every bound `spec` breaks, at the place that breaks it.
pub fn check(spec: &PipelineSpec, errors: &mut Vec<SpecError>) {
    let mut jobs = 0usize;
    let mut steps = 0usize;
    let mut bytes = 0usize;
    // Where each total first went past its limit: (job, count so far).
    let mut jobs_over = None;
    let mut steps_over = None;
    let mut bytes_over = None;
    for job in &spec.jobs {
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
        jobs = jobs.saturating_add(runs);
        steps = steps.saturating_add(runs.saturating_mul(job.steps.len()));
        bytes = bytes.saturating_add(runs.saturating_mul(job_bytes(job)));
        if jobs > MAX_JOBS && jobs_over.is_none() {
            jobs_over = Some(job);
        }
        if steps > MAX_STEPS && steps_over.is_none() {
            steps_over = Some(job);
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
        bytes_over,
        "bytes of step definitions after the matrix",
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

/// The text one run of the job carries into the database and to a runner.
fn job_bytes(job: &JobSpec) -> usize {
    let env = |env: &[(String, String)]| env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let steps: usize = job.steps.iter().map(step_bytes).sum();
    let services: usize = job.services.iter().map(service_bytes).sum();
    // The job's env is handed to each of its steps.
    steps + services + env(&job.env) * job.steps.len().max(1)
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
    step.name.len()
        + step.image.len()
        + run_bytes(&step.run)
        + step
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + step.secrets.iter().map(String::len).sum::<usize>()
}

fn service_bytes(service: &ServiceSpec) -> usize {
    service.name.len()
        + service.image.len()
        + run_bytes(&service.run)
        + service
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}
