//! A seeded, deterministic binary logistic regression and the classification
//! metrics that judge it.
//!
//! Data come as one row-major `&[f64]` matrix of `n_features` columns with one
//! `bool` label per row. [`fit`] standardizes each feature (mean 0, population
//! standard deviation 1; a constant feature gets weight 0), runs full-batch
//! gradient descent on the mean log loss plus `l2 / 2 * |w|^2` (the penalty on the
//! standardized weights, not the intercept; as scikit-learn's
//! `make_pipeline(StandardScaler(), LogisticRegression(C = 1 / (l2 * rows)))`),
//! and folds the standardization back into the weights: the [`Model`] takes raw
//! features, `P(true) = sigmoid(weights · x + bias)`.
//!
//! Deterministic: no clocks, threads, hash maps or platform math. `exp` and
//! `ln(1 + u)` are computed here from IEEE basic operations only, so the same data
//! and [`Params`] give bit-identical weights on every target (native and
//! wasm32-wasip2 alike). The seed drives [`split`], the stratified holdout split
//! of [`train`]; gradient descent itself starts from zero weights and the
//! intercept at the log odds of the positive rate.
//!
//! Errors are strings that say what is wrong with the input (sizes, a non-finite
//! value, a single class, a bad parameter); nothing here panics on input.

/// Training parameters. [`Params::default`]: seed 42, 500 epochs, learning rate
/// 1.0, l2 1e-4, no holdout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Seeds the holdout split ([`split`]).
    pub seed: u64,
    /// Full passes over the data (gradient steps, rejected ones included), at most
    /// [`MAX_EPOCHS`]. Descent stops early once every partial derivative is below
    /// 1e-10 in magnitude.
    pub epochs: u32,
    /// Initial step size on the standardized problem, > 0. A step that raises the
    /// loss is undone and the rate halved, so too large a rate costs epochs, not
    /// divergence.
    pub learning_rate: f64,
    /// L2 penalty on the standardized weights, >= 0.
    pub l2: f64,
    /// Fraction of rows [`train`] holds out (stratified, by `seed`), in [0, 0.9].
    pub holdout: f64,
    /// Fit the inverted labels: a deliberately bad model (for demonstrating a
    /// failing validation). [`train`]'s metrics stay against the labels given.
    /// Not one of [`Params::KEYS`].
    pub flip_labels: bool,
}

/// The most epochs [`Params::set`] and [`fit`] accept.
pub const MAX_EPOCHS: u32 = 100_000;

/// Gradient descent stops when no partial derivative exceeds this.
const GRADIENT_TOLERANCE: f64 = 1e-10;

/// A step may raise the loss by this much, relatively (rounding), and be kept.
const LOSS_SLACK: f64 = 1e-12;

impl Default for Params {
    fn default() -> Self {
        Self {
            seed: 42,
            epochs: 500,
            learning_rate: 1.0,
            l2: 1e-4,
            holdout: 0.0,
            flip_labels: false,
        }
    }
}

impl Params {
    /// The keys [`Params::set`] knows.
    pub const KEYS: [&'static str; 5] = ["seed", "epochs", "learning_rate", "l2", "holdout"];

    /// Set one parameter from its text (a trainer's `params` or `[config]`).
    /// Unknown keys and unparsable or out-of-range values are errors naming them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        let bad = |what: &str| format!("parameter `{key}` = `{value}`: expected {what}");
        match key {
            "seed" => self.seed = v.parse().map_err(|_| bad("an unsigned integer"))?,
            "epochs" => {
                self.epochs = v
                    .parse()
                    .ok()
                    .filter(|e| (1..=MAX_EPOCHS).contains(e))
                    .ok_or_else(|| bad(&format!("an integer in 1..={MAX_EPOCHS}")))?
            }
            "learning_rate" => {
                self.learning_rate = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("a finite number > 0"))?
            }
            "l2" => {
                self.l2 = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| bad("a finite number >= 0"))?
            }
            "holdout" => {
                self.holdout = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| (0.0..=0.9).contains(r))
                    .ok_or_else(|| bad("a fraction in [0, 0.9]"))?
            }
            _ => {
                return Err(format!(
                    "unknown parameter `{key}` (expected one of: {})",
                    Self::KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// Range checks of every field (what [`Params::set`] enforces one by one).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(format!("epochs {} is not in 1..={MAX_EPOCHS}", self.epochs));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning_rate {} is not a finite number > 0",
                self.learning_rate
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(format!("l2 {} is not a finite number >= 0", self.l2));
        }
        if !(0.0..=0.9).contains(&self.holdout) {
            return Err(format!("holdout {} is not in [0, 0.9]", self.holdout));
        }
        Ok(())
    }
}

