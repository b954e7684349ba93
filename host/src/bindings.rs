//! Host bindings generated from `../wit`. The shared interfaces (types, log, config)
//! are generated once in `base`; each world maps them in with `with` so a `Batch`
//! from an ingest stage is the same Rust type a transform stage takes.

pub mod base {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "quiver:ml/base",
        imports: {
            "quiver:ml/features.get": async,
            "quiver:ml/features.get-many": async,
            "quiver:ml/features.put": async,
            "quiver:ml/features.delete": async,
            "quiver:ml/events.publish": async,
            "quiver:ml/datasets.read": async,
            "quiver:ml/datasets.reference": async,
        },
    });
}

macro_rules! world {
    ($module:ident, $world:literal $(, $extra:literal => $path:path)*) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../wit",
                world: $world,
                exports: { default: async },
                with: {
                    "quiver:ml/types@0.2.0": crate::bindings::base::quiver::ml::types,
                    "quiver:ml/log@0.2.0": crate::bindings::base::quiver::ml::log,
                    "quiver:ml/config@0.2.0": crate::bindings::base::quiver::ml::config,
                    "quiver:ml/features@0.2.0": crate::bindings::base::quiver::ml::features,
                    "quiver:ml/events@0.2.0": crate::bindings::base::quiver::ml::events,
                    $($extra: $path,)*
                },
            });
        }
    };
}

world!(ingest, "quiver:ml/ingest");
world!(transform, "quiver:ml/transform");
// wasi:nn is linked from `wasmtime-wasi-nn` (its own bindings); the ones generated
// here for this world are not used.
world!(inference, "quiver:ml/inference");
// Only the monitor and trainer worlds import datasets.
world!(monitor, "quiver:ml/monitor",
    "quiver:ml/datasets@0.2.0" => crate::bindings::base::quiver::ml::datasets);
world!(trainer, "quiver:ml/trainer",
    "quiver:ml/datasets@0.2.0" => crate::bindings::base::quiver::ml::datasets);

pub use base::quiver::ml::types::{
    Batch, Column, ElementType, Error as GuestError, Field, Ingested, ModelArtifact, RejectedRow,
    Report, Tensor,
};
