"""Model benchmark (issues 4 and 8): training-step time per clip, achieved GFLOP/s against the measured matmul peak of
this CPU, peak memory, and the training-step options side by side.

A training step = forward of the four views, the CrissCross loss, backward, and the LARC(Adam) update, as the trainer
does it. FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` over forward + backward (convolutions and
matrix products; BatchNorm, ReLU and the optimiser are not counted). The peak is the median GFLOP/s of a large fp32
matrix product at the same thread count, measured in the same run. Step options, each on its own copy of the same
initial model and the same inputs, timed interleaved:

- `straightforward`: a separate forward per view, default memory format, fp32 (what `CrissCross.forward` does)
- `channels_last`: video encoder and inputs in `channels_last_3d`, audio in `channels_last` (same semantics)
- `bf16`: `torch.autocast('cpu', torch.bfloat16)` around forward and loss (lower precision)
- `channels_last+bf16`
- `batched_views`: v1 and v2 through the video branch in one batch of 2B, a1 and a2 likewise: BatchNorm statistics are
  then taken over both views (a different model; the published semantics keep views separate)
- `batched_views+channels_last+bf16`
- `compile`: `torch.compile(model)` (default inductor backend; compile time reported separately)

    .venv/bin/python -m benchmarks.model [--quick]
"""
from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
import time

from benchmarks.common import (REPO, Clock, base_parser, finish, fmt, iqr, maxrss_mib, median, new_record, out_dir,
                               print_summary, rotate, rss_mib, save_record, set_threads, table)

NAME = "model"
CONFIGS = {   # the demo model (configs/demo.yaml) and the paper's full-size model, at their input sizes
    "demo": dict(preset="tiny", frame_size=32, n_mels=40, frames=8, audio_frames=201),
    "full": dict(preset="full", frame_size=112, n_mels=80, frames=8, audio_frames=201),
}
SETTINGS = {
    "full": dict(batch={"demo": 32, "full": 4}, repeats={"demo": 7, "full": 3}, steps={"demo": 3, "full": 1},
                 compile=("demo",), memory="subprocess", matmul_n=2048, configs=("demo", "full"),
                 thread_counts=(1, os.cpu_count() or 1), thread_repeats=2),
    "quick": dict(batch={"demo": 16, "full": 2}, repeats={"demo": 2, "full": 1}, steps={"demo": 1, "full": 1},
                  compile=(), memory="subprocess", matmul_n=1024, configs=("demo", "full"),
                  thread_counts=(1, os.cpu_count() or 1), thread_repeats=1),
    "tiny": dict(batch={"demo": 4}, repeats={"demo": 1}, steps={"demo": 1}, compile=(), memory="inprocess",
                 matmul_n=256, configs=("demo",), thread_counts=(), thread_repeats=0),
}
VARIANTS = {  # name -> (channels_last, bf16, batched_views, compile, same semantics as straightforward)
    "straightforward": (False, False, False, False, True),
    "channels_last": (True, False, False, False, True),
    "bf16": (False, True, False, False, False),
    "channels_last+bf16": (True, True, False, False, False),
    "batched_views": (False, False, True, False, False),
    "batched_views+channels_last+bf16": (True, True, True, False, False),
    "compile": (False, False, False, True, True),
}
MEMORY_VARIANTS = ("straightforward", "channels_last", "bf16", "batched_views")
TOL_SAME = 1e-3    # relative gradient difference allowed where the semantics are identical (fp32 reassociation)
TOL_BF16 = 5e-2    # what bf16 autocast is expected to stay within


