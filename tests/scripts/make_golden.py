#!/usr/bin/env python3
"""Build the tiny random checkpoints and their HF transformers golden outputs.

Pagoda's golden tests (issue 3, section 6) compare its greedy tokens and top-1
logprobs with HF transformers. This script is the reference side: for each
architecture variant below it builds a tiny random model, saves it as an HF
folder under tests/fixtures/models/<name>/ (config.json, model.safetensors,
generation_config.json; no tokenizer: these run on token ids) and writes
golden.json next to it.

The reference is always computed in f32: the saved checkpoint is loaded back
with dtype=torch.float32, so f16/bf16 weights are upcast exactly as Pagoda
upcasts them. Everything is seeded; re-running rewrites identical files on the
same torch/transformers versions.

Random weights are scaled up from HF's std 0.02 so that greedy output is not
flat: projections std 2/sqrt(fan_in) (0.2-0.25 here), embeddings 0.25, norm
gains 1 +- 0.2, biases 0.2. Larger embeddings (std 1) were tried and are worse:
the current token then dominates the residual stream and tied models predict
their input token again (loops such as 1 distinct token in 24). Each seed is
the first of 1xxx, 11xx, 12xx, 13xx for which every case has >= 14 distinct
tokens in 24 and every top-2 logit margin is >= 3e-3; `summarize` prints both
so a regeneration on other torch versions shows if that still holds. The
mixture-of-experts models take the first seed of 14xx that also keeps every
token's gap between its k-th and (k+1)-th router logit >= 1e-3 (recorded as
`min_router_margin`), so f32 rounding cannot send a token to another expert.

Usage: python3 tests/scripts/make_golden.py [--out tests/fixtures/models] [--only NAME]
"""

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

import torch
import transformers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GenerationConfig,
    LlamaConfig,
    Phi3Config,
    Phi3ForCausalLM,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

