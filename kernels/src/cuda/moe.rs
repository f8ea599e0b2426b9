//! Mixture-of-experts launchers (`cu/moe.cu`): routing, the stable
//! grouping of (token, choice) pairs by expert, the grouped matmul over
//! the gathered rows and the weighted combine. The CPU `ExpertRouting`,
//! `moe_gather` and `moe_scatter_weighted` are the references. Every
//! launch shape depends on host-known sizes only (graph-safe).

use super::buffer::{DeviceBuffer, DeviceMem, DeviceMemMut};
use super::error::ensure;
use super::launch::{rows_shape, LaunchShape, ROW_THREADS};
use super::params::{DevPtr, MoeAlignParams, MoeCombineParams, MoeMatmulParams, MoeRouteParams};
use super::sources::{unit_name, MOE};
use super::{to_i32, CudaDType, CudaError, CudaKernels};

/// Largest top-k the routing kernel keeps (`MOE_MAX_TOP_K`).
pub const MOE_MAX_TOP_K: usize = 16;
const ROUTE_THREADS: u32 = 128;
const ALIGN_THREADS: u32 = 256;
const MATMUL_THREADS: u32 = 128;

/// One step's routing on the device, in buffers sized once for the
/// largest step (`max_pairs` = tokens × top_k) and expert count.
#[derive(Debug)]
pub struct MoeRouting {
    /// `[pairs]`: each token's experts, ascending.
    pub expert_ids: DeviceBuffer<u32>,
    /// `[pairs]`: the routing weight of each choice.
    pub weights: DeviceBuffer<f32>,
    /// `[experts + 1]`: expert `e` takes gathered rows `offsets[e]..offsets[e + 1]`.
    pub expert_offsets: DeviceBuffer<u32>,
    /// `[pairs]`, by gathered row: the token it copies.
    pub row_token: DeviceBuffer<u32>,
    /// `[pairs]`, by gathered row: its expert.
    pub row_expert: DeviceBuffer<u32>,
    /// `[pairs]`, by pair: its gathered row.
    pub gathered_row: DeviceBuffer<u32>,
}

impl MoeRouting {
    pub fn new(k: &CudaKernels, max_pairs: usize, num_experts: usize) -> Result<Self, CudaError> {
        let n = max_pairs.max(1);
        Ok(Self {
            expert_ids: k.alloc_zeros(n)?,
            weights: k.alloc_zeros(n)?,
            expert_offsets: k.alloc_zeros(num_experts + 1)?,
            row_token: k.alloc_zeros(n)?,
            row_expert: k.alloc_zeros(n)?,
            gathered_row: k.alloc_zeros(n)?,
        })
    }

    /// Pairs the buffers hold.
    pub fn capacity(&self) -> usize {
        self.expert_ids.len()
    }
}

