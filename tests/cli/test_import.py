"""`s4t-edge import` of checkpoints in the published layout, built here from our own model.

The official layout is written out independently of `s4t_edge.models.official` (the rules of the
issue: ``module.`` prefix, ``joint_dec``, ``patch_embed.proj``, ``heads.<t>.linear_pred``, the two
stored sin-cos tables, the Taskonomy task names), so the importer is checked against the rules,
not against its own inverse.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import run_cli

NYUD = {"semseg": "semseg", "depth": "depth", "normals": "normals", "edge": "edge"}
TASKONOMY = {
    "semseg": "segment_semantic",
    "depth": "depth_zbuffer",
    "normals": "normal",
    "edge": "edge_occlusion",
}


def official_key(key: str, names: dict[str, str]) -> str:
    if key.startswith("joint_decoder.patch_embed."):
        return key.replace("joint_decoder.patch_embed.", "joint_dec.patch_embed.proj.", 1)
    if key.startswith("joint_decoder."):
        return key.replace("joint_decoder.", "joint_dec.", 1)
    for branch in ("heads.", "aux_heads."):
        if key.startswith(branch):
            kind, rest = key[len(branch) :].split(".", 1)
            return f"{branch}{names[kind]}.linear_pred.{rest}"
    return key


def official_state(model, names=NYUD, ddp=True) -> dict[str, torch.Tensor]:
    """The state dict the published code would hold for `model` (DDP-wrapped by default)."""
    from s4t_edge.models.joint_decoder import sincos_pos_embed_2d

    cfg = model.config
    sd = {official_key(k, names): v.clone() for k, v in model.state_dict().items()}
    grid = cfg.decoder_image_size // cfg.patch_size
    sd["joint_dec.pos_embed"] = sincos_pos_embed_2d(cfg.enc_dim, grid)[None]
    sd["joint_dec.decoder_pos_embed"] = sincos_pos_embed_2d(cfg.dec_dim, grid)[None]
    return {("module." + k if ddp else k): v for k, v in sd.items()}


def official_checkpoint(model, path: Path, names=NYUD) -> Path:
    """A file like the published training's torch.save: model, optimizer, scheduler, counters."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-5, weight_decay=1e-6)
    model.train()
    out = model(torch.randn(2, 3, 64, 64), torch.rand(model.mask_noise_shape(2)))
    sum(v.float().mean() for v in out["joint"].values()).backward()
    opt.step()
    model.eval()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / 60000) ** 0.9)
    torch.save(
        {
            "model": official_state(model, names),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": 7,
            "iter_count": 60000,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def tiny():
    from tests.export.conftest import make_tiny_model

    torch.set_num_threads(1)
    return make_tiny_model(seed=3)


TASKS = "semseg=7,depth=1,normals=3,edge=1"


def _import(capsys, ckpt, out, *extra):
    return run_cli(capsys, "import", ckpt, "--preset", "tiny", "--out", out, *extra)


def test_paper_preset_has_the_421_official_tensors():
    from s4t_edge.models import build_model
    from s4t_edge.models.official import official_names, to_ours

    with torch.device("meta"):
        model = build_model("paper")
    ours = list(model.state_dict())
    names = official_names(ours)
    assert len(ours) == 419 and len(names) == len(set(names)) == 421
    assert names == [official_key(k, NYUD) for k in ours] + [
        "joint_dec.pos_embed",
        "joint_dec.decoder_pos_embed",
    ]
    assert [to_ours(n) for n in names[:-2]] == ours  # and back
    assert "joint_dec.patch_embed.proj.weight" in names
    assert "heads.semseg.linear_pred.weight" in names


def test_import_round_trip_is_bit_identical(tiny, tmp_path, capsys):
    _import_and_compare(tiny, tmp_path, capsys)


def _import_and_compare(tiny, tmp_path, capsys) -> Path:
    from safetensors.torch import load_file

    ckpt = official_checkpoint(tiny, tmp_path / "checkpoint_60000.pth.tar")
    run = tmp_path / "run"
    code, out, err = _import(capsys, ckpt, run, "--tasks", TASKS, "--input-size", "64")
    assert code == 0, err
    assert "DistributedDataParallel" in out and "joint_dec.pos_embed" in out
    got = load_file(run / "model.safetensors")
    want = tiny.state_dict()
    assert set(got) == set(want)  # exactly the checkpoint's tensors, under our names
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["imported"]["epoch"] == 7 and cfg["imported"]["iter_count"] == 60000
    assert cfg["model"]["mean"] == [0.485, 0.456, 0.406]  # NYUD names: ImageNet normalisation
    # the imported run evaluates like the model itself
    from s4t_edge.train.rundir import load_run

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = load_run(run).model.predict(x), tiny.predict(x)
    assert all(torch.equal(a[t], b[t]) for t in a)
    return run


@pytest.mark.slow
def test_imported_run_exports_and_checks(tiny, tmp_path, capsys):
    run = _import_and_compare(tiny, tmp_path, capsys)
    code, _, err = run_cli(capsys, "export", run, "--out", tmp_path / "art", "--batch", "2")
    assert code == 0, err
    code, out, err = run_cli(capsys, "check", tmp_path / "art")
    assert code == 0, err + out


def test_taskonomy_names_bare_state_dict_and_the_position_quirk(tiny, tmp_path, capsys):
    from s4t_edge.models import build_model

    torch.manual_seed(1)
    model = build_model("tiny", {"depth": 1, "edge": 1, "normals": 3, "semseg": 7}).eval()
    ckpt = tmp_path / "tsk.pth"
    torch.save(official_state(model, TASKONOMY, ddp=False), ckpt)
    spec = "depth_zbuffer=1,edge_occlusion=1,normal=3,segment_semantic=7"
    code, out, err = _import(capsys, ckpt, tmp_path / "run", "--tasks", spec)
    assert code == 0, err
    assert "bare state dict" in out and "was depth_zbuffer" in out
    assert "copies ts_comp slices and joint-decoder channels by position" in err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["tasks"] == [["depth", 1], ["edge", 1], ["normals", 3], ["semseg", 7]]
    assert cfg["model"]["mean"] == [0.5, 0.5, 0.5] and cfg["model"]["std"] == [0.5, 0.5, 0.5]
    assert cfg["imported"]["dataset_family"] == "taskonomy"
    # a wrong head order is accepted (same channels) but warned about
    code, _, err = _import(
        capsys, ckpt, tmp_path / "run2", "--tasks",
        "edge_occlusion=1,depth_zbuffer=1,normal=3,segment_semantic=7",
    )  # fmt: skip
    assert code == 0 and "differs from the order of the heads" in err


OFFICIAL_YML = """\
# pretraining on NYUD for the NYUD -> Taskonomy protocol
version_name: nyud_taskonomy_resnet50_S4T
train_db_name: NYUD
val_db_name: NYUD
val_seg: Taskonomy
trBatch: 8
task_dictionary:
   include_semseg: True
   include_depth: True
   include_normals: True
   include_edge: True
   edge_w: 0.95
loss_kwargs:
   loss_weights:
       semseg: 1.0
       depth: 1.0
       normals: 10.0
       edge: 50.0
       TTT_loss: 0.01
model_kwargs:
   mask_ratio: 0.8
   TTT_input_res: 256
optimizer_kwargs: {lr: 2e-5, weight_decay: 1e-6}
"""


def test_tasks_from_the_official_config(tiny, tmp_path, capsys):
    from s4t_edge.train.official_config import read_official_config

    yml = tmp_path / "nyud_taskonomy_resnet50_S4T.yml"
    yml.write_text(OFFICIAL_YML)
    cfg = read_official_config(yml)
    assert cfg.tasks == (("semseg", 7), ("depth", 1), ("normals", 3), ("edge", 1))
    assert (cfg.dataset, cfg.protocol, cfg.mask_ratio, cfg.ttt_lambda) == (
        "nyud", "taskonomy", 0.8, 0.01,
    )  # fmt: skip
    ckpt = official_checkpoint(tiny, tmp_path / "c.pth.tar")
    run = tmp_path / "run"
    code, _, err = _import(capsys, ckpt, run, "--config", yml, "--input-size", "64,64")
    assert code == 0, err
    stored = json.loads((run / "config.json").read_text())
    assert stored["model"]["tasks"] == [["semseg", 7], ["depth", 1], ["normals", 3], ["edge", 1]]
    assert stored["s4t"]["loss_weights"]["normals"] == 10.0
    bad = tmp_path / "bad.yml"
    bad.write_text("train_db_name: &a NYUD\n")
    code, _, err = _import(capsys, ckpt, tmp_path / "r2", "--config", bad)
    assert code == 2 and "line 1" in err and len(err.strip().splitlines()) == 1


class NeedsCode:  # a checkpoint entry only a full unpickle could rebuild
    def __init__(self) -> None:
        self.x = 1


def _bad_checkpoint(case: str, tiny, tmp: Path) -> tuple[Path, list[str]]:
    sd = official_state(tiny)
    p = tmp / f"{case}.pth"
    if case == "not_a_checkpoint":
        p.write_text("these are not the weights you are looking for\n")
    elif case == "needs_code":
        torch.save({"model": sd, "extra": NeedsCode()}, p)
    elif case == "other_model":
        torch.save(torch.nn.Linear(3, 2).state_dict(), p)
    elif case == "missing":
        sd.pop("module.ts_comp.weight")
        torch.save({"model": sd}, p)
    elif case == "unexpected":
        sd["module.joint_dec.cls_token"] = torch.zeros(1, 1, 32)
        torch.save({"model": sd}, p)
    elif case == "shape":
        sd["module.ts_comp.bias"] = torch.zeros(5)
        torch.save({"model": sd}, p)
    elif case == "task_count":
        torch.save({"model": sd}, p)
        return p, ["--tasks", "semseg=7,depth=1,normals=3"]
    elif case == "channels":
        torch.save({"model": sd}, p)
        return p, ["--tasks", "semseg=40,depth=1,normals=3,edge=1"]
    elif case == "pos_embed":
        sd["module.joint_dec.pos_embed"] = sd["module.joint_dec.pos_embed"] + 0.01
        torch.save({"model": sd}, p)
    elif case == "no_tasks":
        torch.save({"model": sd}, p)
        return p, []
    return p, ["--tasks", TASKS]


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("not_a_checkpoint", "is not a PyTorch checkpoint"),
        ("needs_code", "pickle that needs code to load"),
        ("other_model", "is not an S4T checkpoint"),
        ("missing", "lacks 1 tensor(s) of the tiny S4T model: ts_comp.weight"),
        ("unexpected", "does not: joint_dec.cls_token"),
        ("shape", "ts_comp.bias has shape (5,), the tiny S4T model expects (64,)"),
        ("task_count", "--tasks gives 3 task(s) but"),
        ("channels", "use semseg=7"),
        ("pos_embed", "joint_dec.pos_embed differs from the fixed 2-D sin-cos table"),
        ("no_tasks", "give the tasks in training order with --tasks"),
    ],
)
def test_bad_checkpoints_are_one_line_errors_and_leave_nothing(
    tiny, tmp_path, capsys, case, pattern
):
    ckpt, args = _bad_checkpoint(case, tiny, tmp_path)
    out = tmp_path / "out" / "runs" / "new"  # parents created on demand...
    code, _, err = _import(capsys, ckpt, out, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], err
    assert not (tmp_path / "out").exists()  # ...and no run directory, temporary or parent left


