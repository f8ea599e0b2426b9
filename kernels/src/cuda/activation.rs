//! Activations on the GPU (the CPU `silu_and_mul`, `gelu_tanh_and_mul` and
//! `softcap_inplace` are the references) and the flat scale.

use super::buffer::{DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{elementwise_shape, rows_shape, ROW_THREADS};
use super::params::{ScalarMapParams, SiluAndMulParams};
use super::sources::{unit_name, ACTIVATION};
use super::{to_i32, CudaDType, CudaError, CudaKernels};

impl CudaKernels {
    /// `out[r] = silu(x[r, :d]) * x[r, d:]` over packed `[rows, 2d]` → `[rows, d]`.
    pub fn silu_and_mul<T: CudaDType>(
        &self,
        x: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<T>,
        rows: usize,
        d: usize,
    ) -> Result<(), CudaError> {
        self.act_and_mul("silu_and_mul", x, out, rows, d)
    }

    /// `out[r] = gelu_tanh(x[r, :d]) * x[r, d:]` (Gemma's GeGLU).
    pub fn gelu_tanh_and_mul<T: CudaDType>(
        &self,
        x: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<T>,
        rows: usize,
        d: usize,
    ) -> Result<(), CudaError> {
        self.act_and_mul("gelu_tanh_and_mul", x, out, rows, d)
    }

    /// `x[..n] *= factor` (Gemma's embedding scale).
    pub fn scale<T: CudaDType>(
        &self,
        x: &mut impl DeviceMemMut<T>,
        n: usize,
        factor: f32,
    ) -> Result<(), CudaError> {
        self.scalar_map("scale", x, n, factor)
    }

    /// `x[..n] = cap * tanh(x / cap)` (Gemma 2's final logit soft-cap).
    pub fn softcap<T: CudaDType>(
        &self,
        x: &mut impl DeviceMemMut<T>,
        n: usize,
        cap: f32,
    ) -> Result<(), CudaError> {
        ensure(cap.is_finite() && cap > 0.0, "softcap", || {
            format!("cap {cap} must be positive")
        })?;
        self.scalar_map("softcap", x, n, cap)
    }

    fn scalar_map<T: CudaDType>(
        &self,
        op: &'static str,
        x: &mut impl DeviceMemMut<T>,
        n: usize,
        value: f32,
    ) -> Result<(), CudaError> {
        ensure(x.len() >= n, op, || {
            format!("x holds {} elements, {n} needed", x.len())
        })?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&ACTIVATION), &format!("{op}_{}", T::SUFFIX), 0)?;
        let params = ScalarMapParams {
            x: x.addr_mut(),
            n: n as u64,
            value,
        };
        self.launch_kernel(&f, &elementwise_shape(n), &params)
    }

    fn act_and_mul<T: CudaDType>(
        &self,
        op: &'static str,
        x: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<T>,
        rows: usize,
        d: usize,
    ) -> Result<(), CudaError> {
        ensure(x.len() >= rows * 2 * d, op, || {
            format!("x holds {} elements, {} needed", x.len(), rows * 2 * d)
        })?;
        ensure(out.len() >= rows * d, op, || {
            format!("out holds {} elements, {} needed", out.len(), rows * d)
        })?;
        if rows == 0 || d == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&ACTIVATION), &format!("{op}_{}", T::SUFFIX), 0)?;
        let o_p = out.addr_mut();
        let x_p = x.addr();
        let (os, xs, dd) = (to_i32(op, d)?, to_i32(op, 2 * d)?, to_i32(op, d)?);
        let params = SiluAndMulParams {
            out: o_p,
            x: x_p,
            out_stride: os,
            x_stride: xs,
            d: dd,
        };
        self.launch_kernel(&f, &rows_shape(rows, d, ROW_THREADS), &params)
    }
}
