//! Drift statistics, computed the way the reference libraries compute them, so a
//! score from a guest reads the same as one from a notebook:
//!
//! - [`psi`] / [`psi_categorical`] / [`psi_from_counts`]: the population stability
//!   index exactly as Evidently 0.7.23's `psi` stat test computes it
//!   (`evidently.legacy.calculations.stattests.psi._psi` over `get_binned_data`).
//! - [`jensen_shannon`] / [`jensen_shannon_categorical`] /
//!   [`jensen_shannon_from_counts`]: the Jensen–Shannon *distance* exactly as
//!   Evidently 0.7.23's `jensenshannon` stat test computes it (same binning, no zero
//!   replacement, `scipy.spatial.distance.jensenshannon`, natural log).
//! - [`ks_2samp`]: `scipy.stats.ks_2samp(a, b)` of SciPy 1.14.1 with its defaults
//!   (two-sided, `method="auto"`), statistic and p-value; with the pieces it uses,
//!   [`ks_exact_probability`] (`_attempt_exact_2kssamp`), [`kstwo_sf`]
//!   (`scipy.stats.kstwo.sf`) and [`smirnov`] (`scipy.special.smirnov`).
//! - [`Reference`], [`Window`], [`CategoricalWindow`]: a feature's reference sample,
//!   and bounded windows of current values that evaluate all three against it.
//!
//! Inputs are `f64` (Evidently's numerical columns as float64). NaN is refused with
//! [`DriftError::NaN`] everywhere (SciPy would propagate it into a NaN result,
//! Evidently's binning would drop it); empty samples are refused with
//! [`DriftError::Empty`]. Infinities are accepted where the reference libraries
//! accept them (KS; PSI/JS when the reference has at most 20 distinct values, so
//! each value is its own bin) and refused with [`DriftError::NonFinite`] where NumPy
//! raises (the Sturges histogram). [`Reference`] and the windows refuse non-finite
//! values up front, so evaluating a window never fails on its values.
//!
//! Agreement with the reference libraries is checked to 1e-9 by
//! `tests/drift_reference.rs` on numbers that `tests/drift_reference.py` computed
//! with the pinned Evidently, SciPy, NumPy and pandas. Sums run in NumPy's
//! pairwise order; the discrete path orders its bins by value, where Evidently
//! uses a Python set's order, so the last bit of a sum may differ.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Evidently's default PSI threshold: drift when `psi >= 0.1`.
pub const PSI_THRESHOLD: f64 = 0.1;
/// Evidently's default Jensen–Shannon threshold: drift when `distance >= 0.1`.
pub const JENSEN_SHANNON_THRESHOLD: f64 = 0.1;
/// Evidently's default KS threshold: drift when `p_value <= 0.05`.
pub const KS_THRESHOLD: f64 = 0.05;
/// `ks_2samp`'s `MAX_AUTO_N`: `method="auto"` is exact when both samples are at
/// most this large, asymptotic otherwise.
pub const KS_MAX_AUTO_N: usize = 10_000;
/// Evidently bins a numerical column with a Sturges histogram when its
/// reference has more than this many distinct values, and one bin per distinct
/// value otherwise (`get_binned_data`: `reference.nunique() > 20`).
pub const DISCRETE_MAX_DISTINCT: usize = 20;

/// Which sample an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// The reference (training) sample.
    Reference,
    /// The current (serving) sample.
    Current,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sample::Reference => "reference",
            Sample::Current => "current",
        })
    }
}

/// Why a drift statistic could not be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum DriftError {
    /// The sample has no values.
    Empty(Sample),
    /// The sample holds a NaN.
    NaN(Sample),
    /// A value is infinite where the computation needs finite values (the Sturges
    /// histogram, as NumPy's "autodetected range ... is not finite"; a
    /// [`Reference`] or window value).
    NonFinite(Sample),
    /// A `*_sorted` function was given a sample that is not sorted ascending.
    NotSorted(Sample),
    /// The pooled range is too narrow for the Sturges bins to be distinct
    /// (NumPy's "Too many bins for data range").
    TooManyBins,
    /// Count vectors of different lengths, or counts that sum to zero.
    Counts(String),
    /// A window was asked for capacity 0.
    ZeroCapacity,
    /// The memory for a window or a sample could not be reserved.
    Allocation,
    /// A numerical window was evaluated against a categorical reference or the
    /// other way round.
    KindMismatch,
    /// [`Reference::from_text`] could not read its input.
    Parse(String),
}

impl fmt::Display for DriftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftError::Empty(s) => write!(f, "the {s} sample is empty"),
            DriftError::NaN(s) => write!(f, "the {s} sample holds a NaN"),
            DriftError::NonFinite(s) => write!(f, "the {s} sample holds an infinite value"),
            DriftError::NotSorted(s) => write!(f, "the {s} sample is not sorted ascending"),
            DriftError::TooManyBins => {
                f.write_str("the pooled range is too narrow for distinct Sturges bins")
            }
            DriftError::Counts(why) => write!(f, "invalid counts: {why}"),
            DriftError::ZeroCapacity => f.write_str("a window needs a capacity of at least 1"),
            DriftError::Allocation => f.write_str("could not reserve memory for the sample"),
            DriftError::KindMismatch => f.write_str(
                "numerical values compared with a categorical reference (or the reverse)",
            ),
            DriftError::Parse(why) => write!(f, "invalid drift reference text: {why}"),
        }
    }
}

impl std::error::Error for DriftError {}

/// `psi >= threshold`, Evidently's PSI decision.
pub fn psi_drifted(psi: f64, threshold: f64) -> bool {
    psi >= threshold
}

/// `distance >= threshold`, Evidently's Jensen–Shannon decision.
pub fn jensen_shannon_drifted(distance: f64, threshold: f64) -> bool {
    distance >= threshold
}

/// `p_value <= threshold`, Evidently's KS decision.
pub fn ks_drifted(p_value: f64, threshold: f64) -> bool {
    p_value <= threshold
}

// ---------------------------------------------------------------------------
// Sample preparation
// ---------------------------------------------------------------------------

fn check_values(values: &[f64], which: Sample) -> Result<(), DriftError> {
    if values.is_empty() {
        return Err(DriftError::Empty(which));
    }
    if values.iter().any(|v| v.is_nan()) {
        return Err(DriftError::NaN(which));
    }
    Ok(())
}

fn sorted_copy(values: &[f64], which: Sample) -> Result<Vec<f64>, DriftError> {
    check_values(values, which)?;
    let mut v = Vec::new();
    v.try_reserve_exact(values.len())
        .map_err(|_| DriftError::Allocation)?;
    v.extend_from_slice(values);
    v.sort_unstable_by(f64::total_cmp);
    Ok(v)
}

/// Number of elements `< x` (NumPy `searchsorted(side="left")`).
fn count_below(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|&v| v < x)
}

/// Number of elements `<= x` (NumPy `searchsorted(side="right")`).
fn count_at_most(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|&v| v <= x)
}

/// `nunique()` of a sorted NaN-free sample (`0.0 == -0.0`).
fn distinct_sorted(sorted: &[f64]) -> usize {
    let mut n = 0;
    let mut last: Option<f64> = None;
    for &v in sorted {
        if last != Some(v) {
            n += 1;
            last = Some(v);
        }
    }
    n
}

/// NumPy's pairwise summation of a float64 array (`np.sum`): the first element,
/// plus the pairwise sum (8-way unrolled blocks of up to 128) of the rest.
fn np_sum(a: &[f64]) -> f64 {
    match a.split_first() {
        None => 0.0,
        Some((first, rest)) => *first + pairwise_sum(rest),
    }
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

// ---------------------------------------------------------------------------
// Binning (Evidently `get_binned_data`)
// ---------------------------------------------------------------------------

/// The shares per bin that Evidently's `get_binned_data` returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// The reference's share of each bin.
    pub reference: Vec<f64>,
    /// The current sample's share of each bin.
    pub current: Vec<f64>,
}

/// `numpy.histogram_bin_edges(pooled, bins="sturges")` for a pooled sample of
/// `n` values with minimum `min` and maximum `max` (both finite):
/// width `= (max - min) / (log2(n) + 1)`, `ceil((max - min) / width)` bins, edges
/// `= linspace(min, max, bins + 1)` computed as NumPy computes them
/// (`i * step + min`, the last edge set to `max`).
pub fn sturges_edges(min: f64, max: f64, n: usize) -> Result<Vec<f64>, DriftError> {
    if !(min.is_finite() && max.is_finite()) {
        return Err(DriftError::NonFinite(Sample::Reference));
    }
    let (mut first, mut last) = (min, max);
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let width = if n == 0 {
        0.0
    } else {
        (max - min) / ((n as f64).log2() + 1.0)
    };
    let bins = if n == 0 || width == 0.0 {
        1usize
    } else {
        let b = ((last - first) / width).ceil();
        if !(b.is_finite() && (1.0..=1e7).contains(&b)) {
            return Err(DriftError::TooManyBins);
        }
        b as usize
    };
    let mut edges = Vec::new();
    edges
        .try_reserve_exact(bins + 1)
        .map_err(|_| DriftError::Allocation)?;
    let delta = last - first;
    let div = bins as f64;
    let step = delta / div;
    for i in 0..=bins {
        let y = if step == 0.0 {
            (i as f64 / div) * delta
        } else {
            i as f64 * step
        };
        edges.push(y + first);
    }
    if let Some(e) = edges.last_mut() {
        *e = last;
    }
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DriftError::TooManyBins);
    }
    Ok(edges)
}

