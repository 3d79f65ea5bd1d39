"""The published protocol on θ graphs (toy artifact, torch-free): adapt once on the first batch,
then evaluate every batch with that θ and no further step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s4t_edge.data import Dataset
from s4t_edge.measure.evaluate import adapt_dataset
from s4t_edge.runtime import Adapter, load
from tests.runtime.test_adapter_loop import _adapter


def test_published_adapts_on_the_first_batch_only(toy_artifact: Path, frames: np.ndarray) -> None:
    a, b = _adapter(toy_artifact, steps=4, mode="published", predict_before=True)
    r1 = a.adapt(frames)
    assert b.calls["step"] == 4 and len(r1.loss_trace) == 4
    theta1 = {k: v.copy() for k, v in a.theta.items()}
    assert not np.allclose(theta1["head.weight"], a.source_theta["head.weight"])
    other = frames[::-1].copy()
    r2 = a.adapt(other)
    assert b.calls["step"] == 4 and r2.loss_trace == []  # no further step...
    for k, v in a.theta.items():  # ...and θ kept, not reset
        np.testing.assert_array_equal(v, theta1[k])
    np.testing.assert_array_equal(r2.predictions["depth"], a.predict(other)["depth"])
    np.testing.assert_array_equal(
        r2.predictions_before["depth"], a.predict(other, a.source_theta)["depth"]
    )
    assert a.batches == 2 and a.total_steps == 4
    # reset() re-arms it: the next batch is an adaptation batch again, from the source θ
    a.reset()
    a.adapt(frames)
    assert b.calls["step"] == 8
    np.testing.assert_array_equal(b.thetas[4]["head.weight"], a.source_theta["head.weight"])


def test_published_over_a_dataset_equals_adapt_then_predict(toy_artifact: Path) -> None:
    rng = np.random.default_rng(1)
    ds = Dataset(
        image=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        depth=rng.uniform(0.5, 3.0, (5, 8, 8)).astype(np.float32),
    )
    res = adapt_dataset(Adapter(load(toy_artifact), steps=3, mode="published"), ds, examples=5)
    assert [len(t) for t in res.loss_trace] == [3, 0, 0]
    assert res.to_json()["protocol"] == "published" and "predict_batch_ms" in res.timing
    # by hand: K steps on images 0-1 (the first batch, unshuffled), then predict all five
    ref = Adapter(load(toy_artifact), steps=3, mode="episodic")
    first = ref.adapt(ds.image[:2]).predictions["depth"]
    rest = [ref.predict(ds.image[i : i + 2])["depth"] for i in (2, 4)]
    np.testing.assert_allclose(res.examples.after["depth"], np.concatenate([first, *rest]))
    # episodic adapts every batch: different predictions on the later images
    epi = adapt_dataset(Adapter(load(toy_artifact), steps=3), ds, examples=5)
    assert [len(t) for t in epi.loss_trace] == [3, 3, 3]
    assert not np.allclose(epi.examples.after["depth"][2:], res.examples.after["depth"][2:])
