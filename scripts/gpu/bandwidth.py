"""Device-to-device copy bandwidth through PyTorch: the HBM ceiling the
decode roofline divides by. Counts bytes read plus bytes written, as the
copy moves both. Prints one JSON object."""
import json
import sys

import torch

n = 4 << 30  # 4 GiB per buffer: far past the 60 MB L2
x = torch.empty(n, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
iters = 10
start.record()
for _ in range(iters):
    y.copy_(x)
end.record()
torch.cuda.synchronize()
sec = start.elapsed_time(end) / 1000 / iters
json.dump({"copy_gbps": 2 * n / sec / 1e9, "device": torch.cuda.get_device_name(0)}, sys.stdout)
print()
