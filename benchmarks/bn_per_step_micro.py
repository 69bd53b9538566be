"""Issue 21 prototype: per-step BatchNorm forward+backward, T calls (cat) vs joint vs one custom
autograd.Function writing per-step native kernels into one output/grad (bit-identical outputs,
input grads, running stats). Run from the repo root: python benchmarks/bn_per_step_micro.py"""
import time, torch, torch.nn.functional as F, sys
from kss.space.network import SeqBatchNorm2d
torch.manual_seed(0)
T,B=4,128
def tcall(bn, x):
    return torch.cat([F.batch_norm(s, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, 0.1, 1e-5) for s in x]).unflatten(0, x.shape[:2])
def joint(bn, x):
    return F.batch_norm(x.flatten(0,1), bn.running_mean, bn.running_var, bn.weight, bn.bias, True, 0.1, 1e-5).unflatten(0, x.shape[:2])
def varmean(bn, x):
    T,B,C,H,W = x.shape
    var, mean = torch.var_mean(x, dim=(1,3,4), correction=0, keepdim=True)
    scale = bn.weight.view(1,1,C,1,1) * torch.rsqrt(var + 1e-5)
    shift = bn.bias.view(1,1,C,1,1) - mean * scale
    return torch.addcmul(shift, x, scale)
def permute(bn, x):
    T,B,C,H,W = x.shape
    xp = x.transpose(0,1).reshape(B, T*C, H, W)
    if x[0].is_contiguous(memory_format=torch.channels_last): xp = xp.contiguous(memory_format=torch.channels_last)
    y = F.batch_norm(xp, None, None, bn.weight.repeat(T), bn.bias.repeat(T), True, 0.1, 1e-5)
    y = y.view(B, T, C, H, W).transpose(0,1)
    fmt = torch.channels_last if x[0].is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return y.flatten(0,1).contiguous(memory_format=fmt).unflatten(0,(T,B))
class PerStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, rm, rv, momentum, eps):
        fmt = torch.channels_last if x[0].is_contiguous(memory_format=torch.channels_last) and not x[0].is_contiguous() else torch.contiguous_format
        T, C = x.shape[0], x.shape[2]
        out = torch.empty_like(x)
        mean, invstd = x.new_empty(T, C), x.new_empty(T, C)
        for t in range(T):
            torch.ops.aten.native_batch_norm.out(x[t], w, b, rm, rv, True, momentum, eps, out=out[t], save_mean=mean[t], save_invstd=invstd[t])
        ctx.save_for_backward(x, w, mean, invstd)
        ctx.eps, ctx.fmt = eps, fmt
        return out
    @staticmethod
    def backward(ctx, g):
        x, w, mean, invstd = ctx.saved_tensors
        T, C = x.shape[0], x.shape[2]
        g = g.flatten(0,1).contiguous(memory_format=ctx.fmt).unflatten(0, x.shape[:2])
        gi = torch.empty_like(x); gw = x.new_empty(T, C); gb = x.new_empty(T, C)
        for t in range(T):
            torch.ops.aten.native_batch_norm_backward.out(g[t], x[t], w, None, None, mean[t], invstd[t], True, ctx.eps, [True, True, True], out0=gi[t], out1=gw[t], out2=gb[t])
        return gi, gw.sum(0), gb.sum(0), None, None, None, None
def perstep(bn, x):
    return PerStep.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, 0.1, 1e-5)
fns = dict(tcall=tcall, joint=joint, perstep=perstep)
for C,H in ((16,28),(32,14)):
  for layout in (torch.channels_last, torch.contiguous_format):
    x0 = torch.randn(T*B, C, H, H).contiguous(memory_format=layout).unflatten(0,(T,B))
    g = torch.randn_like(x0)
    res = {k: [] for k in fns}
    for rep in range(7):
        for k,f in fns.items():
            bn = SeqBatchNorm2d(C); x = x0.clone().requires_grad_()
            t=time.perf_counter()
            for _ in range(3):
                y = f(bn, x); y.backward(g)
            res[k].append((time.perf_counter()-t)/3)
    base = min(res['tcall'])
    print(C,H,'CL' if layout==torch.channels_last else 'NCHW', ' '.join(f"{k}={min(v)*1e3:.1f}ms({base/min(v):.2f}x)" for k,v in res.items()), flush=True)
    bn1, bn2 = SeqBatchNorm2d(C), SeqBatchNorm2d(C)
    x1 = x0.clone().requires_grad_(); x2 = x0.clone().requires_grad_()
    y1 = tcall(bn1, x1); y1.backward(g); y2 = perstep(bn2, x2); y2.backward(g)
    print(' out eq', torch.equal(y1,y2), 'gi eq', torch.equal(x1.grad, x2.grad), 'gw', (bn1.weight.grad-bn2.weight.grad).abs().max().item(), 'rm', torch.equal(bn1.running_mean,bn2.running_mean))
