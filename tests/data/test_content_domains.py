"""Content domains: other scenes (camera, rooms, objects), exact labels, deterministic by seed."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from s4t_edge.data import DOMAINS, NUM_CLASSES, TASK_KEYS, domains_of_kind, synth
from s4t_edge.data.scenes import CLASS_NAMES, render_scenes

N, SIZE, SEED = 6, 32, 21
CONTENT = ("lowcam", "hall", "objects")


@pytest.fixture(scope="module")
def rendered():
    return {name: synth(name, N, SIZE, SEED) for name in ("source", *CONTENT)}


def test_kinds_are_registered():
    assert set(domains_of_kind("content")) == set(CONTENT)
    assert {"fog", "night", "noise", "blur", "texture"} <= set(domains_of_kind("photometric"))
    for name in CONTENT:
        assert DOMAINS[name].to_dict()["kind"] == "content"


def test_source_family_is_the_default_render():
    idx = np.arange(3)
    a, b = render_scenes(5, idx, 24), render_scenes(5, idx, 24, "source", "source")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("name", CONTENT)
def test_content_domains_change_the_labels_and_stay_valid(rendered, name):
    src, ds = rendered["source"], rendered[name]
    assert not np.array_equal(src.depth, ds.depth)
    assert np.all(ds.depth > 0) and ds.semseg.max() < NUM_CLASSES
    np.testing.assert_allclose(np.linalg.norm(ds.normals, axis=-1), 1.0, atol=1e-4)
    assert set(np.unique(ds.edge)) <= {0, 1}
    assert ds.meta["domain_spec"]["scene"] == name


@pytest.mark.parametrize("name", CONTENT)
def test_content_domains_are_deterministic_and_chunk_invariant(rendered, name):
    again = synth(name, N, SIZE, SEED, chunk_size=2)
    head = synth(name, 3, SIZE, SEED)
    for k in ("image", *TASK_KEYS):
        np.testing.assert_array_equal(getattr(again, k), getattr(rendered[name], k))
        np.testing.assert_array_equal(getattr(head, k), getattr(rendered[name], k)[:3])


def test_each_content_domain_changes_what_it_is_named_for():
    src, low, hall, obj = (synth(d, 24, SIZE, 3) for d in ("source", *CONTENT))
    ceiling = CLASS_NAMES.index("ceiling")
    # a low camera looking level with a wide lens sees far more ceiling than one looking down
    assert (low.semseg == ceiling).mean() > 2 * (src.semseg == ceiling).mean()
    assert hall.depth.mean() > 1.3 * src.depth.mean()  # bigger rooms are further away
    sphere = CLASS_NAMES.index("sphere")
    assert (obj.semseg == sphere).mean() == 0 < (src.semseg == sphere).mean()


def test_data_domains_lists_each_domain_with_its_kind():
    from s4t_edge.cli.main import cli

    out = CliRunner().invoke(cli, ["data", "domains"])
    assert out.exit_code == 0
    lines = out.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == list(DOMAINS)
    assert all(ln.split()[1] == DOMAINS[ln.split()[0]].kind for ln in lines)
    content = CliRunner().invoke(cli, ["data", "domains", "--kind", "content"])
    assert [ln.split()[0] for ln in content.output.strip().splitlines()] == list(CONTENT)
