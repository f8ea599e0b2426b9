//! The CPU `fused_moe`'s scratch buffers, owned by the backend (apart from
//! `cpu_moe.rs` so the backend can hold them without importing the MoE
//! forward, which itself extends the backend).

use pagoda_kernels::cpu::ExpertRouting;

/// Buffers reused from step to step.
#[derive(Debug, Default)]
pub struct MoeScratch {
    pub(super) routing: ExpertRouting,
    pub(super) router_logits: Vec<f32>,
    pub(super) gathered: Vec<f32>,
    pub(super) gate_up: Vec<f32>,
    pub(super) act: Vec<f32>,
    pub(super) expert_out: Vec<f32>,
    pub(super) shared_gate: Vec<f32>,
}

/// Grows `v` to at least `len` (never shrinks: the largest step sets it).
pub(super) fn at_least(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}
