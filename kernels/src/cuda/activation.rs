//! SiLU-and-multiply on the GPU (the CPU `silu_and_mul` is the reference).

use super::buffer::{DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{rows_shape, ROW_THREADS};
use super::params::SiluAndMulParams;
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
        let op = "silu_and_mul";
        ensure(x.len() >= rows * 2 * d, op, || {
            format!("x holds {} elements, {} needed", x.len(), rows * 2 * d)
        })?;
        ensure(out.len() >= rows * d, op, || {
            format!("out holds {} elements, {} needed", out.len(), rows * d)
        })?;
        if rows == 0 || d == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&ACTIVATION),
            &format!("silu_and_mul_{}", T::SUFFIX),
            0,
        )?;
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
