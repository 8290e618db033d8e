# ruff: noqa: E701, E702, E731, I001 - a compact probe: its source travels inside one 2000-character command
# BERT-like encoder (12 post-LN layers, 768/12 heads/3072, batch 64 x 128) under torch.compile default mode, H200:
# bf16 vs FP8 Linear layers (row-wise dynamic scales, exact or fast accumulation) with Inductor multi_kernel 0/1.
# Median ms of triton do_bench, twice; rel L2 error against eager fp32. Run: python3 benchmarks/fp8_inductor_probe.py
import copy
import torch
import torch._inductor.config as ic
import torch.nn.functional as F
from torch import nn
from triton.testing import do_bench
def q(x):
    s = x.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) / 448
    return (x.float() / s).clamp(-448, 448).to(torch.float8_e4m3fn), s
class L8(nn.Module):
    def __init__(s, lin, fast):
        super().__init__(); s.fast = fast; s.w, ws = q(lin.weight.detach()); s.ws = ws.t().contiguous()
        s.b = lin.bias.detach(); s.n = lin.out_features
    def forward(s, x):
        a, sa = q(x.reshape(-1, x.shape[-1]))
        return torch._scaled_mm(a, s.w.t(), scale_a=sa, scale_b=s.ws, bias=s.b, out_dtype=torch.bfloat16,
                                use_fast_accum=s.fast).view(*x.shape[:-1], s.n)
class Y(nn.Module):
    def __init__(s):
        super().__init__(); s.q, s.k, s.v, s.o = (nn.Linear(768, 768) for _ in range(4))
        s.n1, s.n2, s.i, s.p = nn.LayerNorm(768), nn.LayerNorm(768), nn.Linear(768, 3072), nn.Linear(3072, 768)
    def forward(s, x):
        b, n, d = x.shape; sp = lambda t: t.view(b, n, 12, 64).transpose(1, 2)
        a = F.scaled_dot_product_attention(sp(s.q(x)), sp(s.k(x)), sp(s.v(x)))
        x = s.n1(x + s.o(a.transpose(1, 2).reshape(b, n, d))); return s.n2(x + s.p(F.gelu(s.i(x))))
torch.manual_seed(0)
m = nn.Sequential(*[Y() for _ in range(12)]).cuda().eval(); x = torch.randn(64, 128, 768, device="cuda")
with torch.inference_mode():
    r = m(x); bf = copy.deepcopy(m).bfloat16(); xb = x.bfloat16(); V = [("bf16", bf)]
    for fast in (False, True):
        f8 = copy.deepcopy(bf)
        for y in f8:
            for c in "qkvoip": setattr(y, c, L8(getattr(y, c), fast))
        V.append((f"fp8 rowwise fast_accum={fast}", f8))
    for mk in (0, 1):
        ic.triton.multi_kernel = mk
        for name, mm in V:
            torch._dynamo.reset(); c = torch.compile(mm); o = c(xb); e = ((o.float() - r).norm() / r.norm()).item()
            ms = [round(do_bench(lambda c=c: c(xb), warmup=100, rep=500, return_mode="median"), 3) for _ in range(2)]
            print(f"multi_kernel={mk} {name}: {ms} ms, rel L2 {e:.4f}", flush=True)
