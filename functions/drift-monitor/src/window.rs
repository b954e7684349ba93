//! The window of live traffic, kept between observations while this instance is
//! warm (instances of a monitor are reused within its deployment): each
//! observation reads only the rows logged since the newest row it holds (with a
//! short overlap for rows logged late, dropped by their `request_id`/`row` key),
//! appends them, and drops rows past the window's time (`window`) and count
//! (`window_rows`). A fresh instance, another dataset or window, or a read that
//! came back full (more new rows than the window holds) reads the whole window.
//!
//! The statistics are still computed over the whole window each time: PSI as
//! Evidently bins it depends on the pooled data's range and count, so a window's
//! bins cannot be updated row by row and give the same numbers.

use quiver_sdk::datasets::{self, Query};
use quiver_sdk::{Batch, Column, Error, Field};
use std::collections::HashSet;
use std::sync::Mutex;

struct Kept {
    dataset: String,
    window_ms: u64,
    limit: u32,
    rows: Batch,
}

static KEPT: Mutex<Option<Kept>> = Mutex::new(None);

/// What one observation read, besides the window itself.
pub struct Read {
    /// Rows the dataset reads returned this time.
    pub read: usize,
    /// Whether the kept window was extended (rather than read whole).
    pub incremental: bool,
    /// Rows held twice (a `request_id`/`row` key seen before): 0 unless the
    /// window's bookkeeping is wrong; reported so that it is checked.
    pub duplicates: usize,
}

fn times(b: &Batch) -> &[i64] {
    b.i64s("time_ms").unwrap_or_default()
}

fn keys(b: &Batch, from: usize) -> HashSet<(String, i64)> {
    let (ids, rows) = (
        b.texts("request_id").unwrap_or_default(),
        b.i64s("row").unwrap_or_default(),
    );
    (from..ids.len().min(rows.len()))
        .map(|i| (ids[i].clone(), rows[i]))
        .collect()
}

/// `b`'s rows at `idx`, in that order.
fn take(b: &Batch, idx: &[usize]) -> Batch {
    let pick = |c: &Column| c.select(idx);
    Batch {
        fields: b
            .fields
            .iter()
            .map(|f| Field {
                name: f.name.clone(),
                values: pick(&f.values),
            })
            .collect(),
    }
}

/// `b`'s rows ordered by (`time_ms`, `request_id`, `row`), as the host reads them.
fn in_time_order(b: Batch) -> Batch {
    let (t, ids, rows) = (
        times(&b),
        b.texts("request_id").unwrap_or_default(),
        b.i64s("row").unwrap_or_default(),
    );
    let n = b.num_rows().min(t.len()).min(ids.len()).min(rows.len());
    let key = |i: usize| (t[i], &ids[i], rows[i]);
    if (1..n).all(|i| key(i - 1) <= key(i)) {
        return b;
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&x, &y| key(x).cmp(&key(y)));
    take(&b, &idx)
}

/// `a` then `b`, when both have the same fields of the same types.
fn concat(mut a: Batch, b: Batch) -> Option<Batch> {
    if a.fields.len() != b.fields.len() {
        return None;
    }
    for (x, y) in a.fields.iter_mut().zip(b.fields) {
        if x.name != y.name {
            return None;
        }
        if !x.values.append(y.values) {
            return None;
        }
    }
    Some(a)
}

fn read_since(dataset: &str, since_ms: u64, limit: u32) -> Result<Batch, Error> {
    datasets::read(&Query {
        function: dataset.to_string(),
        since_ms,
        labelled_only: false,
        limit: limit.max(1),
    })
}

/// Bring the kept window up to date and run `f` on it: the newest `limit` rows
/// of the last `window_ms`, oldest first.
///
/// Rows logged up to `overlap_ms` before the newest one held are read again
/// (and dropped when already held): a call's rows are stamped when it started
/// and logged when it ends, so a slow call's rows come in late.
pub fn with_window<R>(
    dataset: &str,
    window_ms: u64,
    limit: u32,
    overlap_ms: u64,
    now_ms: i64,
    f: impl FnOnce(&Batch, Read) -> Result<R, Error>,
) -> Result<R, Error> {
    // A poisoned lock only means an earlier observation trapped: start over.
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    let held = kept
        .take()
        .filter(|k| k.dataset == dataset && k.window_ms == window_ms && k.limit == limit);
    // The kept rows are in time order (sorted below), so the last is the newest.
    let newest = held.as_ref().and_then(|k| times(&k.rows).last().copied());
    let mut read = 0;
    let mut extended = None;
    if let (Some(k), Some(t)) = (held, newest) {
        // A newest row stamped after `now` (a clock step) reads the overlap.
        let since_ms = (now_ms.saturating_sub(t).max(0) as u64)
            .saturating_add(overlap_ms)
            .min(window_ms);
        let new = read_since(dataset, since_ms, limit)?;
        read += new.num_rows();
        if new.num_rows() < limit as usize {
            // Drop what is already held: rows of the overlap.
            let from_ms = now_ms.saturating_sub(since_ms as i64);
            let from = times(&k.rows).partition_point(|&t| t < from_ms);
            let held = keys(&k.rows, from);
            let (ids, rows) = (
                new.texts("request_id").unwrap_or_default(),
                new.i64s("row").unwrap_or_default(),
            );
            let fresh: Vec<usize> = (0..new.num_rows().min(ids.len()).min(rows.len()))
                .filter(|&i| !held.contains(&(ids[i].clone(), rows[i])))
                .collect();
            // Fields that changed (another schema): read whole below. Rows
            // logged late are older than the newest held: back into time order.
            extended = concat(k.rows, take(&new, &fresh)).map(in_time_order);
        }
    }
    let incremental = extended.is_some();
    let mut rows = match extended {
        Some(rows) => rows,
        None => {
            let whole = read_since(dataset, window_ms, limit)?;
            read += whole.num_rows();
            whole
        }
    };
    // Past the window's time, then its count: the oldest go.
    let oldest_ms = now_ms.saturating_sub(window_ms.min(i64::MAX as u64) as i64);
    let n = rows.num_rows();
    let start = times(&rows)
        .partition_point(|&t| t < oldest_ms)
        .max(n.saturating_sub(limit as usize));
    if start > 0 {
        let idx: Vec<usize> = (start..n).collect();
        rows = take(&rows, &idx);
    }
    let duplicates = match rows.texts("request_id") {
        Ok(_) => rows.num_rows().saturating_sub(keys(&rows, 0).len()),
        Err(_) => 0,
    };
    let out = f(
        &rows,
        Read {
            read,
            incremental,
            duplicates,
        },
    );
    *kept = Some(Kept {
        dataset: dataset.to_string(),
        window_ms,
        limit,
        rows,
    });
    out
}
