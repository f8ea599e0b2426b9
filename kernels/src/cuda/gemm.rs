//! `y = x · Wᵀ` through cuBLAS (cublasGemmEx): 16-bit inputs, f32
//! accumulation, a 16-bit or f32 output (f32 for the logits).
//!
//! cuBLAS is column-major. A row-major `[r, c]` buffer is the column-major
//! `c × r` matrix, so row-major `y[m, n] = x[m, k] · W[n, k]ᵀ` is
//! column-major `yᵀ (n × m) = op(W) · xᵀ` with `op(W) = Wᵀ` of the
//! column-major `k × n` W: transa = T, transb = N, (m, n, k) = (n, m, k),
//! lda = ldb = k, ldc = n.

use super::buffer::{DeviceMem, DeviceMemMut};
use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t};

use super::device::{CudaDevice, Device};
use super::error::ensure;
use super::{CudaDType, CudaError, CudaKernels, Half16};

/// The column-major arguments of one row-major `x · Wᵀ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmArgs {
    pub transa: cublasOperation_t,
    pub transb: cublasOperation_t,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub lda: i32,
    pub ldb: i32,
    pub ldc: i32,
}

/// Arguments for `y[m, n] = x[m, k] · w[n, k]ᵀ` (A = w, B = x, C = y).
pub fn gemm_args(m: usize, k: usize, n: usize) -> Result<GemmArgs, CudaError> {
    let c = |v: usize| {
        i32::try_from(v)
            .map_err(|_| CudaError::invalid("matmul", format!("dimension {v} exceeds i32")))
    };
    Ok(GemmArgs {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: c(n)?,
        n: c(m)?,
        k: c(k)?,
        lda: c(k)?,
        ldb: c(k)?,
        ldc: c(n)?,
    })
}

impl CudaKernels {
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ`, f32 accumulation; `O` is `T` or f32.
    pub fn matmul<T: Half16, O: CudaDType>(
        &self,
        x: &impl DeviceMem<T>,
        w: &impl DeviceMem<T>,
        out: &mut impl DeviceMemMut<O>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        let op = "matmul";
        ensure(O::SUFFIX == T::SUFFIX || O::SUFFIX == "f32", op, || {
            format!("{} output from {} inputs", O::SUFFIX, T::SUFFIX)
        })?;
        ensure(x.len() >= m * k, op, || {
            format!("x holds {} elements, {m} x {k} needed", x.len())
        })?;
        ensure(w.len() >= n * k, op, || {
            format!("w holds {} elements, {n} x {k} needed", w.len())
        })?;
        ensure(out.len() >= m * n, op, || {
            format!("out holds {} elements, {m} x {n} needed", out.len())
        })?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (w_p, x_p, y_p) = (w.addr(), x.addr(), out.addr_mut());
        match self.device() {
            Device::Cuda(dev) => cublas_matmul::<T, O>(dev, w_p, x_p, y_p, m, k, n),
            #[cfg(feature = "emu")]
            Device::Emu(dev) => {
                // SAFETY: the addresses are this emulated device's host
                // allocations of the lengths validated above.
                dev.record_or_run(unsafe {
                    super::emulated::gemm_op::<T, O>(w_p, x_p, y_p, m, k, n)
                })
            }
        }
    }
}

/// `gemm_ex` on the device's cuBLAS handle and stream.
fn cublas_matmul<T: Half16, O: CudaDType>(
    dev: &CudaDevice,
    w_p: u64,
    x_p: u64,
    y_p: u64,
    m: usize,
    k: usize,
    n: usize,
) -> Result<(), CudaError> {
    let a = gemm_args(m, k, n)?;
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: device pointers of validated lengths on the handle's stream;
    // f32 scalars for CUBLAS_COMPUTE_32F.
    unsafe {
        gemm_ex(
            *dev.blas.handle(),
            a.transa,
            a.transb,
            a.m,
            a.n,
            a.k,
            &alpha as *const f32 as *const _,
            w_p as *const _,
            T::BLAS_TYPE,
            a.lda,
            x_p as *const _,
            T::BLAS_TYPE,
            a.ldb,
            &beta as *const f32 as *const _,
            y_p as *mut _,
            O::BLAS_TYPE,
            a.ldc,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| CudaError::Cublas(format!("{e:?} in {m}x{k}x{n} matmul")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's definition: C = op(A) · op(B), all column-major with leading dims.
    fn colmajor_gemm(g: &GemmArgs, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        let at = |i: usize, p: usize| match g.transa {
            cublasOperation_t::CUBLAS_OP_N => a[i + p * g.lda as usize],
            _ => a[p + i * g.lda as usize],
        };
        let bt = |p: usize, j: usize| match g.transb {
            cublasOperation_t::CUBLAS_OP_N => b[p + j * g.ldb as usize],
            _ => b[j + p * g.ldb as usize],
        };
        for i in 0..m {
            for j in 0..n {
                c[i + j * g.ldc as usize] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
    }

    #[test]
    fn args_compute_row_major_x_times_w_transposed() {
        let (m, k, n) = (3, 5, 4);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut y = vec![0f32; m * n];
        colmajor_gemm(&gemm_args(m, k, n).unwrap(), &w, &x, &mut y);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                assert!((y[i * n + j] - want).abs() < 1e-5, "y[{i},{j}]");
            }
        }
    }

    #[test]
    fn huge_dims_are_refused() {
        assert!(gemm_args(1 << 31, 1, 1).is_err());
    }
}
