//! Where inference runs: a bounded pool of threads, and dynamic batching in front of it.
//!
//! wasi-nn host calls are synchronous: a guest's `compute` would run the model on
//! the tokio worker that polls the guest, stalling every other request on that
//! worker. Instead the model runs on this pool's threads (a fixed number, a bounded
//! queue), and the caller waits with `block_in_place`, which first hands the
//! worker's other tasks to another thread. A slow model then costs its pool thread,
//! never the HTTP path of other functions.
//!
//! Models measured to run in under [`INLINE_BELOW`] skip the pool: the hand-off
//! would cost more than the model.
//!
//! Dynamic batching: concurrent `compute` calls on one graph whose inputs agree in
//! every dimension but the first are stacked along it, run as one backend call and
//! split back. The first caller of a batch waits up to `max_wait` for company (or
//! until `max_batch` rows arrived), then runs the batch for everyone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tract_onnx::prelude::{IntoTValue as _, IntoTensor as _, TValue, TVec, Tensor, TractResult};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run models, with a bounded queue.
pub struct InferencePool {
    jobs: mpsc::SyncSender<Job>,
    threads: usize,
}

impl InferencePool {
    /// `threads` workers (at least 1); at most `queue` jobs wait, and a caller that
    /// finds the queue full is refused at once.
    pub fn new(threads: usize, queue: usize) -> anyhow::Result<Arc<Self>> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("quiver-nn-{i}"))
                .spawn(move || loop {
                    // The lock is held only while taking the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking backend fails its own call (its reply channel
                        // drops), never the thread: the pool keeps its size.
                        Ok(job) => {
                            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err()
                            {
                                tracing::error!("an inference job panicked; its call failed");
                            }
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Arc::new(InferencePool { jobs: tx, threads }))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queue `f`; its result arrives on the returned channel. A full queue is an
    /// error at once (the host is overloaded), never an unbounded wait.
    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<mpsc::Receiver<R>, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                "the inference pool's queue is full: this host is overloaded; try again later"
                    .to_string()
            }
            mpsc::TrySendError::Disconnected(_) => "the inference pool has shut down".to_string(),
        })?;
        Ok(rx)
    }
}

std::thread_local! {
    /// The deadline of the guest call whose wasi-nn host call runs on this thread,
    /// set by the linker's wasi-nn accessor right before each call (see
    /// `runtime::Runtime::new`) and taken by the next [`Executor::run`].
    static CALL_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Bound the next model run on this thread by `deadline` (a guest call's timeout).
pub fn set_call_deadline(deadline: Instant) {
    CALL_DEADLINE.with(|d| d.set(Some(deadline)));
}

fn take_call_deadline() -> Option<Instant> {
    CALL_DEADLINE.with(|d| d.take())
}

/// Wait for a pool result until `deadline`: past it the caller gets an error and the
/// run is left to finish on its pool thread (its result is dropped), so a slow model
/// never holds a call past its function's timeout.
fn wait<R>(rx: &mpsc::Receiver<R>, deadline: Option<Instant>) -> Result<R, String> {
    let dropped = || "the inference pool dropped a job".to_string();
    let Some(deadline) = deadline else {
        return rx.recv().map_err(|_| dropped());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => {
            "the model did not finish within the function's timeout".to_string()
        }
        mpsc::RecvTimeoutError::Disconnected => dropped(),
    })
}

/// Run blocking work from code that may be on a tokio worker (a wasi-nn host call):
/// on a multi-thread runtime the worker hands off its other tasks first.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `max_batch` rows at most per backend call (1: no batching), `max_wait` the most
/// the first caller of a batch waits for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_batch: usize,
    pub max_wait: Duration,
}

impl Batching {
    pub const OFF: Batching = Batching {
        max_batch: 1,
        max_wait: Duration::ZERO,
    };
}

/// Runs one model: straight on the calling thread (no pool), or on the pool, with
/// dynamic batching when configured.
pub struct Executor<M> {
    model: Arc<M>,
    pool: Option<Arc<InferencePool>>,
    batching: Batching,
    pending: Mutex<Vec<Pending>>,
    arrived: Condvar,
    calls: AtomicU64,
    backend_runs: AtomicU64,
    /// Recent run time in ns (moving average; 0 until the first run).
    typical_ns: AtomicU64,
    /// Runs of this executor on the pool that have not finished, including runs
    /// whose callers gave up at their deadline, and the most it may have: a function
    /// whose calls time out cannot fill the shared pool with abandoned runs.
    unfinished: Arc<AtomicU64>,
    max_unfinished: u64,
}

