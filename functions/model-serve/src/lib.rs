//! The first-party generic inference function: the model bound as `model` (or the
//! alias `[config] model` names), its inputs and outputs by the names, element
//! types and ranks its file declares (`quiver:ml/models.list-models`).
//!
//! In: a field per model input. A tensor field goes to wasi-nn as it is, when its
//! element type is the model's; a column (float32, float64, int64, boolean) is
//! converted to the model's element type and shaped `[N]` or `[N, 1]` as the model
//! declares. Anything else is refused, naming the input and what the model takes.
//! Out: a tensor field per model output.
use quiver_sdk::nn::{self, Model};
use quiver_sdk::{Batch, Column, ElementType, Error, Tensor, TensorView};

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

/// A column as a tensor of `element`, shaped as the model's input of `rank`.
fn column_tensor(
    name: &str,
    c: &Column,
    element: ElementType,
    rank: usize,
) -> Result<Tensor, Error> {
    let rows = c.len() as u32;
    let shape = match rank {
        1 => vec![rows],
        2 => vec![rows, 1],
        _ => {
            return Err(invalid(format!(
                "input `{name}`: the model takes a rank-{rank} tensor; send it as one, not as a {} column",
                c.type_name()
            )))
        }
    };
    let numbers = c.numbers().ok_or_else(|| {
        invalid(format!(
            "input `{name}` is {}; the model takes {} numbers",
            c.type_name(),
            element.name()
        ))
    })?;
    Ok(match element {
        ElementType::Float32 => match c {
            Column::Float32(v) => Tensor::from_values(shape, v),
            _ => Tensor::from_values(shape, &numbers.iter().map(|x| *x as f32).collect::<Vec<_>>()),
        },
        ElementType::Float64 => Tensor::from_values(shape, &numbers),
        ElementType::Int64 => match c {
            Column::Int64(v) => Tensor::from_values(shape, v),
            _ => Tensor::from_values(shape, &numbers.iter().map(|x| *x as i64).collect::<Vec<_>>()),
        },
        ElementType::Int32 => Tensor::from_values(shape, &numbers.iter().map(|x| *x as i32).collect::<Vec<_>>()),
        ElementType::Uint8 => Tensor::from_values(shape, &numbers.iter().map(|x| *x as u8).collect::<Vec<_>>()),
        other => {
            return Err(invalid(format!(
                "input `{name}`: the model takes {}, which a column cannot be converted to; send a tensor",
                other.name()
            )))
        }
    })
}

std::thread_local! {
    /// The bound model's alias and description, read once per instance: an
    /// instance serves one deployment, whose bindings do not change.
    static BOUND: std::cell::OnceCell<(String, std::rc::Rc<nn::ModelInfo>)> =
        const { std::cell::OnceCell::new() };
}

fn bound() -> Result<(String, std::rc::Rc<nn::ModelInfo>), Error> {
    if let Some(b) = BOUND.with(|b| b.get().cloned()) {
        return Ok(b);
    }
    let alias = quiver_sdk::config("model").unwrap_or_else(|| "model".into());
    let info = nn::list_models()
        .into_iter()
        .find(|m| m.alias == alias)
        .ok_or_else(|| Error::Internal(format!("no model is bound as `{alias}`")))?;
    let b = (alias, std::rc::Rc::new(info));
    BOUND.with(|cell| cell.set(b.clone()).ok());
    Ok(b)
}

fn serve(input: Batch) -> Result<Batch, Error> {
    let (alias, info) = bound()?;
    // Columns become tensors here; tensor fields are borrowed as they came.
    let mut made: Vec<(String, Tensor)> = Vec::new();
    let mut passed: Vec<(String, TensorView<'_>)> = Vec::new();
    for spec in &info.inputs {
        let column = input.column(&spec.name).map_err(|_| {
            let names: Vec<&str> = info.inputs.iter().map(|s| s.name.as_str()).collect();
            invalid(format!(
                "missing input `{}`; model {}@{} takes {names:?}",
                spec.name, info.name, info.version
            ))
        })?;
        let element = spec.element.ok_or_else(|| {
            Error::Internal(format!(
                "input `{}`: the model's element type has no tensor type here",
                spec.name
            ))
        })?;
        match column {
            Column::Tensor(t) => {
                if t.element != element {
                    return Err(invalid(format!(
                        "input `{}` is a tensor of {}; the model takes {}",
                        spec.name,
                        t.element.name(),
                        element.name()
                    )));
                }
                let fits = t.shape.len() == spec.shape.len()
                    && t.shape
                        .iter()
                        .zip(&spec.shape)
                        .all(|(d, want)| *want < 0 || i64::from(*d) == *want);
                if !fits {
                    return Err(invalid(format!(
                        "input `{}` has shape {:?}; the model takes {:?} (-1: any size)",
                        spec.name, t.shape, spec.shape
                    )));
                }
                passed.push((spec.name.clone(), TensorView::of(t)));
            }
            c => made.push((
                spec.name.clone(),
                column_tensor(&spec.name, c, element, spec.shape.len())?,
            )),
        }
    }
    let mut inputs: Vec<(&str, TensorView<'_>)> =
        passed.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    inputs.extend(made.iter().map(|(n, t)| (n.as_str(), TensorView::of(t))));
    let model = Model::shared(&alias)?;
    let outputs = model.run(&inputs)?;
    let mut out = Batch::new();
    for (name, tensor) in outputs {
        out = out.with_tensor(&name, tensor)?;
    }
    Ok(out)
}

quiver_sdk::inference!(serve);
