//! The summation and instruction-set helpers the flex kernels share.

/// Independent accumulators per sum. A single running sum would make every addition wait for
/// the previous one; this many fill four 8-wide (or eight 4-wide) vector registers, enough
/// independent additions to keep the adder busy while each waits for its own previous one.
pub(super) const LANES: usize = 32;

/// How many terms each lane adds in f32 before moving its sum into an f64 total.
pub(super) const BLOCK: usize = 8;

/// `Σ term(v)` over `values`; see [`lane_sums`].
#[inline(always)]
pub(super) fn lane_sum(values: &[f32], term: impl Fn(f32) -> f32) -> f64 {
    let [total] = lane_sums(values, values, |v, _| [term(v)]);
    total
}

/// The `N` sums `Σ term(a, b)[k]` over the pairs of `a` and `b` (of equal length), in one pass,
/// each in [`LANES`] accumulators. Each accumulator adds [`BLOCK`] terms in f32 (fast, and
/// exact to a few units in the last place over so few), then moves them into an f64 total, so
/// that long rows keep their digits. Every sum comes out the same bit for bit whether it is
/// taken alone or beside others.
#[inline(always)]
pub(super) fn lane_sums<const N: usize>(
    a: &[f32],
    b: &[f32],
    term: impl Fn(f32, f32) -> [f32; N],
) -> [f64; N] {
    let mut totals = [[0.0f64; LANES]; N];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (a, b) in a_chunks.chunks(BLOCK).zip(b_chunks.chunks(BLOCK)) {
        let mut lanes = [[0.0f32; LANES]; N];
        for (a, b) in a.iter().zip(b) {
            for lane in 0..LANES {
                let terms = term(a[lane], b[lane]);
                for (lanes, term) in lanes.iter_mut().zip(terms) {
                    lanes[lane] += term;
                }
            }
        }
        for (totals, lanes) in totals.iter_mut().zip(lanes) {
            for (total, lane) in totals.iter_mut().zip(lanes) {
                *total += f64::from(lane);
            }
        }
    }
    let mut sums = [0.0f64; N];
    for (sum, totals) in sums.iter_mut().zip(totals) {
        for lane in totals {
            *sum += lane;
        }
    }
    for (&a, &b) in a_rest.iter().zip(b_rest) {
        for (sum, term) in sums.iter_mut().zip(term(a, b)) {
            *sum += f64::from(term);
        }
    }
    sums
}

/// Runs `work` with AVX-512F or else AVX2 instructions where the CPU has them, else as compiled
/// for the baseline x86-64 (SSE2) or for another architecture. The f32 loops then take 16 or 8
/// values per instruction instead of 4. The values are the same bit for bit: each loop adds in
/// the order its source says, and Rust never fuses a multiplication and an addition.
#[inline(always)]
pub(super) fn vectorized<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { with_avx512(work) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { with_avx2(work) };
    }
    work()
}

/// `work`, compiled with AVX-512F (it is inlined here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn with_avx512<R>(work: impl FnOnce() -> R) -> R {
    work()
}

/// `work`, compiled with AVX2 (it is inlined here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn with_avx2<R>(work: impl FnOnce() -> R) -> R {
    work()
}

/// The mean of the `count` values in `runs` (a fresh iterator per pass) as the f32 nearest it
/// and the f32 remainder, and their biased variance. The mean sums the values' offsets from the
/// first one, and the variance the deviations from the mean, so both sums stay small next to
/// the values even when the mean is large, and [`lane_sum`]'s short f32 blocks lose no digit
/// that matters.
#[inline(always)]
pub(super) fn moments<'a, I: Iterator<Item = &'a [f32]>>(
    runs: impl Fn() -> I,
    count: usize,
) -> (f32, f32, f64) {
    let n = count as f64;
    let first = runs().find_map(|run| run.first().copied()).unwrap_or(0.0);
    // Loops rather than iterator sums: these inline into `vectorized`'s AVX-512 and AVX2 copies.
    let mut offset = 0.0;
    for run in runs() {
        offset += lane_sum(run, |x| x - first);
    }
    offset /= n;
    let mean = f64::from(first) + offset;
    // The f64 mean as an f32 and the remainder, subtracted in turn.
    let (mean_high, mean_low) = (mean as f32, (mean - f64::from(mean as f32)) as f32);
    let deviation = |x: f32| (x - mean_high) - mean_low;
    let mut squares = 0.0;
    for run in runs() {
        squares += lane_sum(run, |x| deviation(x) * deviation(x));
    }
    (mean_high, mean_low, squares / n)
}