# ------------------------------------------------------------------------------------------------ pieces
def make_inputs(cfg: dict, batch: int, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    S, T, M, F = cfg["frame_size"], cfg["frames"], cfg["n_mels"], cfg["audio_frames"]
    return (torch.randn(batch, 3, T, S, S, generator=g), torch.randn(batch, 3, T, S, S, generator=g),
            torch.randn(batch, 1, M, F, generator=g), torch.randn(batch, 1, M, F, generator=g))


def build(cfg: dict, seed: int = 0):
    import torch
    from crisscross.model import CrissCross, model_config
    torch.manual_seed(seed)
    return CrissCross(model_config(cfg["preset"]))


def make_optimizer(model):
    from crisscross.config import OptimConfig
    from crisscross.optim import build_optimizer
    return build_optimizer(model, OptimConfig(per_device_batch=32, reference_batch=32, base_lr=1e-3, final_lr=1e-4,
                                              predictor_lr=1e-3), 1)


def to_channels_last(model, views):
    import torch
    model.video.to(memory_format=torch.channels_last_3d)
    model.audio.to(memory_format=torch.channels_last)
    return tuple(v.contiguous(memory_format=torch.channels_last_3d if v.ndim == 5 else torch.channels_last) for v in views)


class Runner:
    "One step option: its own model copy, optimiser and inputs; `step()` returns (loss, fwd s, bwd s, opt s)."
    def __init__(self, name, base_model, views):
        import torch
        self.name = name
        cl, self.bf16, self.batched, comp, self.same = VARIANTS[name]
        self.model = copy.deepcopy(base_model).train()
        self.views = to_channels_last(self.model, views) if cl else views
        self.fwd = torch.compile(self.model) if comp else self.model
        self.opt = make_optimizer(self.model)
        self.torch = torch

    def forward_loss(self):
        torch = self.torch
        from crisscross.losses import crisscross_loss
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else torch.autocast("cpu", enabled=False)
        v1, v2, a1, a2 = self.views
        with ctx:
            if self.batched:
                B = v1.shape[0]
                zv, pv = self.model.project(torch.cat([v1, v2]), "v")
                za, pa = self.model.project(torch.cat([a1, a2]), "a")
                z = {"v1": zv[:B], "v2": zv[B:], "a1": za[:B], "a2": za[B:]}
                p = {"v1": pv[:B], "v2": pv[B:], "a1": pa[:B], "a2": pa[B:]}
            else:
                out = self.fwd(v1, v2, a1, a2)
                z, p = out.z, out.p
            return crisscross_loss({k: x.float() for k, x in z.items()}, {k: x.float() for k, x in p.items()})

    def step(self, update: bool = True):
        self.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = self.forward_loss()
        t1 = time.perf_counter()
        loss.total.backward()
        t2 = time.perf_counter()
        if update: self.opt.step()
        t3 = time.perf_counter()
        return float(loss.total.detach()), t1 - t0, t2 - t1, t3 - t2

    def grads(self):
        import torch
        return torch.cat([p.grad.detach().double().reshape(-1) if p.grad is not None
                          else torch.zeros(p.numel(), dtype=torch.float64) for p in self.model.parameters()])


def count_flops(runner) -> tuple[int, dict]:
    "FLOPs of one forward + backward of `runner` (and the per-operator split)."
    from torch.utils.flop_counter import FlopCounterMode
    fc = FlopCounterMode(display=False)
    runner.opt.zero_grad(set_to_none=True)
    with fc:
        loss = runner.forward_loss()
        loss.total.backward()
    per_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return int(fc.get_total_flops()), per_op


BF16_PROBE_SHAPES = [(4, 32, 2, 2, 2), (4, 32, 3, 2, 2), (4, 32, 4, 2, 2),    # demo layer3 has T=2, 2x2
                     (4, 128, 4, 14, 14), (4, 256, 2, 7, 7), (4, 256, 3, 7, 7), (4, 512, 1, 4, 4)]  # full layer2-4


def bf16_conv3d_probe(shapes=BF16_PROBE_SHAPES) -> list[dict]:
    """A standalone check of the bf16 Conv3d backward on this CPU: a temporal (3,1,1) convolution (C -> C, padding
    (1,0,0), no bias, as in the (2+1)D blocks) on random bf16 input of each (N, C, T, H, W) shape; are the weight
    gradients finite, and how far from fp32?"""
    import torch
    out = []
    for shape in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g)
        w = torch.randn(shape[1], shape[1], 3, 1, 1, generator=g) * 0.1
        gy = torch.randn(*shape, generator=g)
        res = {}
        for dt in (torch.float32, torch.bfloat16):
            xx, ww = x.to(dt).detach().clone().requires_grad_(), w.to(dt).detach().clone().requires_grad_()
            torch.nn.functional.conv3d(xx, ww, None, 1, (1, 0, 0)).backward(gy.to(dt))
            res[str(dt)] = ww.grad.double()
        gb, gf = res["torch.bfloat16"], res["torch.float32"]
        finite = bool(torch.isfinite(gb).all())
        out.append({"shape": list(shape), "weight_grad_finite": finite,
                    "rel_err_vs_fp32": float((gb - gf).norm() / gf.norm()) if finite else None})
    return out