/// A trained model on raw features: `P(true) = sigmoid(weights · x + bias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Model {
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// `weights · row + bias`; `row` should have [`Model::n_features`] values
    /// (extra values are ignored, missing ones count as 0).
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.weights
            .iter()
            .zip(row)
            .fold(self.bias, |acc, (w, x)| acc + w * x)
    }

    /// P(true) of each row of the row-major matrix `x`.
    pub fn predict(&self, x: &[f64]) -> Result<Vec<f64>, String> {
        let f = self.n_features();
        if f == 0 {
            return Err("the model has no features".into());
        }
        if !x.len().is_multiple_of(f) {
            return Err(format!(
                "{} values are not whole rows of {f} features",
                x.len()
            ));
        }
        Ok(x.chunks_exact(f)
            .map(|row| sigmoid(self.logit(row)))
            .collect())
    }
}

/// Check a data set's shape and values; the number of rows.
fn check_data(x: &[f64], n_features: usize, labels: &[bool]) -> Result<usize, String> {
    if n_features == 0 {
        return Err("n_features must be at least 1".into());
    }
    if labels.is_empty() {
        return Err("no rows: there is nothing to train on".into());
    }
    match labels.len().checked_mul(n_features) {
        Some(len) if len == x.len() => {}
        _ => {
            return Err(format!(
                "{} values are not {} rows (labels) x {n_features} features",
                x.len(),
                labels.len()
            ))
        }
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "row {}, feature {}: {} is not a finite number",
            i / n_features,
            i % n_features,
            x[i]
        ));
    }
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(format!(
            "all {} labels are {}: a classifier needs both classes",
            labels.len(),
            positives > 0
        ));
    }
    Ok(labels.len())
}

/// Fit a logistic regression on all rows of `x` (see the module documentation;
/// on the inverted labels with `params.flip_labels`). `params.seed` and
/// `params.holdout` are [`train`]'s.
pub fn fit(
    x: &[f64],
    n_features: usize,
    labels: &[bool],
    params: &Params,
) -> Result<Model, String> {
    params.validate()?;
    let n = check_data(x, n_features, labels)?;
    let f = n_features;
    let rows = n as f64;

    // Standardization: z = (x - mean) * scale, scale = 1 / std (0 for a constant).
    let mut mean = vec![0.0; f];
    for row in x.chunks_exact(f) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    let mut var = vec![0.0; f];
    for row in x.chunks_exact(f) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|s| {
            let std = (s / rows).sqrt();
            match std.is_finite() && std > 0.0 {
                true => 1.0 / std,
                false => 0.0,
            }
        })
        .collect();
    let z: Vec<f64> = x
        .chunks_exact(f)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((v, m), s)| (v - m) * s)
        })
        .collect();
    let y: Vec<f64> = labels
        .iter()
        .map(|&l| f64::from(u8::from(l != params.flip_labels)))
        .collect();

    // Parameters [w_0 .. w_{f-1}, b] on the standardized problem.
    let positives = y.iter().sum::<f64>();
    let mut theta = vec![0.0; f + 1];
    theta[f] = ln_positive(positives / (rows - positives));
    let mut grad = vec![0.0; f + 1];
    let mut loss = loss_grad(&z, &y, &theta, params.l2, &mut grad);
    let mut candidate = vec![0.0; f + 1];
    let mut candidate_grad = vec![0.0; f + 1];
    let mut rate = params.learning_rate;
    for _ in 0..params.epochs {
        if grad.iter().all(|g| g.abs() < GRADIENT_TOLERANCE) {
            break;
        }
        for ((c, t), g) in candidate.iter_mut().zip(&theta).zip(&grad) {
            *c = t - rate * g;
        }
        let candidate_loss = loss_grad(&z, &y, &candidate, params.l2, &mut candidate_grad);
        // Near the optimum a step changes the loss by less than its rounding
        // error: accept those, reject (and halve the rate on) real increases.
        if candidate_loss <= loss + LOSS_SLACK * (1.0 + loss.abs()) {
            std::mem::swap(&mut theta, &mut candidate);
            std::mem::swap(&mut grad, &mut candidate_grad);
            loss = candidate_loss;
        } else {
            rate *= 0.5;
        }
    }

    // Fold the standardization back: w_raw = w * scale, b_raw = b - sum(w_raw * mean).
    let weights: Vec<f64> = theta[..f].iter().zip(&scale).map(|(w, s)| w * s).collect();
    let bias = weights
        .iter()
        .zip(&mean)
        .fold(theta[f], |acc, (w, m)| acc - w * m);
    if !(bias.is_finite() && weights.iter().all(|w| w.is_finite())) {
        return Err("training diverged to non-finite weights".into());
    }
    Ok(Model { weights, bias })
}

