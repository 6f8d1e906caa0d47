//! The kernels' large output buffers, kept when their tensors drop and handed to the next
//! output of the same length.
//!
//! Why: with glibc's allocator (what a Rust program gets unless it chooses another), a buffer of
//! many megabytes is often fresh memory. glibc serves it from the top of its heap and gives that
//! top back to the system (`brk`) as soon as more than its trim threshold lies free there (twice
//! its mmap threshold, which rises to the largest mapped buffer freed, up to 32 MiB). A loop that
//! allocates and frees two or three such buffers per call (a layer's forward and backward, a
//! training step) then grows and shrinks the heap every time, and every 4 KiB page of the regrown
//! top faults when first written: InstanceNorm's forward + backward over 16 MiB took 12.0 ms that
//! way instead of 1.4 ms. Whether a program falls into that mode depends on what it freed
//! before, so the same layer was fast in one program and eight times slower in the next. A
//! buffer taken from here is already mapped and written, and one buffer fewer going back to
//! glibc per call keeps the free top under the threshold.
//!
//! Only buffers of at least [`MIN_BYTES`] are kept (glibc reuses small ones well), lengths are
//! matched exactly (a network's layers produce a handful of lengths, step after step), and at
//! most [`CAPACITY_BYTES`] lie free here at once: the buffers freed longest ago go back to the
//! allocator first. Memory kept here is memory no other allocation can reuse, so the bound is
//! small: ResNet18-CIFAR's training step at batch 64 peaks 10–30 MB higher with it (of about
//! 680 MB), at the same speed.

use std::collections::VecDeque;
use std::mem::{MaybeUninit, size_of};
use std::ptr::NonNull;
use std::sync::Mutex;

use burn::backend::flex::FlexTensor;
use burn::tensor::{AllocationProperty, Bytes, DType, TensorData};
use burn_std::{AccessError, AccessPolicy, AllocationController};

/// The smallest buffer worth keeping, in bytes.
pub(super) const MIN_BYTES: usize = 1 << 20;

/// The most memory the process-wide cache keeps free, in bytes.
pub(super) const CAPACITY_BYTES: usize = 32 << 20;

/// Free buffers, the most recently freed last.
pub(super) struct BufferCache {
    free: Mutex<VecDeque<Vec<f32>>>,
    capacity_bytes: usize,
}

/// The cache every kernel takes its outputs from.
pub(super) static CACHE: BufferCache = BufferCache::new(CAPACITY_BYTES);

impl BufferCache {
    /// An empty cache that keeps at most `capacity_bytes` free.
    pub(super) const fn new(capacity_bytes: usize) -> Self {
        Self {
            free: Mutex::new(VecDeque::new()),
            capacity_bytes,
        }
    }

    /// An empty vector with room for exactly `len` values: a kept buffer of that capacity (the
    /// most recently freed) when there is one, else a new allocation.
    pub(super) fn take(&self, len: usize) -> Vec<f32> {
        if len * size_of::<f32>() >= MIN_BYTES {
            let mut free = self
                .free
                .lock()
                .expect("no thread panics holding the cache");
            if let Some(at) = free.iter().rposition(|buffer| buffer.capacity() == len) {
                let mut buffer = free.remove(at).expect("found at that index");
                buffer.clear();
                return buffer;
            }
        }
        Vec::with_capacity(len)
    }

    /// Keeps `buffer` for a later [`take`](Self::take) if it is large enough, giving back the
    /// oldest kept buffers while more than the capacity lies free.
    fn keep(&self, buffer: Vec<f32>) {
        let bytes = buffer.capacity() * size_of::<f32>();
        if bytes < MIN_BYTES || bytes > self.capacity_bytes {
            return;
        }
        let mut free = self
            .free
            .lock()
            .expect("no thread panics holding the cache");
        free.push_back(buffer);
        let mut kept: usize = free.iter().map(|b| b.capacity() * size_of::<f32>()).sum();
        while kept > self.capacity_bytes {
            let oldest = free.pop_front().expect("more than nothing is kept");
            kept -= oldest.capacity() * size_of::<f32>();
        }
    }

    /// How many bytes lie free here.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        let free = self
            .free
            .lock()
            .expect("no thread panics holding the cache");
        free.iter().map(|b| b.capacity() * size_of::<f32>()).sum()
    }

    /// A flex tensor of `shape` holding `values`, whose buffer comes back to this cache when
    /// the last tensor sharing it drops.
    pub(super) fn tensor(&'static self, values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        let len = values.len() * size_of::<f32>();
        let controller = Box::new(CachedBuffer {
            values,
            cache: self,
        });
        // SAFETY: the first `len` bytes of the allocation are `values`' initialised elements.
        let bytes = unsafe { Bytes::from_controller(controller, len) };
        FlexTensor::from_data(TensorData::from_bytes(bytes, shape, DType::F32))
    }
}

