#!/usr/bin/env python3
"""GPU table of the README: the `paper` preset (ResNet-50, batch 8, 256×256) in PyTorch on CUDA,
the s4t-edge partition against the published protocol, measured interleaved in one process.

One prepared run (< 5 min on an H100; everything lands in $OUT, or --out):

    PYTHONUNBUFFERED=1 python3 benchmarks/run_gpu.py --out $OUT
    python benchmarks/run_gpu.py --preset tiny --device cpu --repeat 2   # dry run, any machine

No ONNX export and no training: timings do not depend on the weights, so the model is freshly
initialised (seed 0) and the partition is traced directly with
`s4t_edge.export.partition.build_partition` -- the computation the torch runtime backend executes.
Contenders, all in the same interleaved rounds (`s4t_edge.measure.bench.measure`):

- ``reference``: the published protocol -- published fusion, BatchNorm in train mode, K × (forward,
  test-time loss, backward, SGD lr 2e-5 wd 1e-6 on all parameters), then an eval-mode predict;
- ``published-forward``: the published module's inference forward (all heads) and its main-head
  predict, eval mode, fp32;
- ``partition[<scope>]``: backbone once (frozen part), K × (step graph, θ update), predict graph;
  θ, gradients and the optimiser live on the GPU, nothing synchronises inside the episode;
- ``partition[<scope>]+cudagraph``: the same with each step + update replayed as one CUDA graph
  (the launch overhead of ~1000 small kernels per step is what bounds the eager step);
- ``partition[<scope>]+fp16``: the frozen backbone (and predict) under fp16 autocast, gradients
  and θ fp32;
- ``torch-backend[<scope>]``: the runtime's torch backend as written today -- θ and gradients
  copied between numpy and the GPU every step, numpy optimiser, loss read every step.

Then peak device memory of each contender built alone (its weights + activations), against the
published protocol's.  Targets (issue 5): episode ≥ 10× faster than the published protocol,
peak memory ≤ 1/4, predict ≥ 3× faster than the published forward (reference H100 figures:
43.7 ms/step, 1.75 s/episode, 3.43 GiB, forward 24.0 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from _common import RESULTS, log, md_table

DEFAULT_SCOPE = "norm@backbone.layer4+norm@joint_decoder"
TARGETS = {"episode": 10.0, "memory": 4.0, "predict_vs_published_forward": 3.0}
PAPER_H100 = {"step_ms": 43.7, "episode_s": 1.75, "peak_gib": 3.43, "forward_ms": 24.0}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="paper")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--stage-repeat", type=int, default=10)
    p.add_argument("--scopes", default=f"{DEFAULT_SCOPE},norm@joint_decoder")
    p.add_argument("--no-cuda-graph", action="store_true")
    p.add_argument("--no-fp16", action="store_true")
    p.add_argument("--no-host-theta", action="store_true", help="skip the torch-backend emulation")
    p.add_argument("--budget-s", type=float, default=240.0, help="skip optional parts past this")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (dry runs)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or RESULTS / "gpu"))
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--check",
        action="store_true",
        help="build every contender and run each stage and one episode once, no timing; with "
        "--device meta this proves on a CPU-only machine that nothing leaks onto the CPU",
    )
    return p.parse_args(argv)


# --------------------------------------------------------------------------- contenders
def make_contenders(args: argparse.Namespace, torch: Any) -> tuple[dict[str, Any], Any, Any]:
    """Factories (name -> () -> Contender) sharing one CPU model; built lazily so the memory phase
    can build each alone.  Also returns `trace_all`, which traces every partition on the host up
    front (the counterpart of the shared model: not part of any contender's memory)."""
    from s4t_edge.export.partition import build_partition
    from s4t_edge.measure.bench import PUBLISHED_FORWARD, REFERENCE, Contender
    from s4t_edge.models import DEFAULT_TASKS, build_model
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.losses import test_time_loss

    dev = torch.device(args.device)
    cuda = torch if dev.type == "cuda" else None
    torch.manual_seed(0)
    model = build_model(args.preset, DEFAULT_TASKS).float().eval()
    s4t = S4TConfig()
    h, w = model.config.input_size
    n = args.batch
    gen = torch.Generator().manual_seed(0)
    x_cpu = torch.randn(n, 3, h, w, generator=gen)
    lr, wd = s4t.optimizer.lr, s4t.optimizer.weight_decay
    k_steps = args.steps
    noise_shape = tuple(model.mask_noise_shape(n))

    class Reference(Contender):
        """The published protocol, as `ReferenceSession.adapt_batch` runs it (no host syncs)."""

        kind, name = "protocol", REFERENCE

        def __init__(self) -> None:
            self.torch_cuda = cuda
            self.m = copy.deepcopy(model).to(dev)
            self.m.set_bn_mode(None)
            self.m.use_reference_fusion(True)
            self.src = {k: v.clone() for k, v in self.m.state_dict().items()}
            self.opt = torch.optim.SGD(self.m.parameters(), lr=lr, weight_decay=wd, momentum=0.0)
            self.x = x_cpu.to(dev)
            self.noise = torch.rand(noise_shape, device=dev)

        def _step(self, noise: Any) -> Any:
            self.opt.zero_grad(set_to_none=True)
            out = self.m(self.x, noise)
            total, _ = test_time_loss(out["main"], out["joint"], s4t)
            total.backward()
            self.opt.step()
            return total.detach()

        def _predict(self) -> None:
            self.m.eval()
            with torch.no_grad():
                self.m.predict(self.x)
            self.m.train()

        def stages(self) -> dict[str, Any]:
            def step() -> None:
                self.m.train()
                self._step(self.noise)

            return {"step": step, "predict": self._predict}

        def between_rounds(self) -> None:
            self.m.load_state_dict(self.src)

        def episode(self) -> None:
            self.m.load_state_dict(self.src)
            self.opt = torch.optim.SGD(self.m.parameters(), lr=lr, weight_decay=wd, momentum=0.0)
            noises = torch.rand((k_steps, *noise_shape), device=dev)
            self.m.train()
            losses = [self._step(noises[i]) for i in range(k_steps)]
            self._predict()
            self.last_losses = losses

    class Forward(Contender):
        kind, name, has_episode = "forward", PUBLISHED_FORWARD, False

        def __init__(self) -> None:
            self.torch_cuda = cuda
            self.m = copy.deepcopy(model).to(dev).eval()
            self.m.set_bn_mode(None)
            self.x = x_cpu.to(dev)
            self.noise = torch.rand(noise_shape, device=dev)

        def stages(self) -> dict[str, Any]:
            m = self.m

            def forward() -> None:
                m.use_reference_fusion(True)
                with torch.no_grad():
                    m(self.x, self.noise)

            def predict_published_fusion() -> None:
                m.use_reference_fusion(True)
                with torch.no_grad():
                    m.predict(self.x)

            def predict_factorised() -> None:
                m.use_reference_fusion(False)
                with torch.no_grad():
                    m.predict(self.x)

            return {
                "forward": forward,
                "predict_published_fusion": predict_published_fusion,
                "predict_factorised": predict_factorised,
            }

        def episode(self) -> None:
            self.stages()["forward"]()

    partitions: dict[str, Any] = {}

    def partition(scope: str) -> Any:
        if scope not in partitions:
            t = time.perf_counter()
            log(f"tracing the partition for scope {scope}")
            partitions[scope] = build_partition(copy.deepcopy(model), scope, n, "batch", s4t)
            log(f"  traced in {time.perf_counter() - t:.1f} s")
        return partitions[scope]

    class Partition(Contender):
        """θ on the device; K steps without a host synchronisation."""

        kind = "graphs"

        def __init__(self, scope: str, graph: bool = False, fp16: bool = False) -> None:
            self.scope, self.graph, self.fp16 = scope, graph, fp16
            self.name = f"partition[{scope}]" + ("+cudagraph" if graph else "")
            self.name += "+fp16" if fp16 else ""
            self.torch_cuda = cuda
            part = partition(scope)
            self.p = part.to(dev)  # also moves the device=cpu that tracing baked into the graphs
            self.src = self.p.source
            self.theta = {k: v.clone() for k, v in self.src.items()}
            self.x = x_cpu.to(dev)
            self.noise = torch.rand(noise_shape, device=dev)
            self.cut = self.backbone()
            self._graph = None
            if graph:
                self._capture()

        def _autocast(self) -> Any:
            if not self.fp16:
                return contextlib.nullcontext()
            dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
            return torch.autocast(dev.type, dtype=dtype)

        def backbone(self) -> dict[str, Any]:
            with torch.no_grad(), self._autocast():
                cut = self.p.backbone(self.x)
            return {k: v.float() for k, v in cut.items()}

        def _update(self, grads: dict[str, Any]) -> None:
            names = list(self.theta)
            ps = [self.theta[k] for k in names]
            gs = [grads[k] for k in names]
            if wd:
                gs = torch._foreach_add(gs, ps, alpha=wd)
            torch._foreach_add_(ps, gs, alpha=-lr)

        def _step_update(self, cut: dict[str, Any], noise: Any) -> Any:
            with torch.no_grad():
                loss, _, grads = self.p.step(cut, self.theta, noise)
                self._update(grads)
            return loss

        def _capture(self) -> None:
            """One step + update as a CUDA graph over static cut/noise/θ buffers."""
            self.s_cut = {k: v.clone() for k, v in self.cut.items()}
            self.s_noise = self.noise.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up on a side stream, as CUDA graph capture requires
                    self._step_update(self.s_cut, self.s_noise)
            torch.cuda.current_stream().wait_stream(side)
            for k, v in self.src.items():
                self.theta[k].copy_(v)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self.s_loss = self._step_update(self.s_cut, self.s_noise)
            self._graph = g
            for k, v in self.src.items():
                self.theta[k].copy_(v)

        def stages(self) -> dict[str, Any]:
            def backbone() -> None:
                self.backbone()

            def step() -> None:
                with torch.no_grad():
                    self.p.step(self.cut, self.theta, self.noise)

            def update() -> None:
                self._update(self._grads)

            def predict() -> None:
                with torch.no_grad(), self._autocast():
                    self.p.predict(self.cut, self.theta)

            def inference() -> None:
                cut = self.backbone()
                with torch.no_grad(), self._autocast():
                    self.p.predict(cut, self.theta)

            with torch.no_grad():
                self._grads = self.p.step(self.cut, self.theta, self.noise)[2]
            out = {"backbone": backbone, "step": step, "update": update}
            if self._graph is not None:

                def step_update_graph() -> None:
                    self._graph.replay()

                out = {"backbone": backbone, "step": step_update_graph}
            return {**out, "predict": predict, "inference": inference}

        def between_rounds(self) -> None:
            for k, v in self.src.items():
                self.theta[k].copy_(v)

        def episode(self) -> None:
            for k, v in self.src.items():
                self.theta[k].copy_(v)
            cut = self.backbone()
            noises = torch.rand((k_steps, *noise_shape), device=dev)
            losses = torch.empty(k_steps, device=dev)
            if self._graph is not None:
                for k, v in cut.items():
                    self.s_cut[k].copy_(v)
                for i in range(k_steps):
                    self.s_noise.copy_(noises[i])
                    self._graph.replay()
                    losses[i].copy_(self.s_loss)
            else:
                for i in range(k_steps):
                    losses[i].copy_(self._step_update(cut, noises[i]))
            with torch.no_grad(), self._autocast():
                self.p.predict(cut, self.theta)
            self.last_losses = losses

    class HostTheta(Partition):
        """The runtime's torch backend today: numpy θ and optimiser, per-step copies and sync."""

        def __init__(self, scope: str) -> None:
            super().__init__(scope)
            self.name = f"torch-backend[{scope}]"
            from s4t_edge.runtime.optim import SGD

            self.np_src = {k: v.detach().cpu().numpy() for k, v in part_src(scope).items()}
            self.opt = SGD(lr=lr, weight_decay=wd)

        def _np_step(self, cut: dict[str, Any], theta_np: dict[str, Any], noise_np: Any) -> None:
            th = {k: torch.from_numpy(v).to(dev) for k, v in theta_np.items()}
            with torch.no_grad():
                loss, parts, grads = self.p.step(cut, th, torch.from_numpy(noise_np).to(dev))
            float(loss)
            {k: float(v) for k, v in parts.items()}
            g = {k: v.detach().cpu().numpy() for k, v in grads.items()}
            self.opt.step(theta_np, g)

        def stages(self) -> dict[str, Any]:
            noise_np = self.noise.cpu().numpy()
            theta_np = {k: v.copy() for k, v in self.np_src.items()}

            def step() -> None:  # step and numpy update, as the runtime does them
                self._np_step(self.cut, theta_np, noise_np)

            out = super().stages()
            out["step"] = step
            out.pop("update", None)
            return out

        def episode(self) -> None:
            import numpy as np

            rng = np.random.default_rng(0)
            theta_np = {k: v.copy() for k, v in self.np_src.items()}
            self.opt.reset()
            cut = self.backbone()
            for _ in range(k_steps):
                self._np_step(cut, theta_np, rng.random(noise_shape, dtype=np.float32))
            th = {k: torch.from_numpy(v).to(dev) for k, v in theta_np.items()}
            with torch.no_grad():
                out = self.p.predict(cut, th)
            {k: v.cpu().numpy() for k, v in out.items()}

    def part_src(scope: str) -> dict[str, Any]:
        return partitions[scope].source

    scopes = [s for s in args.scopes.split(",") if s]
    factories: dict[str, Any] = {REFERENCE: Reference, PUBLISHED_FORWARD: Forward}
    for i, scope in enumerate(scopes):
        factories[f"partition[{scope}]"] = lambda s=scope: Partition(s)
        if dev.type == "cuda" and not args.no_cuda_graph:
            factories[f"partition[{scope}]+cudagraph"] = lambda s=scope: Partition(s, graph=True)
        if i == 0 and not args.no_fp16 and dev.type in ("cuda", "cpu"):
            factories[f"partition[{scope}]+fp16"] = lambda s=scope: Partition(s, fp16=True)
            if dev.type == "cuda" and not args.no_cuda_graph:
                factories[f"partition[{scope}]+cudagraph+fp16"] = lambda s=scope: Partition(
                    s, graph=True, fp16=True
                )
        if i == 0 and not args.no_host_theta:
            factories[f"torch-backend[{scope}]"] = lambda s=scope: HostTheta(s)

    def trace_all() -> None:
        for scope in scopes:
            partition(scope)

    return factories, model, trace_all


# --------------------------------------------------------------------------- memory
def isolated_device_memory(
    factories: dict[str, Any], torch: Any, dev: Any, argv: list[str]
) -> dict[str, Any]:
    """Peak memory of each contender built alone: weights + buffers + the episode (CUDA allocator
    peak on a GPU, per-process RSS on a CPU)."""
    out: dict[str, Any] = {}
    if dev.type == "cpu":
        return {name: cpu_memory_in_child(name, argv) for name in factories}
    if dev.type != "cuda":
        return {name: {"note": "memory is measured on CUDA and CPU only"} for name in factories}
    for name, make in factories.items():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        try:
            c = make()
            c.episode()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            c.episode()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            held = torch.cuda.memory_allocated() - base
            out[name] = {"peak_bytes": int(peak), "resident_bytes": int(held)}
            del c
        except Exception as e:  # noqa: BLE001 - one failure must not lose the run
            out[name] = {"error": _err(e)}
    gc.collect()
    torch.cuda.empty_cache()
    return out


def cpu_memory_in_child(name: str, argv: list[str]) -> dict[str, Any]:
    """The CPU counterpart of the CUDA figure: one child process per contender (RSS peaks are per
    process) run with this run's arguments, 2-step episodes (the peak does not grow with K)."""
    import json
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--steps", "2"]
    cmd += ["--memory-probe", name]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "memory probe timed out"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"memory probe failed: {(done.stderr or '').strip()[-300:]}"}
    return json.loads(lines[-1])