def matmul_peak(n: int, dtype_name: str = "float32", repeats: int = 7) -> dict:
    "Median GFLOP/s of an n x n matrix product (a large, well-tuned kernel: the machine's practical peak)."
    import torch
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        with Clock() as c: torch.mm(a, b)
        rates.append(2 * n ** 3 / c.wall / 1e9)
    return {"n": n, "dtype": dtype_name, "gflops": median(rates), "gflops_max": max(rates), "gflops_iqr": iqr(rates)}


def reference_fp64(base_model, views) -> tuple:
    "Gradients and loss of one straightforward step in float64: the 'true' values the fp32 options are compared with."
    import torch
    m = copy.deepcopy(base_model).double().train()
    r = Runner.__new__(Runner)
    r.name, r.model, r.fwd, r.torch = "straightforward", m, m, torch
    r.bf16, r.batched, r.same = False, False, True
    r.views = tuple(v.double() for v in views)
    m.zero_grad(set_to_none=True)
    loss = r.forward_loss(); loss.total.backward()
    return r.grads().double(), float(loss.total.detach())


def compare(ref, fp32_err, runner, loss) -> dict:
    """Relative gradient error of one step of `runner` against the float64 reference `ref = (grads, loss)`, from the same
    weights and inputs. Same-semantics options pass when their error is within `max(10 x straightforward's own fp32
    error, TOL_SAME)`; bf16 ones within TOL_BF16; batched views change BatchNorm's batches (reported, not judged)."""
    import torch
    g = runner.grads().double()
    finite = bool(torch.isfinite(g).all())
    err = float((g - ref[0]).norm() / ref[0].norm()) if finite else float("inf")
    cl, bf16, batched, comp, same = VARIANTS[runner.name]
    if fp32_err is None: tol = None   # straightforward itself: the reference of the fp32 options
    else: tol = max(10 * fp32_err, TOL_SAME) if same else (TOL_BF16 if bf16 and not batched else None)
    return {"loss": loss, "loss_abs_diff": abs(loss - ref[1]), "grad_rel_err_vs_fp64": err, "grads_finite": finite,
            "same_semantics": same, "tolerance": tol,
            "within_tolerance": (finite and err <= tol) if tol is not None else (None if finite else False)}


def time_options(base_model, views, names, repeats: int, steps: int) -> tuple[dict, dict]:
    """Every option on its own copy of `base_model`: first one step without update to compare its loss and gradients
    with straightforward's (and compile), then a warm-up step, then interleaved timing (per option, per repeat block,
    `steps` steps split into forward/backward/update). Returns (timings, equivalence)."""
    runners, compile_s, eq = {}, {}, {}
    ref = reference_fp64(base_model, views)
    fp32_err = None
    for n in names:
        r = Runner(n, base_model, views)
        with Clock() as c: loss, *_ = r.step(update=False)   # from the initial weights (compiles)
        if VARIANTS[n][3]:
            compile_s[n] = c.wall
            loss, *_ = r.step(update=False)
        if n == "straightforward":
            eq[n] = compare(ref, None, r, loss)
            fp32_err = eq[n]["grad_rel_err_vs_fp64"]
        else:
            eq[n] = compare(ref, fp32_err, r, loss)
        r.step()
        runners[n] = r
    res = {n: {"fwd": [], "bwd": [], "opt": []} for n in names}
    for rep in range(repeats):
        for n in rotate(list(names), rep):
            for _ in range(steps):
                _, f, b, o = runners[n].step()
                res[n]["fwd"].append(f); res[n]["bwd"].append(b); res[n]["opt"].append(o)
    del runners; gc.collect()
    out = {}
    tot_b = [f + b + o for f, b, o in zip(res["straightforward"]["fwd"], res["straightforward"]["bwd"], res["straightforward"]["opt"])]
    for n, t in res.items():
        tot = [f + b + o for f, b, o in zip(t["fwd"], t["bwd"], t["opt"])]
        out[n] = {"step_s": median(tot), "step_s_iqr": iqr(tot), "fwd_s": median(t["fwd"]), "bwd_s": median(t["bwd"]),
                  "opt_s": median(t["opt"]), "fwd_bwd_s": median([f + b for f, b in zip(t["fwd"], t["bwd"])]),
                  "n_steps": len(tot),
                  # speed-up within each repeat block: the k-th step of this option vs the k-th straightforward step
                  "speedup": median([x / y for x, y in zip(tot_b, tot)])}
        if n in compile_s: out[n]["compile_s"] = compile_s[n]
    return out, eq