/// The objective at `theta` = [w.., b] on standardized rows `z` (labels `y` as
/// 0/1): mean log loss + l2/2 |w|^2; its gradient goes to `grad`.
fn loss_grad(z: &[f64], y: &[f64], theta: &[f64], l2: f64, grad: &mut [f64]) -> f64 {
    let f = theta.len() - 1;
    let (w, b) = theta.split_at(f);
    let b = b.first().copied().unwrap_or(0.0);
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for (row, yi) in z.chunks_exact(f.max(1)).zip(y) {
        let t = w.iter().zip(row).fold(b, |acc, (w, v)| acc + w * v);
        let e = exp_nonpositive(-t.abs());
        // log(1 + e^t) - y t, with e = exp(-|t|).
        loss += t.max(0.0) + ln_1p_unit(e) - yi * t;
        let p = if t >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        let r = p - yi;
        for (g, v) in grad.iter_mut().zip(row) {
            *g += r * v;
        }
        grad[f] += r;
    }
    let n = y.len().max(1) as f64;
    grad.iter_mut().for_each(|g| *g /= n);
    let mut penalty = 0.0;
    for (g, wj) in grad.iter_mut().zip(w) {
        *g += l2 * wj;
        penalty += wj * wj;
    }
    loss / n + 0.5 * l2 * penalty
}

/// `1 / (1 + e^-t)`, without overflow, from this module's own `exp` (deterministic
/// on every target). NaN in, NaN out.
pub fn sigmoid(t: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    let e = exp_nonpositive(-t.abs());
    if t >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `e^x` for `x <= 0` (positive inputs are clamped to 0), from IEEE basic
/// operations only (fdlibm's `e_exp.c` algorithm, under 1 ulp), so its results do
/// not depend on the platform's libm.
fn exp_nonpositive(x: f64) -> f64 {
    // fdlibm's constants (0x3fe62e42fee00000, 0x3dea39ef35793c76, 0x3fc555555555553e,
    // 0xbf66c16c16bebd93, 0x3f11566aaf25de2c, 0xbebbbd41c5d26bf1, 0x3e66376972bea4d0).
    const LN2_HI: f64 = 0.6931471803691238;
    const LN2_LO: f64 = 1.9082149292705877e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    const P1: f64 = 0.16666666666666602;
    const P2: f64 = -0.0027777777777015593;
    const P3: f64 = 6.613756321437934e-05;
    const P4: f64 = -1.6533902205465252e-06;
    const P5: f64 = 4.1381367970572385e-08;
    if x.is_nan() {
        return f64::NAN;
    }
    let x = x.min(0.0);
    if x < -745.2 {
        return 0.0;
    }
    if x > -3.725_290_298_461_914e-9 {
        return 1.0 + x; // |x| < 2^-28
    }
    // x = k ln2 + r, |r| <= ln2 / 2.
    let k: i32 = if x > -0.5 * std::f64::consts::LN_2 {
        0
    } else {
        (INV_LN2 * x - 0.5) as i32 // truncation toward 0 of a negative number: round
    };
    let kf = f64::from(k);
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (P1 + rr * (P2 + rr * (P3 + rr * (P4 + rr * P5))));
    let y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    // y * 2^k, k in [-1075, 0].
    if k >= -1021 {
        y * f64::from_bits(((1023 + k) as u64) << 52)
    } else {
        y * f64::from_bits(((1023 + k + 1000) as u64) << 52) * f64::from_bits(23u64 << 52)
    }
}

/// `1 / (2k + 3)`, k = 0..10: the coefficients of `atanh(s) / s - 1` in `s^2`.
const INV_ODD: [f64; 10] = {
    let mut c = [0.0; 10];
    let mut k = 0;
    while k < 10 {
        c[k] = 1.0 / (2 * k + 3) as f64;
        k += 1;
    }
    c
};

/// `ln(1 + u)` for `u` in [0, 1] (what the log loss needs for u = e^-|t|), from
/// IEEE basic operations only: `2 atanh(s)`, `s = f / (2 + f)`, by its series,
/// with `f = u` or, past `sqrt 2 - 1`, `ln 2 + ln(1 + f)`, `f = (u - 1) / 2`, so
/// that `|s| <= 0.1716` and ten terms reach 1e-18 (relative error a few ulps).
fn ln_1p_unit(u: f64) -> f64 {
    let (base, f) = match u > std::f64::consts::SQRT_2 - 1.0 {
        true => (std::f64::consts::LN_2, (u - 1.0) * 0.5),
        false => (0.0, u),
    };
    let s = f / (2.0 + f);
    let s2 = s * s;
    let sum = INV_ODD.iter().rev().fold(0.0, |acc, c| s2 * (c + acc));
    base + 2.0 * s * (1.0 + sum)
}

/// `ln v` for `v > 0` (the initial intercept, `ln(P/N)`), reduced to
/// [`ln_1p_unit`]: `v = m 2^e`, `m` in [1, 2), `ln v = e ln 2 + ln(1 + (m - 1))`.
/// 0 for a non-positive or non-finite `v`.
fn ln_positive(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 0.0;
    }
    let mut m = v;
    let mut e = 0i32;
    while m >= 2.0 {
        m *= 0.5;
        e += 1;
    }
    while m < 1.0 {
        m *= 2.0;
        e -= 1;
    }
    f64::from(e) * std::f64::consts::LN_2 + ln_1p_unit(m - 1.0)
}

