//! Pre-processing for a vision model, as a pipeline stage before it (KServe's
//! transformer, without a second server): images as they come — a `uint8` tensor
//! `[N, H, W, C]` (height, width, channels) in the field `[config] input` — become
//! the model's input: `float32` `[N, C, H, W]`, each channel scaled to 0..1 then
//! normalized with `[config] mean` and `std` (ImageNet's by default), in the field
//! `[config] output`.
use quiver_sdk::{Batch, ElementType, Error, Tensor};

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

/// A comma-separated list of numbers from `[config] key`, or `default`.
fn floats(key: &str, default: &[f32]) -> Result<Vec<f32>, Error> {
    match quiver_sdk::config(key) {
        None => Ok(default.to_vec()),
        Some(text) => text
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                invalid(format!(
                    "config `{key}` = `{text}`: numbers, comma-separated"
                ))
            }),
    }
}

fn prep(input: Batch) -> Result<Batch, Error> {
    let name = quiver_sdk::config("input").unwrap_or_else(|| "image".into());
    let out = quiver_sdk::config("output").unwrap_or_else(|| "pixels".into());
    let image = input.tensor(&name)?;
    if image.element != ElementType::Uint8 {
        return Err(invalid(format!(
            "`{name}` is a tensor of {}; send uint8 images [N, H, W, C]",
            image.element.name()
        )));
    }
    let &[n, h, w, c] = image.shape else {
        return Err(invalid(format!(
            "`{name}` has shape {:?}; send images as [N, H, W, C]",
            image.shape
        )));
    };
    let mean = floats("mean", &[0.485, 0.456, 0.406])?;
    let std = floats("std", &[0.229, 0.224, 0.225])?;
    if mean.len() != c as usize || std.len() != c as usize || std.contains(&0.0) {
        return Err(invalid(format!(
            "{c} channels, but config gives {} means and {} non-zero stds",
            mean.len(),
            std.iter().filter(|s| **s != 0.0).count()
        )));
    }
    let px = image.values::<u8>()?;
    let (n, h, w, c) = (n as usize, h as usize, w as usize, c as usize);
    let want = [n, h, w, c]
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d));
    if want != Some(px.len()) {
        return Err(invalid(format!(
            "`{name}` has shape {:?} but {} bytes of data",
            image.shape,
            px.len()
        )));
    }
    let mut nchw = vec![0f32; px.len()];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let v = f32::from(px[((i * h + y) * w + x) * c + ch]) / 255.0;
                    nchw[((i * c + ch) * h + y) * w + x] = (v - mean[ch]) / std[ch];
                }
            }
        }
    }
    let shape = vec![n as u32, c as u32, h as u32, w as u32];
    Batch::new().with_tensor(&out, Tensor::from_values(shape, &nchw))
}

quiver_sdk::transform!(prep);
