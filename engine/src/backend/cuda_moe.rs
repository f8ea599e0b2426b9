//! `fused_moe` on CUDA, as the CPU's (`cpu_moe.rs`) in device kernels: the
//! router matmul (cuBLAS), routing and the stable grouping by expert
//! (`moe_route`), the chosen rows gathered, the grouped gate/up matmul,
//! SiLU-and-mul over all gathered rows, the grouped down matmul, and the
//! weighted combine back per token (with Qwen2-MoE's gated shared expert
//! through cuBLAS). No host round trip, so decode graphs record it.
//!
//! Scratch buffers grow to the largest step; the profiling pass runs the
//! largest step before any graph is captured, so nothing is allocated while
//! recording. Each layer's table of expert matrix addresses is uploaded at
//! its first call (the profiling pass too) and kept, keyed by the router's
//! address.

use std::collections::HashMap;

use half::bf16;
use pagoda_kernels::cuda::moe::MoeRouting;
use pagoda_kernels::cuda::{CudaError, CudaKernels, DeviceBuffer, DeviceMem};

use super::moe::MoeWeights;

/// Device addresses of one layer's expert matrices (`moe_matmul`'s tables).
struct ExpertTables {
    gate_up: DeviceBuffer<u64>,
    down: DeviceBuffer<u64>,
}

/// The buffers `fused_moe` writes between kernels.
#[derive(Default)]
pub(super) struct MoeScratch {
    routing: Option<MoeRouting>,
    logits: Option<DeviceBuffer<bf16>>,
    gathered: Option<DeviceBuffer<bf16>>,
    gate_up: Option<DeviceBuffer<bf16>>,
    act: Option<DeviceBuffer<bf16>>,
    expert_out: Option<DeviceBuffer<bf16>>,
    shared_gate: Option<DeviceBuffer<bf16>>,
    shared_out: Option<DeviceBuffer<bf16>>,
    tables: HashMap<u64, ExpertTables>,
}

/// `slot`, reallocated when shorter than `len` elements.
fn at_least<'a>(
    k: &CudaKernels,
    slot: &'a mut Option<DeviceBuffer<bf16>>,
    len: usize,
) -> Result<&'a mut DeviceBuffer<bf16>, CudaError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(k.alloc_zeros(len.max(1))?);
    }
    Ok(slot.as_mut().expect("just allocated"))
}

impl MoeScratch {
    /// Runs one sparse MLP block over the first `rows` rows of `hidden`,
    /// in place.
    pub(super) fn fused_moe(
        &mut self,
        k: &CudaKernels,
        hidden: &mut DeviceBuffer<bf16>,
        moe: &MoeWeights<DeviceBuffer<bf16>>,
        rows: usize,
    ) -> Result<(), CudaError> {
        if rows == 0 {
            return Ok(());
        }
        let (h, inter, e, top_k) = (moe.hidden, moe.intermediate, moe.num_experts(), moe.top_k);
        let pairs = rows * top_k;
        let key = moe.router.addr();
        if let std::collections::hash_map::Entry::Vacant(slot) = self.tables.entry(key) {
            let addrs = |pick: fn(&super::moe::ExpertWeights<DeviceBuffer<bf16>>) -> u64| {
                moe.experts.iter().map(pick).collect::<Vec<u64>>()
            };
            slot.insert(ExpertTables {
                gate_up: k.upload(&addrs(|x| x.gate_up.addr()))?,
                down: k.upload(&addrs(|x| x.down.addr()))?,
            });
        }
        let grow = self
            .routing
            .as_ref()
            .is_none_or(|r| r.capacity() < pairs || r.expert_offsets.len() <= e);
        if grow {
            let experts = self
                .routing
                .as_ref()
                .map_or(e, |r| (r.expert_offsets.len() - 1).max(e));
            self.routing = Some(MoeRouting::new(k, pairs, experts)?);
        }
        let routing = self.routing.as_mut().expect("sized above");
        let tables = &self.tables[&key];

        let logits = at_least(k, &mut self.logits, rows * e)?;
        k.matmul::<bf16, bf16>(hidden, &moe.router, logits, rows, h, e)?;
        k.moe_route(logits, rows, e, top_k, moe.renormalize, routing)?;
        let gathered = at_least(k, &mut self.gathered, pairs * h)?;
        k.gather_rows(hidden, &routing.row_token, gathered, pairs, h)?;
        let gate_up = at_least(k, &mut self.gate_up, pairs * 2 * inter)?;
        k.moe_matmul(
            gathered,
            &tables.gate_up,
            routing,
            gate_up,
            pairs,
            h,
            2 * inter,
        )?;
        let act = at_least(k, &mut self.act, pairs * inter)?;
        k.silu_and_mul(&*gate_up, act, pairs, inter)?;
        let expert_out = at_least(k, &mut self.expert_out, pairs * h)?;
        k.moe_matmul(&*act, &tables.down, routing, expert_out, pairs, inter, h)?;

        // The shared expert reads `hidden` before the combine overwrites it
        // (its gate_up and act reuse the routed experts' buffers, done with).
        let shared_rows = match &moe.shared {
            None => None,
            Some(shared) => {
                let si = shared.intermediate;
                let gate = at_least(k, &mut self.shared_gate, rows)?;
                k.matmul::<bf16, bf16>(hidden, &shared.gate, gate, rows, h, 1)?;
                let sgu = at_least(k, &mut self.gate_up, rows * 2 * si)?;
                k.matmul::<bf16, bf16>(hidden, &shared.mlp.gate_up, sgu, rows, h, 2 * si)?;
                let sact = at_least(k, &mut self.act, rows * si)?;
                k.silu_and_mul(&*sgu, sact, rows, si)?;
                let sout = at_least(k, &mut self.shared_out, rows * h)?;
                k.matmul::<bf16, bf16>(&*sact, &shared.mlp.down, sout, rows, si, h)?;
                Some((&*sout, &*gate))
            }
        };
        k.moe_combine(&*expert_out, routing, shared_rows, hidden, rows, top_k, h)
    }
}
