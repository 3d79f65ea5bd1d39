"""Source pretraining with the S4T objective: single process, or multi-process under torchrun.

Everything random in a step (which images, which are flipped, the joint decoder's mask noise) is
derived from (seed, step, rank) rather than drawn from a running generator.  A resumed run
therefore replays exactly the batches the uninterrupted run would have seen, and nothing but the
weights, the optimizer state and the step count needs to be checkpointed.

Multi-process: launched by `torchrun --nproc_per_node N`, detected from WORLD_SIZE / RANK /
LOCAL_RANK.  Each rank takes its own slice of every global batch (global batch = batch_size ×
world size), gradients are averaged by DistributedDataParallel (gloo on CPU, NCCL on GPU), and
only rank 0 validates and writes files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from s4t_edge.errors import ConfigError, OutputPathError
from s4t_edge.metrics import format_metrics_line
from s4t_edge.train.checkpoint import load_checkpoint, save_checkpoint
from s4t_edge.train.config import S4TConfig, TrainConfig
from s4t_edge.train.evaluate import check_dataset_fits, dataset_labels, evaluate, preprocess
from s4t_edge.train.losses import labels_to_torch, pretrain_loss
from s4t_edge.train.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    WEIGHTS_FILE,
    Run,
    configs_from_dict,
    is_run_dir,
    model_state,
    read_config,
    save_tensors,
    write_config,
)
from s4t_edge.utils import ensure_writable_dir


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (world 1, rank 0 when run directly)."""

    world: int  # number of processes
    rank: int  # global rank; rank 0 validates and writes
    local_rank: int  # rank on this machine (selects the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read torchrun's environment variables."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "WORLD_SIZE / RANK / LOCAL_RANK must be integers; launch with torchrun"
        ) from None
    return DistInfo(world, rank, local)


def _pick_device(device: str | torch.device | None, info: DistInfo) -> torch.device:
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was requested but no CUDA GPU is visible; use --device cpu"
            )
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    return dev


# --------------------------------------------------------------------------- data
class _Arrays:
    """The rows a training process reads: any data source (an in-memory `Dataset` or a stream
    from disk, `s4t_edge.data.source`), or a subset of its rows."""

    def __init__(self, source: Any) -> None:
        self.source = source

    @classmethod
    def of(cls, ds: Any, rows: np.ndarray | None = None) -> _Arrays:
        return cls(ds if rows is None else ds.subset(rows))

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """Every label array of an in-memory source (tests; a stream has none in memory)."""
        return {k: v for k, v in dataset_labels(self.source).items() if v is not None}

    def tasks(self) -> list[str]:
        return list(self.source.tasks_present())

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Image and labels of `rows`, as fresh arrays (safe to flip in place)."""
        part = self.source.take(rows)
        labels = {k: v for k, v in part.labels_for_metrics().items() if v is not None}
        return part.image, labels

    def __len__(self) -> int:
        return len(self.source)


def hflip(image: np.ndarray, labels: dict[str, np.ndarray], flip: np.ndarray) -> None:
    """Flip the rows `flip` (bool per image) left-right in place, labels included.

    Mirroring the image mirrors the camera's x axis, so the x component of the normals changes sign.
    """
    if not flip.any():
        return
    image[flip] = image[flip][:, :, ::-1]
    for kind, lab in labels.items():
        lab[flip] = lab[flip][:, :, ::-1]
        if kind == "normals":
            lab[flip, ..., 0] *= -1


class _StepBatches(torch.utils.data.Dataset):
    """Item i is the whole batch of step `start + i` for this rank (so DataLoader workers can build
    batches ahead without changing which images a step sees)."""

    def __init__(
        self,
        data: _Arrays,
        cfg: TrainConfig,
        model_cfg: Any,
        kinds: Mapping[str, str],
        noise_len: int,
        info: DistInfo,
        start: int,
    ) -> None:
        self.data, self.cfg, self.model_cfg, self.kinds = data, cfg, model_cfg, dict(kinds)
        self.noise_len, self.info, self.start = noise_len, info, start

    def __len__(self) -> int:
        return self.cfg.steps - self.start

    @lru_cache(maxsize=4)  # noqa: B019 - a handful of epochs alive at a time, per worker
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, epoch, 17]).permutation(len(self.data))

    def rows(self, step: int) -> np.ndarray:
        """Dataset rows of this rank's share of global batch `step` (epochs wrap seamlessly)."""
        b, n = self.cfg.batch_size, len(self.data)
        pos = (step * self.info.world + self.info.rank) * b + np.arange(b)
        epoch, off = np.divmod(pos, n)
        return np.array([self._perm(int(e))[o] for e, o in zip(epoch, off)])

    def __getitem__(self, i: int) -> dict[str, Any]:
        step = self.start + i
        rows = self.rows(step)
        rng = np.random.default_rng([self.cfg.seed, step, self.info.rank, 23])
        image, labels = self.data.take(rows)
        if self.cfg.hflip:
            hflip(image, labels, rng.random(len(rows)) < 0.5)
        noise = rng.random((len(rows), self.noise_len), dtype=np.float32)
        x = preprocess(image, self.model_cfg.mean, self.model_cfg.std)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x)),
            "noise": torch.from_numpy(noise),
            "labels": labels_to_torch(labels, self.kinds),
        }


