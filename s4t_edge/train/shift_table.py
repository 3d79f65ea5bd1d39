"""How much each synthetic domain shift hurts a trained model: metrics and Δm per shift.

The README's robustness table comes from here (`s4t-edge eval RUN --shifts --markdown OUT.md`).
Every domain is rendered with the *same* seed, so source and shifted sets show the same scenes with
identical labels and differ only in appearance: the Δm of a row is the cost of the shift alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from s4t_edge.errors import ConfigError
from s4t_edge.metrics import delta_m, format_comparison_table
from s4t_edge.train.evaluate import evaluate

SOURCE = "source"


@dataclass
class ShiftReport:
    """Metrics of one model on the source domain and on each shift, with Δm against source."""

    metrics: dict[str, dict[str, dict[str, float]]]  # domain -> eval-schema metrics (source first)
    delta_m: dict[str, float]  # domain -> Δm % vs source (negative: the shift hurts)
    n: int  # images per domain
    seed: int  # scene seed shared by all domains
    size: int  # image size
    run: str = ""  # run directory the model came from, if any
    extra: dict[str, Any] = field(default_factory=dict)
    metric_set: str = "ours"  # s4t_edge.metrics set the metrics belong to

    @property
    def shifts(self) -> list[str]:
        return [d for d in self.metrics if d != SOURCE]

    def all_shifts_hurt(self) -> bool:
        """True when every shift lowers Δm (the acceptance criterion of the synthetic benchmark)."""
        return all(self.delta_m[d] < 0 for d in self.shifts)

    def table(self, markdown: bool = False) -> str:
        return format_comparison_table(self.metrics, baseline=SOURCE, markdown=markdown)

    def to_markdown(self) -> str:
        """A self-describing markdown section: how it was made, then the table."""
        lines = [
            f"Model `{self.run or 'in memory'}` evaluated on {self.n} synthetic {self.size}×{self.size} "
            f"images per domain (scene seed {self.seed}, identical scenes and labels in every domain). "
            "Δm is the mean relative change against `source` of mIoU, depth RMSE, normals angle and "
            + ("edge F1" if self.metric_set == "ours" else "edge L1")
            + " (sign-corrected so that negative = worse)"
            + (
                "; published metric set (depth RMSE and edge L1 after a per-batch "
                "scale-and-shift fit)."
                if self.metric_set == "published"
                else "."
            ),
            "",
            self.table(markdown=True),
        ]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "delta_m": self.delta_m,
            "n": self.n,
            "seed": self.seed,
            "size": self.size,
            "run": self.run,
            "metric_set": self.metric_set,
        }


def evaluate_shifts(
    model: torch.nn.Module,
    n: int = 200,
    seed: int = 123,
    domains: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    run: str = "",
    progress: Callable[[str], None] | None = None,
    metric_set: str = "ours",
) -> ShiftReport:
    """Evaluate `model` on freshly rendered source and shifted data.

    Args:
        model: an S4TModel (e.g. `load_run(path).model`).
        n: images per domain.
        seed: scene seed; use one the model was not trained on (training data uses 0 by default).
        domains: shifts to include (default: every registered domain); source is always added first.
        batch_size: evaluation batch size (results do not depend on it).
        device: where to run the model (default: where its parameters are).
        run: label for the report (the run directory).
        progress: called with each domain name before it is rendered and evaluated.
        metric_set: "ours" or "published" (`s4t_edge.metrics`).
    """
    from s4t_edge.data import DOMAINS, domains_of_kind, synth
    from s4t_edge.data.dataset import BYTES_PER_PIXEL, require_memory

    h, w = model.config.input_size
    if h != w:
        raise ConfigError(f"the synthetic shifts render square images; this model expects {h}x{w}")
    # one domain's images and labels are held at a time
    require_memory(n * h * w * BYTES_PER_PIXEL, f"{n} images per domain", "use a smaller --n")
    # by default the photometric shifts (same scenes, so the table isolates what pixels do);
    # content domains render other scenes and are evaluated when named
    names = list(domains_of_kind("photometric")) if domains is None else list(domains)
    unknown = [d for d in names if d not in DOMAINS]
    if unknown:
        raise ConfigError(f"unknown domain(s) {unknown}; choose among {', '.join(DOMAINS)}")
    names = [SOURCE] + [d for d in names if d != SOURCE]
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        if progress is not None:
            progress(name)
        ds = synth(name, n, h, seed)
        metrics[name] = evaluate(
            model, ds, batch_size=batch_size, device=device, metric_set=metric_set
        )
    dm = {name: delta_m(m, metrics[SOURCE]) for name, m in metrics.items()}
    return ShiftReport(
        metrics=metrics, delta_m=dm, n=n, seed=seed, size=h, run=run, metric_set=metric_set
    )