/// `numpy.histogram(sorted, edges)[0]` for explicit edges: bin `i` counts
/// `edges[i] <= x < edges[i+1]`, the last bin is closed on the right, values
/// outside the edges are not counted.
fn histogram_sorted(sorted: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut cum = Vec::with_capacity(edges.len());
    for (i, &e) in edges.iter().enumerate() {
        if i + 1 == edges.len() {
            cum.push(count_at_most(sorted, e));
        } else {
            cum.push(count_below(sorted, e));
        }
    }
    cum.windows(2).map(|w| (w[1] - w[0]) as u64).collect()
}

/// Evidently's zero replacement (`feel_zeroes=True`): zero shares become
/// `min(nonzero) / 10**6` when `min(nonzero) <= 0.0001`, `0.0001` otherwise.
fn fill_zeroes(shares: &mut [f64], which: Sample) -> Result<(), DriftError> {
    let min = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return Err(DriftError::Empty(which));
    }
    let fill = if min <= 0.0001 { min / 1e6 } else { 0.0001 };
    for s in shares.iter_mut() {
        if *s == 0.0 {
            *s = fill;
        }
    }
    Ok(())
}

fn shares_from_counts(counts: &[u64], total: u64) -> Vec<f64> {
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// Evidently's `get_binned_data` for a numerical column, on sorted NaN-free
/// samples: a Sturges histogram of the pooled sample when the reference has more
/// than 20 distinct values, one bin per distinct value of either sample
/// otherwise; zero shares replaced when `fill` (PSI) and kept otherwise (JS).
fn binned_sorted(reference: &[f64], current: &[f64], fill: bool) -> Result<Shares, DriftError> {
    if reference.is_empty() {
        return Err(DriftError::Empty(Sample::Reference));
    }
    if current.is_empty() {
        return Err(DriftError::Empty(Sample::Current));
    }
    let (mut r, mut c) = if distinct_sorted(reference) > DISCRETE_MAX_DISTINCT {
        for (s, which) in [(reference, Sample::Reference), (current, Sample::Current)] {
            if s.iter().any(|v| !v.is_finite()) {
                return Err(DriftError::NonFinite(which));
            }
        }
        let min = reference[0].min(current[0]);
        let max = reference[reference.len() - 1].max(current[current.len() - 1]);
        let edges = sturges_edges(min, max, reference.len() + current.len())?;
        (
            shares_from_counts(&histogram_sorted(reference, &edges), reference.len() as u64),
            shares_from_counts(&histogram_sorted(current, &edges), current.len() as u64),
        )
    } else {
        let (rc, cc) = discrete_counts(reference, current);
        (
            shares_from_counts(&rc, reference.len() as u64),
            shares_from_counts(&cc, current.len() as u64),
        )
    };
    if fill {
        fill_zeroes(&mut r, Sample::Reference)?;
        fill_zeroes(&mut c, Sample::Current)?;
    }
    Ok(Shares {
        reference: r,
        current: c,
    })
}

/// Counts per distinct value of the union of two sorted samples, in value order.
fn discrete_counts(a: &[f64], b: &[f64]) -> (Vec<u64>, Vec<u64>) {
    let (mut ca, mut cb) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        let (si, sj) = (i, j);
        while i < a.len() && a[i] == v {
            i += 1;
        }
        while j < b.len() && b[j] == v {
            j += 1;
        }
        ca.push((i - si) as u64);
        cb.push((j - sj) as u64);
    }
    (ca, cb)
}

/// Evidently 0.7.23 `get_binned_data(reference, current, ColumnType.Numerical, n,
/// feel_zeroes)` for float64 columns: bins and per-bin shares (see the module
/// notes on ordering of the discrete bins).
pub fn binned_shares(
    reference: &[f64],
    current: &[f64],
    feel_zeroes: bool,
) -> Result<Shares, DriftError> {
    let r = sorted_copy(reference, Sample::Reference)?;
    let c = sorted_copy(current, Sample::Current)?;
    binned_sorted(&r, &c, feel_zeroes)
}

// ---------------------------------------------------------------------------
// PSI and Jensen–Shannon
// ---------------------------------------------------------------------------

/// `np.sum((p - q) * np.log(p / q))` (Evidently `_psi`).
fn psi_of_shares(s: &Shares) -> f64 {
    let terms: Vec<f64> = s
        .reference
        .iter()
        .zip(&s.current)
        .map(|(&p, &q)| (p - q) * (p / q).ln())
        .collect();
    np_sum(&terms)
}

/// `scipy.special.rel_entr(x, y)`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural log): both vectors
/// normalized to sum 1, `m = (p + q) / 2`, `sqrt((Σ rel_entr(p, m) + Σ
/// rel_entr(q, m)) / 2)`.
fn jensen_shannon_of_shares(s: &Shares) -> f64 {
    let sp = np_sum(&s.reference);
    let sq = np_sum(&s.current);
    let p: Vec<f64> = s.reference.iter().map(|&v| v / sp).collect();
    let q: Vec<f64> = s.current.iter().map(|&v| v / sq).collect();
    let m: Vec<f64> = p.iter().zip(&q).map(|(&a, &b)| (a + b) / 2.0).collect();
    let left: Vec<f64> = p.iter().zip(&m).map(|(&a, &b)| rel_entr(a, b)).collect();
    let right: Vec<f64> = q.iter().zip(&m).map(|(&a, &b)| rel_entr(a, b)).collect();
    let js = np_sum(&left) + np_sum(&right);
    (js / 2.0).sqrt()
}

/// PSI of a numerical feature exactly as Evidently 0.7.23's default `psi` stat
/// test computes it (`_psi(reference, current, ColumnType.Numerical, 0.1)`):
/// `get_binned_data` with zero replacement (Sturges histogram of the pooled
/// sample when the reference has more than 20 distinct values, one bin per
/// distinct value otherwise), then `Σ (ref − cur) · ln(ref / cur)`. Drift when
/// the result is `>= PSI_THRESHOLD` ([`psi_drifted`]).
pub fn psi(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let r = sorted_copy(reference, Sample::Reference)?;
    let c = sorted_copy(current, Sample::Current)?;
    psi_sorted(&r, &c)
}

/// [`psi`] on samples already sorted ascending (NaN-free; checked).
pub fn psi_sorted(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    check_sorted(reference, Sample::Reference)?;
    check_sorted(current, Sample::Current)?;
    Ok(psi_of_shares(&binned_sorted(reference, current, true)?))
}

/// Jensen–Shannon distance of a numerical feature exactly as Evidently 0.7.23's
/// `jensenshannon` stat test computes it: `get_binned_data` *without* zero
/// replacement, then `scipy.spatial.distance.jensenshannon(ref, cur)` (base e).
/// Drift when `>= JENSEN_SHANNON_THRESHOLD` ([`jensen_shannon_drifted`]).
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    let r = sorted_copy(reference, Sample::Reference)?;
    let c = sorted_copy(current, Sample::Current)?;
    jensen_shannon_sorted(&r, &c)
}

/// [`jensen_shannon`] on samples already sorted ascending (NaN-free; checked).
pub fn jensen_shannon_sorted(reference: &[f64], current: &[f64]) -> Result<f64, DriftError> {
    check_sorted(reference, Sample::Reference)?;
    check_sorted(current, Sample::Current)?;
    Ok(jensen_shannon_of_shares(&binned_sorted(
        reference, current, false,
    )?))
}

fn check_sorted(values: &[f64], which: Sample) -> Result<(), DriftError> {
    check_values(values, which)?;
    if values.windows(2).any(|w| w[0] > w[1]) {
        return Err(DriftError::NotSorted(which));
    }
    Ok(())
}

