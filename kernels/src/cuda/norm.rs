//! RMSNorm family on the GPU (CPU `rms_norm`, `fused_add_rms_norm`,
//! `rms_norm_inplace` are the references).

use super::buffer::{DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{rows_shape, warp_rows_shape, ROW_THREADS};
use super::params::{FusedAddRmsNormParams, RmsNormHeadsParams, RmsNormParams};
use super::sources::{unit_name, NORM};
use super::{to_i32, CudaDType, CudaError, CudaKernels};

/// How an RMSNorm's gain applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NormStyle {
    /// `w * T(x·r)`: HF rounds the normalized value before the gain.
    #[default]
    Llama,
    /// `T(x·r·(1 + w))` in f32, one rounding: Gemma's norms, whose
    /// checkpoints store `w` (kept as is, so a bf16 gain loses nothing).
    Gemma,
}

impl NormStyle {
    fn flag(self) -> i32 {
        (self == NormStyle::Gemma) as i32
    }
}

fn need(
    op: &'static str,
    name: &str,
    len: usize,
    rows: usize,
    stride: usize,
    dim: usize,
) -> Result<(), CudaError> {
    ensure(stride >= dim, op, || {
        format!("{name} stride {stride} < dim {dim}")
    })?;
    if rows > 0 {
        let n = (rows - 1) * stride + dim;
        ensure(len >= n, op, || {
            format!("{name} holds {len} elements, {n} needed")
        })?;
    }
    Ok(())
}

impl CudaKernels {
    /// `out[r] = x[r] * rsqrt(mean(x[r]²) + eps) * weight` (gain per `style`).
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm<T: CudaDType>(
        &self,
        x: &impl DeviceMem<T>,
        x_stride: usize,
        weight: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<T>,
        out_stride: usize,
        rows: usize,
        dim: usize,
        eps: f32,
        style: NormStyle,
    ) -> Result<(), CudaError> {
        let op = "rms_norm";
        need(op, "x", x.len(), rows, x_stride, dim)?;
        need(op, "out", out.len(), rows, out_stride, dim)?;
        ensure(weight.len() >= dim, op, || {
            format!("weight shorter than {dim}")
        })?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&NORM), &format!("rms_norm_{}", T::SUFFIX), 0)?;
        let o_p = out.addr_mut();
        let x_p = x.addr();
        let w_p = weight.addr();
        let (os, xs, d) = (
            to_i32(op, out_stride)?,
            to_i32(op, x_stride)?,
            to_i32(op, dim)?,
        );
        let params = RmsNormParams {
            out: o_p,
            x: x_p,
            weight: w_p,
            out_stride: os,
            x_stride: xs,
            dim: d,
            eps,
            gemma: style.flag(),
        };
        self.launch_kernel(&f, &rows_shape(rows, dim, ROW_THREADS), &params)
    }

    /// vLLM's fused residual add: `residual += x; x = rms_norm(residual) * weight`
    /// (rows of `dim`, packed).
    #[allow(clippy::too_many_arguments)]
    pub fn fused_add_rms_norm<T: CudaDType>(
        &self,
        x: &mut impl DeviceMemMut<T>,
        residual: &mut impl DeviceMemMut<T>,
        weight: &impl DeviceMem<T>,
        rows: usize,
        dim: usize,
        eps: f32,
        style: NormStyle,
    ) -> Result<(), CudaError> {
        let op = "fused_add_rms_norm";
        need(op, "x", x.len(), rows, dim, dim)?;
        need(op, "residual", residual.len(), rows, dim, dim)?;
        ensure(weight.len() >= dim, op, || {
            format!("weight shorter than {dim}")
        })?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&NORM),
            &format!("fused_add_rms_norm_{}", T::SUFFIX),
            0,
        )?;
        let x_p = x.addr_mut();
        let r_p = residual.addr_mut();
        let w_p = weight.addr();
        let d = to_i32(op, dim)?;
        let params = FusedAddRmsNormParams {
            x: x_p,
            residual: r_p,
            weight: w_p,
            dim: d,
            eps,
            gemma: style.flag(),
        };
        self.launch_kernel(&f, &rows_shape(rows, dim, ROW_THREADS), &params)
    }

    /// In-place RMSNorm of each `dim`-wide head of `rows` rows (`per_row`
    /// heads per row, rows `row_stride` apart): Qwen3's q/k norm, also on a
    /// view into fused qkv. With `per_row = 1, row_stride = dim` it is the
    /// CPU `rms_norm_inplace`.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm_heads<T: CudaDType>(
        &self,
        x: &mut impl DeviceMemMut<T>,
        row_stride: usize,
        per_row: usize,
        dim: usize,
        weight: &impl DeviceMem<T>,
        rows: usize,
        eps: f32,
        style: NormStyle,
    ) -> Result<(), CudaError> {
        let op = "rms_norm_heads";
        need(op, "x", x.len(), rows, row_stride, per_row * dim)?;
        ensure(weight.len() >= dim, op, || {
            format!("weight shorter than {dim}")
        })?;
        let sub_rows = rows * per_row;
        if sub_rows == 0 || dim == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&NORM),
            &format!("rms_norm_heads_{}", T::SUFFIX),
            0,
        )?;
        let x_p = x.addr_mut();
        let w_p = weight.addr();
        let (rs, pr, d, n) = (
            to_i32(op, row_stride)?,
            to_i32(op, per_row)?,
            to_i32(op, dim)?,
            to_i32(op, sub_rows)?,
        );
        let params = RmsNormHeadsParams {
            x: x_p,
            weight: w_p,
            row_stride: rs,
            per_row: pr,
            dim: d,
            num_sub_rows: n,
            eps,
            gemma: style.flag(),
        };
        self.launch_kernel(&f, &warp_rows_shape(sub_rows), &params)
    }
}