impl CudaKernels {
    /// Routes `tokens` rows of router logits (`[tokens, num_experts]`) and
    /// groups the chosen (token, expert) pairs by expert.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_route<T: CudaDType>(
        &self,
        logits: &impl DeviceMem<T>,
        tokens: usize,
        num_experts: usize,
        top_k: usize,
        renormalize: bool,
        routing: &mut MoeRouting,
    ) -> Result<(), CudaError> {
        let op = "moe_route";
        ensure(
            (1..=num_experts.min(MOE_MAX_TOP_K)).contains(&top_k),
            op,
            || format!("top_k {top_k} of {num_experts} experts (at most {MOE_MAX_TOP_K})"),
        )?;
        let pairs = tokens * top_k;
        ensure(logits.len() >= tokens * num_experts, op, || {
            format!(
                "logits hold {} elements, {} needed",
                logits.len(),
                tokens * num_experts
            )
        })?;
        ensure(
            routing.capacity() >= pairs && routing.expert_offsets.len() > num_experts,
            op,
            || format!("routing buffers too small for {pairs} pairs of {num_experts} experts"),
        )?;
        if tokens == 0 {
            return Ok(());
        }
        let (t, e, kk) = (
            to_i32(op, tokens)?,
            to_i32(op, num_experts)?,
            to_i32(op, top_k)?,
        );
        let route = self.function(&unit_name(&MOE), &format!("moe_route_{}", T::SUFFIX), 0)?;
        let params = MoeRouteParams {
            logits: logits.addr(),
            expert_ids: routing.expert_ids.addr_mut(),
            weights: routing.weights.addr_mut(),
            num_tokens: t,
            num_experts: e,
            top_k: kk,
            renormalize: renormalize as i32,
        };
        let shape = LaunchShape {
            grid: ((tokens as u32).div_ceil(ROUTE_THREADS), 1, 1),
            block: ROUTE_THREADS,
            smem_bytes: 0,
        };
        self.launch_kernel(&route, &shape, &params)?;
        let align = self.function(&unit_name(&MOE), "moe_align", 0)?;
        let params = MoeAlignParams {
            expert_ids: routing.expert_ids.addr(),
            expert_offsets: routing.expert_offsets.addr_mut(),
            row_token: routing.row_token.addr_mut(),
            row_expert: routing.row_expert.addr_mut(),
            gathered_row: routing.gathered_row.addr_mut(),
            num_pairs: to_i32(op, pairs)?,
            num_experts: e,
            top_k: kk,
        };
        let shape = LaunchShape {
            grid: (1, 1, 1),
            block: ALIGN_THREADS,
            smem_bytes: 0,
        };
        self.launch_kernel(&align, &shape, &params)
    }

    /// `out[r] = x[r] · W_{row_expert[r]}ᵀ` for `rows` gathered rows of `k`;
    /// `weights[e]` is the device address of expert `e`'s `[n, k]` matrix.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_matmul<T: CudaDType>(
        &self,
        x: &impl DeviceMem<T>,
        weights: &DeviceBuffer<DevPtr>,
        routing: &MoeRouting,
        out: &mut impl DeviceMemMut<T>,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        let op = "moe_matmul";
        ensure(x.len() >= rows * k && out.len() >= rows * n, op, || {
            format!(
                "x ({}) or out ({}) shorter than {rows} rows",
                x.len(),
                out.len()
            )
        })?;
        ensure(routing.capacity() >= rows, op, || {
            format!("routing holds {} rows, {rows} needed", routing.capacity())
        })?;
        ensure(
            weights.len() + 1 >= routing.expert_offsets.len(),
            op,
            || "fewer weight addresses than experts".into(),
        )?;
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&MOE), &format!("moe_matmul_{}", T::SUFFIX), 0)?;
        let params = MoeMatmulParams {
            out: out.addr_mut(),
            x: x.addr(),
            weights: weights.addr(),
            row_expert: routing.row_expert.addr(),
            rows: to_i32(op, rows)?,
            k: to_i32(op, k)?,
            n: to_i32(op, n)?,
        };
        let shape = LaunchShape {
            grid: (rows as u32, (n as u32).div_ceil(MATMUL_THREADS), 1),
            block: MATMUL_THREADS,
            smem_bytes: 0,
        };
        self.launch_kernel(&f, &shape, &params)
    }

    /// `hidden[t] = Σ_j w[t, j] · expert_out[gathered_row[t, j]]` (+ the
    /// shared expert's rows times `sigmoid(shared_gate[t])`), rows of `dim`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_combine<T: CudaDType>(
        &self,
        expert_out: &impl DeviceMem<T>,
        routing: &MoeRouting,
        shared: Option<(&DeviceBuffer<T>, &DeviceBuffer<T>)>,
        hidden: &mut impl DeviceMemMut<T>,
        tokens: usize,
        top_k: usize,
        dim: usize,
    ) -> Result<(), CudaError> {
        let op = "moe_combine";
        ensure(hidden.len() >= tokens * dim, op, || {
            format!(
                "hidden holds {} elements, {} needed",
                hidden.len(),
                tokens * dim
            )
        })?;
        ensure(
            expert_out.len() >= tokens * top_k * dim && routing.capacity() >= tokens * top_k,
            op,
            || format!("expert rows shorter than {tokens} x {top_k}"),
        )?;
        if let Some((out, gate)) = shared {
            ensure(
                out.len() >= tokens * dim && gate.len() >= tokens,
                op,
                || "shared expert rows shorter than the tokens".into(),
            )?;
        }
        if tokens == 0 {
            return Ok(());
        }
        let f = self.function(&unit_name(&MOE), &format!("moe_combine_{}", T::SUFFIX), 0)?;
        let params = MoeCombineParams {
            hidden: hidden.addr_mut(),
            expert_out: expert_out.addr(),
            gathered_row: routing.gathered_row.addr(),
            weights: routing.weights.addr(),
            shared_out: shared.map_or(0, |(o, _)| o.addr()),
            shared_gate: shared.map_or(0, |(_, g)| g.addr()),
            num_tokens: to_i32(op, tokens)?,
            top_k: to_i32(op, top_k)?,
            dim: to_i32(op, dim)?,
        };
        self.launch_kernel(&f, &rows_shape(tokens, dim, ROW_THREADS), &params)
    }
}