fn count_shares(reference: &[u64], current: &[u64], fill: bool) -> Result<Shares, DriftError> {
    if reference.len() != current.len() {
        return Err(DriftError::Counts(format!(
            "{} reference bins, {} current bins",
            reference.len(),
            current.len()
        )));
    }
    let total = |c: &[u64], which| -> Result<u64, DriftError> {
        let t = c
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b))
            .ok_or_else(|| DriftError::Counts("counts overflow u64".into()))?;
        if t == 0 {
            Err(DriftError::Empty(which))
        } else {
            Ok(t)
        }
    };
    let tr = total(reference, Sample::Reference)?;
    let tc = total(current, Sample::Current)?;
    let mut r = shares_from_counts(reference, tr);
    let mut c = shares_from_counts(current, tc);
    if fill {
        fill_zeroes(&mut r, Sample::Reference)?;
        fill_zeroes(&mut c, Sample::Current)?;
    }
    Ok(Shares {
        reference: r,
        current: c,
    })
}

/// PSI from counts per category (or bin), aligned: `reference[i]` and
/// `current[i]` count the same category, over the union of both samples'
/// categories (a category one side lacks has count 0). This is Evidently's
/// categorical path (`value_counts` over the union of keys, zero replacement,
/// `Σ (ref − cur) · ln(ref / cur)`).
pub fn psi_from_counts(reference: &[u64], current: &[u64]) -> Result<f64, DriftError> {
    Ok(psi_of_shares(&count_shares(reference, current, true)?))
}

/// Jensen–Shannon distance from aligned counts per category (see
/// [`psi_from_counts`]): Evidently's categorical `jensenshannon` (no zero
/// replacement).
pub fn jensen_shannon_from_counts(reference: &[u64], current: &[u64]) -> Result<f64, DriftError> {
    Ok(jensen_shannon_of_shares(&count_shares(
        reference, current, false,
    )?))
}

/// Aligned counts per category over the union of both samples' categories.
fn category_counts<T: Ord>(reference: &[T], current: &[T]) -> (Vec<u64>, Vec<u64>) {
    let mut map: BTreeMap<&T, (u64, u64)> = BTreeMap::new();
    for v in reference {
        map.entry(v).or_default().0 += 1;
    }
    for v in current {
        map.entry(v).or_default().1 += 1;
    }
    map.values().copied().unzip()
}

/// PSI of a categorical feature exactly as Evidently 0.7.23's `psi` stat test
/// computes it for `ColumnType.Categorical`: one bin per category of either
/// sample, zero replacement, `Σ (ref − cur) · ln(ref / cur)`.
pub fn psi_categorical<T: Ord>(reference: &[T], current: &[T]) -> Result<f64, DriftError> {
    nonempty(reference.len(), current.len())?;
    let (r, c) = category_counts(reference, current);
    psi_from_counts(&r, &c)
}

/// Jensen–Shannon distance of a categorical feature exactly as Evidently
/// 0.7.23's `jensenshannon` stat test computes it for `ColumnType.Categorical`.
pub fn jensen_shannon_categorical<T: Ord>(
    reference: &[T],
    current: &[T],
) -> Result<f64, DriftError> {
    nonempty(reference.len(), current.len())?;
    let (r, c) = category_counts(reference, current);
    jensen_shannon_from_counts(&r, &c)
}

fn nonempty(r: usize, c: usize) -> Result<(), DriftError> {
    if r == 0 {
        Err(DriftError::Empty(Sample::Reference))
    } else if c == 0 {
        Err(DriftError::Empty(Sample::Current))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Two-sample Kolmogorov–Smirnov (scipy.stats.ks_2samp)
// ---------------------------------------------------------------------------

/// How the KS p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    /// The exact distribution (both samples at most [`KS_MAX_AUTO_N`]).
    Exact,
    /// `kstwo.sf(d, round(m·n/(m+n)))`: larger samples, or the exact
    /// computation failed.
    Asymptotic,
}

/// Result of [`ks_2samp`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The statistic D, as `ks_2samp` reports it (on the exact path, rounded to
    /// the lattice: `round(D · lcm) / lcm`).
    pub statistic: f64,
    /// The two-sided p-value, in `[0, 1]`.
    pub p_value: f64,
    /// Which computation gave the p-value.
    pub method: KsMethod,
}

impl KsResult {
    /// `p_value <= KS_THRESHOLD`.
    pub fn drifted(&self) -> bool {
        ks_drifted(self.p_value, KS_THRESHOLD)
    }
}

/// `scipy.stats.ks_2samp(a, b)` of SciPy 1.14.1 with its defaults (two-sided,
/// `method="auto"`): D is the largest `|F_a(x) − F_b(x)|` over the pooled values
/// (ECDFs as `searchsorted(side="right") / n`), and the p-value is exact when
/// `max(n_a, n_b) <= 10000` and `kstwo.sf(D, round(m·n/(m+n)))` otherwise, or
/// when the exact computation fails. Infinite values are accepted (as SciPy
/// does); NaN is refused.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<KsResult, DriftError> {
    let a = sorted_copy(a, Sample::Reference)?;
    let b = sorted_copy(b, Sample::Current)?;
    ks_2samp_sorted(&a, &b)
}

/// [`ks_2samp`] on samples already sorted ascending (NaN-free; checked).
pub fn ks_2samp_sorted(a: &[f64], b: &[f64]) -> Result<KsResult, DriftError> {
    check_sorted(a, Sample::Reference)?;
    check_sorted(b, Sample::Current)?;
    let d = ks_statistic_sorted(a, b);
    Ok(ks_p_value(a.len(), b.len(), d))
}

/// `max(cdf_a − cdf_b)` and `clip(−min(cdf_a − cdf_b), 0, 1)` over the pooled
/// values; D is the second when it is larger, the first otherwise.
fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] == v {
            i += 1;
        }
        while j < b.len() && b[j] == v {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s {
        min_s
    } else {
        max_s
    }
}