def thread_scaling(base_model, views, threads: list[int], repeats: int) -> dict:
    """Straightforward step time at each torch intra-op thread count (interleaved, rotated), and the speed-up over 1
    thread. Other jobs on the machine make >1 thread fragile: a parallel region waits for its slowest thread."""
    import torch
    old = torch.get_num_threads()
    r = Runner("straightforward", base_model, views)
    times = {t: [] for t in threads}
    try:
        for t in threads:
            torch.set_num_threads(t); r.step()
        for rep in range(repeats):
            for t in rotate(list(threads), rep):
                torch.set_num_threads(t)
                _, f, b, o = r.step()
                times[t].append(f + b + o)
    finally:
        torch.set_num_threads(old)
    base = median(times[threads[0]])
    return {str(t): {"step_s": median(v), "speedup_vs_first": base / median(v), "steps": len(v)} for t, v in times.items()}


def memory_probe(config: str, variant: str, batch: int, threads: int) -> dict:
    "Peak RSS of a few training steps of `variant` (meant to run in a fresh process: ru_maxrss never goes down)."
    import torch
    torch.set_num_threads(threads)
    cfg = CONFIGS[config]
    r = Runner(variant, build(cfg), make_inputs(cfg, batch))
    gc.collect()
    before, peak0 = rss_mib(), maxrss_mib()
    for _ in range(2): r.step()
    peak = maxrss_mib()
    return {"rss_before_step_mib": before, "maxrss_before_step_mib": peak0, "maxrss_mib": peak,
            "step_peak_increase_mib": max(peak - before, 0.0)}


def run_memory_probe(config, variant, batch, threads, inprocess=False) -> dict:
    if inprocess:
        d = memory_probe(config, variant, batch, threads)
        d["inprocess"] = True
        return d
    cmd = [sys.executable, "-m", "benchmarks.model", "--memory-probe", config, variant, str(batch), "--threads", str(threads)]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-500:]}
    d = json.loads(p.stdout.strip().splitlines()[-1])
    d["inprocess"] = False
    return d