PROMPT_LENS = [1, 5, 17, 40]
MAX_NEW_TOKENS = 24
TOP_K = 5
MAX_POSITIONS = 512
BOS_TOKEN_ID = 1
EMBED_STD = 0.25

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Each variant: architecture, config keyword arguments, the saved weight dtype,
# and `legacy_config`: rewrite config.json in the pre-v5 form (top-level
# rope_theta / rope_scaling, torch_dtype, no redundant head_dim) that most
# published checkpoints still carry, so both forms are exercised.
MODELS = [
    {
        "name": "llama_mha_f32",
        "arch": "LlamaForCausalLM",
        "dtype": "float32",
        "legacy_config": True,
        "seed": 1301,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False,
        ),
    },
    {
        "name": "llama_gqa_tied_bias_f16",
        "arch": "LlamaForCausalLM",
        "dtype": "float16",
        "legacy_config": False,
        "seed": 1002,
        "config": dict(
            vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True,
        ),
    },
    {
        # Llama 3 rope scaling with original_max_position_embeddings=64, so the
        # 64 positions used here span all three regimes (kept, smoothed, scaled).
        "name": "llama_mqa_llama3rope_bf16",
        "arch": "LlamaForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "seed": 1003,
        "config": dict(
            vocab_size=384, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=3, num_key_value_heads=1, rms_norm_eps=1e-5,
            rope_theta=500000.0, tie_word_embeddings=False,
            rope_scaling={
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
            },
        ),
    },
    {
        "name": "llama_gqa_linearrope_tied_f32",
        "arch": "LlamaForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "seed": 1004,
        "config": dict(
            vocab_size=288, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=True,
            rope_scaling={"rope_type": "linear", "factor": 4.0},
        ),
    },
    {
        "name": "mistral_gqa_f16",
        "arch": "MistralForCausalLM",
        "dtype": "float16",
        "legacy_config": True,
        "seed": 1005,
        "config": dict(
            vocab_size=448, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
            rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None,
        ),
    },
    {
        "name": "qwen2_bias_tied_bf16",
        "arch": "Qwen2ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "seed": 1106,
        "config": dict(
            vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
            sliding_window=None,
        ),
    },
    {
        # head_dim 32 while hidden/heads = 16: q_proj is [128, 64], o_proj [64, 128].
        "name": "qwen3_qknorm_hd32_f32",
        "arch": "Qwen3ForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "seed": 1207,
        "config": dict(
            vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False,
            sliding_window=None,
        ),
    },
    {
        # MQA with head_dim 64 (2 heads over hidden 64 would be 32): tied, bf16.
        "name": "qwen3_mqa_hd64_tied_bf16",
        "arch": "Qwen3ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "seed": 1108,
        "config": dict(
            vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, head_dim=64, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
            sliding_window=None,
        ),
    },
    # Gemma 2/3 (issue 10): windows of 8-12 so the 40-token prompts outgrow
    # them; soft-caps small enough to bite on these weights; query_pre_attn_scalar
    # != head_dim. `norm_offset`: Gemma stores RMSNorm gains as offsets from 1.
    {
        # v5 config (layer_types), 3 layers: sliding, full, sliding.
        "name": "gemma2_window8_softcap_f32",
        "arch": "Gemma2ForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "norm_offset": True,
        "seed": 1109,
        # Tied with a scale-8 embedding: a small std keeps greedy output from
        # repeating the input token.
        "embed_std": 0.03,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=True, query_pre_attn_scalar=24,
            sliding_window=8, attn_logit_softcapping=5.0, final_logit_softcapping=6.0,
            hidden_activation="gelu_pytorch_tanh",
        ),
    },
    {
        # Legacy config (no layer_types: the alternating default), bf16, MQA,
        # hidden 96 (sqrt not exact), transformers' default soft-caps.
        "name": "gemma2_legacy_window12_bf16",
        "arch": "Gemma2ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "norm_offset": True,
        "seed": 1010,
        "config": dict(
            vocab_size=320, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=3, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False, query_pre_attn_scalar=32,
            sliding_window=12, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        ),
    },
    {
        # v5 config: per-layer-type rope_parameters (linear scaling on the global
        # layers, theta 1e4 on the local ones), layer_types, q/k norm, no caps;
        # untied (tied Gemma is gemma2_window8_softcap_f32).
        "name": "gemma3_window8_localrope_f32",
        "arch": "Gemma3ForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "norm_offset": True,
        "seed": 1011,
        "config": dict(
            vocab_size=288, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
            tie_word_embeddings=False, query_pre_attn_scalar=16, sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            rope_parameters={
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        ),
    },
    {
        # Legacy Gemma 3 keys: sliding_window_pattern 2, rope_theta +
        # rope_local_base_freq, no rope_parameters / layer_types; bf16,
        # final soft-cap on, attention soft-cap off.
        "name": "gemma3_legacy_window12_bf16",
        "arch": "Gemma3ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "sliding_window_pattern": 2,
        "norm_offset": True,
        "seed": 1012,
        "config": dict(
            vocab_size=352, hidden_size=96, intermediate_size=160, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6,
            tie_word_embeddings=False, query_pre_attn_scalar=24, sliding_window=12,
            final_logit_softcapping=8.0,
            layer_types=["sliding_attention", "full_attention"] * 2,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        ),
    },
    {
        # Qwen2's per-layer window (issue 10): use_sliding_window with
        # max_window_layers 1, so layer 0 is full and layers 1-2 window 8.
        "name": "qwen2_window8_layers_f32",
        "arch": "Qwen2ForCausalLM",
        "dtype": "float32",
        "legacy_config": True,
        "seed": 1315,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=True,
            sliding_window=8, max_window_layers=1,
        ),
    },
    # Phi-3 (issue 10): fused qkv_proj / gate_up_proj in the checkpoint.
    {
        # LongRoPE (short factors: Pagoda runs up to original_max_position_embeddings
        # = 512) with the attention factor of max 1024 / original 512.
        "name": "phi3_longrope_f32",
        "arch": "Phi3ForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "max_positions": 1024,
        "seed": 1013,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=False, original_max_position_embeddings=512,
            rope_scaling={
                "rope_type": "longrope",
                "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 40.0],
            },
        ),
    },
    {
        # Phi-3-mini-4k style: default rope, a window on every layer, MHA, bf16.
        "name": "phi3_window8_bf16",
        "arch": "Phi3ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "seed": 1014,
        "config": dict(
            vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=False, sliding_window=8,
            original_max_position_embeddings=512,
        ),
    },
    {
        # Phi-4-mini style: partial rotary (0.75 of head_dim 16: 12 dims turn,
        # 4 pass through), LongRoPE factors over the rotary dims (6 each;
        # short factors: Pagoda runs up to original 512), tied embeddings.
        "name": "phi4mini_partial_rotary_f32",
        "arch": "Phi3ForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "max_positions": 1024,
        "seed": 1015,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=10000.0, tie_word_embeddings=True, original_max_position_embeddings=512,
            partial_rotary_factor=0.75,
            rope_scaling={
                "rope_type": "longrope",
                "short_factor": [1.0, 1.2, 1.5, 2.0, 2.6, 3.3],
                "long_factor": [1.0, 3.0, 6.0, 12.0, 24.0, 48.0],
            },
        ),
    },
    # Head size 64 (the smallest the CUDA kernels build), bf16: the CUDA path
    # on the kernel emulator against HF (tests/tests/cuda_emu.rs), and the CPU.
    {
        "name": "gemma2_hd64_window8_bf16",
        "arch": "Gemma2ForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": False,
        "norm_offset": True,
        "seed": 1016,
        "embed_std": 0.3,
        "config": dict(
            vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, head_dim=64, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False, query_pre_attn_scalar=64,
            sliding_window=8, attn_logit_softcapping=5.0, final_logit_softcapping=8.0,
            hidden_activation="gelu_pytorch_tanh",
        ),
    },
    {
        "name": "mixtral_hd64_e8_top2_bf16",
        "arch": "MixtralForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": False,
        "seed": 1405,
        "config": dict(
            vocab_size=256, hidden_size=128, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5,
            rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None,
            num_local_experts=8, num_experts_per_tok=2,
        ),
    },
    # Mixtures of experts (issue 10). transformers 5.24 keeps experts as 3D
    # tensors in memory and saves them per expert (the published layout).
    {
        "name": "mixtral_e8_top2_f32",
        "arch": "MixtralForCausalLM",
        "dtype": "float32",
        "legacy_config": True,
        "seed": 1403,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=1000000.0, tie_word_embeddings=False, sliding_window=None,
            num_local_experts=8, num_experts_per_tok=2,
        ),
    },
    {
        "name": "mixtral_e4_top2_tied_bf16",
        "arch": "MixtralForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": False,
        "seed": 1402,
        "config": dict(
            vocab_size=288, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
            rope_theta=1000000.0, tie_word_embeddings=True, sliding_window=None,
            num_local_experts=4, num_experts_per_tok=2,
        ),
    },
    {
        # Shared expert with its sigmoid gate; layer 1 dense (mlp_only_layers).
        "name": "qwen2_moe_shared_f32",
        "arch": "Qwen2MoeForCausalLM",
        "dtype": "float32",
        "legacy_config": True,
        "seed": 1404,
        "config": dict(
            vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False,
            sliding_window=None, num_experts=8, num_experts_per_tok=4,
            moe_intermediate_size=32, shared_expert_intermediate_size=96,
            norm_topk_prob=False, mlp_only_layers=[1], decoder_sparse_step=1,
        ),
    },
    {
        # decoder_sparse_step 2: layers 1 and 3 sparse; norm_topk_prob.
        "name": "qwen2_moe_step2_norm_bf16",
        "arch": "Qwen2MoeForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": False,
        "seed": 1404,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
            sliding_window=None, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=48, shared_expert_intermediate_size=64,
            norm_topk_prob=True, decoder_sparse_step=2,
        ),
    },
    {
        # Qwen3-30B-A3B's routing (norm_topk_prob) at 16 experts, top-4.
        "name": "qwen3_moe_e16_top4_f32",
        "arch": "Qwen3MoeForCausalLM",
        "dtype": "float32",
        "legacy_config": False,
        "seed": 1403,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False,
            sliding_window=None, num_experts=16, num_experts_per_tok=4,
            moe_intermediate_size=16, norm_topk_prob=True,
        ),
    },
    {
        "name": "qwen3_moe_mlponly_bf16",
        "arch": "Qwen3MoeForCausalLM",
        "dtype": "bfloat16",
        "legacy_config": True,
        "seed": 1403,
        "config": dict(
            vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-6,
            rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
            sliding_window=None, num_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=48, norm_topk_prob=False, mlp_only_layers=[0],
        ),
    },
]

