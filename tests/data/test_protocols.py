"""The published cross-dataset protocol presets (facts sheet §0, §3-§5)."""

from __future__ import annotations

import json

import pytest

from s4t_edge.data import PROTOCOLS, get_protocol
from s4t_edge.data.protocols import Protocol
from s4t_edge.errors import ConfigError
from s4t_edge.train.config import S4TConfig


def test_the_three_published_protocols():
    assert set(PROTOCOLS) == {"nyud-taskonomy", "pascal-taskonomy", "taskonomy-nyud"}
    nt, pt, tn = (PROTOCOLS[k] for k in ("nyud-taskonomy", "pascal-taskonomy", "taskonomy-nyud"))
    assert (nt.source.dataset, nt.target.dataset) == ("nyud", "taskonomy")
    assert (tn.source.dataset, tn.target.dataset) == ("taskonomy", "nyud")
    assert nt.num_classes == tn.num_classes == 7 and pt.num_classes == 6
    # head orders as published: NYUD [semseg, depth, normals, edge], Taskonomy [depth, edge,
    # normal, segsem], PASCAL [semseg, normals, edge] against Taskonomy [edge, normal, segsem]
    assert nt.task_channels() == {"semseg": 7, "depth": 1, "normals": 3, "edge": 1}
    assert tn.task_channels() == {"depth": 1, "edge": 1, "normals": 3, "semseg": 7}
    assert pt.task_channels() == {"semseg": 6, "normals": 3, "edge": 1}
    assert pt.target.tasks == ("edge", "normals", "semseg")
    # shared-class remaps (§3.1 with NYUD ids after the -1 shift; §3.2)
    assert nt.source.class_ids == (23, 6, 32, 5, 3, 33, 4)
    assert nt.target.class_ids == (14, 7, 8, 4, 6, 13, 3) == tn.source.class_ids
    assert pt.source.class_ids == (11, 20, 5, 18, 16, 9)
    assert pt.target.class_ids == (7, 9, 2, 4, 5, 3)
    assert pt.classes[2] == "bottle"  # the published printout's "toilet" is a typo
    # sizes and normalisation (§4)
    assert nt.source.size == (448, 576) and pt.source.size == (512, 512)
    assert nt.target.size == (256, 256) and nt.target.mean == (0.5, 0.5, 0.5)
    assert nt.source.mean == (0.485, 0.456, 0.406)
    # loss weights and TTT settings (§5)
    assert nt.loss_weights == {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edge": 50.0}
    assert "depth" not in pt.loss_weights and tn.normals_loss == "cosine"
    assert nt.ttt["steps"] == 40 and nt.ttt["lr"] == 2e-5 and nt.ttt["batch_size"] == 8
    assert nt.pretrain["steps"] == 60000 and nt.pretrain["optimizer"] == "adam"


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_records_round_trip_and_build_configs(name):
    p = PROTOCOLS[name]
    record = json.loads(json.dumps(p.to_dict()))
    assert Protocol.from_dict(record) == p
    assert get_protocol(record) == p
    s4t = S4TConfig.from_dict(p.s4t_dict())
    assert s4t.weight_power == 2.0 and s4t.edge_pos_weight == 19.0  # 0.95 / 0.05
    assert s4t.optimizer.name == "sgd" and s4t.optimizer.weight_decay == 1e-6


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown protocol 'nyud'; choose one of nyud-taskonomy"):
        get_protocol("nyud")
    assert get_protocol(None) is None
