"""HF transformers' bf16 run of a bf16 fixture, as `golden_bf16.json` beside
its f32 `golden.json`: the same prompts, greedy tokens, logprobs and top-2
margins, with the model loaded and run in bfloat16 on the CPU. The
reference of the CUDA path (which computes in bf16) where a fixture's own
bf16 rounding moves the output past the f32 bounds (mixtures of experts:
bf16 routing weights), as vLLM compares against HF in the same dtype.

    python3 tests/scripts/make_bf16_golden.py mixtral_hd64_e8_top2_bf16
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import golden_json, reference_case  # noqa: E402


def main():
    root = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for name in sys.argv[1:]:
        folder = root / name
        golden = json.loads((folder / "golden.json").read_text())
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
        cases = [
            reference_case(model, c["prompt_token_ids"], len(c["output_token_ids"]))
            for c in golden["cases"]
        ]
        out = {k: v for k, v in golden.items() if k != "cases"}
        out["reference"] = dict(
            out["reference"],
            generator="tests/scripts/make_bf16_golden.py",
            compute_dtype="bfloat16",
        )
        out["cases"] = cases
        (folder / "golden_bf16.json").write_text(golden_json(out))
        agree = sum(
            a == b
            for c, g in zip(cases, golden["cases"])
            for a, b in zip(c["output_token_ids"], g["output_token_ids"])
        )
        print(f"{name}: bf16 tokens equal to f32 at {agree} of {sum(len(c['output_token_ids']) for c in cases)} steps")


if __name__ == "__main__":
    main()