/// The p-value `ks_2samp` gives for statistic `d` and sample sizes `n1`, `n2`
/// (two-sided, `method="auto"`); `statistic` is `d` as `ks_2samp` reports it.
/// A size of 0 or a NaN `d` gives a NaN p-value.
pub fn ks_p_value(n1: usize, n2: usize, d: f64) -> KsResult {
    let mut d = d;
    if n1.max(n2) <= KS_MAX_AUTO_N && n1 > 0 && n2 > 0 {
        let (ok, d_exact, p) = attempt_exact(n1 as u64, n2 as u64, d);
        if ok {
            return KsResult {
                statistic: d_exact,
                p_value: p.clamp(0.0, 1.0),
                method: KsMethod::Exact,
            };
        }
        d = d_exact;
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = m * n / (m + n);
    let p = kstwo_sf(d, en.round_ties_even());
    KsResult {
        statistic: d,
        p_value: if p.is_nan() { p } else { p.clamp(0.0, 1.0) },
        method: KsMethod::Asymptotic,
    }
}

/// SciPy's `_attempt_exact_2kssamp(n1, n2, gcd(n1, n2), d, "two-sided")`:
/// `Some((d_lattice, p))` when it succeeds, `None` when SciPy would switch to
/// the asymptotic p-value. `h = round(d · lcm)`, `d_lattice = h / lcm`, `p = 1`
/// when `h == 0`, else `_compute_prob_outside_square(n, h)` for equal sizes and
/// `_compute_outer_prob_inside_method(n1, n2, g, h)` otherwise; a `p` outside
/// `[0, 1]` counts as failure, and so (as in SciPy's `method="exact"`) does a
/// lattice too large for int32. The cost grows as `n1 · n2` in the worst case.
pub fn ks_exact_probability(n1: usize, n2: usize, d: f64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 || d.is_nan() {
        return None;
    }
    let (ok, d, p) = attempt_exact(n1 as u64, n2 as u64, d);
    ok.then_some((d, p))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn attempt_exact(n1: u64, n2: u64, d: f64) -> (bool, f64, f64) {
    let g = gcd(n1, n2);
    // SciPy's guard for an explicit method="exact": the lattice must stay
    // within int32 (auto mode never gets near it: both sizes <= 10000).
    if n1 / g >= i32::MAX as u64 / (n2 / g) {
        return (false, d, f64::NAN);
    }
    let lcm = (n1 / g) * n2;
    let hf = (d * lcm as f64).round_ties_even();
    let d = hf / lcm as f64;
    if !(hf.is_finite() && hf >= 0.0 && hf <= lcm as f64) {
        return (false, d, f64::NAN);
    }
    let h = hf as u64;
    if h == 0 {
        return (true, d, 1.0);
    }
    let prob = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    if !(0.0..=1.0).contains(&prob) {
        return (false, d, prob);
    }
    (true, d, prob)
}

/// SciPy `_compute_prob_outside_square(n, h)`: `Pr(D_{n,n} >= h/n)` by the
/// Horner-like alternating sum.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0f64;
    let mut k = (n as f64 / h as f64).floor() as i64;
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// SciPy `_compute_outer_prob_inside_method(m, n, g, h)` (`_stats_pythran.py`):
/// the proportion of lattice paths from (0, 0) to (m, n) that leave
/// `|x/m − y/n| < h/lcm(m, n)`, by Viehmann's recursion for 1 − p. NaN if an
/// index would leave its window (SciPy would fail; the caller then falls back
/// to the asymptotic p-value).
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (m, n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    let mg = m / g;
    let ng = n / g;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1);
    if len_a <= 0 {
        return f64::NAN;
    }
    let mut a = vec![1.0f64; len_a as usize];
    for v in a.iter_mut().take(maxj.max(0) as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let lastminj = minj;
        let lastlen = curlen;
        minj = ((((ng * i - h) as f64) / mg as f64).floor() as i64 + 1).max(0);
        minj = minj.min(n);
        maxj = ((((ng * i + h) as f64) / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let src = jj + minj - lastminj;
            let Some(&prev) = usize::try_from(src).ok().and_then(|s| a.get(s)) else {
                return f64::NAN;
            };
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            match a.get_mut(jj as usize) {
                Some(slot) => *slot = val,
                None => return f64::NAN,
            }
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = ((maxj - minj + (lastlen - curlen)) as usize).min(a.len());
            for v in a.iter_mut().take(end).skip(start) {
                *v = 1.0;
            }
        }
    }
    match usize::try_from(maxj - minj - 1).ok().and_then(|k| a.get(k)) {
        Some(&p) => p,
        None => f64::NAN,
    }
}

// ---------------------------------------------------------------------------
// kstwo.sf (scipy/stats/_ksstats.py) and scipy.special.smirnov
// ---------------------------------------------------------------------------

const E128: i32 = 128;
const EP128: f64 = 340282366920938463463374607431768211456.0; // 2^128
const EM128: f64 = 1.0 / EP128;
const MIN_LOG_PG: f64 = -708.0;
/// cephes `MINLOG`.
const MINLOG: f64 = -7.451_332_191_019_412e2;

/// `x · 2^e` (C `ldexp`), in steps that keep the factor representable.
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    let pow2 = |k: i32| f64::from_bits(((k + 1023) as u64) << 52);
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

fn select_and_clip(cdfprob: f64, sfprob: f64, cdf: bool) -> f64 {
    let p = if cdf { cdfprob } else { sfprob };
    p.clamp(0.0, 1.0)
}

/// `scipy.stats.kstwo.sf(d, n)`: the survival function of the two-sided
/// one-sample KS statistic `D_n`, as SciPy 1.14.1 computes it (`1.0` for
/// `d <= 0.5/n`, `0.0` for `d >= 1`, otherwise `_kolmogn(n, d, cdf=False)`, the
/// Simard–L'Ecuyer selection among Ruben–Gambino, Durbin/Marsaglia–Tsang–Wang,
/// Pomeranz, Pelz–Good and `2·smirnov(n, d)`). NaN when `n` is not an integer
/// `>= 1` or `d` is NaN.
pub fn kstwo_sf(d: f64, n: f64) -> f64 {
    if d.is_nan() || !n.is_finite() || n < 1.0 || n != n.round() {
        return f64::NAN;
    }
    if d <= 0.5 / n {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    if n > (1u64 << 53) as f64 {
        return f64::NAN;
    }
    kolmogn(n as u64, d, false)
}

/// `_log_nfactorial_div_n_pow_n(n)`: `log(n! / n^n)` by Stirling.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // SciPy's literals, verbatim.
    #[allow(clippy::excessive_precision)]
    const STIRLING: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let x = rn / n;
    let mut poly = 0.0;
    for c in STIRLING {
        poly = poly * x + c;
    }
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// `_kolmogn(n, x, cdf)`.
fn kolmogn(n: u64, x: f64, cdf: bool) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    if x >= 1.0 {
        return select_and_clip(1.0, 0.0, cdf);
    }
    if x <= 0.0 {
        return select_and_clip(0.0, 1.0, cdf);
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return select_and_clip(0.0, 1.0, cdf);
        }
        let prob = if n <= 140 {
            let mut prod = 1.0;
            for k in 1..=n {
                prod *= k as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            prod
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return select_and_clip(prob, 1.0 - prob, cdf);
    }
    if t >= nf - 1.0 {
        let prob = 2.0 * (1.0 - x).powf(nf);
        return select_and_clip(1.0 - prob, prob, cdf);
    }
    if x >= 0.5 {
        let prob = 2.0 * smirnov(n, x);
        return select_and_clip(1.0 - prob, prob, cdf);
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            let prob = kolmogn_dmtw(n, x, true);
            return select_and_clip(prob, 1.0 - prob, cdf);
        }
        if nxsquared <= 4.0 {
            let prob = kolmogn_pomeranz(n, x, true);
            return select_and_clip(prob, 1.0 - prob, cdf);
        }
        let prob = 2.0 * smirnov(n, x);
        return select_and_clip(1.0 - prob, prob, cdf);
    }
    if !cdf {
        if nxsquared >= 370.0 {
            return 0.0;
        }
        if nxsquared >= 2.2 {
            let prob = 2.0 * smirnov(n, x);
            return prob.clamp(0.0, 1.0);
        }
    }
    let cdfprob = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw(n, x, true)
    } else {
        kolmogn_pelz_good(n, x)
    };
    select_and_clip(cdfprob, 1.0 - cdfprob, cdf)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..m {
                c[i * m + j] += aik * b[k * m + j];
            }
        }
    }
    c
}

/// `_kolmogn_DMTW(n, d, cdf)`: Durbin's matrix algorithm, as Marsaglia, Tsang
/// and Wang compute it.
fn kolmogn_dmtw(n: u64, d: f64, cdf: bool) -> f64 {
    if d >= 1.0 {
        return select_and_clip(1.0, 0.0, cdf);
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return select_and_clip(0.0, 1.0, cdf);
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = vec![0.0f64; m * m];
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0f64; m];
    let mut fac = 1.0f64;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        // H[i - 1:, i] = w[:m - i + 1]
        for (r, &wv) in (i - 1..m).zip(w.iter()) {
            hm[r * m + i] = wv;
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut hpwr = vec![0.0f64; m * m];
    for i in 0..m {
        hpwr[i * m + i] = 1.0;
    }
    let mut nn = n;
    let mut expnt: i32 = 0;
    let mut hexpnt: i32 = 0;
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = matmul(&hpwr, &hm, m);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm, m);
        hexpnt = hexpnt.saturating_mul(2);
        if hm[(k - 1) * m + (k - 1)].abs() > EP128 {
            for x in hm.iter_mut() {
                *x /= EP128;
            }
            hexpnt += E128;
        }
        nn /= 2;
    }
    let mut p = hpwr[(k - 1) * m + (k - 1)];
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    select_and_clip(p, 1.0 - p, cdf)
}

