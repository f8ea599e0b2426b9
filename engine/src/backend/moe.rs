//! The weights of one mixture-of-experts layer, in a backend's weight type,
//! and what `Backend::fused_moe` needs to route tokens through them.

/// One expert: a gated MLP (gate rows, then up rows, fused; then down).
pub struct ExpertWeights<W> {
    /// `[2 * intermediate, hidden]`.
    pub gate_up: W,
    /// `[hidden, intermediate]`.
    pub down: W,
}

/// Qwen2-MoE's shared expert: every token takes it, scaled by
/// `sigmoid(gate · x)`.
pub struct SharedExpertWeights<W> {
    pub intermediate: usize,
    pub mlp: ExpertWeights<W>,
    /// `[1, hidden]`: `shared_expert_gate`.
    pub gate: W,
}

/// A sparse MLP block: router, experts, optional shared expert.
pub struct MoeWeights<W> {
    /// `[num_experts, hidden]`: the router (`gate` in HF).
    pub router: W,
    pub experts: Vec<ExpertWeights<W>>,
    pub shared: Option<SharedExpertWeights<W>>,
    pub hidden: usize,
    /// Each expert's intermediate size.
    pub intermediate: usize,
    pub top_k: usize,
    /// Divide the top-k weights by their sum.
    pub renormalize: bool,
}

impl<W> MoeWeights<W> {
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Every matrix of the block, named for the load log.
    pub fn named_matrices(&self) -> Vec<(String, &W)> {
        let mut out = vec![("router".to_string(), &self.router)];
        for (j, x) in self.experts.iter().enumerate() {
            out.push((format!("experts.{j}.gate_up"), &x.gate_up));
            out.push((format!("experts.{j}.down"), &x.down));
        }
        if let Some(s) = &self.shared {
            out.push(("shared_expert.gate_up".to_string(), &s.mlp.gate_up));
            out.push(("shared_expert.down".to_string(), &s.mlp.down));
            out.push(("shared_expert_gate".to_string(), &s.gate));
        }
        out
    }
}
