//! A build: the stages the target needs, each on its own thread as soon as
//! the stages it uses are done (so independent stages build in parallel);
//! inside a stage, instructions in order, each either found in the cache or
//! run (`RUN` through the `Executor`, `COPY`/`ADD` written directly).
//!
//! Cache keys chain: a stage starts from its base (the base image's manifest
//! digest, `scratch`, or the key of the stage it builds on), and every
//! instruction hashes the previous key with what it does: its expanded
//! arguments, the build arguments in scope for `RUN`, and for `COPY`/`ADD` a
//! content hash of the files it reads (or the key of the stage it copies
//! from). Equal keys mean equal layers, so a hit reuses the layer unrun.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::containerfile::{self, Command, Containerfile, Instruction, Stage, Step};
use crate::context::{self, Ignore};
use crate::copy::{self, Content, Item};
use crate::exec::{BaseImage, Executor, LayerRef, RemoteCache, RunSpec, View};
use crate::image::{self, Provenance, RunConfig};
use crate::layer::{Compression, LayerOptions, Meta};
use crate::quote::short;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] containerfile::ParseErrors),
    /// Something about one instruction: `file:line: message`.
    #[error("{file}:{line}: {message}")]
    At {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

pub struct BuildOptions {
    /// The Containerfile's name as shown in errors and provenance.
    pub file_name: String,
    pub containerfile: String,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    /// Build this stage (name or index) instead of the last one.
    pub target: Option<String>,
    pub no_cache: bool,
    /// Every file's mtime and every `created` time.
    pub source_date_epoch: u64,
    pub compression: Compression,
    /// Labels added to the image (commit, repository, pipeline, ...).
    pub labels: Vec<(String, String)>,
    /// What the provenance says about the source (repository, commit,
    /// pipeline); the rest is filled in by the build.
    pub provenance: Provenance,
    /// Environment variables every `RUN` gets that are recorded nowhere: not
    /// in the image, its history, its provenance or the cache keys.
    pub secrets: Vec<(String, String)>,
    /// Consulted on a local cache miss (`--cache-from`).
    pub remote_cache: Option<Arc<dyn RemoteCache>>,
}

/// How one instruction went, for progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Step {
        /// The stage's name, or its index.
        stage: String,
        /// 1-based, among the stage's instructions (its `FROM` is 1).
        number: usize,
        total: usize,
        text: String,
        cached: bool,
        seconds: f64,
        layer_size: Option<u64>,
        /// Of `seconds`, the time writing the layer took (tar, compression,
        /// digest), for a layer made by this instruction.
        layer_seconds: Option<f64>,
    },
    /// Output of a `RUN`.
    Output {
        stage: String,
        data: Vec<u8>,
    },
    Warning(String),
}

/// Bytes as people read them: `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

impl Event {
    /// The progress line `slipway build` and pipeline logs show, e.g.
    /// `[build 4/7] COPY src/ /app/src/  run 0.84s  layer 48.2 MiB`; none for
    /// command output.
    pub fn line(&self) -> Option<String> {
        match self {
            Event::Step {
                stage,
                number,
                total,
                text,
                cached,
                seconds,
                layer_size,
                layer_seconds,
            } => {
                let how = if *cached { "cached" } else { "run" };
                let layer = match (layer_size, layer_seconds) {
                    (Some(s), Some(t)) => format!("  layer {} written in {t:.2}s", human_size(*s)),
                    (Some(s), None) => format!("  layer {}", human_size(*s)),
                    (None, _) => String::new(),
                };
                Some(format!(
                    "[{stage} {number}/{total}] {text}  {how} {seconds:.2}s{layer}"
                ))
            }
            Event::Warning(w) => Some(format!("warning: {w}")),
            Event::Output { .. } => None,
        }
    }
}

/// The finished image, ready to push.
pub struct Built {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: Vec<u8>,
    pub layers: Vec<LayerRef>,
    pub provenance: Provenance,
    pub runs: usize,
    pub cached: usize,
    /// Keeps base layers leased until the image is pushed.
    pub holds: Vec<Arc<BaseImage>>,
    /// Every instruction key this build used and its layer (none for no
    /// layer), for exporting the cache (`--cache-to`).
    pub cache_entries: BTreeMap<String, Option<LayerRef>>,
}

impl Built {
    /// The provenance statement and its referrer manifest for `name` (the
    /// reference it is pushed as).
    pub fn provenance_artifact(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        let statement = image::provenance_document(&self.provenance, name, &self.digest);
        let manifest =
            image::referrer_manifest(&statement, (&self.digest, self.manifest.len() as u64));
        (statement, manifest)
    }
}

struct StageDone {
    layers: Vec<LayerRef>,
    run: RunConfig,
    key: String,
    /// (reference, digest) of the image at the bottom of this stage.
    base: Option<(String, String)>,
    holds: Vec<Arc<BaseImage>>,
}

type Results = Mutex<HashMap<usize, Result<Arc<StageDone>, String>>>;

struct Build<'a> {
    cf: Containerfile,
    opts: &'a BuildOptions,
    exec: &'a dyn Executor,
    cache: Cache,
    ignore: Ignore,
    events: &'a (dyn Fn(Event) + Sync),
    results: Results,
    done: Condvar,
    used_args: Mutex<std::collections::BTreeSet<String>>,
    bases: Mutex<BTreeMap<String, String>>,
    counts: Mutex<(usize, usize)>,
    used: Mutex<BTreeMap<String, Option<LayerRef>>>,
}