/// `_pomeranz_compute_j1j2(i, n, ll, ceilf, roundf)`.
fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1) / 2, (i + 1) % 2);
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// `_kolmogn_Pomeranz(n, x, cdf)`: Pomeranz's recursion.
fn kolmogn_pomeranz(n: u64, x: f64, cdf: bool) -> f64 {
    let ni = n as i64;
    let nf = n as f64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![0.0f64; npwrs];
    let mut twogpower = vec![0.0f64; npwrs];
    let mut onem2gpower = vec![0.0f64; npwrs];
    gpower[0] = 1.0;
    twogpower[0] = 1.0;
    onem2gpower[0] = 1.0;
    let mut expnt: i32 = 0;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) =
        (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let mut v0 = vec![0.0f64; npwrs];
    let mut v1 = vec![0.0f64; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let (mut j1, _) = pomeranz_j1j2(0, ni, ll, ceilf, roundf);
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (nj1, j2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            // conv = np.convolve(V0[k1 - V0s : k1 - V0s + ln2], pwrs[:ln2])
            let lo = (k1 - v0s).max(0) as usize;
            let hi = ((k1 - v0s + ln2).max(0) as usize).min(v0.len());
            let a = if lo < hi { &v0[lo..hi] } else { &v0[0..0] };
            let b = &pwrs[..(ln2 as usize).min(pwrs.len())];
            let conv_start = j1 - k1;
            let conv_len = j2 - j1 + 1;
            if !a.is_empty() && !b.is_empty() && conv_len > 0 {
                let full = a.len() + b.len() - 1;
                for out in 0..conv_len {
                    let kk = conv_start + out;
                    if kk < 0 || kk as usize >= full {
                        continue;
                    }
                    let kk = kk as usize;
                    let mut s = 0.0;
                    let i_lo = kk.saturating_sub(b.len() - 1);
                    let i_hi = kk.min(a.len() - 1);
                    for ia in i_lo..=i_hi {
                        s += a[ia] * b[kk - ia];
                    }
                    if let Some(slot) = v1.get_mut(out as usize) {
                        *slot = s;
                    }
                }
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < EM128 {
                for v in v1.iter_mut() {
                    *v *= EP128;
                }
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let idx = ni - v1s;
    let mut ans = match usize::try_from(idx).ok().and_then(|i| v1.get(i)) {
        Some(&v) => v,
        None => return f64::NAN,
    };
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    select_and_clip(ans, 1.0 - ans, cdf)
}

/// `_kolmogn_PelzGood(n, x, cdf=True)`: the Pelz–Good approximation of
/// `Pr(D_n <= x)` (unclipped, as SciPy returns it).
fn kolmogn_pelz_good(n: u64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let pi2 = PI.powi(2);
    let pi4 = PI.powi(4);
    let pi6 = PI.powi(6);
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = nf.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z.powi(2), z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < MIN_LOG_PG {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (msquared, mfour, msix) = (m.powi(2), m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msquared,
            k2a + k2b * msquared + k2c * mfour,
            k3a + k3b * msquared + k3c * mfour + k3d * msix,
        ];
        for (acc, c) in k.iter_mut().zip(coeffs) {
            *acc *= qpower;
            *acc += c;
        }
    }
    let div = [z, 6.0 * zfour, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, dv) in k.iter_mut().zip(div) {
        *acc *= q;
        *acc *= sqrt2pi;
        *acc /= dv;
    }
    let q = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0f64, 0.0f64);
    for kk in (1..=maxk).rev() {
        let ksq = (kk * kk) as f64;
        let qp = q.powf(ksq);
        let kspi = PI * kk as f64;
        k2extra += ksq * qp;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    k2extra *= pi2 * sqrt2pi / (-36.0 * zthree);
    k[2] += k2extra;
    k3extra *= pi2 * sqrt2pi / (216.0 * zsix);
    k[3] += k3extra;
    for (i, acc) in k.iter_mut().enumerate() {
        *acc /= nf.powf(i as f64 / 2.0);
    }
    0.0 + k[0] + k[1] + k[2] + k[3]
}

/// `n·x` as an exact sum `hi + lo`, its floor, and the fractional part
/// (cephes `modNX`).
fn mod_nx(n: u64, x: f64) -> (i64, f64, f64, f64) {
    let nf = n as f64;
    let hi = nf * x;
    let lo = nf.mul_add(x, -hi);
    let mut fl = hi.floor();
    let mut alpha = (hi - fl) + lo;
    if alpha < 0.0 {
        fl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        fl += 1.0;
        alpha -= 1.0;
    }
    (fl as i64, alpha, hi, lo)
}

/// `scipy.special.smirnov(n, x)`: `Pr(D_n^+ >= x)` of the one-sided one-sample
/// KS statistic (cephes `smirnov`, Birnbaum–Tingey sum), as SciPy 1.14.1 computes
/// it. SciPy sums in double-double; this sums in `f64` with each term taken as
/// `exp` of a log-sum, which keeps the relative error near `n · 1e-16`.
pub fn smirnov(n: u64, x: f64) -> f64 {
    if x.is_nan() || n == 0 || !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let ni = n as i64;
    let nf = n as f64;
    let (mut nxfl, mut alpha, nx_hi, nx_lo) = mod_nx(n, x);
    if alpha >= 1.0 {
        nxfl += 1;
        alpha = 0.0;
    }
    let mut n1mxfl = ni - nxfl - if alpha == 0.0 { 0 } else { 1 };
    let mut n1mxceil = ni - nxfl;
    if alpha == 0.0 {
        n1mxfl -= 1;
        n1mxceil += 1;
    }
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let t = ((nf - 1.0) * x.ln_1p()).exp();
        let cdf = x * t;
        return 1.0 - cdf;
    }
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= ni - 1 {
        return (nf * (-x).ln_1p()).exp();
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return if logp < -std::f64::consts::LN_2 {
            logp.exp()
        } else {
            1.0 - (-logp.exp_m1())
        }
        .clamp(0.0, 1.0);
    }
    let n_upper_terms = ni - n1mxceil + 1;
    let use_upper =
        (n_upper_terms <= 1 && x < 0.5) || (ni >= 10 && n_upper_terms <= 3 && x <= 0.5 / nf.sqrt());
    let (start, step, n_terms) = if use_upper {
        (ni, -1i64, ni - n1mxceil + 1)
    } else {
        (0, 1, n1mxfl + 1)
    };
    let vmid = ni / 2;
    // First term: v = n (upper) or v = 0 (lower).
    let first = if use_upper {
        ((nf - 1.0) * x.ln_1p()).exp()
    } else {
        (nf * (-x).ln_1p()).exp() / x
    };
    let mut aj_sum = first;
    // ln C(n, j), updated as cephes updateBinomial does: C(n, j+1) = C(n, j)(n-j)/(j+1).
    // The running sum reaches thousands; a plain sum would lose ulp(sum) at each
    // of thousands of steps (1e-9 relative by n = 5e5), so it is compensated
    // (Neumaier), keeping ln C within a few ulp of its terms' own rounding.
    let mut ln_c = LnSum::new(nf.ln());
    let mut j = 1i64;
    while j < n_terms {
        let v = start + j * step;
        let aj = smirnov_term(ni, nx_hi, nx_lo, v, &ln_c);
        if aj.is_finite() && aj != 0.0 {
            aj_sum += aj;
        }
        if aj != 0.0 {
            if 4.0 * (n_terms - j) as f64 * aj.abs() < f64::EPSILON * aj_sum && j != n_terms - 1 {
                break;
            }
        } else if j > vmid {
            break;
        }
        ln_c.add(((ni - j) as f64 / (j + 1) as f64).ln());
        j += 1;
    }
    let prob = x * aj_sum;
    let sf = if use_upper { 1.0 - prob } else { prob };
    sf.clamp(0.0, 1.0)
}

/// A compensated (Neumaier) running sum.
struct LnSum {
    sum: f64,
    comp: f64,
}

impl LnSum {
    fn new(x: f64) -> LnSum {
        LnSum { sum: x, comp: 0.0 }
    }

    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }
}

/// `A_v(n, x) = C(n, v) (1 − x − v/n)^(n−v) (x + v/n)^(v−1)`, with
/// `ln C(n, v)` given and `n·x = nx_hi + nx_lo`.
fn smirnov_term(n: i64, nx_hi: f64, nx_lo: f64, v: i64, ln_c: &LnSum) -> f64 {
    let nf = n as f64;
    let e2 = n - v;
    let e1 = v - 1;
    // 1 - x - v/n = ((n - v) - n x) / n
    let t2x = (((n - v) as f64 - nx_hi) - nx_lo) / nf;
    let t1x = ((v as f64 + nx_hi) + nx_lo) / nf;
    let mut sign = 1.0;
    let mut log = ln_c.sum;
    if e2 != 0 {
        if t2x == 0.0 {
            return 0.0;
        }
        if t2x < 0.0 && e2 % 2 != 0 {
            sign = -1.0;
        }
        let l2 = if t2x > 0.5 {
            // ln(1 - s), s = x + v/n
            (-t1x).ln_1p()
        } else {
            t2x.abs().ln()
        };
        log += e2 as f64 * l2;
    }
    if e1 != 0 {
        log += e1 as f64 * t1x.ln();
    }
    log += ln_c.comp;
    sign * log.exp()
}

// ---------------------------------------------------------------------------
// Reference and windows
// ---------------------------------------------------------------------------

/// Drift scores of a window against its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftReport {
    /// [`psi`] (numerical) or [`psi_from_counts`] (categorical).
    pub psi: f64,
    /// [`jensen_shannon`] or [`jensen_shannon_from_counts`].
    pub jensen_shannon: f64,
    /// [`ks_2samp`] with the reference as the first sample; `None` for a
    /// categorical feature.
    pub ks: Option<KsResult>,
}

impl DriftReport {
    /// `psi >= PSI_THRESHOLD`.
    pub fn psi_drift(&self) -> bool {
        psi_drifted(self.psi, PSI_THRESHOLD)
    }
    /// `jensen_shannon >= JENSEN_SHANNON_THRESHOLD`.
    pub fn jensen_shannon_drift(&self) -> bool {
        jensen_shannon_drifted(self.jensen_shannon, JENSEN_SHANNON_THRESHOLD)
    }
    /// KS `p_value <= KS_THRESHOLD` (false for a categorical feature).
    pub fn ks_drift(&self) -> bool {
        self.ks.is_some_and(|k| k.drifted())
    }
}

/// A feature's reference distribution: the sorted training values of a
/// numerical feature, or the counts per category of a categorical one. Built
/// once (at registration, from training data) and stored as text
/// ([`Reference::to_text`] / [`Reference::from_text`]) or, for a numerical
/// feature, as its values ([`Reference::to_values`] / [`Reference::from_values`]).
/// Values must be finite.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// Sorted ascending, finite, non-empty.
    Numerical(Vec<f64>),
    /// Category → count, counts positive, non-empty.
    Categorical(BTreeMap<String, u64>),
}