def test_existing_directories_are_protected(tiny, tmp_path, capsys):
    ckpt = official_checkpoint(tiny, tmp_path / "c.pth.tar")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, _, err = _import(capsys, ckpt, other, "--tasks", TASKS, "--overwrite")
    assert code == 2 and "not an s4t-edge run" in err
    assert (other / "keep.txt").read_text() == "mine"
    (other / "config.json").write_text('{"model": "someone else\'s config"}')
    code, _, err = _import(capsys, ckpt, other, "--tasks", TASKS, "--overwrite")
    assert code == 2 and "not an s4t-edge run" in err  # a config.json alone is not a run
    assert sorted(p.name for p in other.iterdir()) == ["config.json", "keep.txt"]
    run = tmp_path / "run"
    assert _import(capsys, ckpt, run, "--tasks", TASKS)[0] == 0
    first = (run / "config.json").read_text()
    code, _, err = _import(capsys, ckpt, run, "--tasks", TASKS)
    assert code == 2 and "--overwrite" in err and (run / "config.json").read_text() == first
    (run / "notes.md").write_text("my notes on this run")
    code, _, err = _import(capsys, ckpt, run, "--tasks", TASKS, "--overwrite", "--input-size", "96")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["model"]["input_size"] == [96, 96]
    assert (run / "notes.md").read_text() == "my notes on this run"  # only run files replaced
    code, _, err = _import(capsys, ckpt, ckpt.parent / "c.pth.tar", "--tasks", TASKS)
    assert code == 2 and "checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth.tar", "notes", "run"]