thread_local! {
    /// How long writing the layer of the instruction in progress on this
    /// thread (each stage has its own) took, for its progress line.
    static LAYER_SECONDS: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

fn chain(parent: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn shown(command: &Command) -> String {
    match command {
        Command::Shell(s) => s.clone(),
        Command::Exec(v) => serde_json::to_string(v).expect("json"),
    }
}

/// Build the image `opts` describe; `work` is the builder's cache directory.
pub fn build(
    opts: &BuildOptions,
    work: &Path,
    exec: &dyn Executor,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Built, BuildError> {
    let cf = containerfile::parse(&opts.file_name, &opts.containerfile)?;
    let cache =
        Cache::open(work).map_err(|e| BuildError::Other(format!("{}: {e}", work.display())))?;
    let ignore = Ignore::load(&opts.context).map_err(|e| BuildError::Other(e.to_string()))?;
    let target = match &opts.target {
        None => cf.stages.len() - 1,
        Some(t) => stage_index(&cf, t, cf.stages.len()).ok_or_else(|| {
            BuildError::Other(format!("--target {t}: no such stage in {}", opts.file_name))
        })?,
    };
    let b = Build {
        cf,
        opts,
        exec,
        cache,
        ignore,
        events,
        results: Mutex::new(HashMap::new()),
        done: Condvar::new(),
        used_args: Mutex::new(Default::default()),
        bases: Mutex::new(BTreeMap::new()),
        counts: Mutex::new((0, 0)),
        used: Mutex::new(BTreeMap::new()),
    };
    let needed = b.needed(target)?;
    std::thread::scope(|s| {
        for &i in &needed {
            let b = &b;
            s.spawn(move || {
                let result = b.stage(i).map(Arc::new);
                // A panic must not leave waiting stages blocked forever:
                // results are recorded whatever happens.
                b.results
                    .lock()
                    .expect("results")
                    .insert(i, result.map_err(|e| e.to_string()));
                b.done.notify_all();
            });
        }
    });
    let mut results = b.results.into_inner().expect("results");
    let last = match results.remove(&target) {
        Some(Ok(done)) => done,
        Some(Err(e)) => {
            // The first failure in file order is the one to report.
            let mut failures: Vec<(usize, String)> = results
                .into_iter()
                .filter_map(|(i, r)| r.err().map(|e| (i, e)))
                .collect();
            failures.push((target, e));
            failures.sort();
            return Err(BuildError::Other(failures.remove(0).1));
        }
        None => return Err(BuildError::Other("the target stage did not run".into())),
    };
    let declared: std::collections::BTreeSet<String> = b.used_args.into_inner().expect("args");
    for (k, _) in &opts.build_args {
        if !declared.contains(k) {
            (b.events)(Event::Warning(format!(
                "build argument {k} was not used: no ARG {k} in the stages built"
            )));
        }
    }
    let mut run = last.run.clone();
    for (k, v) in &opts.labels {
        run.labels.insert(k.clone(), v.clone());
    }
    if let Some((name, digest)) = &last.base {
        run.labels
            .insert("org.opencontainers.image.base.name".into(), name.clone());
        run.labels.insert(
            "org.opencontainers.image.base.digest".into(),
            digest.clone(),
        );
    }
    run.labels.insert(
        "dev.slipway.builder.version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    let config = image::config_document(&run, &last.layers, opts.source_date_epoch);
    let manifest = image::manifest_document(
        &config,
        &last.layers,
        last.base.as_ref().map(|(n, d)| (n.as_str(), d.as_str())),
    );
    let digest = image::sha256(&manifest);
    let mut provenance = opts.provenance.clone();
    provenance.containerfile_path = opts.file_name.clone();
    provenance.containerfile_digest = image::sha256(opts.containerfile.as_bytes());
    provenance.build_args = opts.build_args.iter().cloned().collect();
    provenance.target = opts.target.clone();
    provenance.source_date_epoch = opts.source_date_epoch;
    provenance.bases = b.bases.into_inner().expect("bases").into_iter().collect();
    let (runs, cached) = b.counts.into_inner().expect("counts");
    let cache_entries = b.used.into_inner().expect("used");
    Ok(Built {
        manifest,
        digest,
        config,
        layers: last.layers.clone(),
        provenance,
        runs,
        cached,
        holds: last.holds.clone(),
        cache_entries,
    })
}

/// A stage by name, or by index among the first `before` stages.
fn stage_index(cf: &Containerfile, name: &str, before: usize) -> Option<usize> {
    cf.stages[..before]
        .iter()
        .position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .or_else(|| name.parse::<usize>().ok().filter(|&i| i < before))
}

/// Expand `text` in a stage, reporting a malformed expansion at its line.
fn expand_at(
    b: &Build<'_>,
    step_line: usize,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, BuildError> {
    containerfile::expand(text, b.cf.escape, lookup).map_err(|(_, message)| BuildError::At {
        file: b.opts.file_name.clone(),
        line: step_line,
        message: format!("{}: {message}", short(text)),
    })
}

impl Build<'_> {
    fn at(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::At {
            file: self.opts.file_name.clone(),
            line,
            message: message.into(),
        }
    }

    fn global_arg(&self, name: &str) -> Option<String> {
        let declared = self.cf.global_args.iter().rev().find(|(n, _)| n == name)?;
        if let Some((_, v)) = self.opts.build_args.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        declared.1.clone()
    }

    /// The base of a stage as written, expanded with the global `ARG`s.
    fn stage_base(&self, i: usize) -> Result<String, BuildError> {
        let stage = &self.cf.stages[i];
        for (name, _) in &self.cf.global_args {
            if self.opts.build_args.iter().any(|(k, _)| k == name) {
                self.used_args.lock().expect("args").insert(name.clone());
            }
        }
        expand_at(self, stage.line, &stage.base, &|n| self.global_arg(n))
    }

    /// The stages `target` needs, dependencies before dependents.
    fn needed(&self, target: usize) -> Result<Vec<usize>, BuildError> {
        let mut order = Vec::new();
        let mut seen = vec![false; self.cf.stages.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push(i);
            for d in self.deps(i)? {
                todo.push(d);
            }
        }
        order.sort_unstable();
        Ok(order)
    }

    /// Earlier stages stage `i` builds on or copies from.
    fn deps(&self, i: usize) -> Result<Vec<usize>, BuildError> {
        let stage = &self.cf.stages[i];
        let mut deps = Vec::new();
        if let Some(d) = stage_index(&self.cf, &self.stage_base(i)?, i) {
            deps.push(d);
        }
        for step in &stage.steps {
            if let Instruction::Copy(c) = &step.instruction {
                if let Some(from) = &c.from {
                    if let Some(d) = stage_index(&self.cf, from, i) {
                        deps.push(d);
                    } else if stage_index(&self.cf, from, self.cf.stages.len()).is_some() {
                        return Err(self.at(
                            step.line,
                            format!("COPY --from={}: that stage comes later in the file; a stage can only copy from stages before it", short(from)),
                        ));
                    }
                }
            }
        }
        Ok(deps)
    }

    fn wait(&self, i: usize) -> Result<Arc<StageDone>, BuildError> {
        let mut results = self.results.lock().expect("results");
        loop {
            match results.get(&i) {
                Some(Ok(done)) => return Ok(done.clone()),
                Some(Err(e)) => return Err(BuildError::Other(e.clone())),
                None => results = self.done.wait(results).expect("results"),
            }
        }
    }

    fn stage_label(&self, i: usize) -> String {
        self.cf.stages[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{i}"))
    }

    fn base_image(
        &self,
        line: usize,
        what: &str,
        reference: &str,
    ) -> Result<BaseImage, BuildError> {
        let image = self
            .exec
            .base(reference)
            .map_err(|e| self.at(line, format!("{what} {}: {e}", short(reference))))?;
        self.bases
            .lock()
            .expect("bases")
            .insert(image.reference.clone(), image.digest.clone());
        Ok(image)
    }

    fn stage(&self, i: usize) -> Result<StageDone, BuildError> {
        let stage: &Stage = &self.cf.stages[i];
        let label = self.stage_label(i);
        let total = stage.steps.len() + 1;
        let started = Instant::now();
        let from = self.stage_base(i)?;
        let mut done = if from.eq_ignore_ascii_case("scratch") {
            StageDone {
                layers: Vec::new(),
                run: RunConfig::scratch(),
                key: chain("", &["scratch"]),
                base: None,
                holds: Vec::new(),
            }
        } else if let Some(d) = stage_index(&self.cf, &from, i) {
            let parent = self.wait(d)?;
            StageDone {
                layers: parent.layers.clone(),
                run: parent.run.clone(),
                key: parent.key.clone(),
                base: parent.base.clone(),
                holds: parent.holds.clone(),
            }
        } else {
            if let Some(p) = &stage.platform {
                let p = expand_at(self, stage.line, p, &|n| self.global_arg(n))?;
                if p != "linux/amd64" && p != "linux/x86_64" {
                    return Err(self.at(
                        stage.line,
                        format!(
                            "--platform={}: this builder only builds for linux/amd64",
                            short(&p)
                        ),
                    ));
                }
            }
            let image = Arc::new(self.base_image(stage.line, "FROM", &from)?);
            StageDone {
                layers: image.layers.clone(),
                run: RunConfig::from_image(&image.config),
                key: chain("", &["image", &image.digest]),
                base: Some((image.reference.clone(), image.digest.clone())),
                holds: vec![image],
            }
        };
        (self.events)(Event::Step {
            stage: label.clone(),
            number: 1,
            total,
            text: format!("FROM {from}"),
            cached: true,
            seconds: started.elapsed().as_secs_f64(),
            layer_size: None,
            layer_seconds: None,
        });
        let mut args: Vec<(String, Option<String>)> = Vec::new();
        let mut cmd_set = false;
        for (n, step) in stage.steps.iter().enumerate() {
            let started = Instant::now();
            let outcome = self.step(i, step, &mut done, &mut args, &mut cmd_set)?;
            let (cached, layer_size) = outcome;
            (self.events)(Event::Step {
                stage: label.clone(),
                number: n + 2,
                total,
                text: step.text.clone(),
                cached,
                seconds: started.elapsed().as_secs_f64(),
                layer_size,
                layer_seconds: LAYER_SECONDS.take(),
            });
        }
        Ok(done)
    }

    fn history(&self, done: &mut StageDone, created_by: String, empty: bool) {
        let mut entry = json!({
            "created": image::rfc3339(self.opts.source_date_epoch),
            "created_by": created_by,
            "comment": "slipway build",
        });
        if empty {
            entry["empty_layer"] = json!(true);
        }
        done.run.history.push(entry);
    }

    /// One instruction; returns (served from cache, size of the layer made).
    fn step(
        &self,
        stage: usize,
        step: &Step,
        done: &mut StageDone,
        args: &mut Vec<(String, Option<String>)>,
        cmd_set: &mut bool,
    ) -> Result<(bool, Option<u64>), BuildError> {
        let line = step.line;
        let lookup_env = done.run.env.clone();
        let lookup_args = args.clone();
        let lookup = move |name: &str| -> Option<String> {
            lookup_env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    lookup_args
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone())
                })
        };
        let x = |text: &str| expand_at(self, line, text, &lookup);
        match &step.instruction {
            Instruction::Env(pairs) => {
                // All pairs of one ENV see the values from before it.
                let values = pairs
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), x(v)?)))
                    .collect::<Result<Vec<_>, BuildError>>()?;
                for (k, v) in values {
                    done.key = chain(&done.key, &["ENV", &k, &v]);
                    done.run.env_set(&k, v);
                }
                self.history(done, step.text.clone(), true);
            }
            Instruction::Arg(name, default) => {
                let given = self
                    .opts
                    .build_args
                    .iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone());
                if given.is_some() {
                    self.used_args.lock().expect("args").insert(name.clone());
                }
                let value = match (given, default) {
                    (Some(v), _) => Some(v),
                    (None, Some(d)) => Some(x(d)?),
                    (None, None) => self.global_arg(name),
                };
                done.key = chain(
                    &done.key,
                    &["ARG", name, value.as_deref().unwrap_or("\0unset")],
                );
                args.push((name.clone(), value));
            }
            Instruction::Workdir(dir) => {
                let dir = x(dir)?;
                let base = if done.run.workdir.is_empty() {
                    "/"
                } else {
                    &done.run.workdir
                };
                done.run.workdir = if dir.starts_with('/') {
                    copy::clean(&dir)
                } else {
                    copy::clean(&format!("{base}/{dir}"))
                };
                let key = chain(&done.key, &["WORKDIR", &done.run.workdir]);
                return self.workdir(step, done, key);
            }
            Instruction::User(user) => {
                done.run.user = x(user)?;
                done.key = chain(&done.key, &["USER", &done.run.user]);
                self.history(done, step.text.clone(), true);
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (x(k)?, x(v)?);
                    done.key = chain(&done.key, &["LABEL", &k, &v]);
                    done.run.labels.insert(k, v);
                }
                self.history(done, step.text.clone(), true);
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    let mut p = x(p)?;
                    if !p.contains('/') {
                        p.push_str("/tcp");
                    }
                    done.key = chain(&done.key, &["EXPOSE", &p]);
                    done.run.exposed.insert(p);
                }
                self.history(done, step.text.clone(), true);
            }
            Instruction::Cmd(c) | Instruction::Entrypoint(c) => {
                let argv = match c {
                    Command::Shell(s) => {
                        let mut v = done.run.shell.clone();
                        v.push(s.clone());
                        v
                    }
                    Command::Exec(v) => v.clone(),
                };
                let what = if matches!(step.instruction, Instruction::Cmd(_)) {
                    *cmd_set = true;
                    done.run.cmd = Some(argv.clone());
                    "CMD"
                } else {
                    // A new entrypoint drops the Cmd inherited from the base.
                    if !*cmd_set {
                        done.run.cmd = None;
                    }
                    done.run.entrypoint = Some(argv.clone());
                    "ENTRYPOINT"
                };
                done.key = chain(&done.key, &[what, &argv.join("\0")]);
                self.history(done, step.text.clone(), true);
            }
            Instruction::Shell(v) => {
                done.run.shell = v.clone();
                done.key = chain(&done.key, &["SHELL", &v.join("\0")]);
                self.history(done, step.text.clone(), true);
            }
            Instruction::Run(c) => return self.run(stage, step, done, args, c),
            Instruction::Copy(c) => return self.copy(stage, step, done, c, false, &x),
            Instruction::Add(c) => return self.copy(stage, step, done, c, true, &x),
        }
        Ok((true, None))
    }

    /// `WORKDIR` creates its directory (root's, 0755) when the image does
    /// not have it, in a layer of its own, as Docker and buildah do.
    fn workdir(
        &self,
        step: &Step,
        done: &mut StageDone,
        key: String,
    ) -> Result<(bool, Option<u64>), BuildError> {
        let created_by = step.text.clone();
        if let Some(hit) = self.hit(&key, done, &created_by) {
            return Ok(hit);
        }
        let view = self.view(step.line, &done.layers)?;
        let root = view.as_ref().map(|v| v.path());
        let path = match root {
            Some(r) => copy::resolve_in(r, &done.run.workdir)
                .map_err(|e| self.at(step.line, format!("WORKDIR {e}")))?,
            None => done.run.workdir.clone(),
        };
        let layer = if path == "/" || copy::existing_dir(root, &path).is_some() {
            None
        } else {
            let item = Item {
                path,
                meta: Meta {
                    uid: 0,
                    gid: 0,
                    mode: 0o755,
                },
                content: Content::Dir,
            };
            let blob = self.cache.temp("blob");
            let planned = copy::plan(vec![item], root);
            let made = copy::write_layer(&planned, &blob, self.layer_opts(0))
                .map_err(|e| self.at(step.line, format!("WORKDIR: {e}")))?;
            Some(
                self.cache
                    .adopt(&blob, &made)
                    .map_err(|e| self.at(step.line, format!("storing a layer: {e}")))?,
            )
        };
        drop(view);
        self.made(step.line, done, key, created_by, layer)
    }

    /// An instruction that was not cached is done: its outcome recorded, its
    /// history entry and layer added to the stage.
    fn made(
        &self,
        line: usize,
        done: &mut StageDone,
        key: String,
        created_by: String,
        layer: Option<LayerRef>,
    ) -> Result<(bool, Option<u64>), BuildError> {
        self.record(&key, layer.as_ref())
            .map_err(|e| self.at(line, format!("recording the cache: {e}")))?;
        self.history(done, created_by, layer.is_none());
        let size = layer.as_ref().map(|l| l.size);
        if let Some(l) = layer {
            done.layers.push(l);
        }
        done.key = key;
        self.count(true);
        Ok((false, size))
    }

    /// Store a key's outcome in the local cache and note it for export.
    fn record(&self, key: &str, layer: Option<&LayerRef>) -> std::io::Result<()> {
        self.used
            .lock()
            .expect("used")
            .insert(key.to_owned(), layer.cloned());
        self.cache.store(key, layer)
    }

    /// A key the remote cache has: its blob downloaded (and checked) into the
    /// local cache. Any failure is a miss, with a warning.
    fn remote_hit(&self, key: &str) -> Option<Option<LayerRef>> {
        let remote = self.opts.remote_cache.as_ref()?;
        let found = remote.lookup(key)?;
        let fetched = match found {
            None => Ok(None),
            Some(layer) => {
                let tmp = self.cache.temp("fetch");
                let result = remote.fetch(&layer, &tmp).and_then(|()| {
                    let bytes = std::fs::read(&tmp).map_err(|e| e.to_string())?;
                    let actual = image::sha256(&bytes);
                    if actual != layer.digest || bytes.len() as u64 != layer.size {
                        return Err(format!("got {actual} ({} bytes)", bytes.len()));
                    }
                    let made = crate::layer::Layer {
                        digest: layer.digest.clone(),
                        diff_id: layer.diff_id.clone(),
                        size: layer.size,
                        tar_size: 0,
                        media_type: if layer.media_type.ends_with("zstd") {
                            Compression::Zstd(3).media_type()
                        } else {
                            Compression::Gzip(1).media_type()
                        },
                        entries: 0,
                    };
                    self.cache.adopt(&tmp, &made).map_err(|e| e.to_string())
                });
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                result.map(Some)
            }
        };
        match fetched {
            Ok(layer) => {
                if let Err(e) = self.cache.store(key, layer.as_ref()) {
                    (self.events)(Event::Warning(format!("recording the cache: {e}")));
                }
                Some(layer)
            }
            Err(e) => {
                (self.events)(Event::Warning(format!(
                    "the remote cache's layer for this step could not be used: {e}"
                )));
                None
            }
        }
    }

    /// Have the executor unpack a COPY layer from its files (best effort:
    /// on failure the layer is extracted from its blob when used).
    fn unpack_copied(
        &self,
        identity: &str,
        layer: &LayerRef,
        planned: &[Item],
        hashes: &HashMap<PathBuf, [u8; 32]>,
    ) {
        let previous = self.cache.unpacked(identity);
        let made = Mutex::new(None);
        let populate = |dir: &Path, prev: Option<&Path>| -> Result<(), String> {
            let before = prev.zip(previous.as_ref().map(|(_, files)| files));
            let files = copy::unpack(dir, planned, hashes, before, self.opts.source_date_epoch)
                .map_err(|e| e.to_string())?;
            *made.lock().expect("made") = Some(files);
            Ok(())
        };
        let result = self.exec.unpack_with(
            layer,
            previous.as_ref().map(|(digest, _)| digest.as_str()),
            &populate,
        );
        match (result, made.into_inner().expect("made")) {
            (Ok(()), Some(files)) => self.cache.record_unpacked(identity, &layer.digest, &files),
            (Ok(()), None) => {}
            (Err(e), _) => (self.events)(Event::Warning(format!(
                "unpacking {} from its files failed ({e}); it will be extracted instead",
                layer.digest
            ))),
        }
    }

    fn layer_opts(&self, id_shift: u32) -> LayerOptions {
        LayerOptions {
            mtime: self.opts.source_date_epoch,
            id_shift,
            compression: self.opts.compression,
        }
    }

    fn count(&self, ran: bool) {
        let mut c = self.counts.lock().expect("counts");
        if ran {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }

    /// The cached outcome of `key`, applied; `None` on a miss.
    fn hit(
        &self,
        key: &str,
        done: &mut StageDone,
        created_by: &str,
    ) -> Option<(bool, Option<u64>)> {
        if self.opts.no_cache {
            return None;
        }
        let layer = match self.cache.lookup(key) {
            Some(layer) => layer,
            None => self.remote_hit(key)?,
        };
        self.used
            .lock()
            .expect("used")
            .insert(key.to_owned(), layer.clone());
        self.history(done, created_by.to_owned(), layer.is_none());
        let size = layer.as_ref().map(|l| l.size);
        if let Some(l) = layer {
            done.layers.push(l);
        }
        done.key = key.to_owned();
        self.count(false);
        Some((true, size))
    }

    fn run(
        &self,
        stage: usize,
        step: &Step,
        done: &mut StageDone,
        args: &[(String, Option<String>)],
        command: &Command,
    ) -> Result<(bool, Option<u64>), BuildError> {
        let argv = match command {
            Command::Shell(s) => {
                let mut v = done.run.shell.clone();
                v.push(s.clone());
                v
            }
            Command::Exec(v) => v.clone(),
        };
        // Build arguments reach the command as environment variables (ENV
        // wins over an ARG of the same name), and are part of its key.
        let mut env = done.run.env.clone();
        let mut arg_key = Vec::new();
        for (k, v) in args {
            if let Some(v) = v {
                arg_key.push(format!("{k}={v}"));
                if !env.iter().any(|(e, _)| e == k) {
                    env.push((k.clone(), v.clone()));
                }
            }
        }
        // Build secrets: in every RUN's environment, never in the history,
        // the config, the provenance or the cache key (only their names).
        for (k, v) in &self.opts.secrets {
            env.retain(|(e, _)| e != k);
            env.push((k.clone(), v.clone()));
            arg_key.push(format!("secret {k}"));
        }
        let key = chain(
            &done.key,
            &[
                "RUN",
                &argv.join("\0"),
                &arg_key.join("\0"),
                &done.run.workdir,
                &done.run.user,
            ],
        );
        let created_by = format!("RUN {}", shown(command));
        if let Some(hit) = self.hit(&key, done, &created_by) {
            return Ok(hit);
        }
        let user = match done.run.user.as_str() {
            "" => None,
            u => Some(self.numeric_user(step.line, &done.layers, u)?),
        };
        let upper = self.cache.temp("upper");
        let label = self.stage_label(stage);
        let output = |data: &[u8]| {
            (self.events)(Event::Output {
                stage: label.clone(),
                data: data.to_vec(),
            })
        };
        let result = self
            .exec
            .run(RunSpec {
                layers: &done.layers,
                argv,
                env,
                workdir: if done.run.workdir.is_empty() {
                    "/".into()
                } else {
                    done.run.workdir.clone()
                },
                user,
                upper: upper.clone(),
                output: &output,
            })
            .map_err(|e| self.at(step.line, format!("RUN {}: {e}", short(&shown(command)))));
        let remove_upper = || {
            let _ = std::fs::remove_dir_all(&upper);
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                remove_upper();
                return Err(e);
            }
        };
        if result.exit_code != 0 || result.stopped.is_some() {
            remove_upper();
            let why = match result.stopped {
                Some(s) => s,
                None => format!("exited with code {}", result.exit_code),
            };
            return Err(self.at(step.line, format!("RUN {}: {why}", short(&shown(command)))));
        }
        let empty = std::fs::read_dir(&upper)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
        let layer = if empty {
            None
        } else {
            let blob = self.cache.temp("blob");
            let writing = Instant::now();
            let made =
                crate::layer::layer_from_dir(&upper, &blob, self.layer_opts(self.exec.id_shift()))
                    .map_err(|e| {
                        self.at(
                            step.line,
                            format!("RUN {}: making its layer: {e}", short(&shown(command))),
                        )
                    });
            LAYER_SECONDS.set(Some(writing.elapsed().as_secs_f64()));
            remove_upper();
            let made = made?;
            Some(
                self.cache
                    .adopt(&blob, &made)
                    .map_err(|e| self.at(step.line, format!("storing a layer: {e}")))?,
            )
        };
        remove_upper();
        self.made(step.line, done, key, created_by, layer)
    }

    /// `USER` as `uid[:gid]` numbers, looking names up in the image.
    fn numeric_user(
        &self,
        line: usize,
        layers: &[LayerRef],
        user: &str,
    ) -> Result<String, BuildError> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let numeric = |s: &str| s.parse::<u64>().is_ok();
        if numeric(u) && g.is_none_or(numeric) {
            return Ok(user.to_owned());
        }
        let view = self.view(line, layers)?;
        let root = view.as_ref().map(|v| v.path());
        let passwd = root
            .and_then(|r| copy::image_file(r, "etc/passwd"))
            .unwrap_or_default();
        let entry = passwd.lines().find(|l| {
            let mut f = l.split(':');
            let name = f.next();
            name == Some(u) || (numeric(u) && f.nth(1) == Some(u))
        });
        let (uid, primary) = match entry {
            Some(l) => {
                let f: Vec<&str> = l.split(':').collect();
                (
                    f.get(2).copied().unwrap_or("0").to_owned(),
                    f.get(3).copied().unwrap_or("0").to_owned(),
                )
            }
            None if numeric(u) => (u.to_owned(), u.to_owned()),
            None => {
                return Err(self.at(
                    line,
                    format!(
                        "USER {}: no user {} in the image's /etc/passwd",
                        short(user),
                        short(u)
                    ),
                ))
            }
        };
        let gid = match g {
            None => primary,
            Some(g) if numeric(g) => g.to_owned(),
            Some(g) => copy::owner(root, &format!("0:{g}"))
                .map_err(|e| self.at(line, format!("USER {}: {e}", short(user))))?
                .1
                .to_string(),
        };
        Ok(format!("{uid}:{gid}"))
    }

    fn view(&self, line: usize, layers: &[LayerRef]) -> Result<Option<Box<dyn View>>, BuildError> {
        if layers.is_empty() {
            return Ok(None);
        }
        self.exec
            .view(layers)
            .map(Some)
            .map_err(|e| self.at(line, format!("mounting the image's filesystem: {e}")))
    }

    fn copy(
        &self,
        stage: usize,
        step: &Step,
        done: &mut StageDone,
        c: &containerfile::Copy,
        add: bool,
        x: &dyn Fn(&str) -> Result<String, BuildError>,
    ) -> Result<(bool, Option<u64>), BuildError> {
        let line = step.line;
        let what = if add { "ADD" } else { "COPY" };
        let sources = c
            .sources
            .iter()
            .map(|s| x(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dest = x(&c.destination)?;
        let dir_dest = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        if !dest.starts_with('/') {
            let base = if done.run.workdir.is_empty() {
                "/"
            } else {
                &done.run.workdir
            };
            dest = format!("{base}/{dest}");
        }
        let dest = copy::clean(&dest);
        let chown = c.chown.as_deref().map(x).transpose()?;
        // Where the files come from, and what identifies their content.
        enum From {
            Context(Vec<context::Source>),
            Image(Vec<LayerRef>, Option<Arc<BaseImage>>),
        }
        let mut hashes = HashMap::new();
        let (from, content) = match &c.from {
            None => {
                let mut all = Vec::new();
                for s in &sources {
                    // The error names the source itself.
                    let found = context::resolve(&self.opts.context, &self.ignore, s)
                        .map_err(|e| self.at(line, format!("{what} {e}")))?;
                    all.extend(found);
                }
                let (digest, by_path) = context::digest_files(&all)
                    .map_err(|e| self.at(line, format!("{what}: {e}")))?;
                hashes = by_path;
                (From::Context(all), digest)
            }
            Some(name) => {
                let name = x(name)?;
                if let Some(d) = stage_index(&self.cf, &name, stage) {
                    let other = self.wait(d)?;
                    (
                        From::Image(other.layers.clone(), None),
                        format!("stage:{}", other.key),
                    )
                } else {
                    let image = self.exec.base(&name).map(Arc::new).map_err(|e| {
                        self.at(
                            line,
                            format!("COPY --from={}: no stage named {} before this one, and as an image: {e}", short(&name), short(&name)),
                        )
                    })?;
                    self.bases
                        .lock()
                        .expect("bases")
                        .insert(image.reference.clone(), image.digest.clone());
                    let digest = image.digest.clone();
                    (
                        From::Image(image.layers.clone(), Some(image)),
                        format!("image:{digest}"),
                    )
                }
            }
        };
        let many = sources.len() > 1
            || sources.iter().any(|s| s.contains(['*', '?', '[']))
            || matches!(&from, From::Context(all) if all.len() > 1);
        if many && !dir_dest {
            return Err(self.at(
                line,
                format!("{what} with more than one source needs a directory destination ending in /, not {}", short(&c.destination)),
            ));
        }
        // The same instruction at the same place, whatever its files hold:
        // its last unpacking is where unchanged files can be linked from.
        let identity = chain(&done.key, &[what, &sources.join("\0"), &dest]);
        let key = chain(
            &done.key,
            &[
                what,
                &sources.join("\0"),
                &dest,
                &dir_dest.to_string(),
                chown.as_deref().unwrap_or(""),
                &content,
            ],
        );
        let created_by = format!("{what} {} {dest}", sources.join(" "));
        if let Some(hit) = self.hit(&key, done, &created_by) {
            return Ok(hit);
        }
        // The image as it is now: for existing directories, symlinks in the
        // destination and user names.
        let view = self.view(line, &done.layers)?;
        let root = view.as_ref().map(|v| v.path());
        let owner = match &chown {
            None => None,
            Some(spec) => {
                Some(copy::owner(root, spec).map_err(|e| self.at(line, format!("{what} {e}")))?)
            }
        };
        let dest = match root {
            Some(r) => {
                copy::resolve_in(r, &dest).map_err(|e| self.at(line, format!("{what} {e}")))?
            }
            None => dest,
        };
        let dest_is_dir = dir_dest || copy::existing_dir(root, &dest).is_some();
        let meta_of = |mode: u32| Meta {
            uid: owner.map_or(0, |o| o.0),
            gid: owner.map_or(0, |o| o.1),
            mode,
        };
        let mut items: Vec<Item> = Vec::new();
        // Files are read from the other stage's view while the layer is
        // written: it stays mounted until then.
        let mut other_view: Option<Box<dyn View>> = None;
        match &from {
            From::Context(all) => {
                for source in all {
                    let Some(first) = source.entries.first() else {
                        continue;
                    };
                    let is_dir = matches!(first.kind, context::Kind::Dir { .. });
                    let base_name = source.rel.rsplit('/').next().unwrap_or(&source.rel);
                    if add && !is_dir && copy::is_archive(&first.path) {
                        let mut got = copy::archive_items(&first.path, &dest)
                            .map_err(|e| self.at(line, format!("ADD {e}")))?;
                        items.append(&mut got);
                        continue;
                    }
                    let target = if is_dir {
                        dest.clone()
                    } else if dest_is_dir {
                        copy::clean(&format!("{dest}/{base_name}"))
                    } else {
                        dest.clone()
                    };
                    for e in &source.entries {
                        let path = if e.rel.is_empty() {
                            target.clone()
                        } else {
                            copy::clean(&format!("{target}/{}", e.rel))
                        };
                        let (content, mode) = match &e.kind {
                            context::Kind::Dir { mode } => (Content::Dir, *mode),
                            context::Kind::File { mode, .. } => {
                                (Content::File(e.path.clone()), *mode)
                            }
                            context::Kind::Symlink { target } => {
                                (Content::Symlink(target.clone()), 0o777)
                            }
                        };
                        if path == "/" {
                            continue;
                        }
                        let meta = if path == target && is_dir {
                            copy::existing_dir(root, &path).unwrap_or(meta_of(0o755))
                        } else {
                            meta_of(mode)
                        };
                        let meta = if owner.is_some() {
                            Meta {
                                mode: meta.mode,
                                ..meta_of(meta.mode)
                            }
                        } else {
                            meta
                        };
                        items.push(Item {
                            path,
                            meta,
                            content,
                        });
                    }
                }
            }
            From::Image(layers, _hold) => {
                other_view = self.view(line, layers)?;
                let Some(other) = &other_view else {
                    return Err(self.at(line, format!("{what} --from: the source image is empty")));
                };
                // Canonical, so the files found under it are opened with no
                // symlink on the way (`Content::File`).
                let other_root = other
                    .path()
                    .canonicalize()
                    .map_err(|e| self.at(line, format!("{what} --from: its view: {e}")))?;
                for s in &sources {
                    if s.contains(['*', '?', '[']) {
                        return Err(self.at(
                            line,
                            format!(
                                "{what} --from {}: wildcards are not supported with --from",
                                short(s)
                            ),
                        ));
                    }
                    let src = copy::resolve_in(&other_root, &copy::clean(&format!("/{s}")))
                        .map_err(|e| self.at(line, format!("{what} --from: {e}")))?;
                    let on_disk = other_root.join(src.trim_start_matches('/'));
                    let meta = std::fs::symlink_metadata(&on_disk).map_err(|_| {
                        self.at(
                            line,
                            format!(
                                "{what} --from={}: {} does not exist there",
                                short(c.from.as_deref().unwrap_or("")),
                                short(s)
                            ),
                        )
                    })?;
                    let base_name = src.rsplit('/').next().unwrap_or("");
                    let target = if meta.is_dir() || !dest_is_dir {
                        dest.clone()
                    } else {
                        copy::clean(&format!("{dest}/{base_name}"))
                    };
                    walk_image(&on_disk, &target, &meta_of, owner.is_some(), &mut items)
                        .map_err(|e| self.at(line, format!("{what} --from {}: {e}", short(s))))?;
                }
            }
        }
        let blob = self.cache.temp("blob");
        let planned = copy::plan(items, root);
        let writing = Instant::now();
        let made = copy::write_layer(&planned, &blob, self.layer_opts(0))
            .map_err(|e| self.at(line, format!("{what}: {e}")));
        LAYER_SECONDS.set(Some(writing.elapsed().as_secs_f64()));
        let made = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(&blob);
                return Err(e);
            }
        };
        let layer = self
            .cache
            .adopt(&blob, &made)
            .map_err(|e| self.at(line, format!("storing a layer: {e}")))?;
        // A RUN later in this stage will need the layer unpacked: do it from
        // the files at hand, linking what an earlier build unpacked already.
        let stage_steps = &self.cf.stages[stage].steps;
        let later_run = stage_steps
            .iter()
            .skip_while(|s| !std::ptr::eq(*s, step))
            .skip(1)
            .any(|s| matches!(s.instruction, Instruction::Run(_)));
        if later_run && matches!(from, From::Context(_)) {
            self.unpack_copied(&identity, &layer, &planned, &hashes);
        }
        drop(view);
        drop(other_view);
        self.made(line, done, key, created_by, Some(layer))
    }
}

/// Items for a file or tree of another stage's filesystem, copied to
/// `target`. Symlinks are copied as links; owners become root (or --chown).
fn walk_image(
    path: &Path,
    target: &str,
    meta_of: &dyn Fn(u32) -> Meta,
    _chown: bool,
    items: &mut Vec<Item>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let content = if ft.is_dir() {
        Content::Dir
    } else if ft.is_symlink() {
        Content::Symlink(std::fs::read_link(path)?)
    } else if ft.is_file() {
        Content::File(path.to_owned())
    } else if ft.is_char_device() && meta.rdev() == 0 {
        // A whiteout seen through a single-layer view: nothing there.
        return Ok(());
    } else {
        return Err(std::io::Error::other(format!(
            "{}: only files, directories and symlinks can be copied",
            path.display()
        )));
    };
    if target != "/" {
        items.push(Item {
            path: target.to_owned(),
            meta: meta_of(meta.mode() & 0o7777),
            content: content.clone(),
        });
    }
    if content == Content::Dir {
        let mut names: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            walk_image(
                &path.join(&n),
                &copy::clean(&format!("{target}/{}", n.to_string_lossy())),
                meta_of,
                _chown,
                items,
            )?;
        }
    }
    Ok(())
}