/// Counts a run as unfinished until the pool job that owns it ends.
struct Unfinished(Arc<AtomicU64>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A model whose runs typically take less than this runs on the calling thread:
/// handing a call to the pool and back costs ~0.1 ms (two thread wake-ups and a
/// runtime worker hand-off), more than such a model computes, and blocking a
/// worker this briefly is no worse than a guest's own time slice (5 ms).
pub const INLINE_BELOW: Duration = Duration::from_millis(1);

/// ... and only on inputs this small: the same model on a much larger input is not
/// fast, and a run on the calling thread cannot be cut off at the call's deadline.
pub const INLINE_MAX_BYTES: usize = 64 << 10;

/// What a model must do to be run by an [`Executor`].
pub trait Runnable: Send + Sync + 'static {
    fn run_tensors(&self, inputs: TVec<TValue>) -> anyhow::Result<TVec<TValue>>;
}

type Reply = mpsc::SyncSender<Result<Vec<Tensor>, String>>;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: Reply,
}

impl<M: Runnable> Executor<M> {
    pub fn new(model: Arc<M>, pool: Option<Arc<InferencePool>>, batching: Batching) -> Self {
        Executor {
            model,
            pool,
            batching,
            pending: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            calls: AtomicU64::new(0),
            backend_runs: AtomicU64::new(0),
            typical_ns: AtomicU64::new(0),
            unfinished: Arc::new(AtomicU64::new(0)),
            max_unfinished: u64::MAX,
        }
    }

    /// At most `n` runs of this executor on the pool at once, abandoned ones
    /// included (a deployment passes its concurrency).
    pub fn with_max_unfinished(mut self, n: usize) -> Self {
        self.max_unfinished = n.max(1) as u64;
        self
    }

    fn start_run(&self) -> Result<Unfinished, String> {
        let before = self.unfinished.fetch_add(1, Ordering::AcqRel);
        let guard = Unfinished(self.unfinished.clone());
        if before >= self.max_unfinished {
            return Err(format!(
                "{before} runs of this model are still unfinished on the inference pool (earlier calls \
                 timed out waiting for them), the most this function may have; try again later"
            ));
        }
        Ok(guard)
    }

    /// Fold one run's duration into the moving average (1/8 weight).
    fn observe(&self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.typical_ns.load(Ordering::Relaxed);
        let new = match old {
            0 => ns.max(1),
            _ => old - old / 8 + ns / 8,
        };
        self.typical_ns.store(new, Ordering::Relaxed);
    }

    /// Known to be fast: measured, and under [`INLINE_BELOW`]. A model nobody has
    /// timed yet goes to the pool.
    fn fast(&self) -> bool {
        let ns = self.typical_ns.load(Ordering::Relaxed);
        ns != 0 && ns < INLINE_BELOW.as_nanos() as u64
    }

    pub fn model(&self) -> &Arc<M> {
        &self.model
    }