def memory_probe(factories: dict[str, Any], name: str) -> dict[str, Any]:
    """Child side: RSS before the contender is built, then the peak of its second episode
    (VmHWM reset after the first, so tracing transients are not counted)."""
    import ctypes

    from s4t_edge.measure.memory import current_rss, peak_rss, reset_peak_rss

    def settle() -> int:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS is live data
        return int(current_rss() or 0)

    base = settle()
    c = factories[name]()
    c.episode()
    held = settle() - base
    if not reset_peak_rss():
        return {"error": "cannot reset the RSS peak here (/proc/self/clear_refs)"}
    c.episode()
    peak = int(peak_rss() or 0) - base
    return {"peak_bytes": peak, "resident_bytes": held, "method": "RSS (VmHWM), own process"}


def _err(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


# --------------------------------------------------------------------------- report
def torch_threads(doc: dict[str, Any]) -> Any:
    th = doc.get("threads") or {}
    return th.get("torch_threads") or th.get("requested") or "default"


def to_markdown(doc: dict[str, Any]) -> str:
    from s4t_edge.measure.bench import PUBLISHED_FORWARD, REFERENCE
    from s4t_edge.measure.memory import format_bytes

    env = doc["env"]
    res = doc["results"]
    mem = doc.get("device_memory", {})
    on_cpu = doc.get("device") == "cpu"
    where = "CPU (a proxy: the targets are for a GPU)" if on_cpu else env.get("gpu", "?")
    lines = [
        f"## `{doc['preset']}` on {where}",
        "",
        f"Generated by `python benchmarks/run_gpu.py` ({doc['created']}, {doc['seconds']:.0f} s): "
        f"batch {doc['batch']}, {doc['input_size'][0]}×{doc['input_size'][1]}, K = "
        f"{doc['config']['steps']}, torch {env.get('torch')}"
        + (f", {torch_threads(doc)} threads, " if on_cpu else f" (CUDA {env.get('torch_cuda')}), ")
        + f"fp32 unless marked; median / p90 ms over {doc['config']['stage_repeat']} stage rounds "
        f"and {doc['config']['repeat']} episodes, all contenders interleaved.",
        "",
    ]
    head = ["contender", "backbone", "step (+update)", "predict", "image→outputs", "episode"]
    head += ["peak RSS (alone, own process)" if on_cpu else "peak device memory (alone)"]
    rows = []
    for name, r in res.items():
        st = r.get("stages", {})

        def ms(k: str, st=st) -> str:
            v = st.get(k) or {}
            return "-" if "median_ms" not in v else f"{v['median_ms']:.2f} / {v['p90_ms']:.2f}"

        step = ms("step")
        if "update" in st:
            step += f" (+{st['update']['median_ms']:.2f})"
        ep = r.get("episode") or {}
        m = mem.get(name, {})
        peak = format_bytes(m["peak_bytes"]) if "peak_bytes" in m else m.get("error", "-")
        inference = ms("forward") if name == PUBLISHED_FORWARD else ms("inference")
        predict = ms("predict_published_fusion") if name == PUBLISHED_FORWARD else ms("predict")
        rows.append([
            name, ms("backbone"), step, predict, inference,
            "-" if "median_ms" not in ep else f"{ep['median_ms']:.1f}", peak,
        ])  # fmt: skip
    lines += [md_table(head, rows), ""]
    ref_peak = (mem.get(REFERENCE) or {}).get("peak_bytes")
    rrows = []
    for name, r in doc["ratios"].items():
        m = (mem.get(name) or {}).get("peak_bytes")
        mem_ratio = ref_peak / m if (ref_peak and m) else None

        def v(x: float | None, key: str) -> str:
            if x is None:
                return "-"
            t = TARGETS.get(key)
            return f"{x:.1f}×" + ("" if t is None else (" ✓" if x >= t else f" (target {t:.0f}×)"))

        rrows.append([
            name, v(r.get("episode"), "episode"), v(r.get("step"), "step"),
            v(mem_ratio, "memory"), v(r.get("predict_vs_published_forward"), "predict_vs_published_forward"),
        ])  # fmt: skip
    lines += [
        md_table(
            [
                "contender",
                "episode speed-up",
                "step speed-up",
                "memory reduction",
                "predict vs published forward",
            ],
            rrows,
        ),  # fmt: skip
        "",
        f"Reference figures measured earlier on an H100 (DESIGN.md §4): published step "
        f"{PAPER_H100['step_ms']} ms, episode {PAPER_H100['episode_s']} s, peak "
        f"{PAPER_H100['peak_gib']} GiB, forward {PAPER_H100['forward_ms']} ms.",
    ]
    if doc.get("errors"):
        lines += ["", "Contenders that failed:", ""]
        lines += [f"- `{k}`: {v}" for k, v in doc["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t0 = time.time()
    import torch

    from s4t_edge.envinfo import collect_env
    from s4t_edge.measure.bench import BenchConfig, format_table, measure, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; dry-run with --device cpu --preset tiny")
    log(f"{args.preset} batch {args.batch} on {dev} (torch {torch.__version__})")
    if args.check:
        args.no_host_theta = args.no_host_theta or dev.type == "meta"  # it reads values back
    factories, model, trace_all = make_contenders(args, torch)
    if args.memory_probe:
        import json

        trace_all()  # host-side, like the shared model; also imports what tracing needs
        print(json.dumps(memory_probe(factories, args.memory_probe)))
        return 0
    if args.check:
        failed = 0
        for name, make in factories.items():
            try:
                c = make()
                for fn in c.stages().values():
                    fn()
                c.episode()
                c.sync()
                log(f"ok {name}")
            except Exception as e:  # noqa: BLE001
                failed += 1
                log(f"FAILED {name}: {_err(e)}")
        return 1 if failed else 0
    args.out.mkdir(parents=True, exist_ok=True)
    contenders, errors = [], {}
    for name, make in factories.items():
        optional = name.endswith(("+fp16", "+cudagraph")) or name.startswith("torch-backend")
        if optional and time.time() - t0 > args.budget_s * 0.5:
            errors[name] = "skipped: time budget"
            continue
        try:
            contenders.append(make())
            log(f"built {name}")
        except Exception as e:  # noqa: BLE001 - record and go on with the others
            errors[name] = _err(e)
            log(f"FAILED {name}: {errors[name]}")
            traceback.print_exc(file=sys.stderr)
    cfg = BenchConfig(
        steps=args.steps,
        backends=(),
        reference=True,
        repeat=args.repeat,
        stage_repeat=args.stage_repeat,
        device=args.device if args.device in ("cpu", "cuda") else "auto",
        memory="off",
    )
    doc = measure(contenders, cfg, None, log, batch=args.batch)
    built = {c.name for c in contenders}
    del contenders
    gc.collect()
    if time.time() - t0 < args.budget_s:
        log("peak memory, one contender at a time")
        doc["device_memory"] = isolated_device_memory(
            {k: v for k, v in factories.items() if k in built},
            torch,
            dev,
            sys.argv[1:] if argv is None else list(argv),
        )
    else:
        errors["device_memory"] = "skipped: time budget"
    env = collect_env()
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cudnn"] = str(torch.backends.cudnn.version())
        env["allow_tf32_matmul"] = str(torch.backends.cuda.matmul.allow_tf32)
        env["allow_tf32_cudnn"] = str(torch.backends.cudnn.allow_tf32)
    doc.update(
        preset=args.preset,
        device=dev.type,
        batch=args.batch,
        input_size=list(model.config.input_size),
        env=env,
        errors=errors,
        seconds=time.time() - t0,
        params=int(sum(p.numel() for p in model.parameters())),
    )
    write_json(args.out / "gpu.json", doc)
    md = to_markdown(doc)
    (args.out / "gpu.md").write_text(md)
    print(format_table(doc))
    print(md)
    log(f"done in {time.time() - t0:.0f} s; wrote {args.out}/gpu.json and gpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