const TEXT_MAGIC: &str = "quiver-drift-reference 1";

impl Reference {
    /// A numerical reference from its values (any order; sorted here). Refuses an
    /// empty sample, NaN and infinities.
    pub fn from_values(mut values: Vec<f64>) -> Result<Reference, DriftError> {
        check_values(&values, Sample::Reference)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DriftError::NonFinite(Sample::Reference));
        }
        values.sort_unstable_by(f64::total_cmp);
        Ok(Reference::Numerical(values))
    }

    /// The sorted values of a numerical reference (`None` for a categorical one);
    /// [`Reference::from_values`] reads them back.
    pub fn to_values(&self) -> Option<Vec<f64>> {
        match self {
            Reference::Numerical(v) => Some(v.clone()),
            Reference::Categorical(_) => None,
        }
    }

    /// The sorted values of a numerical reference, borrowed.
    pub fn values(&self) -> Option<&[f64]> {
        match self {
            Reference::Numerical(v) => Some(v),
            Reference::Categorical(_) => None,
        }
    }

    /// A categorical reference from its values.
    pub fn from_categories<S: AsRef<str>>(values: &[S]) -> Result<Reference, DriftError> {
        if values.is_empty() {
            return Err(DriftError::Empty(Sample::Reference));
        }
        let mut counts = BTreeMap::new();
        for v in values {
            *counts.entry(v.as_ref().to_owned()).or_insert(0u64) += 1;
        }
        Ok(Reference::Categorical(counts))
    }

    /// A categorical reference from counts per category (zero counts dropped;
    /// repeated categories added up).
    pub fn from_category_counts<I, S>(counts: I) -> Result<Reference, DriftError>
    where
        I: IntoIterator<Item = (S, u64)>,
        S: Into<String>,
    {
        let mut map: BTreeMap<String, u64> = BTreeMap::new();
        for (k, c) in counts {
            if c == 0 {
                continue;
            }
            let e = map.entry(k.into()).or_insert(0);
            *e = e
                .checked_add(c)
                .ok_or_else(|| DriftError::Counts("counts overflow u64".into()))?;
        }
        if map.is_empty() {
            return Err(DriftError::Empty(Sample::Reference));
        }
        Ok(Reference::Categorical(map))
    }

    /// Counts per category of a categorical reference.
    pub fn category_counts(&self) -> Option<&BTreeMap<String, u64>> {
        match self {
            Reference::Numerical(_) => None,
            Reference::Categorical(c) => Some(c),
        }
    }

    /// Number of values in the reference sample.
    pub fn len(&self) -> u64 {
        match self {
            Reference::Numerical(v) => v.len() as u64,
            Reference::Categorical(c) => c.values().fold(0u64, |a, &b| a.saturating_add(b)),
        }
    }

    /// Always false: a reference is never empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reference as text: a first line `quiver-drift-reference 1 numerical N`
    /// followed by N values, one a line (shortest round-trip form), or
    /// `quiver-drift-reference 1 categorical K` followed by K lines
    /// `count<TAB>category` (category with `\\`, `\t`, `\n`, `\r` escaped).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match self {
            Reference::Numerical(v) => {
                out.push_str(&format!("{TEXT_MAGIC} numerical {}\n", v.len()));
                for x in v {
                    out.push_str(&format!("{x:?}\n"));
                }
            }
            Reference::Categorical(c) => {
                out.push_str(&format!("{TEXT_MAGIC} categorical {}\n", c.len()));
                for (k, n) in c {
                    out.push_str(&format!("{n}\t{}\n", escape(k)));
                }
            }
        }
        out
    }

    /// Reads [`Reference::to_text`]'s form back.
    pub fn from_text(text: &str) -> Result<Reference, DriftError> {
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| DriftError::Parse("empty input".into()))?;
        let rest = header
            .strip_prefix(TEXT_MAGIC)
            .ok_or_else(|| DriftError::Parse(format!("unknown header {header:?}")))?;
        let mut parts = rest.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let count: usize = parts
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| DriftError::Parse(format!("no count in header {header:?}")))?;
        let body: Vec<&str> = lines.collect();
        if body.len() != count {
            return Err(DriftError::Parse(format!(
                "header says {count} lines, found {}",
                body.len()
            )));
        }
        match kind {
            "numerical" => {
                let mut values = Vec::new();
                values
                    .try_reserve_exact(count)
                    .map_err(|_| DriftError::Allocation)?;
                for (i, l) in body.iter().enumerate() {
                    let v: f64 = l
                        .trim()
                        .parse()
                        .map_err(|_| DriftError::Parse(format!("line {}: {l:?}", i + 2)))?;
                    values.push(v);
                }
                Reference::from_values(values)
            }
            "categorical" => {
                let mut counts = Vec::with_capacity(count.min(1 << 16));
                for (i, l) in body.iter().enumerate() {
                    let (n, k) = l
                        .split_once('\t')
                        .ok_or_else(|| DriftError::Parse(format!("line {}: no tab", i + 2)))?;
                    let n: u64 = n
                        .parse()
                        .map_err(|_| DriftError::Parse(format!("line {}: count {n:?}", i + 2)))?;
                    counts.push((
                        unescape(k).ok_or_else(|| {
                            DriftError::Parse(format!("line {}: bad escape", i + 2))
                        })?,
                        n,
                    ));
                }
                Reference::from_category_counts(counts)
            }
            other => Err(DriftError::Parse(format!("unknown kind {other:?}"))),
        }
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                't' => out.push('\t'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            }
        } else {
            out.push(ch);
        }
    }
    Some(out)
}

/// The last `capacity` values of a numerical feature, kept both in arrival order
/// (a ring, for eviction) and sorted (for the statistics). Memory is reserved
/// once, at [`Window::new`], for `capacity` values twice over; pushing never
/// allocates. Each push is `O(capacity)` (an insertion into a sorted `Vec`).
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    order: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl Window {
    /// A window keeping at most `capacity` values; [`DriftError::ZeroCapacity`]
    /// for 0 and [`DriftError::Allocation`] if the memory cannot be reserved.
    pub fn new(capacity: usize) -> Result<Window, DriftError> {
        if capacity == 0 {
            return Err(DriftError::ZeroCapacity);
        }
        let mut order = VecDeque::new();
        order
            .try_reserve_exact(capacity)
            .map_err(|_| DriftError::Allocation)?;
        let mut sorted = Vec::new();
        sorted
            .try_reserve_exact(capacity)
            .map_err(|_| DriftError::Allocation)?;
        Ok(Window {
            capacity,
            order,
            sorted,
        })
    }

    /// Adds a value, evicting (and returning) the oldest when the window is
    /// full. NaN and infinities are refused ([`DriftError::NaN`],
    /// [`DriftError::NonFinite`]) and leave the window unchanged.
    pub fn push(&mut self, value: f64) -> Result<Option<f64>, DriftError> {
        if value.is_nan() {
            return Err(DriftError::NaN(Sample::Current));
        }
        if !value.is_finite() {
            return Err(DriftError::NonFinite(Sample::Current));
        }
        let evicted = if self.order.len() >= self.capacity {
            let old = self.order.pop_front();
            if let Some(old) = old {
                if let Ok(pos) = self.sorted.binary_search_by(|v| v.total_cmp(&old)) {
                    self.sorted.remove(pos);
                }
            }
            old
        } else {
            None
        };
        let pos = self
            .sorted
            .partition_point(|v| v.total_cmp(&value) != Ordering::Greater);
        self.sorted.insert(pos, value);
        self.order.push_back(value);
        Ok(evicted)
    }

    /// Pushes each value in turn; stops at the first refused one.
    pub fn extend(&mut self, values: &[f64]) -> Result<(), DriftError> {
        for &v in values {
            self.push(v)?;
        }
        Ok(())
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most values the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every value (the memory stays reserved).
    pub fn clear(&mut self) {
        self.order.clear();
        self.sorted.clear();
    }

    /// The values held, sorted ascending.
    pub fn sorted_values(&self) -> &[f64] {
        &self.sorted
    }

    /// The values held, oldest first.
    pub fn values_in_order(&self) -> impl Iterator<Item = f64> + '_ {
        self.order.iter().copied()
    }

    fn reference_values<'a>(&self, reference: &'a Reference) -> Result<&'a [f64], DriftError> {
        reference.values().ok_or(DriftError::KindMismatch)
    }

    /// [`psi`] of the reference against the window.
    pub fn psi(&self, reference: &Reference) -> Result<f64, DriftError> {
        let r = self.reference_values(reference)?;
        Ok(psi_of_shares(&binned_sorted(r, &self.sorted, true)?))
    }

    /// [`jensen_shannon`] of the reference against the window.
    pub fn jensen_shannon(&self, reference: &Reference) -> Result<f64, DriftError> {
        let r = self.reference_values(reference)?;
        Ok(jensen_shannon_of_shares(&binned_sorted(
            r,
            &self.sorted,
            false,
        )?))
    }

    /// [`ks_2samp`] of the reference (first sample) against the window.
    pub fn ks(&self, reference: &Reference) -> Result<KsResult, DriftError> {
        let r = self.reference_values(reference)?;
        if self.sorted.is_empty() {
            return Err(DriftError::Empty(Sample::Current));
        }
        Ok(ks_p_value(
            r.len(),
            self.sorted.len(),
            ks_statistic_sorted(r, &self.sorted),
        ))
    }

    /// PSI, Jensen–Shannon and KS of the reference against the window.
    /// [`DriftError::Empty`] while the window is empty,
    /// [`DriftError::KindMismatch`] for a categorical reference.
    pub fn evaluate(&self, reference: &Reference) -> Result<DriftReport, DriftError> {
        Ok(DriftReport {
            psi: self.psi(reference)?,
            jensen_shannon: self.jensen_shannon(reference)?,
            ks: Some(self.ks(reference)?),
        })
    }
}

