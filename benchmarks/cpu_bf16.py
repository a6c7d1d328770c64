"""Option check for quick's budget: MiniLM's top-2 layers, fwd+bwd on a (32, 32, 384) batch, fp32 vs bf16 autocast, 1 thread."""
import time, torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer
torch.set_num_threads(1); torch.manual_seed(0)
cfg = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536)
layers = torch.nn.ModuleList([BertLayer(cfg) for _ in range(2)])
x = torch.randn(32, 32, 384)
def step(amp):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        h = x
        for l in layers:
            out = l(h)
            h = out[0] if isinstance(out, tuple) else out
        loss = h.float().pow(2).mean()
    loss.backward()
for amp in (False, True, False, True):
    step(amp); t = []
    for _ in range(10):
        t0 = time.perf_counter(); step(amp); t.append(time.perf_counter() - t0)
    print("bf16" if amp else "fp32", f"{1000*min(t):.1f} ms  median {1000*sorted(t)[5]:.1f} ms")