ARCHS = {
    "LlamaForCausalLM": (LlamaConfig, LlamaForCausalLM),
    "MistralForCausalLM": (MistralConfig, MistralForCausalLM),
    "Qwen2ForCausalLM": (Qwen2Config, Qwen2ForCausalLM),
    "Qwen3ForCausalLM": (Qwen3Config, Qwen3ForCausalLM),
    "Gemma2ForCausalLM": (Gemma2Config, Gemma2ForCausalLM),
    "Gemma3ForCausalLM": (Gemma3TextConfig, Gemma3ForCausalLM),
    "Phi3ForCausalLM": (Phi3Config, Phi3ForCausalLM),
    "MixtralForCausalLM": (MixtralConfig, MixtralForCausalLM),
    "Qwen2MoeForCausalLM": (Qwen2MoeConfig, Qwen2MoeForCausalLM),
    "Qwen3MoeForCausalLM": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
}


def make_config(spec):
    config_cls, _ = ARCHS[spec["arch"]]
    kwargs = dict(spec["config"])
    if "rope_parameters" in kwargs:  # per layer type (Gemma 3)
        rope = kwargs.pop("rope_parameters")
    else:
        rope_theta = kwargs.pop("rope_theta")
        rope = dict(kwargs.pop("rope_scaling", {"rope_type": "default"}))
        rope["rope_theta"] = rope_theta
    config = config_cls(
        **kwargs,
        rope_parameters=rope,
        max_position_embeddings=spec.get("max_positions", MAX_POSITIONS),
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=None,
        pad_token_id=None,
        dtype=spec["dtype"],
        architectures=[spec["arch"]],
    )
    return config