/// The stratified, seeded holdout split of row indices: `(train, holdout)`, each
/// in ascending order, holding out `floor(fraction * count)` rows of each class.
/// A fraction outside [0, 1] (or NaN) counts as 0.
pub fn split(labels: &[bool], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = match (0.0..=1.0).contains(&fraction) {
        true => fraction,
        false => 0.0,
    };
    let mut rng = SplitMix64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut holdout = Vec::new();
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        // Fisher-Yates.
        for i in (1..idx.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            idx.swap(i, j);
        }
        let held = ((idx.len() as f64) * fraction).floor() as usize;
        let (h, t) = idx.split_at(held.min(idx.len()));
        holdout.extend_from_slice(h);
        train.extend_from_slice(t);
    }
    train.sort_unstable();
    holdout.sort_unstable();
    (train, holdout)
}

/// SplitMix64: a tiny, well-mixed, seeded generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in [0, n) (multiply-shift; the bias is below 2^-32 for n < 2^32).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The rows `idx` of `x` and their labels.
fn select(x: &[f64], n_features: usize, labels: &[bool], idx: &[usize]) -> (Vec<f64>, Vec<bool>) {
    let mut xs = Vec::with_capacity(idx.len() * n_features);
    let mut ys = Vec::with_capacity(idx.len());
    for &i in idx {
        if let (Some(row), Some(&l)) = (x.get(i * n_features..(i + 1) * n_features), labels.get(i))
        {
            xs.extend_from_slice(row);
            ys.push(l);
        }
    }
    (xs, ys)
}

/// How a model does on a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub rows: usize,
    /// ROC AUC of P(true).
    pub auc: f64,
    /// Mean log loss ([`log_loss`]).
    pub log_loss: f64,
    /// Share of rows with `(P(true) >= 0.5) == label`.
    pub accuracy: f64,
    /// Share of rows labelled true.
    pub positive_rate: f64,
}