def split_validation(ds: Any, cfg: TrainConfig) -> tuple[_Arrays, _Arrays | None, int]:
    """Hold out a random `val_fraction` of the training set (at most `val_max_images`)."""
    n = len(ds)
    n_val = min(cfg.val_max_images, int(round(n * cfg.val_fraction)))
    if n_val == 0 or n - n_val < 1:
        return _Arrays.of(ds), None, 0
    perm = np.random.default_rng([cfg.seed, 5]).permutation(n)
    return _Arrays.of(ds, np.sort(perm[n_val:])), _Arrays.of(ds, np.sort(perm[:n_val])), n_val


def prepare_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Create `out`, or check that it may be (re)used; --overwrite removes only run files.

    A `config.json` or `checkpoint/` that s4t-edge did not write makes the directory someone
    else's: it is refused even with --overwrite, so nothing of theirs is deleted.
    """
    ensure_writable_dir(out, "--out")
    has_run = (out / CONFIG_FILE).exists() or (out / CHECKPOINT_DIR).exists()
    if resume:
        return
    if has_run and not is_run_dir(out):
        raise OutputPathError(
            f"{str(out)!r} holds a config.json or checkpoint/ that s4t-edge did not write; "
            "choose another --out (--overwrite only replaces an s4t-edge run)"
        )
    if has_run and not overwrite:
        raise OutputPathError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    if has_run:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- train
def _info_dict(data_info: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """data_info[key] as a dict: a bare string is taken as the file's path."""
    v = (data_info or {}).get(key)
    if v is None:
        return {}
    return dict(v) if isinstance(v, Mapping) else {"path": str(v)}