def init_weights(model, seed, embed_std, norm_offset=False):
    """Scaled-up random weights: the default init (std 0.02) gives flat logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() yields a tied lm_head/embedding only once.
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * embed_std)
            elif name.endswith("lm_head.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.25)
            elif "norm" in name:
                # RMSNorm gains (incl. Qwen3 q_norm/k_norm) around 1, not all equal
                # (Gemma's checkpoints store the gain minus 1).
                base = 0.0 if norm_offset else 1.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif name.endswith(".weight") and p.dim() == 2:
                # std ~ 2 / sqrt(fan_in): strong enough to mix tokens across layers.
                std = 2.0 / p.shape[1] ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif ".experts." in name and p.dim() == 3:
                # MoE experts, [experts, out, in] in memory: as 2D, per expert.
                std = 2.0 / p.shape[2] ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            else:
                raise ValueError(f"unexpected parameter {name}")


ROUTER_MARGINS = []


def track_router_margins(model):
    """Records, per routed token, the gap between the k-th and (k+1)-th router
    logit: a near-tie there could send Pagoda's f32 to another expert."""
    for name, module in model.named_modules():
        if type(module).__name__.endswith("TopKRouter"):
            k = module.top_k

            def hook(mod, args, out, k=k):
                logits = out[0].float()
                if logits.shape[-1] > k:
                    top = torch.topk(logits, k + 1, dim=-1).values
                    ROUTER_MARGINS.append(float((top[:, k - 1] - top[:, k]).min()))

            module.register_forward_hook(hook)


@torch.no_grad()
def greedy_reference(model, prompt, max_new_tokens):
    """Greedy decode with the KV cache, ignoring any eos; f32 logits per step."""
    ids = torch.tensor([prompt], dtype=torch.long)
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1].float()
    output, tops, margins = [], [], []
    for step in range(max_new_tokens):
        logprobs = torch.log_softmax(logits, dim=-1)
        top_lp, top_ids = torch.topk(logprobs, TOP_K)
        top2 = torch.topk(logits, 2).values
        nxt = int(torch.argmax(logits))
        assert nxt == int(top_ids[0])
        output.append(nxt)
        tops.append([[int(i), float(lp)] for i, lp in zip(top_ids, top_lp)])
        margins.append(float(top2[0] - top2[1]))
        if step + 1 == max_new_tokens:
            break
        out = model(
            input_ids=torch.tensor([[nxt]], dtype=torch.long), past_key_values=past, use_cache=True
        )
        past = out.past_key_values
        logits = out.logits[0, -1].float()
    return output, tops, margins