    /// (compute calls, backend runs): fewer runs than calls means batches formed.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.backend_runs.load(Ordering::Relaxed),
        )
    }

    /// Run the model on `inputs` (in model input order); outputs in output order.
    /// Blocks the calling thread (see [`blocking`]).
    /// A run from a guest is bounded by its call's deadline (see [`set_call_deadline`]).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = take_call_deadline();
        let rows = batch_rows(&inputs);
        let small = inputs
            .iter()
            .map(|t| t.len() * t.datum_type().size_of())
            .sum::<usize>()
            <= INLINE_MAX_BYTES;
        match (&self.pool, rows) {
            (None, _) => self.run_now(inputs),
            (Some(pool), Some(rows)) if self.batching.max_batch > 1 => {
                let pool = pool.clone();
                blocking(move || self.run_batched(&pool, inputs, rows, deadline))
            }
            (Some(_), _) if small && self.fast() => self.run_now(inputs),
            (Some(pool), _) => {
                let model = self.model.clone();
                let unfinished = self.start_run()?;
                let (out, took) = blocking(|| {
                    self.backend_runs.fetch_add(1, Ordering::Relaxed);
                    let rx = pool.submit(move || {
                        let _unfinished = unfinished;
                        let started = Instant::now();
                        (run_model(&*model, inputs), started.elapsed())
                    })?;
                    wait(&rx, deadline)
                })?;
                self.observe(took);
                out
            }
        }
    }

    fn run_now(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        self.backend_runs.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let out = run_model(&*self.model, inputs);
        self.observe(started.elapsed());
        out
    }

    fn run_batched(
        &self,
        pool: &Arc<InferencePool>,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, String> {
        let poisoned = || "the batch queue is poisoned".to_string();
        let (tx, rx) = mpsc::sync_channel(1);
        let leader = {
            let mut pending = self.pending.lock().map_err(|_| poisoned())?;
            pending.push(Pending {
                inputs,
                rows,
                reply: tx,
            });
            let total: usize = pending.iter().map(|p| p.rows).sum();
            if total >= self.batching.max_batch {
                self.arrived.notify_all();
            }
            pending.len() == 1
        };
        if leader {
            // Wait for company, then take everything queued so far.
            let until = Instant::now() + self.batching.max_wait;
            let mut pending = self.pending.lock().map_err(|_| poisoned())?;
            loop {
                let total: usize = pending.iter().map(|p| p.rows).sum();
                let now = Instant::now();
                if total >= self.batching.max_batch || now >= until {
                    break;
                }
                pending = self
                    .arrived
                    .wait_timeout(pending, until - now)
                    .map_err(|_| poisoned())?
                    .0;
            }
            let taken = std::mem::take(&mut *pending);
            drop(pending);
            // The leader answers every caller of its batch, so it waits for the
            // whole batch (bounded by the model's run); the others wait at most
            // until their own deadline.
            self.dispatch(pool, taken);
        }
        wait(&rx, deadline)?
    }

    /// Group compatible calls into batches of at most `max_batch` rows, run each on
    /// the pool, and answer every caller.
    fn dispatch(&self, pool: &Arc<InferencePool>, calls: Vec<Pending>) {
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        for call in calls {
            let fits = groups.iter_mut().find(|g| {
                let rows: usize = g.iter().map(|p| p.rows).sum();
                rows + call.rows <= self.batching.max_batch
                    && compatible(&g[0].inputs, &call.inputs)
            });
            match fits {
                Some(g) => g.push(call),
                None => groups.push(vec![call]),
            }
        }
        let mut running = Vec::new();
        for group in groups {
            self.backend_runs.fetch_add(1, Ordering::Relaxed);
            let model = self.model.clone();
            let (inputs, shape): (Vec<Vec<Tensor>>, Vec<(usize, Reply)>) = group
                .into_iter()
                .map(|p| (p.inputs, (p.rows, p.reply)))
                .unzip();
            match pool.submit(move || run_stacked(&*model, inputs)) {
                Ok(rx) => running.push((rx, shape)),
                Err(e) => shape.iter().for_each(|(_, r)| drop(r.send(Err(e.clone())))),
            }
        }
        for (rx, callers) in running {
            let result = rx
                .recv()
                .unwrap_or_else(|_| Err("the inference pool dropped a job".to_string()));
            let split = result.and_then(|outputs| {
                let rows: Vec<usize> = callers.iter().map(|(r, _)| *r).collect();
                split_rows(&outputs, &rows)
            });
            match split {
                Ok(parts) => {
                    for ((_, reply), part) in callers.into_iter().zip(parts) {
                        let _ = reply.send(Ok(part));
                    }
                }
                Err(e) => callers
                    .iter()
                    .for_each(|(_, r)| drop(r.send(Err(e.clone())))),
            }
        }
    }
}

fn run_model<M: Runnable + ?Sized>(model: &M, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    let inputs: TVec<TValue> = inputs.into_iter().map(|t| t.into_tvalue()).collect();
    model
        .run_tensors(inputs)
        .map(|out| out.into_iter().map(|v| v.into_tensor()).collect())
        .map_err(|e| format!("{e:#}"))
}

/// The first dimension shared by every input, when all have one.
fn batch_rows(inputs: &[Tensor]) -> Option<usize> {
    let rows = inputs.first()?.shape().first().copied()?;
    inputs
        .iter()
        .all(|t| t.shape().first() == Some(&rows))
        .then_some(rows)
}

fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.datum_type() == y.datum_type()
                && x.rank() == y.rank()
                && x.shape()[1..] == y.shape()[1..]
        })
}

/// Stack each input of many calls along the first dimension and run once.
fn run_stacked<M: Runnable + ?Sized>(
    model: &M,
    calls: Vec<Vec<Tensor>>,
) -> Result<Vec<Tensor>, String> {
    if calls.len() == 1 {
        return calls
            .into_iter()
            .next()
            .map_or_else(|| Ok(Vec::new()), |inputs| run_model(model, inputs));
    }
    let inputs_per_call = calls.first().map_or(0, |c| c.len());
    let stacked = (0..inputs_per_call)
        .map(|i| Tensor::stack_tensors(0, &calls.iter().map(|c| &c[i]).collect::<Vec<_>>()))
        .collect::<TractResult<Vec<Tensor>>>()
        .map_err(|e| format!("stacking a batch: {e}"))?;
    run_model(model, stacked)
}

/// Cut every output back into the callers' row counts.
fn split_rows(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, String> {
    let total: usize = rows.iter().sum();
    let mut parts = vec![Vec::with_capacity(outputs.len()); rows.len()];
    for out in outputs {
        if out.shape().first() != Some(&total) {
            return Err(format!(
                "the model is not batchable: an output of shape {:?} for {total} rows",
                out.shape()
            ));
        }
        let mut start = 0;
        for (part, n) in parts.iter_mut().zip(rows) {
            let piece = out
                .slice(0, start, start + n)
                .map_err(|e| format!("splitting a batch: {e}"))?;
            part.push(piece);
            start += n;
        }
    }
    Ok(parts)
}
