"""Compares `pagoda generate --json` outputs of two devices (one JSON object
per line): per prompt, whether the greedy tokens agree and where they part.
Prints a JSON summary; exit code 0 even when they differ (bf16 against f32
may part after a near-tie), 2 when an output is missing or malformed."""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def main(cpu_path, cuda_path):
    try:
        cpu, cuda = load(cpu_path), load(cuda_path)
    except (OSError, ValueError) as e:
        print(json.dumps({"error": str(e)}))
        return 2
    if not cpu or len(cpu) != len(cuda):
        print(json.dumps({"error": f"{len(cpu)} cpu outputs, {len(cuda)} cuda outputs"}))
        return 2
    rows = []
    for a, b in zip(cpu, cuda):
        x, y = a["output_token_ids"], b["output_token_ids"]
        part = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
        if part is None and len(x) != len(y):
            part = min(len(x), len(y))
        rows.append({"tokens": len(x), "identical": part is None, "first_difference": part,
                     "cpu_text": a.get("text", "")[:60], "cuda_text": b.get("text", "")[:60]})
    print(json.dumps({"prompts": len(rows), "identical": sum(r["identical"] for r in rows), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
