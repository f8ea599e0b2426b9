//! Row moves and small element-wise ops: embedding lookup / row gather,
//! fused-qkv split, bias add, dtype casts.

use super::buffer::{DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::{elementwise_shape, rows_shape, ROW_THREADS};
use super::params::{AddBiasParams, ConvertParams, GatherRowsParams, SplitQkvParams};
use super::sources::{unit_name, LAYOUT};
use super::{to_i32, CudaDType, CudaError, CudaKernels, Half16};

/// The gather kernel moving `T` as raw words (`b16` or `b32`).
fn word_suffix<T: CudaDType>() -> Result<&'static str, CudaError> {
    match std::mem::size_of::<T>() {
        2 => Ok("b16"),
        4 => Ok("b32"),
        n => Err(CudaError::invalid(
            "gather_rows",
            format!("no {n}-byte gather"),
        )),
    }
}

impl CudaKernels {
    /// `out[i] = src[indices[i]]` for `num_out` rows of `row_len`; an index
    /// past `src`'s rows writes a zero row. Also the embedding lookup (token
    /// ids into the embedding table).
    pub fn gather_rows<T: CudaDType>(
        &self,
        src: &impl DeviceMem<T>,
        indices: &impl DeviceMem<u32>,
        out: &mut impl DeviceMemMut<T>,
        num_out: usize,
        row_len: usize,
    ) -> Result<(), CudaError> {
        let op = "gather_rows";
        ensure(row_len > 0, op, || "row_len 0".into())?;
        ensure(indices.len() >= num_out, op, || {
            format!("indices shorter than {num_out}")
        })?;
        ensure(out.len() >= num_out * row_len, op, || {
            format!("out shorter than {num_out} x {row_len}")
        })?;
        if num_out == 0 {
            return Ok(());
        }
        let src_rows = u32::try_from(src.len() / row_len).unwrap_or(u32::MAX);
        let f = self.function(
            &unit_name(&LAYOUT),
            &format!("gather_rows_{}", word_suffix::<T>()?),
            0,
        )?;
        let o_p = out.addr_mut();
        let s_p = src.addr();
        let i_p = indices.addr();
        let rl = to_i32(op, row_len)?;
        // Indices past the table are bounded in the kernel (zero rows).
        let params = GatherRowsParams {
            out: o_p,
            src: s_p,
            idx: i_p,
            num_src_rows: src_rows,
            row_len: rl,
        };
        self.launch_kernel(&f, &rows_shape(num_out, row_len, ROW_THREADS), &params)
    }

    /// Splits `[rows, q_dim + 2 * kv_dim]` into packed q, k and v.
    #[allow(clippy::too_many_arguments)]
    pub fn split_qkv<T: Half16>(
        &self,
        qkv: &impl DeviceMem<T>,
        q: &mut impl DeviceMemMut<T>,
        k: &mut impl DeviceMemMut<T>,
        v: &mut impl DeviceMemMut<T>,
        rows: usize,
        q_dim: usize,
        kv_dim: usize,
    ) -> Result<(), CudaError> {
        let op = "split_qkv";
        let width = q_dim + 2 * kv_dim;
        ensure(qkv.len() >= rows * width, op, || {
            format!("qkv shorter than {rows} x {width}")
        })?;
        ensure(
            q.len() >= rows * q_dim && k.len() >= rows * kv_dim && v.len() >= rows * kv_dim,
            op,
            || "q, k or v too short".into(),
        )?;
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&LAYOUT), "split_qkv_b16", 0)?;
        let x_p = qkv.addr();
        let q_p = q.addr_mut();
        let k_p = k.addr_mut();
        let v_p = v.addr_mut();
        let (qd, kd) = (to_i32(op, q_dim)?, to_i32(op, kv_dim)?);
        let params = SplitQkvParams {
            qkv: x_p,
            q: q_p,
            k: k_p,
            v: v_p,
            q_dim: qd,
            kv_dim: kd,
        };
        self.launch_kernel(&f, &rows_shape(rows, width, ROW_THREADS), &params)
    }

    /// `x[r, :] += bias` over packed `[rows, cols]`.
    pub fn add_bias<T: CudaDType>(
        &self,
        x: &mut impl DeviceMemMut<T>,
        bias: &impl DeviceMem<T>,
        rows: usize,
        cols: usize,
    ) -> Result<(), CudaError> {
        let op = "add_bias";
        ensure(x.len() >= rows * cols && bias.len() >= cols, op, || {
            format!("x or bias shorter than {rows} x {cols}")
        })?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&LAYOUT), &format!("add_bias_{}", T::SUFFIX), 0)?;
        let x_p = x.addr_mut();
        let b_p = bias.addr();
        let c = to_i32(op, cols)?;
        let params = AddBiasParams {
            x: x_p,
            bias: b_p,
            cols: c,
        };
        self.launch_kernel(&f, &rows_shape(rows, cols, ROW_THREADS), &params)
    }

    /// Casts `n` elements between f32 and a 16-bit type (either direction).
    pub fn convert<S: CudaDType, D: CudaDType>(
        &self,
        src: &impl DeviceMem<S>,
        dst: &mut impl DeviceMemMut<D>,
        n: usize,
    ) -> Result<(), CudaError> {
        let op = "convert";
        ensure(src.len() >= n && dst.len() >= n, op, || {
            format!("buffers shorter than {n}")
        })?;
        ensure((S::SUFFIX == "f32") != (D::SUFFIX == "f32"), op, || {
            format!("{} -> {}: only f32 <-> bf16/f16", S::SUFFIX, D::SUFFIX)
        })?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&LAYOUT),
            &format!("convert_{}_{}", S::SUFFIX, D::SUFFIX),
            0,
        )?;
        let s_p = src.addr();
        let d_p = dst.addr_mut();
        let params = ConvertParams {
            out: d_p,
            input: s_p,
            n: n as u64,
        };
        self.launch_kernel(&f, &elementwise_shape(n), &params)
    }
}
