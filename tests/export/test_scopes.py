from __future__ import annotations

import pytest

from s4t_edge.errors import ConfigError
from s4t_edge.export.scopes import DEFAULT_SCOPE, Scope, select_theta
from tests.export.conftest import make_tiny_model


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


def test_norm_selects_every_norm_affine_and_nothing_else(model):
    names = select_theta(model, "norm")
    assert names, "tiny model has norm layers"
    assert all(n.endswith((".weight", ".bias")) for n in names)
    assert any(n.startswith("backbone.bn1") for n in names)  # BatchNorm
    assert any(n.startswith("joint_decoder.") for n in names)  # LayerNorm
    modules = dict(model.named_modules())
    for n in names:
        owner = modules[n.rsplit(".", 1)[0]]
        assert "Norm" in type(owner).__name__


def test_prefix_restricts_to_module_subtree(model):
    names = select_theta(model, "norm@backbone.layer4")
    assert names and all(n.startswith("backbone.layer4.") for n in names)
    assert set(names) < set(select_theta(model, "norm"))


def test_union_is_ordered_like_the_model_and_deduplicated(model):
    a = select_theta(model, "norm@backbone.layer4+norm@joint_decoder+norm@backbone.layer4")
    order = [n for n, _ in model.named_parameters()]
    assert a == [n for n in order if n in set(a)]
    assert len(a) == len(set(a))
    assert a == select_theta(model, DEFAULT_SCOPE)


def test_all_excludes_aux_heads_never_reached_at_test_time(model):
    names = select_theta(model, "all")
    total = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("aux_heads.") for n in names)
    assert set(total) - set(names) == {n for n in total if n.startswith("aux_heads.")}


def test_regex_term(model):
    names = select_theta(model, r"re:^ts_comp\.")
    assert names == ["ts_comp.weight", "ts_comp.bias"]


def test_adapters_term_needs_adapters():
    model = make_tiny_model()
    with pytest.raises(ConfigError, match="selects no parameter"):
        select_theta(model, "adapters")
    model.add_adapters(["layer3"])
    names = select_theta(model, "adapters")
    assert names and all(n.startswith("adapters.layer3.") for n in names)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("", "empty scope"),
        ("bn", "unknown scope term"),
        ("norm@", "unknown scope term"),
        ("re:[", "bad regular expression"),
        ("norm+foo", "unknown scope term"),
    ],
)
def test_bad_expressions_are_config_errors(expr, message):
    with pytest.raises(ConfigError, match=message):
        Scope.parse(expr)


def test_unknown_prefix_names_the_module(model):
    with pytest.raises(ConfigError, match="no module 'backbone.layer9'"):
        select_theta(model, "norm@backbone.layer9")
