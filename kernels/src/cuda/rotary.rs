//! Rotary embedding on the GPU. The cos/sin tables are the CPU
//! `RotaryCache`'s own, uploaded once, so both devices rotate by the same
//! f32 values (default, linear and llama3 scaling all live in inv_freq).

use super::buffer::{DeviceBuffer, DeviceMem, DeviceMemMut};

use super::error::ensure;
use super::launch::rotary_shape;
use super::params::RotaryParams;
use super::sources::{unit_name, ROTARY};
use super::{to_i32, CudaDType, CudaError, CudaKernels};
use crate::cpu::RotaryCache;

/// The cos/sin tables on the device, `[max_position, head_dim / 2]` each.
#[derive(Debug)]
pub struct CudaRope {
    pub cos: DeviceBuffer<f32>,
    pub sin: DeviceBuffer<f32>,
    pub half: usize,
    pub max_position: usize,
}

impl CudaRope {
    pub fn new(kernels: &CudaKernels, cache: &RotaryCache) -> Result<Self, CudaError> {
        let (cos, sin) = cache.cos_sin();
        Ok(Self {
            cos: kernels.upload(cos)?,
            sin: kernels.upload(sin)?,
            half: cache.rotary_dim() / 2,
            max_position: cache.max_position(),
        })
    }
}

impl CudaKernels {
    /// Rotates q (`[tokens, q_stride]`, `num_heads` heads) and k (`[tokens,
    /// k_stride]`, `num_kv_heads` heads) in place by each token's position
    /// (neox / rotate_half). Positions at or past the table's end are left
    /// unrotated; the engine bounds positions by max_model_len.
    #[allow(clippy::too_many_arguments)]
    pub fn rotary_embedding<T: CudaDType>(
        &self,
        positions: &impl DeviceMem<u32>,
        q: &mut impl DeviceMemMut<T>,
        q_stride: usize,
        k: &mut impl DeviceMemMut<T>,
        k_stride: usize,
        rope: &CudaRope,
        num_tokens: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<(), CudaError> {
        let op = "rotary_embedding";
        ensure(rope.half > 0 && 2 * rope.half <= head_dim, op, || {
            format!(
                "table rotates {} dims, head_dim is {head_dim}",
                2 * rope.half
            )
        })?;
        ensure(positions.len() >= num_tokens, op, || {
            format!("positions shorter than {num_tokens}")
        })?;
        for (name, len, stride, heads) in [
            ("q", q.len(), q_stride, num_heads),
            ("k", k.len(), k_stride, num_kv_heads),
        ] {
            ensure(stride >= heads * head_dim, op, || {
                format!("{name} stride {stride} < {heads} x {head_dim}")
            })?;
            if num_tokens > 0 {
                let need = (num_tokens - 1) * stride + heads * head_dim;
                ensure(len >= need, op, || {
                    format!("{name} holds {len} elements, {need} needed")
                })?;
            }
        }
        if num_tokens == 0 {
            return Ok(());
        }
        let f = self.function(
            &unit_name(&ROTARY),
            &format!("rotary_embedding_{}", T::SUFFIX),
            0,
        )?;
        let p_p = positions.addr();
        let q_p = q.addr_mut();
        let k_p = k.addr_mut();
        let c_p = rope.cos.addr();
        let s_p = rope.sin.addr();
        let (qs, ks) = (to_i32(op, q_stride)?, to_i32(op, k_stride)?);
        let (mp, half) = (to_i32(op, rope.max_position)?, to_i32(op, rope.half)?);
        let (nh, nkv, hd) = (
            to_i32(op, num_heads)?,
            to_i32(op, num_kv_heads)?,
            to_i32(op, head_dim)?,
        );
        let params = RotaryParams {
            positions: p_p,
            q: q_p,
            k: k_p,
            cos: c_p,
            sin: s_p,
            q_stride: qs,
            k_stride: ks,
            max_position: mp,
            half,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        let shape = rotary_shape(num_tokens, num_heads + num_kv_heads, rope.half);
        self.launch_kernel(&f, &shape, &params)
    }
}