# ------------------------------------------------------------------------------------------------ report
def render(rec: dict) -> str:
    R, s = rec["results"], rec["settings"]
    pk = R["peak"]
    lines = ["## What is measured", "",
             f"One training step (forward of v1, v2, a1, a2 + CrissCross loss + backward + LARC(Adam) update) on "
             f"{s['threads']} torch thread(s). FLOPs counted by `FlopCounterMode` over forward + backward. Matmul peak "
             f"on the same threads: fp32 {fmt(pk['fp32']['gflops'])} GFLOP/s, bf16 {fmt(pk['bf16']['gflops'])} GFLOP/s "
             f"(n = {pk['fp32']['n']}, median; measured before and after the model runs). Options timed interleaved on "
             "their own copies of the same initial model and inputs; speed-up = straightforward step time / option step "
             "time, within each repeat block, median.", ""]
    for key, r in R["configs"].items():
        c = r["config"]
        st = r["options"]["straightforward"]
        lines += [f"## {key}: preset `{c['preset']}`, {c['frames']}x{c['frame_size']}x{c['frame_size']} video, "
                  f"1x{c['n_mels']}x{c['audio_frames']} audio, batch {r['batch']}", "",
                  f"{r['parameters']:,} parameters; {fmt(r['gflop_per_clip'])} GFLOP per clip-pair (forward + backward, "
                  f"4 views); straightforward step {fmt(1000 * st['step_s'] / r['batch'])} ms per clip-pair, "
                  f"forward+backward {fmt(st['fwd_bwd_s'] / r['batch'] * 1000)} ms per clip-pair = "
                  f"**{fmt(r['gflops'])} GFLOP/s, {fmt(100 * r['fraction_of_peak'])} % of the fp32 matmul peak**.", ""]
        rows = []
        for n, o in r["options"].items():
            e = r["equivalence"].get(n, {})
            ok = e.get("within_tolerance")
            eq = ("reference" if n == "straightforward" else ("yes" if ok else "**no**") if ok is not None
                  else "n/a (BN over both views)")
            if not e.get("grads_finite", True): eq = "**no: NaN/inf gradients**"
            lo, hi = o["step_s_iqr"] or (None, None)
            rows.append([f"`{n}`", 1000 * o["step_s"] / r["batch"], f"{fmt(1000 * lo / r['batch'])}–{fmt(1000 * hi / r['batch'])}",
                         1000 * o["fwd_s"] / r["batch"], 1000 * o["bwd_s"] / r["batch"], 1000 * o["opt_s"] / r["batch"],
                         o["speedup"], r["gflop_per_clip"] * r["batch"] / o["fwd_bwd_s"],
                         e.get("grad_rel_err_vs_fp64"), e.get("loss_abs_diff"), eq,
                         fmt(o["compile_s"]) + " s" if "compile_s" in o else "–"])
        lines += [table(["option", "ms/clip (step)", "IQR", "fwd", "bwd", "update", "speed-up", "GFLOP/s",
                         "grad error vs fp64", "loss diff vs fp64", "same result", "compile"], rows), "",
                  f"Same result: the relative gradient error against a float64 step (same weights and inputs) is within "
                  f"max(10 x straightforward's, {TOL_SAME:g}) for fp32 options, {TOL_BF16:g} for bf16. Compile: the first "
                  "step, compilation included (inductor keeps compiled kernels on disk, so a repeated run compiles in "
                  "seconds where a cold one can take minutes).", ""]
        th = r.get("threads")
        if th:
            lines += ["Straightforward step at each torch thread count (interleaved; other jobs share the CPUs): " +
                      ", ".join(f"{t} thread(s) {fmt(1000 * v['step_s'] / r['batch'])} ms/clip ({fmt(v['speedup_vs_first'])}x)"
                                for t, v in th.items()) + ".", ""]
        mem = r.get("memory", {})
        if mem:
            rows = [[f"`{n}`", m.get("maxrss_mib"), m.get("rss_before_step_mib"), m.get("step_peak_increase_mib"),
                     "in-process (upper bound)" if m.get("inprocess") else "fresh process"] if "error" not in m
                    else [f"`{n}`", "error", "", "", m["error"][-80:]] for n, m in mem.items()]
            lines += ["Peak memory (resident set high-water mark, VmHWM, of a fresh process that builds the model and "
                      "optimiser and runs two steps):", "",
                      table(["option", "peak RSS MiB", "RSS before the steps", "step increase", "how"], rows), ""]
        top = sorted(r["flops_by_op"].items(), key=lambda kv: -kv[1])[:4]
        lines += ["FLOPs by operator (forward + backward, share): " +
                  ", ".join(f"`{k}` {100 * v / max(r['flops'], 1):.0f} %" for k, v in top) + ".", ""]
    pr = R.get("bf16_conv3d_probe")
    if pr:
        rows = [[str(tuple(x["shape"])), "yes" if x["weight_grad_finite"] else "**no**", x["rel_err_vs_fp32"]] for x in pr]
        lines += ["## bf16 Conv3d backward on this CPU, alone", "",
                  "A temporal (3,1,1) convolution (C -> C, padding (1,0,0), no bias, as in the (2+1)D blocks) on random "
                  "input of each shape (N, C, T, H, W), backward in bf16 vs fp32:", "",
                  table(["input shape", "weight gradient finite", "relative error vs fp32"], rows), ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default=None, help="comma list of demo,full (default: per mode)")
    p.add_argument("--compile", default=None, help="comma list of configs to time torch.compile on ('' for none)")
    p.add_argument("--memory-probe", nargs=3, metavar=("CONFIG", "VARIANT", "BATCH"), help=argparse_hidden())
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.memory_probe:
        c, v, b = args.memory_probe
        print(json.dumps(memory_probe(c, v, int(b), args.threads)))
        return {}
    import torch
    cfg = dict(SETTINGS[args.mode])
    configs = tuple(args.configs.split(",")) if args.configs else cfg["configs"]
    comp = tuple(x for x in args.compile.split(",") if x) if args.compile is not None else cfg["compile"]
    settings = dict(threads=args.threads, configs=list(configs), compile=list(comp),
                    batch={k: cfg["batch"].get(k, 2) for k in configs}, repeats={k: cfg["repeats"].get(k, 1) for k in configs},
                    steps_per_repeat={k: cfg["steps"].get(k, 1) for k in configs}, memory=cfg["memory"],
                    tol_same=TOL_SAME, tol_bf16=TOL_BF16, optimizer="LARC(Adam) as built by crisscross.optim",
                    thread_counts=sorted({args.threads, *cfg["thread_counts"]}))
    rec = new_record(NAME, args.mode, settings)
    peaks = [matmul_peak(cfg["matmul_n"], "float32"), matmul_peak(cfg["matmul_n"], "bfloat16")]
    results = {"configs": {}}
    from crisscross.encoders import count_parameters
    for key in configs:
        c, B = CONFIGS[key], settings["batch"][key]
        names = [n for n in VARIANTS if not VARIANTS[n][3] or key in comp]
        print(f"model: {key} (batch {B}): {names}", flush=True)
        base = build(c)
        views = make_inputs(c, B)
        flops, by_op = count_flops(Runner("straightforward", base, views))
        opts, eq = time_options(base, views, names, settings["repeats"][key], settings["steps_per_repeat"][key])
        results["configs"][key] = {"config": c, "batch": B, "parameters": count_parameters(base), "flops": flops,
                                   "gflop_per_clip": flops / B / 1e9, "flops_by_op": by_op, "equivalence": eq,
                                   "options": opts}
        if settings["thread_counts"] != [args.threads]:
            results["configs"][key]["threads"] = thread_scaling(base, views, settings["thread_counts"], cfg["thread_repeats"])
    peaks += [matmul_peak(cfg["matmul_n"], "float32"), matmul_peak(cfg["matmul_n"], "bfloat16")]
    results["bf16_conv3d_probe"] = bf16_conv3d_probe()
    fp32 = [x["gflops"] for x in peaks if x["dtype"] == "float32"]
    bf16 = [x["gflops"] for x in peaks if x["dtype"] == "bfloat16"]
    results["peak"] = {"fp32": {"n": cfg["matmul_n"], "gflops": median(fp32), "runs": fp32},
                       "bf16": {"n": cfg["matmul_n"], "gflops": median(bf16), "runs": bf16}}
    for key, r in results["configs"].items():
        st = r["options"]["straightforward"]
        r["gflops"] = r["flops"] / st["fwd_bwd_s"] / 1e9
        r["fraction_of_peak"] = r["gflops"] / results["peak"]["fp32"]["gflops"]
        if cfg["memory"]:
            r["memory"] = {n: run_memory_probe(key, n, r["batch"], args.threads, inprocess=cfg["memory"] == "inprocess")
                           for n in (MEMORY_VARIANTS if cfg["memory"] == "subprocess" else ("straightforward",))}
    rec["results"] = results
    S = rec["summary"]
    S["matmul fp32 GFLOP/s"] = round(results["peak"]["fp32"]["gflops"], 1)
    for key, r in results["configs"].items():
        st = r["options"]["straightforward"]
        S[f"{key}: GFLOP/clip"] = round(r["gflop_per_clip"], 3)
        S[f"{key}: ms/clip step"] = round(1000 * st["step_s"] / r["batch"], 2)
        S[f"{key}: GFLOP/s"] = round(r["gflops"], 1)
        S[f"{key}: % of matmul peak"] = round(100 * r["fraction_of_peak"], 1)
        best = max((n for n in r["options"] if n != "straightforward"), key=lambda n: r["options"][n]["speedup"])
        S[f"{key}: best option"] = best
        S[f"{key}: best speed-up"] = round(r["options"][best]["speedup"], 2)
        th = r.get("threads", {})
        if len(th) > 1: S[f"{key}: speed-up at {list(th)[-1]} threads"] = round(list(th.values())[-1]["speedup_vs_first"], 2)
        m = r.get("memory", {}).get("straightforward", {})
        if "maxrss_mib" in m: S[f"{key}: peak RSS MiB"] = round(m["maxrss_mib"])
        for n, e in r["equivalence"].items():
            if not e["grads_finite"]:
                rec["notes"].append(f"{key}: option {n} gives NaN/inf gradients (loss {e['loss']:.4g} is finite) from the "
                                    "same weights and inputs where fp32 and fp64 give finite ones")
            elif e["within_tolerance"] is False:
                rec["notes"].append(f"{key}: option {n} has a relative gradient error {e['grad_rel_err_vs_fp64']:.2e} "
                                    f"vs float64, above its tolerance {e['tolerance']:.2g}")
    finish(rec)
    paths = save_record(rec, render, out_dir(args))
    print_summary(rec, paths)
    return rec


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
    sys.exit(0)