/// A tensor's storage that goes back to its cache when dropped.
struct CachedBuffer {
    values: Vec<f32>,
    cache: &'static BufferCache,
}

impl CachedBuffer {
    fn capacity_bytes(&self) -> usize {
        self.values.capacity() * size_of::<f32>()
    }
}

impl AllocationController for CachedBuffer {
    fn alloc_align(&self) -> usize {
        align_of::<f32>()
    }

    fn property(&self) -> AllocationProperty {
        AllocationProperty::Native
    }

    fn memory(&self, _policy: AccessPolicy) -> Result<&[MaybeUninit<u8>], AccessError> {
        // SAFETY: the vector's whole capacity is allocated and lives as long as `self`.
        Ok(unsafe {
            std::slice::from_raw_parts(self.values.as_ptr().cast(), self.capacity_bytes())
        })
    }

    unsafe fn memory_mut(
        &mut self,
        _policy: AccessPolicy,
    ) -> Result<&mut [MaybeUninit<u8>], AccessError> {
        let len = self.capacity_bytes();
        // SAFETY: as in `memory`, borrowed mutably; the caller writes only initialised bytes.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.values.as_mut_ptr().cast(), len) })
    }

    fn capacity(&self) -> usize {
        self.capacity_bytes()
    }

    fn try_detach(&mut self) -> Option<NonNull<u8>> {
        // The global allocator's memory, with f32's alignment: the caller rebuilds a vector of
        // it and owns it from here on (the emptied one left behind is not kept on drop).
        let mut values = std::mem::ManuallyDrop::new(std::mem::take(&mut self.values));
        NonNull::new(values.as_mut_ptr().cast())
    }
}

impl Drop for CachedBuffer {
    fn drop(&mut self) {
        self.cache.keep(std::mem::take(&mut self.values));
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::TensorMetadata;

    use super::*;

    const LEN: usize = MIN_BYTES / size_of::<f32>();

    fn cache(capacity_bytes: usize) -> &'static BufferCache {
        Box::leak(Box::new(BufferCache::new(capacity_bytes)))
    }

    fn tensor_of(cache: &'static BufferCache, len: usize, value: f32) -> FlexTensor {
        let mut values = cache.take(len);
        values.resize(len, value);
        cache.tensor(values, vec![len])
    }

    #[test]
    fn a_dropped_output_is_the_next_output_of_its_length() {
        let cache = cache(CAPACITY_BYTES);
        let first = tensor_of(cache, LEN, 1.0);
        let address = first.as_slice::<f32>().unwrap().as_ptr();
        drop(first);
        assert_eq!(cache.kept_bytes(), MIN_BYTES);

        let other_length = cache.take(LEN + 1);
        assert_eq!(
            cache.kept_bytes(),
            MIN_BYTES,
            "no buffer of another length is taken"
        );
        drop(other_length);

        let second = tensor_of(cache, LEN, 2.0);
        assert_eq!(second.as_slice::<f32>().unwrap().as_ptr(), address);
        assert_eq!(cache.kept_bytes(), 0);
        assert!(second.as_slice::<f32>().unwrap().iter().all(|&v| v == 2.0));
    }

    #[test]
    fn a_shared_buffer_comes_back_when_its_last_tensor_drops() {
        let cache = cache(CAPACITY_BYTES);
        let tensor = tensor_of(cache, LEN, 1.0);
        let view = tensor.clone();
        drop(tensor);
        assert_eq!(cache.kept_bytes(), 0);
        drop(view);
        assert_eq!(cache.kept_bytes(), MIN_BYTES);
    }

    #[test]
    fn small_buffers_and_buffers_beyond_the_capacity_are_not_kept() {
        let cache = cache(3 * MIN_BYTES);
        drop(tensor_of(cache, LEN - 1, 0.0));
        assert_eq!(cache.kept_bytes(), 0);

        let tensors: Vec<_> = (0..4).map(|i| tensor_of(cache, LEN, i as f32)).collect();
        let addresses: Vec<_> = tensors
            .iter()
            .map(|t| t.as_slice::<f32>().unwrap().as_ptr())
            .collect();
        drop(tensors);
        assert_eq!(cache.kept_bytes(), 3 * MIN_BYTES, "the oldest went back");
        let newest = cache.take(LEN);
        assert_eq!(newest.as_ptr(), addresses[3]);
    }

    #[test]
    fn flex_reads_writes_and_converts_a_cached_buffer() {
        let cache = cache(CAPACITY_BYTES);
        let mut tensor = tensor_of(cache, LEN, 3.0);
        tensor.try_storage_mut::<f32>().unwrap()[0] = 5.0;
        let copy = tensor.clone().to_contiguous();
        assert_eq!(copy.shape().num_elements(), LEN);
        let values = tensor.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(values[..2], [5.0, 3.0]);
        assert_eq!(values.len(), LEN);
    }
}
