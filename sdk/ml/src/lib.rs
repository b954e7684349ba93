//! Quiver's own ML arithmetic, with no dependencies, so that the same code runs
//! inside guests (`functions/drift-monitor`, `functions/retrain-fraud`, built for
//! wasm32-wasip2) and in the host (reference distributions at registration, the
//! validation gate's metrics).
//!
//! - [`drift`]: PSI, two-sample Kolmogorov–Smirnov and Jensen–Shannon, as Evidently
//!   0.7 and SciPy compute them.
//! - [`train`]: a seeded logistic regression and the classification metrics.
//! - [`onnx`]: the ONNX encoding of a trained model.
pub mod drift;
pub mod onnx;
pub mod train;
