//! Training normzoo's architectures: datasets first.
//!
//! - [`data::CifarDataset`]: CIFAR-10 from a local copy, in either layout it is distributed in:
//!   the original binary batches (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`) or
//!   class folders of images (`train/airplane/0001.png`, …). Every problem with the copy (a
//!   missing directory, neither layout, a truncated batch, an image that is not 32×32 RGB) is a
//!   [`data::DataError`] that says what was expected and where.
//! - [`data::SyntheticCifar`]: a deterministic CIFAR-shaped dataset (10 classes, 32×32 RGB) that
//!   needs no download, learnable but not trivially so: the offline quick start.

#![warn(missing_docs)]

pub mod data;