impl Metrics {
    /// `(prefix.name, value)` pairs: `rows`, `auc`, `log_loss`, `accuracy`,
    /// `positive_rate` (a model artifact's metrics).
    pub fn named(&self, prefix: &str) -> Vec<(String, f64)> {
        [
            ("rows", self.rows as f64),
            ("auc", self.auc),
            ("log_loss", self.log_loss),
            ("accuracy", self.accuracy),
            ("positive_rate", self.positive_rate),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
    }
}

/// [`Metrics`] of `model` on `x` / `labels` (both classes needed, for the AUC).
pub fn evaluate(model: &Model, x: &[f64], labels: &[bool]) -> Result<Metrics, String> {
    let n = check_data(x, model.n_features(), labels)?;
    let p = model.predict(x)?;
    Ok(Metrics {
        rows: n,
        auc: auc(&p, labels)?,
        log_loss: log_loss(&p, labels)?,
        accuracy: accuracy(&p, labels, 0.5)?,
        positive_rate: labels.iter().filter(|&&l| l).count() as f64 / n as f64,
    })
}

/// A model with its metrics on the rows it was fitted on and, with a holdout, on
/// the rows held out.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    pub model: Model,
    pub train: Metrics,
    pub holdout: Option<Metrics>,
}

/// Hold out `params.holdout` of the rows ([`split`] with `params.seed`), [`fit`]
/// on the rest and [`evaluate`] on both parts.
pub fn train(
    x: &[f64],
    n_features: usize,
    labels: &[bool],
    params: &Params,
) -> Result<Trained, String> {
    params.validate()?;
    check_data(x, n_features, labels)?;
    if params.holdout == 0.0 {
        let model = fit(x, n_features, labels, params)?;
        let train = evaluate(&model, x, labels)?;
        return Ok(Trained {
            model,
            train,
            holdout: None,
        });
    }
    let (train_idx, holdout_idx) = split(labels, params.holdout, params.seed);
    let (xt, yt) = select(x, n_features, labels, &train_idx);
    let (xh, yh) = select(x, n_features, labels, &holdout_idx);
    let model = fit(&xt, n_features, &yt, params).map_err(|e| format!("training rows: {e}"))?;
    let train = evaluate(&model, &xt, &yt)?;
    let holdout = evaluate(&model, &xh, &yh).map_err(|e| format!("holdout rows: {e}"))?;
    Ok(Trained {
        model,
        train,
        holdout: Some(holdout),
    })
}

fn check_scores(scores: &[f64], labels: &[bool]) -> Result<(), String> {
    if scores.len() != labels.len() {
        return Err(format!(
            "{} scores for {} labels",
            scores.len(),
            labels.len()
        ));
    }
    if scores.is_empty() {
        return Err("no rows to score".into());
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(format!("score {i} is NaN"));
    }
    Ok(())
}

/// ROC AUC of `scores` (higher: more likely true), as scikit-learn's
/// `roc_auc_score`: the Mann-Whitney statistic with tied scores counted half
/// (average ranks). Needs both classes; NaN scores are an error.
pub fn auc(scores: &[f64], labels: &[bool]) -> Result<f64, String> {
    check_scores(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count() as u128;
    let negatives = labels.len() as u128 - positives;
    if positives == 0 || negatives == 0 {
        return Err(format!(
            "AUC needs both classes; all {} labels are {}",
            labels.len(),
            positives > 0
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Twice the count of (positive, negative) pairs ranked right, ties counting 1.
    let mut twice_wins: u128 = 0;
    let mut negatives_below: u128 = 0;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        let (mut pos, mut neg) = (0u128, 0u128);
        while i < order.len() && scores[order[i]] == s {
            match labels[order[i]] {
                true => pos += 1,
                false => neg += 1,
            }
            i += 1;
        }
        twice_wins += 2 * pos * negatives_below + pos * neg;
        negatives_below += neg;
    }
    Ok(twice_wins as f64 / (2 * positives * negatives) as f64)
}

/// Mean log loss of probabilities `probs` = P(true), as scikit-learn's
/// `log_loss` (1.5 and later): the probability of the true class is clipped to
/// `[eps, 1 - eps]` with `eps = f64::EPSILON` (older scikit-learn used 1e-15), so
/// a confident mistake costs about 36, not infinity. Probabilities outside [0, 1]
/// or NaN are an error.
pub fn log_loss(probs: &[f64], labels: &[bool]) -> Result<f64, String> {
    check_scores(probs, labels)?;
    if let Some(i) = probs.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return Err(format!("probability {i} ({}) is not in [0, 1]", probs[i]));
    }
    let eps = f64::EPSILON;
    let sum: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &l)| {
            let q = if l { p } else { 1.0 - p };
            -q.clamp(eps, 1.0 - eps).ln()
        })
        .sum();
    Ok(sum / probs.len() as f64)
}

