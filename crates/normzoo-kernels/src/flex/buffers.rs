//! Moving values between flex tensors and the kernels' buffers.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::cache::CACHE;

/// The values of an f32 flex tensor in row-major order: borrowed when the tensor is
/// contiguous, copied when it is not.
///
/// # Panics
///
/// On a tensor whose dtype is not f32.
pub(super) fn flex_values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    match tensor.as_slice::<f32>() {
        Some(values) => values.into(),
        None => tensor
            .to_contiguous()
            .as_slice::<f32>()
            .expect("a contiguous f32 tensor")
            .to_vec()
            .into(),
    }
}

/// A flex tensor of `shape` holding `values`, its buffer kept for a later output when the
/// tensor drops (see [`cache`](super::cache)).
pub(super) fn tensor_from(values: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    CACHE.tensor(values, shape.into())
}

/// A buffer of `len` values (a reused one where the cache has it), written by `fill` (which gets them uninitialised), and what
/// else `fill` returns.
///
/// This takes the place of `vec![0.0; len]` before a parallel write: zero-filling would be a
/// single-threaded pass over the whole buffer first (and on a large one, with the system
/// allocator, the page faults of fresh memory twice over).
///
/// # Safety
///
/// `fill` must write every value of the slice it is given.
pub(super) unsafe fn filled<R>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]) -> R,
) -> (Vec<f32>, R) {
    let mut values = CACHE.take(len);
    let result = fill(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `fill` was given the first `len` values of the capacity, and the caller promises
    // that it wrote each of them.
    unsafe { values.set_len(len) };
    (values, result)
}

/// A new buffer of `len` values (a multiple of `row_len`), its rows written in parallel:
/// `write_row(r, out)` writes row `r` into `out` (uninitialised on entry) and returns what else
/// it computed for the row.
///
/// # Safety
///
/// `write_row` must write every value of the `out` it is given.
pub(super) unsafe fn written_rows<T: Send>(
    len: usize,
    row_len: usize,
    write_row: impl Fn(usize, &mut [MaybeUninit<f32>]) -> T + Sync,
) -> (Vec<f32>, Vec<T>) {
    assert_eq!(len % row_len, 0, "rows of {row_len} values in {len}");
    let write_rows = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_exact_mut(row_len)
            .enumerate()
            .map(|(row, out)| write_row(row, out))
            .collect()
    };
    // SAFETY: the rows cover the buffer, and the caller promises that `write_row` wrote each
    // value of its row.
    unsafe { filled(len, write_rows) }
}

/// A buffer that work items on several threads write disjoint runs of, where the runs are not
/// contiguous chunks (which `par_chunks_mut` would hand out safely).
pub(super) struct Disjoint<'a, T> {
    start: *mut T,
    len: usize,
    buffer: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: every caller of `run` promises to touch only values no other thread touches.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// `buffer`, to be written in disjoint runs.
    pub(super) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            start: buffer.as_mut_ptr(),
            len: buffer.len(),
            buffer: std::marker::PhantomData,
        }
    }

    /// The `len` values from `at`.
    ///
    /// # Panics
    ///
    /// Where they run past the buffer.
    ///
    /// # Safety
    ///
    /// Nothing else reads or writes them while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn run(&self, at: usize, len: usize) -> &mut [T] {
        assert!(
            at + len <= self.len,
            "run {at}..{} of {}",
            at + len,
            self.len
        );
        // SAFETY: inside the buffer (asserted), and the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.start.add(at), len) }
    }
}

/// `values` as an f32 tensor of shape `[len]`.
pub(super) fn narrow(values: Vec<f64>, len: usize) -> FlexTensor {
    tensor_from(values.into_iter().map(|v| v as f32).collect(), [len])
}

/// A tensor's values as a buffer to write over (an output gradient the input gradient
/// replaces, ReLU's input its output replaces): its own storage when nothing else holds it
/// (which saves allocating and faulting in a buffer of its size), else a contiguous copy.
pub(super) enum ReusedBuffer {
    Reused(FlexTensor),
    Copied(Vec<f32>, Vec<usize>),
}

impl ReusedBuffer {
    pub(super) fn new(mut grad: FlexTensor) -> Self {
        let len = grad.shape().num_elements();
        let whole = grad.as_slice::<f32>().map(<[f32]>::len) == Some(len)
            && grad.try_storage_mut::<f32>().map(|s| s.len()) == Some(len);
        if whole {
            Self::Reused(grad)
        } else {
            Self::Copied(flex_values(&grad).into_owned(), grad.shape().to_vec())
        }
    }

    pub(super) fn values_mut(&mut self) -> &mut [f32] {
        match self {
            Self::Reused(tensor) => tensor
                .try_storage_mut::<f32>()
                .expect("checked unique and contiguous"),
            Self::Copied(values, _) => values,
        }
    }

    pub(super) fn into_tensor(self) -> FlexTensor {
        match self {
            Self::Reused(tensor) => tensor,
            Self::Copied(values, shape) => tensor_from(values, shape),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_dropped_lends_its_buffer_to_the_next_output_of_its_length() {
        // A length no other test's outputs have: the cache is the process's.
        let (rows, row_len) = (4099, 64);
        let write = |row: usize, out: &mut [MaybeUninit<f32>]| {
            out.iter_mut().for_each(|v| {
                v.write(row as f32);
            })
        };
        // SAFETY: `write` writes every value of its row.
        let (values, _) = unsafe { written_rows(rows * row_len, row_len, write) };
        let first = tensor_from(values, [rows, row_len]);
        let address = first.as_slice::<f32>().unwrap().as_ptr();
        drop(first);

        // SAFETY: as above.
        let (values, _) = unsafe { written_rows(rows * row_len, row_len, write) };
        let second = tensor_from(values, [rows, row_len]);
        let second = second.as_slice::<f32>().unwrap();
        assert_eq!(second.as_ptr(), address);
        assert_eq!(second[row_len * 7], 7.0);
    }
}
