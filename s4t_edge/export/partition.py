"""Trace the S4T test-time computation and split it at the frozen/adaptable cut.

One function is traced: ``(image, mask_noise, *θ) -> (loss, loss per task, ∂loss/∂θ, predictions)``
with ``torch.func.grad_and_value`` under ``make_fx`` and the decompositions of
:mod:`s4t_edge.export.decompositions`.  Every node of that graph that depends neither on θ nor on
the mask noise is *frozen*; the frozen tensors consumed by the rest are the *cut*.  The partition
is computed from the graph, never written by hand, so a scope that touches only the last backbone
stage really leaves stages 1-3 in the backbone graph, run once per batch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx

from s4t_edge.errors import ExportError

# Ops that only re-view a tensor: computing them after the cut costs nothing and keeps the cut
# small (a frozen tensor and its transpose would otherwise both cross it).
_VIEW_OPS = {
    "aten.view.default",
    "aten._unsafe_view.default",
    "aten.reshape.default",
    "aten.permute.default",
    "aten.transpose.int",
    "aten.t.default",
    "aten.unsqueeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten.expand.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.slice.Tensor",
    "aten.select.int",
    "aten.clone.default",
}

FROZEN, CONST, LIVE = "frozen", "const", "live"


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes]


@dataclass
class TracedStep:
    """The traced test-time computation and its classification."""

    gm: fx.GraphModule
    theta_names: list[str]
    task_names: list[str]
    # outputs of gm, in order: loss, task losses, grads (θ order), predictions (task order), stats
    kind: dict[fx.Node, str] = field(default_factory=dict)
    # placeholders: image, mask_noise, then these frozen control inputs, then θ
    controls: list[str] = field(default_factory=list)
    # a last, live placeholder ``task_weights`` [T] (first-step weighting): a step-only input
    task_weights: bool = False
    # statistics after the predictions: ``stat/bn_shift`` as one output per BatchNorm layer
    stats: list[str] = field(default_factory=list)


def trace_test_time(
    model: torch.nn.Module,
    theta_names: Sequence[str],
    s4t_cfg,
    image: torch.Tensor,
    mask_noise: torch.Tensor,
    objective: str = "s4t",
    task_weighting: str = "published",
) -> TracedStep:
    """Trace loss, gradients and predictions of `model` as a function of (image, noise, θ).

    With BatchNorm in mode ``"mix"`` the statistics mix α is a further input, ``bn_mix`` ([1]),
    classified frozen: the backbone graph takes it and hands it to step and predict through the
    cut like any frozen tensor, so the device chooses α per batch without another graph.

    With `task_weighting` ``"first-step"`` the loss is Σ_t task_weights[t]·part_t over the
    per-task terms, task_weights ([T], task order) a last input: it depends on the batch (the
    runtime sets it from the batch's first step), so it is live, like the noise.
    """
    from torch.func import functional_call, grad_and_value
    from torch.fx.experimental.proxy_tensor import make_fx

    from s4t_edge.export.decompositions import (
        decomposition_table,
        replace_resizes,
        split_layer_norm_statistics,
    )
    from s4t_edge.models.norm import bn_shifts, set_bn_mix
    from s4t_edge.train.losses import test_time_objective

    names = list(theta_names)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ExportError(f"θ names not in the model: {missing[:3]}")
    fixed = {k: v.detach() for k, v in params.items() if k not in set(names)}
    fixed.update({k: v.detach() for k, v in model.named_buffers()})
    tasks = list(model.config.task_names) if hasattr(model.config, "task_names") else None

    weighted = task_weighting == "first-step"
    order: dict[str, list[str]] = {}
    controls = ["bn_mix"] if getattr(model, "bn_mode", None) == "mix" else []
    # with the mix control, the backbone also reports how far the batch's statistics are from
    # the running ones (`bn_shift`): a label-free hint of the kind of shift, read by the policy
    stats = ["stat/bn_shift"] if controls else []

    def loss_fn(theta, img, noise, weights):
        out = functional_call(model, {**fixed, **theta}, (img, noise))
        total, parts = test_time_objective(objective, out["main"], out["joint"], s4t_cfg)
        if weights is not None:
            terms = [weights[i] * parts[t] for i, t in enumerate(tasks or list(out["main"]))]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
        # one value per layer: `partition_traced` averages those in front of θ
        extra = [v.detach() for v in bn_shifts(model.modules())] if stats else []
        return total, (parts, {t: v.detach() for t, v in out["main"].items()}, extra)

    def fn(img, noise, *rest):
        if controls:
            set_bn_mix(model.modules(), rest[0])
        theta = dict(zip(names, rest[len(controls) : len(controls) + len(names)]))
        weights = rest[-1] if weighted else None
        grads, (loss, (parts, preds, extra)) = grad_and_value(loss_fn, has_aux=True)(
            theta, img, noise, weights
        )
        order["tasks"] = list(preds)
        order["stats"] = stats if extra else []
        return (
            loss,
            *[parts[t] for t in preds],
            *[grads[n] for n in names],
            *[preds[t] for t in preds],
            *extra,
        )

    theta0 = [params[n].detach().clone() for n in names]
    control0 = [torch.ones(1) for _ in controls]
    n_tasks = len(tasks) if tasks else len(model.config.tasks)
    weights0 = [torch.ones(n_tasks)] if weighted else []
    was_training = model.training
    model.eval()
    try:
        gm = make_fx(fn, decomposition_table=decomposition_table())(
            image, mask_noise, *control0, *theta0, *weights0
        )
    finally:
        model.train(was_training)
        set_bn_mix(model.modules(), None)
        for m in model.modules():
            if hasattr(m, "shift"):
                m.shift = None  # a traced value, meaningless after tracing
    _refuse_mutations(gm)
    replace_resizes(gm)
    split_layer_norm_statistics(gm)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    task_names = tasks or order["tasks"]
    return TracedStep(
        gm=gm,
        theta_names=names,
        task_names=task_names,
        controls=controls,
        task_weights=weighted,
        stats=order["stats"],
    )


def _refuse_mutations(gm: fx.GraphModule) -> None:
    """In-place ops in the traced graph would be dropped as dead code: refuse them loudly."""
    for n in gm.graph.nodes:
        schema = getattr(n.target, "_schema", None)
        harmless = n.target is torch.ops.aten.detach_.default  # from grad_and_value itself
        if n.op == "call_function" and schema is not None and schema.is_mutable and not harmless:
            raise ExportError(
                f"the traced test-time step contains the in-place op {n.target} (node {n.name}); "
                "write the model code without in-place tensor updates"
            )


def _classify(gm: fx.GraphModule, n_controls: int = 0) -> dict[fx.Node, str]:
    kind: dict[fx.Node, str] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    # placeholders: image, mask_noise, controls (constant per batch, so frozen), θ...
    for i, n in enumerate(placeholders):
        kind[n] = FROZEN if i == 0 or 2 <= i < 2 + n_controls else LIVE
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "get_attr":
            kind[n] = CONST
            continue
        ins = [kind[a] for a in _tensor_inputs(n)]
        if LIVE in ins:
            kind[n] = LIVE
        elif FROZEN in ins:
            kind[n] = FROZEN
        else:
            kind[n] = CONST
    return kind


def _needed(outputs: Sequence[fx.Node], stop: set[fx.Node]) -> set[fx.Node]:
    """All nodes needed to compute `outputs`, not looking past nodes in `stop`."""
    seen: set[fx.Node] = set()
    todo = list(outputs)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in stop:
            continue
        todo.extend(_tensor_inputs(n))
    return seen


def _cut_for(outputs: Sequence[fx.Node], kind: dict[fx.Node, str], topo) -> list[fx.Node]:
    """Frozen nodes that the non-frozen computation of `outputs` consumes (views pushed past)."""
    moved: set[fx.Node] = set()  # frozen view ops recomputed after the cut
    while True:
        consumers: set[fx.Node] = set()
        frozen_or_in = {n for n, k in kind.items() if k == FROZEN and n not in moved}
        needed = _needed(outputs, frozen_or_in)
        for n in needed:
            if kind[n] == FROZEN and n not in moved:
                users = [u for u in n.users if u in needed and (kind[u] != FROZEN or u in moved)]
                if users or n in outputs:
                    consumers.add(n)
        cut = sorted(consumers, key=topo)
        changed = False
        for n in cut:
            if (
                n.op == "call_function"
                and str(n.target) in _VIEW_OPS
                and n not in outputs
                and any(kind[a] == FROZEN for a in _tensor_inputs(n))
            ):
                moved.add(n)
                changed = True
        if not changed:
            return cut


def _subgraph(
    gm: fx.GraphModule,
    inputs: Sequence[tuple[str, fx.Node]],
    outputs: Sequence[fx.Node],
) -> fx.GraphModule:
    """A GraphModule computing `outputs` from `inputs` (named placeholders) with gm's constants."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for name, node in inputs:
        ph = g.placeholder(_py_name(name))
        ph.meta = dict(node.meta)
        env[node] = ph
    needed = _needed(outputs, set(env))
    for n in gm.graph.nodes:
        if n in env or n not in needed or n.op == "output":
            continue
        if n.op == "placeholder":
            raise ExportError(f"internal: graph input {n.name} reached past the cut")
        env[n] = g.node_copy(n, lambda a: env[a])
    outs = []
    for o in outputs:
        val = env[o]
        # an input passed straight through, or a value that is already an output under another
        # name (tent's loss is its semseg part), still needs a node of its own
        if val.op == "placeholder" or val in outs:
            val = g.call_function(torch.ops.aten.clone.default, (val,))
        outs.append(val)
    g.output(tuple(outs))
    sub = fx.GraphModule(gm, g)
    sub.graph.eliminate_dead_code()
    sub.recompile()
    return sub


def graph_to_device(gm: fx.GraphModule, device: torch.device) -> fx.GraphModule:
    """A copy of a traced graph that runs on `device`.

    ``gm.to(device)`` moves parameters and buffers only. Tracing on the CPU also bakes
    ``device=cpu`` into the factory ops of the step graph (arange, full, scalar_tensor,
    _to_copy) and leaves plain tensor attributes (lifted constants) behind; both are moved here,
    or the step fails on any other device with "Tensor on device cpu is not on the expected
    device".
    """
    gm = copy.deepcopy(gm).to(device)
    for key, value in list(vars(gm).items()):
        if isinstance(value, torch.Tensor) and value.device != device:
            setattr(gm, key, value.to(device))
    for node in gm.graph.nodes:
        d = node.kwargs.get("device") if node.op == "call_function" else None
        if d is not None and torch.device(d) != device:
            node.kwargs = {**node.kwargs, "device": device}
    gm.recompile()
    return gm


def _py_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


@dataclass
class Partition:
    """The three graphs of an artifact as torch GraphModules, plus their I/O names.

    This is exactly what the ONNX graphs hold; the ``torch`` runtime backend executes it.
    """

    backbone_gm: fx.GraphModule
    step_gm: fx.GraphModule
    predict_gm: fx.GraphModule
    theta_names: list[str]
    task_names: list[str]
    cut_names: list[str]
    step_cut: list[str]
    predict_cut: list[str]
    predict_theta: list[str]
    cut_shapes: dict[str, tuple[int, ...]]
    source: dict[str, torch.Tensor]
    frozen_ops: int
    live_ops: int
    # backbone inputs after the image (``bn_mix``); each also reaches step/predict via the cut
    controls: list[str] = field(default_factory=list)
    # the step graph's last input is ``task_weights`` [T] (first-step weighting)
    task_weights: bool = False
    # backbone outputs after the cut (``stat/bn_shift``), read by the policy, fed to no graph
    stats: list[str] = field(default_factory=list)

    # -- torch execution -------------------------------------------------------------------
    def backbone(self, image: torch.Tensor, bn_mix: float = 1.0) -> dict[str, torch.Tensor]:
        extra = [torch.full((1,), float(bn_mix), device=image.device)] if self.controls else []
        out = self.backbone_gm(image, *extra)
        return dict(zip(self.cut_names + self.stats, out))

    def step(
        self,
        cut: Mapping[str, torch.Tensor],
        theta: Mapping[str, torch.Tensor],
        noise: torch.Tensor,
        task_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Loss, per-task terms and gradients; `task_weights` ([T]) only for first-step
        weighting, where None weighs every task 1."""
        args = [cut[n] for n in self.step_cut] + [theta[n] for n in self.theta_names] + [noise]
        if self.task_weights:
            if task_weights is None:
                task_weights = torch.ones(len(self.task_names), device=noise.device)
            args.append(task_weights)
        elif task_weights is not None:
            raise ExportError("this partition weighs its tasks itself (published weighting)")
        out = self.step_gm(*args)
        t = len(self.task_names)
        loss = out[0]
        parts = dict(zip(self.task_names, out[1 : 1 + t]))
        grads = dict(zip(self.theta_names, out[1 + t :]))
        return loss, parts, grads

    def predict(
        self, cut: Mapping[str, torch.Tensor], theta: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        args = [cut[n] for n in self.predict_cut] + [theta[n] for n in self.predict_theta]
        return dict(zip(self.task_names, self.predict_gm(*args)))

    def source_theta(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.source.items()}

    def to(self, device: str | torch.device) -> Partition:
        """A copy of the partition whose three graphs and source θ live on `device`."""
        dev = torch.device(device)
        return replace(
            self,
            backbone_gm=graph_to_device(self.backbone_gm, dev),
            step_gm=graph_to_device(self.step_gm, dev),
            predict_gm=graph_to_device(self.predict_gm, dev),
            source={k: v.to(dev) for k, v in self.source.items()},
        )

    # -- names for the ONNX graphs ---------------------------------------------------------
    def step_io(self) -> tuple[list[str], list[str]]:
        ins = list(self.step_cut) + list(self.theta_names) + ["mask_noise"]
        if self.task_weights:
            ins.append("task_weights")
        outs = ["loss"] + [f"loss/{t}" for t in self.task_names]
        outs += [f"grad/{n}" for n in self.theta_names]
        return ins, outs

    def predict_io(self) -> tuple[list[str], list[str]]:
        ins = list(self.predict_cut) + list(self.predict_theta)
        return ins, [f"pred/{t}" for t in self.task_names]


def _frozen_shift(
    gm: fx.GraphModule, kind: dict[fx.Node, str], stats: list[str], layers: list[fx.Node]
) -> list[tuple[str, fx.Node]]:
    """``stat/bn_shift`` as a node of `gm`: the mean shift of the layers in front of θ.

    A layer whose input depends on θ cannot be measured by the frozen backbone, so the mean runs
    over the others (for the default scope, every layer before layer4's second norm); with no
    such layer (scope "all") the statistic is dropped and the policy cannot use it.
    """
    frozen = [n for n in layers if kind.get(n) == FROZEN]
    if not stats or not frozen:
        return []
    aten = torch.ops.aten
    out = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(out):
        stacked = gm.graph.call_function(aten.stack.default, (frozen,))
        mean = gm.graph.call_function(aten.mean.default, (stacked,))
        node = gm.graph.call_function(aten.reshape.default, (mean, [1]))
    for n in (stacked, mean, node):
        kind[n] = FROZEN
    node.meta["val"] = torch.empty(1)
    return [(stats[0], node)]


def partition_traced(traced: TracedStep) -> Partition:
    """Split a traced test-time computation into backbone, step and predict graphs."""
    gm = traced.gm
    topo = {n: i for i, n in enumerate(gm.graph.nodes)}.__getitem__
    n_theta = len(traced.theta_names)
    n_tasks = len(traced.task_names)
    kind = _classify(gm, len(traced.controls))
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    outs = list(output_node.args[0])
    step_outs = outs[: 1 + n_tasks + n_theta]
    pred_outs = outs[1 + n_tasks + n_theta : 1 + 2 * n_tasks + n_theta]
    stat_outs = _frozen_shift(gm, kind, traced.stats, outs[1 + 2 * n_tasks + n_theta :])
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    n_ctl = len(traced.controls)
    image_ph, noise_ph = placeholders[0], placeholders[1]
    control_ph = placeholders[2 : 2 + n_ctl]
    theta_ph = placeholders[2 + n_ctl : 2 + n_ctl + n_theta]
    # live like the noise, so it never reaches the backbone or the cut; predict does not use it
    weights_in = [("task_weights", placeholders[-1])] if traced.task_weights else []

    step_cut = _cut_for(step_outs, kind, topo)
    pred_cut = _cut_for(pred_outs, kind, topo)
    all_cut = sorted(set(step_cut) | set(pred_cut), key=topo)
    # With θ at the very input (scope "all") the cut is the image itself: the backbone graph is
    # then an identity and every step recomputes the whole network, as the published protocol does.
    fixed_names = {image_ph: "cut/image"}
    fixed_names.update({ph: f"cut/{c}" for ph, c in zip(control_ph, traced.controls)})
    names = {n: fixed_names.get(n, f"cut/{n.name}") for n in all_cut}

    backbone = _subgraph(
        gm,
        [("image", image_ph)] + list(zip(traced.controls, control_ph)),
        all_cut + [o for _, o in stat_outs],
    )
    theta_in = [(traced.theta_names[i], p) for i, p in enumerate(theta_ph)]
    step = _subgraph(
        gm,
        [(names[n], n) for n in step_cut] + theta_in + [("mask_noise", noise_ph)] + weights_in,
        step_outs,
    )
    pred_needed = _needed(pred_outs, set(pred_cut))
    pred_theta = [(nm, p) for nm, p in theta_in if p in pred_needed]
    predict = _subgraph(gm, [(names[n], n) for n in pred_cut] + pred_theta, pred_outs)

    shapes = {names[n]: tuple(n.meta["val"].shape) for n in all_cut}
    return Partition(
        backbone_gm=backbone,
        step_gm=step,
        predict_gm=predict,
        theta_names=list(traced.theta_names),
        task_names=list(traced.task_names),
        cut_names=[names[n] for n in all_cut],
        step_cut=[names[n] for n in step_cut],
        predict_cut=[names[n] for n in pred_cut],
        predict_theta=[nm for nm, _ in pred_theta],
        cut_shapes=shapes,
        source={},  # filled by build_partition from the model's parameters
        frozen_ops=sum(1 for n, k in kind.items() if k == FROZEN and n.op == "call_function"),
        live_ops=sum(1 for n, k in kind.items() if k == LIVE and n.op == "call_function"),
        controls=list(traced.controls),
        task_weights=traced.task_weights,
        stats=[name for name, _ in stat_outs],
    )


def build_partition(
    model: torch.nn.Module,
    scope: str,
    batch: int,
    bn_stats: str = "batch",
    s4t_cfg=None,
    seed: int = 0,
    objective: str = "s4t",
    task_weighting: str = "published",
) -> Partition:
    """Trace and partition `model` for a scope at a static batch size (contract: docs/contracts.md)."""
    from s4t_edge.export.scopes import select_theta

    if s4t_cfg is None:
        from s4t_edge.train.config import S4TConfig

        s4t_cfg = S4TConfig()
    model.set_bn_mode(bn_stats)
    theta_names = select_theta(model, scope)
    h, w = model.config.input_size
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, h, w, generator=gen)
    noise = torch.rand(*model.mask_noise_shape(batch), generator=gen)
    traced = trace_test_time(model, theta_names, s4t_cfg, image, noise, objective, task_weighting)
    part = partition_traced(traced)
    params = dict(model.named_parameters())
    part.source = {n: params[n].detach().clone() for n in theta_names}
    return part