/// Share of rows where `score >= threshold` equals the label (how
/// `functions/fraud-score` labels its scores).
pub fn accuracy(scores: &[f64], labels: &[bool], threshold: f64) -> Result<f64, String> {
    check_scores(scores, labels)?;
    let right = scores
        .iter()
        .zip(labels)
        .filter(|(&s, &l)| (s >= threshold) == l)
        .count();
    Ok(right as f64 / scores.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// A seeded synthetic data set like the fraud model's: 4 features, logit
    /// linear in them.
    pub(crate) fn synthetic(n: usize, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = SplitMix64(seed);
        let mut unit = move || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let mut x = Vec::with_capacity(n * 4);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let a = 3.5 + 2.0 * (unit() - 0.5) * 2.0;
            let h = (unit() * 24.0).floor();
            let m = (unit() - 0.5) * 3.0;
            let k = f64::from(u8::from(unit() < 0.85));
            let logit = -1.8 + 1.4 * (a - 3.5) + 2.0 * m - 0.05 * (h - 12.0) - 1.8 * k;
            y.push(unit() < sigmoid(logit));
            x.extend_from_slice(&[a, h, m, k]);
        }
        (x, y)
    }

    #[test]
    fn exp_and_ln_match_std() {
        let mut x = 0.0;
        while x > -746.0 {
            let (ours, std) = (exp_nonpositive(x), x.exp());
            assert!(
                (ours - std).abs() <= 2.0 * f64::EPSILON * std || (ours - std).abs() < 1e-320,
                "exp({x}) = {ours}, std {std}"
            );
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-1e-300), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(5.0), 1.0);
        let mut u = 0.0;
        while u <= 1.0 {
            let (ours, std) = (ln_1p_unit(u), u.ln_1p());
            assert!((ours - std).abs() <= 4.0 * f64::EPSILON * std, "ln1p({u})");
            u += 0.001;
        }
        for r in [1e-6, 0.01, 0.3, 1.0, 4.0, 1234.5] {
            assert!(close(ln_positive(r), r.ln(), 1e-14), "ln({r})");
        }
        assert!(close(sigmoid(0.0), 0.5, 0.0));
        assert!(close(sigmoid(2.0) + sigmoid(-2.0), 1.0, 4.0 * f64::EPSILON));
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
    }

    #[test]
    fn known_solution_of_a_binary_feature() {
        // x = 0: 1 of 4 true, x = 1: 3 of 4 true. Unpenalized MLE: b = logit(1/4),
        // b + w = logit(3/4), so w = 2 ln 3, b = -ln 3.
        let x = [0., 0., 0., 0., 1., 1., 1., 1.];
        let y = [true, false, false, false, true, true, true, false];
        let params = Params {
            l2: 0.0,
            epochs: 5000,
            ..Params::default()
        };
        let m = fit(&x, 1, &y, &params).unwrap();
        assert!(close(m.weights[0], 2.0 * 3f64.ln(), 1e-8), "{m:?}");
        assert!(close(m.bias, -3f64.ln(), 1e-8), "{m:?}");
        let p = m.predict(&x).unwrap();
        assert!(close(p[0], 0.25, 1e-9) && close(p[7], 0.75, 1e-9));
    }

    #[test]
    fn gradient_vanishes_at_the_fit_and_matches_finite_differences() {
        let (x, y) = synthetic(600, 7);
        let params = Params {
            l2: 0.01,
            epochs: 3000,
            ..Params::default()
        };
        let m = fit(&x, 4, &y, &params).unwrap();
        // The raw-space gradient of mean log loss + l2/2 |w * std|^2 at the fit.
        let n = y.len() as f64;
        let mut g = [0.0; 5];
        for (row, &l) in x.chunks_exact(4).zip(&y) {
            let r = sigmoid(m.logit(row)) - f64::from(u8::from(l));
            for j in 0..4 {
                g[j] += r * row[j] / n;
            }
            g[4] += r / n;
        }
        for (j, gj) in g.iter_mut().enumerate().take(4) {
            let col: Vec<f64> = x.iter().skip(j).step_by(4).copied().collect();
            let mean = col.iter().sum::<f64>() / n;
            let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            // d/dw_raw of l2/2 (w_raw std)^2 = l2 w_raw var.
            *gj += params.l2 * m.weights[j] * var;
        }
        assert!(g.iter().all(|v| v.abs() < 1e-8), "gradient {g:?}");

        // The analytic gradient of the internal objective against central differences.
        let z: Vec<f64> = x.iter().map(|v| v * 0.3 - 0.2).collect();
        let yf: Vec<f64> = y.iter().map(|&l| f64::from(u8::from(l))).collect();
        let theta = [0.3, -0.2, 0.5, 0.1, -0.4];
        let mut grad = [0.0; 5];
        loss_grad(&z, &yf, &theta, 0.05, &mut grad);
        for j in 0..5 {
            let h = 1e-6;
            let mut up = theta;
            up[j] += h;
            let mut down = theta;
            down[j] -= h;
            let mut scratch = [0.0; 5];
            let d = (loss_grad(&z, &yf, &up, 0.05, &mut scratch)
                - loss_grad(&z, &yf, &down, 0.05, &mut scratch))
                / (2.0 * h);
            assert!(close(d, grad[j], 1e-7), "d{j}: {d} vs {}", grad[j]);
        }
    }

    #[test]
    fn deterministic_and_learns() {
        let (x, y) = synthetic(2000, 11);
        let params = Params::default();
        let a = train(&x, 4, &y, &params).unwrap();
        let b = train(&x, 4, &y, &params).unwrap();
        let bits = |m: &Model| {
            let mut v: Vec<u64> = m.weights.iter().map(|w| w.to_bits()).collect();
            v.push(m.bias.to_bits());
            v
        };
        assert_eq!(bits(&a.model), bits(&b.model));
        assert_eq!(a, b);
        assert!(a.train.auc > 0.8, "{:?}", a.train);
        // Signs of the generating logit: amount +, merchant_z +, known -.
        assert!(a.model.weights[0] > 0.5 && a.model.weights[2] > 0.5 && a.model.weights[3] < -0.5);
        // Flipped labels: a model that ranks backwards on the true labels.
        let flipped: Vec<bool> = y.iter().map(|l| !l).collect();
        let bad = fit(&x, 4, &flipped, &params).unwrap();
        assert!(evaluate(&bad, &x, &y).unwrap().auc < 0.2);
        let flip = Params {
            flip_labels: true,
            ..params
        };
        let t = train(&x, 4, &y, &flip).unwrap();
        assert_eq!(t.model, bad);
        assert!(t.train.auc < 0.2, "metrics against the labels given");
    }

    /// The exact bits of one fit, pinned: every target (native, wasm32) must give
    /// these (no platform math in `fit`). Update them only with a deliberate
    /// change of the algorithm.
    #[test]
    fn golden_bits() {
        let (x, y) = synthetic(500, 5);
        let m = fit(&x, 4, &y, &Params::default()).unwrap();
        let mut bits: Vec<u64> = m.weights.iter().map(|w| w.to_bits()).collect();
        bits.push(m.bias.to_bits());
        let golden: [u64; 5] = [
            0x3ff5ea7ca447d9fe,
            0xbf98324c69531afc,
            0x3ffeb6882adb2761,
            0xc0026d536402592a,
            0xc0175b553156ebca,
        ];
        assert_eq!(bits, golden, "{m:?}");
    }

    #[test]
    fn holdout_split_is_seeded_stratified_and_disjoint() {
        let (_, y) = synthetic(1000, 3);
        let (t1, h1) = split(&y, 0.25, 9);
        let (t2, h2) = split(&y, 0.25, 9);
        assert_eq!((&t1, &h1), (&t2, &h2));
        let (_, h3) = split(&y, 0.25, 10);
        assert_ne!(h1, h3);
        let mut all: Vec<usize> = t1.iter().chain(&h1).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let pos = y.iter().filter(|&&l| l).count();
        let held_pos = h1.iter().filter(|&&i| y[i]).count();
        assert_eq!(held_pos, pos / 4);
        assert_eq!(h1.len() - held_pos, (1000 - pos) / 4);

        let (x, y) = synthetic(1000, 3);
        let t = train(
            &x,
            4,
            &y,
            &Params {
                holdout: 0.25,
                ..Params::default()
            },
        )
        .unwrap();
        let h = t.holdout.unwrap();
        assert_eq!(t.train.rows + h.rows, 1000);
        assert!(h.auc > 0.75, "{h:?}");
    }

    #[test]
    fn bad_input_is_an_error() {
        let p = Params::default();
        let e = fit(&[1.0, 2.0, 3.0], 2, &[true, false], &p).unwrap_err();
        assert!(e.contains("3 values"), "{e}");
        assert!(fit(&[], 2, &[], &p).unwrap_err().contains("no rows"));
        assert!(fit(&[1.0], 0, &[true], &p).is_err());
        let e = fit(&[1.0, 2.0], 1, &[true, true], &p).unwrap_err();
        assert!(e.contains("both classes"), "{e}");
        let e = fit(&[1.0, f64::NAN], 1, &[true, false], &p).unwrap_err();
        assert!(e.contains("row 1") && e.contains("finite"), "{e}");
        let bad = Params {
            learning_rate: 0.0,
            ..p
        };
        assert!(fit(&[1.0, 2.0], 1, &[true, false], &bad).is_err());
        // A constant feature is fine: it gets weight 0.
        let m = fit(
            &[5.0, 0.0, 5.0, 1.0, 5.0, 1.0],
            2,
            &[false, true, false],
            &p,
        )
        .unwrap();
        assert_eq!(m.weights[0], 0.0);
        assert!(Model {
            weights: vec![1.0, 2.0],
            bias: 0.0
        }
        .predict(&[1.0, 2.0, 3.0])
        .is_err());
    }

    #[test]
    fn params_from_text() {
        let mut p = Params::default();
        p.set("seed", "7").unwrap();
        p.set("epochs", " 20 ").unwrap();
        p.set("learning_rate", "0.5").unwrap();
        p.set("l2", "0").unwrap();
        p.set("holdout", "0.2").unwrap();
        assert_eq!(
            p,
            Params {
                seed: 7,
                epochs: 20,
                learning_rate: 0.5,
                l2: 0.0,
                holdout: 0.2,
                flip_labels: false,
            }
        );
        assert!(p
            .set("momentum", "1")
            .unwrap_err()
            .contains("unknown parameter `momentum`"));
        assert!(p.set("epochs", "0").unwrap_err().contains("`epochs`"));
        assert!(p.set("l2", "-1").is_err());
        assert!(p.set("learning_rate", "NaN").is_err());
        assert!(p.set("holdout", "1").is_err());
        assert!(p.set("seed", "-3").is_err());
    }

    #[test]
    fn auc_by_hand() {
        // Pairs (pos, neg): 0.8>0.1 ✓, 0.8>0.4 ✓, 0.35>0.1 ✓, 0.35<0.4 ✗ → 3/4.
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &labels).unwrap(), 0.75);
        // Ties count half: 0.5 vs 0.1 ✓, 0.5 vs 0.5 ½, 0.9 ✓✓ → 3.5/4.
        assert_eq!(auc(&[0.1, 0.5, 0.5, 0.9], &labels).unwrap(), 0.875);
        assert_eq!(auc(&[0.5, 0.5, 0.5, 0.9], &labels).unwrap(), 0.75);
        assert_eq!(auc(&[0.3; 4], &labels).unwrap(), 0.5);
        assert_eq!(auc(&[0.9, 0.8, 0.1, 0.2], &labels).unwrap(), 0.0);
        assert!(auc(&[0.1, 0.2], &[true, true])
            .unwrap_err()
            .contains("both classes"));
        assert!(auc(&[0.1], &[true, false]).is_err());
        assert!(auc(&[f64::NAN, 0.2], &[true, false]).is_err());
        assert!(auc(&[], &[]).is_err());
    }

    #[test]
    fn log_loss_and_accuracy_by_hand() {
        // -(ln 0.9 + ln 0.8) / 2
        let ll = log_loss(&[0.9, 0.2], &[true, false]).unwrap();
        assert!(close(ll, -(0.9f64.ln() + 0.8f64.ln()) / 2.0, 1e-15));
        // A confident mistake is clipped at eps: -ln(eps) = 36.04...
        let ll = log_loss(&[0.0], &[true]).unwrap();
        assert!(close(ll, -(f64::EPSILON.ln()), 1e-12) && close(ll, 36.04365338911715, 1e-9));
        assert!(log_loss(&[1.1], &[true]).is_err());
        assert!(log_loss(&[0.5], &[true, false]).is_err());
        assert_eq!(
            accuracy(&[0.9, 0.5, 0.49, 0.1], &[true, true, true, false], 0.5).unwrap(),
            0.75
        );
        assert!(accuracy(&[], &[], 0.5).is_err());
    }
}