/// The last `capacity` values of a categorical feature: a ring in arrival order
/// and counts per category. The ring's memory is reserved at
/// [`CategoricalWindow::new`]; the strings are the caller's values.
#[derive(Debug, Clone)]
pub struct CategoricalWindow {
    capacity: usize,
    order: VecDeque<String>,
    counts: BTreeMap<String, u64>,
}

impl CategoricalWindow {
    /// A window keeping at most `capacity` values.
    pub fn new(capacity: usize) -> Result<CategoricalWindow, DriftError> {
        if capacity == 0 {
            return Err(DriftError::ZeroCapacity);
        }
        let mut order = VecDeque::new();
        order
            .try_reserve_exact(capacity)
            .map_err(|_| DriftError::Allocation)?;
        Ok(CategoricalWindow {
            capacity,
            order,
            counts: BTreeMap::new(),
        })
    }

    /// Adds a value, evicting (and returning) the oldest when full.
    pub fn push(&mut self, category: &str) -> Option<String> {
        let evicted = if self.order.len() >= self.capacity {
            let old = self.order.pop_front();
            if let Some(old) = &old {
                if let Some(c) = self.counts.get_mut(old) {
                    *c -= 1;
                    if *c == 0 {
                        self.counts.remove(old);
                    }
                }
            }
            old
        } else {
            None
        };
        *self.counts.entry(category.to_owned()).or_insert(0) += 1;
        self.order.push_back(category.to_owned());
        evicted
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most values the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counts per category held.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.order.clear();
        self.counts.clear();
    }

    fn aligned(&self, reference: &Reference) -> Result<(Vec<u64>, Vec<u64>), DriftError> {
        let r = reference
            .category_counts()
            .ok_or(DriftError::KindMismatch)?;
        if self.order.is_empty() {
            return Err(DriftError::Empty(Sample::Current));
        }
        let mut map: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (k, &c) in r {
            map.entry(k).or_default().0 += c;
        }
        for (k, &c) in &self.counts {
            map.entry(k).or_default().1 += c;
        }
        Ok(map.values().copied().unzip())
    }

