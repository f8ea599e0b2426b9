"""How far HF transformers' own bf16 run of the tiny bf16 Qwen3 fixture departs
from its f32 golden run (top-1 logprob, teacher-forced on the golden tokens):
the yardstick of tests/tests/cuda_emu.rs's logprob bound. Worst 0.121 (0.076
before a near-tie) with transformers 5.24 on CPU.

    /work/venv/bin/python tests/scripts/hf_bf16_drift.py
"""
import json, torch
from transformers import AutoModelForCausalLM
d='tests/fixtures/models/qwen3_mqa_hd64_tied_bf16'
g=json.load(open(d+'/golden.json'))
m=AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
worst=0
for ci,c in enumerate(g['cases']):
    ids=c['prompt_token_ids']+c['output_token_ids'][:12]
    with torch.no_grad():
        lg=m(torch.tensor([ids])).logits[0].float()
    lp=torch.log_softmax(lg,-1)
    P=len(c['prompt_token_ids'])
    for s in range(12):
        row=lp[P-1+s]
        top=row.max().item(); tok=row.argmax().item()
        ref=c['top_logprobs'][s][0][1]
        worst=max(worst,abs(top-ref))
        print(ci,s,tok,c['output_token_ids'][s],round(top,4),round(ref,4),round(abs(top-ref),4))
print('worst',worst)