def reference_case(model, prompt, max_new_tokens):
    """One golden case: the prompt and `model`'s greedy run of it."""
    output, tops, margins = greedy_reference(model, prompt, max_new_tokens)
    return {
        "prompt_token_ids": prompt,
        "output_token_ids": output,
        "top_logprobs": tops,
        "top2_margin": margins,
        "finish_reason": "length",
    }


def load_f32(folder, arch):
    _, model_cls = ARCHS[arch]
    model = model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def legacy_config_json(cfg, spec):
    """Rewrite a v5 config dict into the older published form."""
    cfg = dict(cfg)
    if "sliding_window_pattern" in spec:
        # Gemma 3: per-layer-type rope -> rope_theta/rope_scaling (global) and
        # rope_local_base_freq; layer_types -> sliding_window_pattern.
        ropes = cfg.pop("rope_parameters")
        local = dict(ropes["sliding_attention"])
        assert local.get("rope_type") == "default", local
        cfg["rope_local_base_freq"] = local["rope_theta"]
        cfg["rope_parameters"] = ropes["full_attention"]
        n = spec["sliding_window_pattern"]
        want = ["sliding_attention" if (i + 1) % n else "full_attention"
                for i in range(cfg["num_hidden_layers"])]
        assert cfg["layer_types"] == want, (cfg["layer_types"], want)
        cfg["sliding_window_pattern"] = n
    rope = dict(cfg.pop("rope_parameters"))
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    cfg["torch_dtype"] = cfg.pop("dtype")
    # (Gemma's default head_dim is 256, not hidden / heads: its configs keep it.)
    gemma = spec["arch"].startswith("Gemma")
    if not gemma and cfg.get("head_dim") == cfg["hidden_size"] // cfg["num_attention_heads"]:
        del cfg["head_dim"]
    cfg.pop("layer_types", None)
    return cfg


