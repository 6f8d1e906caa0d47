//! What the convolution's kernels share: gemm's matrix products, the batch split into thread
//! runs and chunks, and each thread's scratch buffers.

/// How a matrix lies in its buffer.
#[derive(Clone, Copy)]
pub(super) enum Layout {
    /// Rows `stride` values apart, each contiguous.
    RowMajor(usize),
    /// Columns `stride` values apart, each contiguous.
    ColumnMajor(usize),
}

pub(super) use Layout::{ColumnMajor, RowMajor};

impl Layout {
    /// gemm's (column stride, row stride).
    fn strides(self) -> (isize, isize) {
        match self {
            RowMajor(stride) => (1, stride as isize),
            ColumnMajor(stride) => (stride as isize, 1),
        }
    }

    /// How many values of its buffer a `rows × cols` matrix laid out this way reaches.
    fn span(self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return 0;
        }
        match self {
            RowMajor(stride) => (rows - 1) * stride + cols,
            ColumnMajor(stride) => (cols - 1) * stride + rows,
        }
    }
}

/// `dst = lhs · rhs` (`m × k` times `k × n`), or `dst += lhs · rhs` when `accumulate`,
/// each matrix given with its layout in its buffer.
pub(super) fn matmul(
    [m, n, k]: [usize; 3],
    (dst, dst_layout): (&mut [f32], Layout),
    accumulate: bool,
    (lhs, lhs_layout): (&[f32], Layout),
    (rhs, rhs_layout): (&[f32], Layout),
    parallelism: gemm::Parallelism,
) {
    assert!(
        dst_layout.span(m, n) <= dst.len()
            && lhs_layout.span(m, k) <= lhs.len()
            && rhs_layout.span(k, n) <= rhs.len(),
        "matmul: a matrix larger than its buffer"
    );
    let ((dst_cs, dst_rs), (lhs_cs, lhs_rs), (rhs_cs, rhs_rs)) = (
        dst_layout.strides(),
        lhs_layout.strides(),
        rhs_layout.strides(),
    );
    // SAFETY: every matrix lies inside its buffer (asserted above), and `dst` is borrowed
    // mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A thread's buffers for column matrices and repacked operands.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) col: Vec<f32>,
    pub(super) packed: Vec<f32>,
}

thread_local! {
    /// Each thread's [`Scratch`], kept from one convolution to the next (at most a few
    /// tens of MB per thread: the largest column buffer of a chunk). Allocating them per
    /// call would zero-fill and page-fault every buffer on every call.
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// Runs `work` with this thread's [`Scratch`]. Re-entrant: while a thread waits inside
/// `work`, rayon may run another run's work on it, which then starts from empty buffers.
pub(super) fn with_scratch<R>(work: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.take();
    let result = work(&mut scratch);
    SCRATCH.set(scratch);
    result
}

/// The first `len` values of `buffer`, grown if it is shorter. Whatever it held before
/// is left there: every user overwrites all `len` values.
pub(super) fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// The batch split into one contiguous run of images per thread, and the threading gemm
/// should use inside each run: none, unless the batch is smaller than the thread pool.
pub(super) fn thread_runs(batch: usize) -> (Vec<std::ops::Range<usize>>, gemm::Parallelism) {
    let available = rayon::current_num_threads();
    let threads = available.clamp(1, batch.max(1));
    let runs = (0..threads)
        .map(|t| t * batch / threads..(t + 1) * batch / threads)
        .collect();
    let parallelism = match threads < available {
        true => gemm::Parallelism::Rayon(0),
        false => gemm::Parallelism::None,
    };
    (runs, parallelism)
}

/// `values` (`image_len` values per image) cut at the runs' boundaries.
pub(super) fn split_runs<'a, T>(
    mut values: &'a mut [T],
    runs: &[std::ops::Range<usize>],
    image_len: usize,
) -> Vec<&'a mut [T]> {
    runs.iter()
        .map(|run| {
            let (head, tail) = std::mem::take(&mut values).split_at_mut(run.len() * image_len);
            values = tail;
            head
        })
        .collect()
}

/// The chunks of a run whose column buffer is built at once, about [`CHUNK_COLUMNS`]
/// columns each.
pub(super) fn chunks(
    run: std::ops::Range<usize>,
    positions: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let images_per_chunk = CHUNK_COLUMNS.div_ceil(positions).max(1);
    run.clone()
        .step_by(images_per_chunk)
        .map(move |first| first..(first + images_per_chunk).min(run.end))
}

/// The images whose column buffer is built at once: about this many columns (output
/// positions), large enough for gemm's blocking, small enough to stay near the caches.
pub(super) const CHUNK_COLUMNS: usize = 2048;
