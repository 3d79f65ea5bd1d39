"""The YAML-subset reader behind `s4t-edge import --config` and what it extracts."""

from __future__ import annotations

import pytest

from s4t_edge.errors import ConfigError
from s4t_edge.train.official_config import parse_simple_yaml, read_official_config


def test_yaml_subset():
    text = """\
---
a: 1          # comment
b: 'x # not a comment'
c:
  - 2e-5
  - [1, 2.5, "s"]
  - k: v
    k2: {p: 1, q: yes}
d:
- null
- ~
e: True
"""
    assert parse_simple_yaml(text) == {
        "a": 1,
        "b": "x # not a comment",
        "c": [2e-5, [1, 2.5, "s"], {"k": "v", "k2": {"p": 1, "q": True}}],
        "d": [None, None],
        "e": True,
    }


@pytest.mark.parametrize(
    "text, line",
    [("a: 1\n  b: 2\n", 2), ("a: *ref\n", 1), ("a: 1\nnot a mapping\n", 2), ("a:\n\tb: 1\n", 2)],
)
def test_yaml_outside_the_subset_names_the_line(text, line):
    with pytest.raises(ConfigError, match=f"line {line}"):
        parse_simple_yaml(text)


def test_taskonomy_config_keeps_its_task_order(tmp_path):
    p = tmp_path / "taskonomy_nyud.yml"
    p.write_text(
        "train_db_name: Taskonomy\nval_seg: NYUD\nTASKS:\n  NAMES:\n    - depth_zbuffer\n"
        "    - edge_occlusion\n    - normal\n    - segment_semantic\n"
    )
    cfg = read_official_config(p)
    assert cfg.dataset == "taskonomy" and cfg.protocol == "nyud"
    assert cfg.tasks == (
        ("depth_zbuffer", 1), ("edge_occlusion", 1), ("normal", 3), ("segment_semantic", 7),
    )  # fmt: skip
    p.write_text("train_db_name: PASCALContext\nval_seg: Taskonomy\ntask_dictionary:\n"
                 "  include_semseg: True\n  include_normals: True\n  include_edge: True\n")  # fmt: skip
    assert read_official_config(p).tasks == (("semseg", 6), ("normals", 3), ("edge", 1))
    p.write_text("train_db_name: NYUD\ntask_dictionary:\n  include_sal: True\n")
    with pytest.raises(ConfigError, match="does not model"):
        read_official_config(p)