def golden_json(obj):
    """Readable and diff-friendly: one line per case field, one per generated step."""
    lines = ["{"]
    head = {k: v for k, v in obj.items() if k != "cases"}
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": [')
    for ci, case in enumerate(obj["cases"]):
        lines.append("    {")
        fields = list(case.items())
        for fi, (k, v) in enumerate(fields):
            end = "," if fi + 1 < len(fields) else ""
            if k == "top_logprobs":
                steps = ",\n".join("        " + json.dumps(step) for step in v)
                lines.append(f'      "{k}": [\n{steps}\n      ]{end}')
            else:
                lines.append(f"      {json.dumps(k)}: {json.dumps(v)}{end}")
        lines.append("    }" + ("," if ci + 1 < len(obj["cases"]) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == obj
    return text


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def build_one(spec, out_root):
    name, arch = spec["name"], spec["arch"]
    folder = out_root / name
    if folder.exists():
        shutil.rmtree(folder)
    torch.manual_seed(spec["seed"])
    config = make_config(spec)
    _, model_cls = ARCHS[arch]
    model = model_cls(config)
    init_weights(model, spec["seed"], spec.get("embed_std", EMBED_STD),
                 spec.get("norm_offset", False))
    model = model.to(DTYPES[spec["dtype"]])
    model.generation_config = GenerationConfig(bos_token_id=BOS_TOKEN_ID)
    model.save_pretrained(folder, safe_serialization=True)

    # Reference from the saved checkpoint, upcast to f32.
    ref = load_f32(folder, arch)
    ROUTER_MARGINS.clear()
    track_router_margins(ref)
    gen = torch.Generator().manual_seed(spec["seed"] + 7)
    vocab = config.vocab_size
    cases = []
    for n in PROMPT_LENS:
        prompt = torch.randint(0, vocab, (n,), generator=gen).tolist()
        cases.append(reference_case(ref, prompt, MAX_NEW_TOKENS))

    # Cross-check the manual loop against HF generate() on the longest prompt.
    last = cases[-1]
    gen_out = ref.generate(
        torch.tensor([last["prompt_token_ids"]]),
        attention_mask=torch.ones(1, len(last["prompt_token_ids"]), dtype=torch.long),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        min_new_tokens=MAX_NEW_TOKENS,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert gen_out[0, len(last["prompt_token_ids"]):].tolist() == last["output_token_ids"], name

    # eos: the largest id that occurs in no prompt and no output, so a Rust test
    # that honours eos still produces every golden token.
    used = {t for c in cases for t in c["prompt_token_ids"] + c["output_token_ids"]}
    eos = max(t for t in range(vocab) if t not in used and t != BOS_TOKEN_ID)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["eos_token_id"] = eos
    if spec["legacy_config"]:
        cfg = legacy_config_json(cfg, spec)
    write_json(folder / "config.json", cfg)
    write_json(
        folder / "generation_config.json",
        {"bos_token_id": BOS_TOKEN_ID, "eos_token_id": eos,
         "transformers_version": transformers.__version__},
    )

    # The rewritten config must mean the same model to HF.
    check = load_f32(folder, arch)
    assert check.config.eos_token_id == eos
    assert check.config.rope_parameters == ref.config.rope_parameters, (
        check.config.rope_parameters, ref.config.rope_parameters)
    assert getattr(check.config, "head_dim", None) == getattr(ref.config, "head_dim", None)
    again, _, _ = greedy_reference(check, cases[1]["prompt_token_ids"], MAX_NEW_TOKENS)
    assert again == cases[1]["output_token_ids"], name
    if spec["config"].get("sliding_window"):
        layer_types = getattr(ref.config, "layer_types", None)
        assert getattr(check.config, "layer_types", None) == layer_types, name
        assert check.config.sliding_window == ref.config.sliding_window, name
        # Windowed: a cache-free forward over prompt + output (HF's sliding
        # mask) predicts what the cached decode did (HF's sliding cache).
        full = last["prompt_token_ids"] + last["output_token_ids"][:-1]
        with torch.no_grad():
            logits = check(input_ids=torch.tensor([full]), use_cache=False).logits[0]
        n = len(last["prompt_token_ids"])
        assert logits[n - 1:].argmax(-1).tolist() == last["output_token_ids"], name

    router_margin = min(ROUTER_MARGINS) if ROUTER_MARGINS else None
    golden = {
        "model": name,
        "architecture": arch,
        "dtype": spec["dtype"],
        "config_format": "legacy" if spec["legacy_config"] else "v5",
        "eos_token_id": eos,
        "max_new_tokens": MAX_NEW_TOKENS,
        "reference": {
            "generator": "tests/scripts/make_golden.py",
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "compute_dtype": "float32",
            "attn_implementation": "eager",
        },
        "cases": cases,
    }
    if router_margin is not None:
        golden["min_router_margin"] = router_margin
    (folder / "golden.json").write_text(golden_json(golden))
    return golden


def summarize(golden, folder):
    size = (folder / "model.safetensors").stat().st_size
    parts = []
    for c in golden["cases"]:
        out = c["output_token_ids"]
        parts.append(f"{len(set(out))}/{len(out)}")
    margins = [m for c in golden["cases"] for m in c["top2_margin"]]
    top1 = [c["top_logprobs"][i][0][1] for c in golden["cases"] for i in range(len(c["top2_margin"]))]
    print(
        f"{golden['model']:32s} {size / 1024:7.1f} KiB  distinct {' '.join(parts)}  "
        f"min margin {min(margins):.4f}  top1 lp mean {sum(top1) / len(top1):.3f}"
        + (f"  router margin {golden['min_router_margin']:.4f}" if "min_router_margin" in golden else "")
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--out", type=Path, default=root / "fixtures" / "models")
    ap.add_argument("--only", action="append", help="build only these model names")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for spec in MODELS:
        if args.only and spec["name"] not in args.only:
            continue
        golden = build_one(spec, args.out)
        summarize(golden, args.out / spec["name"])
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