    /// PSI and Jensen–Shannon of the reference against the window (`ks` is
    /// `None`). [`DriftError::KindMismatch`] for a numerical reference.
    pub fn evaluate(&self, reference: &Reference) -> Result<DriftReport, DriftError> {
        let (r, c) = self.aligned(reference)?;
        Ok(DriftReport {
            psi: psi_from_counts(&r, &c)?,
            jensen_shannon: jensen_shannon_from_counts(&r, &c)?,
            ks: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_samples_are_refused() {
        let some = [1.0, 2.0];
        assert_eq!(psi(&[], &some), Err(DriftError::Empty(Sample::Reference)));
        assert_eq!(psi(&some, &[]), Err(DriftError::Empty(Sample::Current)));
        assert_eq!(
            jensen_shannon(&some, &[]),
            Err(DriftError::Empty(Sample::Current))
        );
        assert_eq!(
            ks_2samp(&[], &some),
            Err(DriftError::Empty(Sample::Reference))
        );
        let none: [&str; 0] = [];
        assert_eq!(
            psi_categorical(&none, &["a"]),
            Err(DriftError::Empty(Sample::Reference))
        );
        assert_eq!(
            jensen_shannon_categorical(&["a"], &none),
            Err(DriftError::Empty(Sample::Current))
        );
        assert_eq!(
            psi_from_counts(&[0, 0], &[1, 2]),
            Err(DriftError::Empty(Sample::Reference))
        );
        assert!(matches!(
            psi_from_counts(&[1, 2], &[1]),
            Err(DriftError::Counts(_))
        ));
        assert!(matches!(
            psi_from_counts(&[u64::MAX, 1], &[1, 1]),
            Err(DriftError::Counts(_))
        ));
        assert_eq!(ks_exact_probability(0, 3, 0.5), None);
    }

    #[test]
    fn nan_is_refused() {
        let ok = [1.0, 2.0, 3.0];
        let bad = [1.0, f64::NAN];
        assert_eq!(psi(&bad, &ok), Err(DriftError::NaN(Sample::Reference)));
        assert_eq!(
            jensen_shannon(&ok, &bad),
            Err(DriftError::NaN(Sample::Current))
        );
        assert_eq!(ks_2samp(&ok, &bad), Err(DriftError::NaN(Sample::Current)));
        assert!(kstwo_sf(f64::NAN, 10.0).is_nan());
        assert!(kstwo_sf(0.3, 2.5).is_nan());
        assert!(kstwo_sf(0.3, 0.0).is_nan());
        assert!(smirnov(10, f64::NAN).is_nan());
        assert!(smirnov(10, 1.5).is_nan());
        assert!(smirnov(0, 0.5).is_nan());
        assert_eq!(ks_exact_probability(3, 4, f64::NAN), None);
    }

    #[test]
    fn infinities_follow_numpy_and_scipy() {
        // More than 20 distinct reference values: NumPy's Sturges histogram
        // refuses a non-finite range.
        let mut wide: Vec<f64> = (0..30).map(f64::from).collect();
        wide.push(f64::INFINITY);
        let cur = [1.0, 2.0, 3.0];
        assert_eq!(
            psi(&wide, &cur),
            Err(DriftError::NonFinite(Sample::Reference))
        );
        // At most 20: each value is a bin, infinities included. Evidently gives
        // 7.0087900767586335 for these.
        let p = psi(&[1.0, 2.0, f64::INFINITY, 2.0], &[1.0, f64::INFINITY, 3.0]).unwrap();
        assert!((p - 7.0087900767586335).abs() < 1e-12, "{p}");
        // SciPy: ks_2samp([1, 2, inf, 3], [0, 1, -inf]) = (0.75, 0.22857142857142862).
        let k = ks_2samp(
            &[1.0, 2.0, f64::INFINITY, 3.0],
            &[0.0, 1.0, f64::NEG_INFINITY],
        )
        .unwrap();
        assert_eq!(k.statistic, 0.75);
        assert!((k.p_value - 0.22857142857142862).abs() < 1e-15);
        assert_eq!(k.method, KsMethod::Exact);
    }

    #[test]
    fn all_equal_values() {
        let a = [1.5; 30];
        let b = [1.5; 20];
        assert_eq!(psi(&a, &b).unwrap(), 0.0);
        assert_eq!(jensen_shannon(&a, &b).unwrap(), 0.0);
        let k = ks_2samp(&a, &b).unwrap();
        assert_eq!((k.statistic, k.p_value), (0.0, 1.0));
        assert!(!k.drifted());
        // Two different constants: disjoint bins, replaced zero shares.
        let c = [2.0; 25];
        let p = psi(&a, &c).unwrap();
        let expected = 2.0 * (1.0 - 0.0001) * (1.0f64 / 0.0001).ln();
        assert!((p - expected).abs() < 1e-12);
        let js = jensen_shannon(&a, &c).unwrap();
        assert!((js - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
        assert_eq!(ks_2samp(&a, &c).unwrap().statistic, 1.0);
    }

    #[test]
    fn sturges_edges_as_numpy() {
        // np.histogram_bin_edges([0, 1, ..., 9], bins="sturges"):
        // log2(10) + 1 = 4.32 -> 5 bins of width 1.8.
        let e = sturges_edges(0.0, 9.0, 10).unwrap();
        assert_eq!(e, vec![0.0, 1.8, 3.6, 5.4, 7.2, 9.0]);
        assert_eq!(sturges_edges(2.0, 2.0, 5).unwrap(), vec![1.5, 2.5]);
        assert_eq!(
            sturges_edges(0.0, f64::INFINITY, 5),
            Err(DriftError::NonFinite(Sample::Reference))
        );
        let tiny = 1.0 + f64::EPSILON;
        assert_eq!(
            sturges_edges(1.0, tiny, 1 << 20),
            Err(DriftError::TooManyBins)
        );
    }

    #[test]
    fn histogram_last_bin_is_closed() {
        let sorted = [0.0, 1.0, 1.0, 2.0, 3.0];
        assert_eq!(
            histogram_sorted(&sorted, &[0.0, 1.0, 2.0, 3.0]),
            vec![1, 2, 2]
        );
    }

    #[test]
    fn pairwise_sum_matches_a_plain_sum_on_exact_values() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        assert_eq!(np_sum(&v), 499_500.0);
        assert_eq!(np_sum(&[]), 0.0);
        assert_eq!(np_sum(&[2.5]), 2.5);
    }

    #[test]
    fn sorted_variants_check_their_precondition() {
        assert_eq!(
            psi_sorted(&[2.0, 1.0], &[1.0]),
            Err(DriftError::NotSorted(Sample::Reference))
        );
        assert_eq!(
            ks_2samp_sorted(&[1.0], &[3.0, 2.0]),
            Err(DriftError::NotSorted(Sample::Current))
        );
        assert_eq!(
            jensen_shannon_sorted(&[1.0, 2.0], &[1.0, 2.0]).unwrap(),
            0.0
        );
    }

    #[test]
    fn thresholds_are_evidentlys() {
        assert!(psi_drifted(0.1, PSI_THRESHOLD));
        assert!(!psi_drifted(0.099, PSI_THRESHOLD));
        assert!(jensen_shannon_drifted(0.1, JENSEN_SHANNON_THRESHOLD));
        assert!(ks_drifted(0.05, KS_THRESHOLD));
        assert!(!ks_drifted(0.0501, KS_THRESHOLD));
    }

    #[test]
    fn ks_switches_to_asymptotic_above_ten_thousand() {
        assert_eq!(ks_p_value(10_000, 10_000, 0.02).method, KsMethod::Exact);
        let r = ks_p_value(10_001, 50, 0.2);
        assert_eq!(r.method, KsMethod::Asymptotic);
        assert_eq!(
            r.p_value,
            kstwo_sf(0.2, (10_001.0f64 * 50.0 / 10_051.0).round())
        );
        // The exact statistic is snapped to the lattice h / lcm.
        let r = ks_p_value(3, 4, 0.4166666);
        assert_eq!(r.statistic, 5.0 / 12.0);
    }

    #[test]
    fn window_evicts_oldest_and_stays_sorted() {
        assert_eq!(Window::new(0).unwrap_err(), DriftError::ZeroCapacity);
        let mut w = Window::new(3).unwrap();
        assert!(w.is_empty());
        assert_eq!(w.push(5.0), Ok(None));
        assert_eq!(w.push(1.0), Ok(None));
        assert_eq!(w.push(3.0), Ok(None));
        assert_eq!(w.sorted_values(), &[1.0, 3.0, 5.0]);
        assert_eq!(w.push(4.0), Ok(Some(5.0)));
        assert_eq!(w.push(-0.0), Ok(Some(1.0)));
        assert_eq!(w.push(0.0), Ok(Some(3.0)));
        assert_eq!(w.sorted_values(), &[-0.0, 0.0, 4.0]);
        assert_eq!(
            w.values_in_order().collect::<Vec<_>>(),
            vec![4.0, -0.0, 0.0]
        );
        assert_eq!(w.push(f64::NAN), Err(DriftError::NaN(Sample::Current)));
        assert_eq!(
            w.push(f64::INFINITY),
            Err(DriftError::NonFinite(Sample::Current))
        );
        assert_eq!(w.len(), 3);
        assert_eq!(w.capacity(), 3);
        w.clear();
        assert!(w.is_empty());
        let r = Reference::from_values(vec![1.0, 2.0]).unwrap();
        assert_eq!(w.evaluate(&r), Err(DriftError::Empty(Sample::Current)));
    }

    #[test]
    fn window_matches_the_functions_after_eviction() {
        let reference: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let stream: Vec<f64> = (0..500)
            .map(|i| (i as f64 * 0.11).cos() * 2.0 + 0.5)
            .collect();
        let r = Reference::from_values(reference.clone()).unwrap();
        let mut w = Window::new(150).unwrap();
        w.extend(&stream).unwrap();
        let last = &stream[stream.len() - 150..];
        let report = w.evaluate(&r).unwrap();
        assert_eq!(report.psi, psi(&reference, last).unwrap());
        assert_eq!(
            report.jensen_shannon,
            jensen_shannon(&reference, last).unwrap()
        );
        assert_eq!(report.ks, Some(ks_2samp(&reference, last).unwrap()));
        let cat = Reference::from_categories(&["a"]).unwrap();
        assert_eq!(w.evaluate(&cat), Err(DriftError::KindMismatch));
    }

    #[test]
    fn categorical_window() {
        let r = Reference::from_categories(&["a", "a", "b", "c"]).unwrap();
        let mut w = CategoricalWindow::new(4).unwrap();
        for v in ["x", "a", "b", "b", "c"] {
            w.push(v);
        }
        assert_eq!(w.len(), 4);
        assert_eq!(w.counts().get("x"), None);
        let report = w.evaluate(&r).unwrap();
        assert_eq!(report.ks, None);
        assert!(!report.ks_drift());
        let cur = ["a", "b", "b", "c"];
        let refv = ["a", "a", "b", "c"];
        assert_eq!(report.psi, psi_categorical(&refv, &cur).unwrap());
        assert_eq!(
            report.jensen_shannon,
            jensen_shannon_categorical(&refv, &cur).unwrap()
        );
        let num = Reference::from_values(vec![1.0]).unwrap();
        assert_eq!(w.evaluate(&num), Err(DriftError::KindMismatch));
        assert_eq!(
            CategoricalWindow::new(0).unwrap_err(),
            DriftError::ZeroCapacity
        );
    }

    #[test]
    fn reference_text_round_trips() {
        let r = Reference::from_values(vec![3.0, -1.25, 0.1 + 0.2, 1e-300, -0.0]).unwrap();
        assert_eq!(r.values().unwrap()[0], -1.25);
        let back = Reference::from_text(&r.to_text()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            Reference::from_values(back.to_values().unwrap()).unwrap(),
            r
        );
        let c = Reference::from_category_counts(vec![
            ("tab\there".to_string(), 3),
            ("line\nbreak\\".to_string(), 2),
            ("plain".to_string(), 1),
            ("zero".to_string(), 0),
        ])
        .unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(c.category_counts().unwrap().len(), 3);
        assert_eq!(Reference::from_text(&c.to_text()).unwrap(), c);
        assert_eq!(c.to_values(), None);
    }

    #[test]
    fn reference_refuses_bad_input() {
        assert_eq!(
            Reference::from_values(vec![]),
            Err(DriftError::Empty(Sample::Reference))
        );
        assert_eq!(
            Reference::from_values(vec![1.0, f64::NEG_INFINITY]),
            Err(DriftError::NonFinite(Sample::Reference))
        );
        assert_eq!(
            Reference::from_values(vec![f64::NAN]),
            Err(DriftError::NaN(Sample::Reference))
        );
        let empty: [&str; 0] = [];
        assert!(Reference::from_categories(&empty).is_err());
        assert!(Reference::from_category_counts(vec![("a", 0)]).is_err());
        for bad in [
            "",
            "something else",
            "quiver-drift-reference 1 numerical",
            "quiver-drift-reference 1 numerical 2\n1.0\n",
            "quiver-drift-reference 1 numerical 1\nabc\n",
            "quiver-drift-reference 1 numerical 1\ninf\n",
            "quiver-drift-reference 1 categorical 1\nno tab\n",
            "quiver-drift-reference 1 categorical 1\nx\ta\n",
            "quiver-drift-reference 1 categorical 1\n1\tbad\\q\n",
            "quiver-drift-reference 1 weird 0\n",
        ] {
            assert!(Reference::from_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kstwo_sf_support_edges() {
        assert_eq!(kstwo_sf(0.05, 10.0), 1.0);
        assert_eq!(kstwo_sf(1.0, 10.0), 0.0);
        assert_eq!(kstwo_sf(0.0, 1.0), 1.0);
        assert_eq!(smirnov(1, 0.25), 0.75);
        assert_eq!(smirnov(5, 0.0), 1.0);
        assert_eq!(smirnov(5, 1.0), 0.0);
    }
}
