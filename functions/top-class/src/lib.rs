//! Post-processing for a classifier, as a pipeline stage after it: the logits
//! tensor `[N, K]` in the field `[config] input` becomes, per row, the top class
//! (`class`, int64) and its softmax probability (`probability`, float64).
use quiver_sdk::{Batch, Error};

fn top(input: Batch) -> Result<Batch, Error> {
    let name = quiver_sdk::config("input").unwrap_or_else(|| "logits".into());
    let logits = input.tensor(&name)?;
    let &[n, k] = logits.shape else {
        return Err(Error::InvalidInput(format!(
            "`{name}` has shape {:?}; a classifier's logits are [N, K]",
            logits.shape
        )));
    };
    if k == 0 {
        return Err(Error::InvalidInput(format!("`{name}` has no classes")));
    }
    let values = logits.f32s()?;
    if (n as usize).checked_mul(k as usize) != Some(values.len()) {
        return Err(Error::InvalidInput(format!(
            "`{name}` has shape [{n}, {k}] but {} values",
            values.len()
        )));
    }
    let (mut class, mut probability) = (
        Vec::with_capacity(n as usize),
        Vec::with_capacity(n as usize),
    );
    for row in values.chunks_exact(k as usize) {
        let (best, max) =
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| {
                    if *v > bv {
                        (i, *v)
                    } else {
                        (bi, bv)
                    }
                });
        let sum: f64 = row.iter().map(|v| f64::from(v - max).exp()).sum();
        class.push(best as i64);
        probability.push(1.0 / sum);
    }
    Batch::new()
        .with_i64("class", class)?
        .with_f64("probability", probability)
}

quiver_sdk::transform!(top);
