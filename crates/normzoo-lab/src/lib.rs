//! The normalization lab: the experiments people run to understand normalization, each
//! producing figures (PNG, GIF), the CSV of every series it plots, and a section of a Markdown
//! report that states what was measured in numbers.
//!
//! ```no_run
//! use normzoo_lab::{Experiment, Lab, LabData, Size};
//!
//! let mut lab = Lab::new("results", Size::Quick, burn::tensor::Device::default());
//! lab.data = LabData::installed_or_generated()?; // Fashion-MNIST when it is installed
//! let section = Experiment::Gradients.run(&lab)?;
//! println!("{}", section.body);
//! normzoo_lab::write_report(&lab.out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The image experiments train on Fashion-MNIST ([`LabData`]; Debian's
//! `dataset-fashion-mnist`) or, where it is not installed, on generated images; every
//! experiment runs offline, in minutes on two CPU cores at
//! [`Size::Default`], in seconds at [`Size::Quick`] (what CI runs), and larger at
//! [`Size::Full`] (for a GPU).

mod cnn;
mod data;
mod error;
mod experiments;
mod lab;
pub mod plot;
mod report;

pub use cnn::{SmallCnn, SmallCnnConfig};
pub use data::LabData;
pub use error::LabError;
pub use experiments::{Experiment, Finding, Section};
pub use lab::{Lab, Size};
pub use report::{REPORT_FILE, write_report};