def train(
    cfg: TrainConfig,
    model_cfg: Any,
    s4t_cfg: S4TConfig,
    train_ds: Any,
    val_ds: Any | None,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    *,
    overwrite: bool = False,
    data_info: Mapping[str, Any] | None = None,
    backbone_weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> Run:
    """Pretrain an S4T model on `train_ds` and write the run directory `out_dir`.

    Args:
        cfg: optimisation settings; `steps` counts optimizer steps.
        model_cfg: the ModelConfig to build (on resume it must equal the stored one).
        s4t_cfg: loss weights and λ (on resume it must equal the stored one).
        train_ds, val_ds: data sources (`s4t_edge.data.Dataset` or a stream from disk,
            `s4t_edge.data.open_data`).  Without `val_ds`, `cfg.val_fraction` of the
            training set is held out for validation.
        out_dir: the run directory (created; must not already hold a run unless resuming or
            `overwrite`).
        resume: continue from `out_dir/checkpoint` (same batches as an uninterrupted run).
        data_info: where the data came from, stored under "data" in config.json.
        backbone_weights: a torchvision checkpoint loaded into the backbone before training.
        device: "cpu", "cuda", "cuda:1" or None/"auto".
        progress: show the tqdm bar (rank 0 only).
        stop_at: stop after this step, checkpointed, without finishing (for time-boxed jobs).
        protocol: the cross-dataset protocol record (`Protocol.to_dict()`), stored as
            "protocol" in config.json so that eval, export and adapt apply it by default.

    Returns:
        The trained Run (model in eval mode on the CPU); every rank returns one, only rank 0 writes.
    """
    from tqdm.auto import tqdm

    from s4t_edge.models import S4TModel, load_backbone_weights

    info = dist_info()
    out = Path(out_dir)
    if info.is_main:
        prepare_out_dir(out, resume, overwrite)
    if resume:
        stored = read_config(out)
        mc, sc, _ = configs_from_dict(stored, str(out / CONFIG_FILE))
        if mc != model_cfg or sc != s4t_cfg:
            raise ConfigError(
                f"--resume continues the run in {str(out)!r} with its stored model and S4T settings; "
                "drop the options that change them, or start a new run"
            )
    check_dataset_fits(train_ds, model_cfg, "training set")
    if val_ds is not None:
        check_dataset_fits(val_ds, model_cfg, "validation set")

    owns_pg = False
    dev = _pick_device(device, info)
    if info.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns_pg = True
    try:
        torch.manual_seed(cfg.seed)
        model = S4TModel.from_config(model_cfg)
        if backbone_weights is not None and not resume:
            load_backbone_weights(model, backbone_weights)
        model.to(dev).train()
        kinds = {t: t for t in model_cfg.task_names}
        if val_ds is None:
            train_arr, val_arr, n_held = split_validation(train_ds, cfg)
        else:
            train_arr, val_arr, n_held = _Arrays.of(train_ds), _Arrays.of(val_ds), 0
        if cfg.batch_size > len(train_arr):
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({len(train_arr)} images after holding out validation); use at most "
                f"{len(train_arr)} or more data"
            )
        labelled = all(t in train_arr.tasks() for t in kinds)
        net: torch.nn.Module = model
        if info.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=not labelled,
            )
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start, history = 0, []
        if resume:
            start, history = load_checkpoint(out, model, opt)
            if start >= cfg.steps:
                raise ConfigError(
                    f"the run in {str(out)!r} already reached step {start} of {cfg.steps}; "
                    "pass a larger --steps to train further"
                )
        data = {
            "train": _info_dict(data_info, "train") | {"images": len(train_arr)},
            "val": _info_dict(data_info, "val")
            | ({"held_out_of_train": n_held} if n_held else {})
            | ({"images": len(val_arr)} if val_arr is not None else {}),
        }
        config: dict[str, Any] = {
            "model": model_cfg.to_dict(),
            "s4t": s4t_cfg.to_dict(),
            "train": cfg.to_dict(),
            "data": data,
            "metrics": {},
            "status": "running",
            "step": start,
            "world_size": info.world,
        }
        if protocol is not None:
            config["protocol"] = dict(protocol)
        if info.is_main:
            write_config(out, config)

        noise_len = model.mask_noise_shape(1)[1]
        batches = _StepBatches(train_arr, cfg, model_cfg, kinds, noise_len, info, start)
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, shuffle=False, num_workers=cfg.num_workers
        )
        end = cfg.steps if stop_at is None else min(cfg.steps, max(stop_at, start))
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            disable=not (progress and info.is_main),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        metrics: dict[str, Any] = {}
        t0, seen, t_last, seen_last = time.perf_counter(), 0, time.perf_counter(), 0
        step = start
        it = iter(loader)
        while step < end:
            batch = next(it)
            for g in opt.param_groups:
                g["lr"] = cfg.lr_at(step)
            image = batch["image"].to(dev, non_blocking=True)
            noise = batch["noise"].to(dev, non_blocking=True)
            labels = {k: v.to(dev, non_blocking=True) for k, v in batch["labels"].items()}
            outputs = net(image, noise)
            loss, parts = pretrain_loss(outputs, labels, s4t_cfg, kinds)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"the training loss became {loss.item()} at step {step}; lower --lr "
                    "(or check the data for invalid labels)"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            seen += len(image) * info.world
            bar.update(1)
            now = time.perf_counter()
            if now - t_last > 1.0 or step == end:
                ips = (seen - seen_last) / max(now - t_last, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{ips:.0f}", refresh=False)
                t_last, seen_last = now, seen
            last = step == cfg.steps
            if (
                info.is_main
                and val_arr is not None
                and (last or (cfg.val_every and step % cfg.val_every == 0))
            ):
                metrics = evaluate(model, val_arr.source, batch_size=64, device=dev)
                history.append({"step": step, "metrics": metrics})
                bar.write(f"step {step}: {format_metrics_line(metrics)}")
            if info.is_main and (
                step == end or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            ):
                save_checkpoint(out, model, opt, step, history)
        bar.close()
        elapsed = time.perf_counter() - t0
        if info.world > 1:
            # DDP broadcasts rank 0's buffers *before* each forward, so the last forward left each
            # rank with BatchNorm statistics of its own batch: adopt rank 0's, which it saves.
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        if info.is_main:
            if step == cfg.steps:
                save_tensors(out / WEIGHTS_FILE, model_state(model), {"format": "s4t-edge-run"})
                config["status"] = "finished"
            else:
                config["status"] = "stopped"
            config.update(
                step=step,
                metrics=metrics,
                history=history,
                timing={
                    "seconds": round(elapsed, 2),
                    "images_per_s": round(seen / max(elapsed, 1e-9), 1),
                },
            )
            write_config(out, config)
        if owns_pg:
            dist.barrier()
    finally:
        if owns_pg and dist.is_initialized():
            dist.destroy_process_group()
    model.to("cpu").eval()
    return Run(
        path=out,
        model=model,
        model_config=model_cfg,
        s4t_config=s4t_cfg,
        train_config=cfg,
        data=config["data"],
        metrics=metrics,
        config=config,
    )
