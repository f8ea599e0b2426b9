//! Pagoda kernels: the compute kernels of each device, knowing nothing of models.
//!
//! `cpu` is the reference every other device is checked against, and what CI
//! and machines without a GPU run.

pub mod cpu;

#[cfg(feature = "cuda")]
pub mod cuda;
