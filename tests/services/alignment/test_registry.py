"""Registry pipelines (issue 3, "registry.py") and the saved Mapping format on tiny planted worlds."""

import json

import numpy as np
import pytest

from services.alignment.mapping import FORMAT_VERSION, Mapping
from services.alignment.registry import align, available_methods, parse_method
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import nn_accuracy, planted_world


@pytest.fixture(scope="module")
def world():
    return planted_world(n=400, d=16, noise=0.1, seed=21, identical_fraction=0.1)


def test_pipeline_names_resolve():
    assert parse_method("procrustes+instamap") == ["procrustes", "instamap"]
    assert parse_method(" WALIP + l1 ") == ["walip", "l1"]
    assert {"procrustes", "kabsch", "robust-procrustes", "walip", "instamap", "l1"} <= set(available_methods())


@pytest.mark.parametrize("method", ["nope", "walip+nope", "procrustes+"])
def test_unknown_method_fails_listing_the_known_ones(world, method):
    with pytest.raises(InvalidInput) as err:
        align(world.src, world.tgt, method)
    assert method.split("+")[-1] in err.value.message or "invalid method" in err.value.message
    assert err.value.detail["known"] == available_methods()
    if method != "procrustes+":
        assert "known: " + ", ".join(available_methods()) in err.value.message


def test_unknown_option_fails_listing_the_known_ones(world):
    with pytest.raises(InvalidInput, match="holdout"):
        align(world.src, world.tgt, "l1", options={"l1": {"hold_out": 0.1}})


def test_procrustes_plus_instamap_runs_and_saves(world, tmp_path):
    train = world.gold[:150]
    res = align(world.src, world.tgt, "procrustes+instamap", seed_pairs=train, options={"K": 20, "T": 2})
    m = res.mapping
    assert m.method == "procrustes+instamap" and [s.kind for s in m.stages] == ["linear", "instamap"]
    stats = m.stats["stages"]
    assert stats[1]["method"] == "instamap" and stats[1]["seed_pairs"] == 150 and stats[1]["final_pairs"] > 150
    assert (stats[1]["src_step"], stats[1]["tgt_step"]) == (1.0, 1.0)
    test = world.gold[150:]
    assert nn_accuracy(m.transform_source(world.src.vectors), m.transform_target(world.tgt.vectors), test) > 0.9
    loaded = Mapping.load(m.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(loaded.transform_source(world.src.vectors), m.transform_source(world.src.vectors))


def test_l1_defaults_to_the_papers_flow(world):
    res = align(world.src, world.tgt, "walip+l1", options={"max_iter": 3, "l1": {"max_steps": 20}})
    l1 = res.mapping.stats["stages"][1]
    assert l1["mode"] == "faithful" and l1["dictionary"] == "restricted" and l1["rounds"] == 1
    assert l1["steps"] <= 20 and l1["loss_final"] <= l1["loss_initial"] and l1["orthogonality_error"] <= 1e-5
    assert "early_stopping" not in l1


def test_walip_plus_l1_orthogonal_runs_with_early_stopping_by_default(world):
    res = align(world.src, world.tgt, "walip+l1", options={"max_iter": 3, "l1": {"mode": "orthogonal"}})
    walip, l1 = res.mapping.stats["stages"]
    assert res.mapping.stats["seed"] == "identical"
    assert walip["method"] == "walip" and l1["method"] == "l1"
    assert l1["mode"] == "orthogonal" and l1["early_stopping"] and l1["holdout"] == 0.2 and l1["patience"] == 10
    assert l1["holdout_pairs"] == round(0.2 * l1["pairs"]) and l1["fit_pairs"] + l1["holdout_pairs"] == l1["pairs"]
    for key in ("steps", "best_step", "fit_loss_initial", "fit_loss_final", "holdout_loss_initial", "holdout_loss_final",
                "loss_initial", "loss_final", "orthogonality_error"):
        assert l1[key] is not None, key
    assert l1["holdout_loss_final"] <= l1["holdout_loss_initial"]
    assert l1["orthogonality_error"] < 1e-5
    m = res.mapping
    acc = nn_accuracy(m.transform_source(world.src.vectors), m.transform_target(world.tgt.vectors), world.gold)
    assert acc > 0.9


def test_l1_options_select_pure_minimisation_and_faithful_mode(world):
    XW = world.src.vectors @ world.Q
    from services.alignment.vectors import WordVectors

    src = WordVectors(world.src.words, XW.astype(np.float32))
    pure = align(src, world.tgt, "l1", options={"mode": "orthogonal", "holdout": 0.0, "max_steps": 50}).mapping.stats["stages"][0]
    assert pure["early_stopping"] is False and pure["holdout_pairs"] == 0 and pure["holdout_loss_final"] is None
    assert pure["loss_final"] <= pure["loss_initial"] and pure["mu_start"] is None
    exact = align(src, world.tgt, "l1", options={"mode": "orthogonal", "holdout": 0.0, "max_steps": 50, "mu_start": 1e-6})
    exact_stats = exact.mapping.stats["stages"][0]
    assert exact_stats["mu_start"] == 1e-6 and exact_stats["loss_final"] <= exact_stats["loss_initial"]
    assert exact.mapping.version != align(src, world.tgt, "l1", options={"mode": "orthogonal", "holdout": 0.0,
                                                                        "max_steps": 50}).mapping.version
    faithful = align(src, world.tgt, "l1", options={"l1": {"mode": "faithful", "max_steps": 5}}).mapping.stats["stages"][0]
    assert faithful["mode"] == "faithful" and "early_stopping" not in faithful and faithful["steps"] <= 5
    assert faithful["loss_final"] <= faithful["loss_initial"]
    flow = align(src, world.tgt, "l1", options={"l1": {"mode": "flow", "max_steps": 40, "stride": 4}}).mapping.stats["stages"][0]
    assert flow["mode"] == "flow" and flow["stride"] == 4 and flow["steps"] <= 10
    assert flow["loss_final"] < flow["loss_initial"] and flow["orthogonality_error"] < 1e-12
    with pytest.raises(InvalidInput) as err:
        align(src, world.tgt, "l1", options={"mode": "flow", "stride": 0})
    assert err.value.detail["field"] == "options.stride"


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_rejects_unknown_format_version(world, tmp_path):
    good = align(world.src, world.tgt, "procrustes", seed_pairs=world.gold[:50]).mapping.save(tmp_path / "good.npz")
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["vislex_mapping_format"] = np.array(FORMAT_VERSION + 1)
    bad = _write_npz(tmp_path / "future.npz", **arrays)
    with pytest.raises(InvalidInput, match=f"unsupported mapping format version {FORMAT_VERSION + 1}"):
        Mapping.load(bad)


def test_load_rejects_missing_keys_and_arrays(world, tmp_path):
    good = align(world.src, world.tgt, "procrustes", seed_pairs=world.gold[:50]).mapping.save(tmp_path / "good.npz")
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    assert Mapping.load(good).method == "procrustes"

    no_marker = {k: v for k, v in arrays.items() if k != "vislex_mapping_format"}
    with pytest.raises(InvalidInput, match="not a vislex mapping file"):
        Mapping.load(_write_npz(tmp_path / "nomarker.npz", **no_marker))

    no_stages = dict(arrays, meta=np.array(json.dumps({k: v for k, v in meta.items() if k != "stages"})))
    with pytest.raises(InvalidInput, match=r"lacks required key\(s\) \['stages'\]"):
        Mapping.load(_write_npz(tmp_path / "nostages.npz", **no_stages))

    no_method = dict(arrays, meta=np.array(json.dumps({k: v for k, v in meta.items() if k != "method"})))
    with pytest.raises(InvalidInput, match="method"):
        Mapping.load(_write_npz(tmp_path / "nomethod.npz", **no_method))

    no_w = {k: v for k, v in arrays.items() if k != "stage0_W"}
    with pytest.raises(InvalidInput, match="stage 0 .*incomplete"):
        Mapping.load(_write_npz(tmp_path / "now.npz", **no_w))

    bad_json = dict(arrays, meta=np.array("{not json"))
    with pytest.raises(InvalidInput, match="metadata"):
        Mapping.load(_write_npz(tmp_path / "badjson.npz", **bad_json))


def test_vecmap_plus_l1_moves_both_spaces_and_round_trips(world, tmp_path):
    train = world.gold[:150]
    res = align(world.src, world.tgt, "vecmap+l1", seed_pairs=train)
    m = res.mapping
    assert [s.kind for s in m.stages] == ["linear2", "linear"]
    Xm, Ym = m.transform_source(world.src.vectors), m.transform_target(world.tgt.vectors)
    assert not np.allclose(Ym, world.tgt.vectors)  # the target side moves too
    np.testing.assert_allclose(np.linalg.norm(Ym, axis=1), 1.0, atol=1e-5)
    assert nn_accuracy(Xm, Ym, world.gold[150:]) > 0.9
    loaded = Mapping.load(m.save(tmp_path / "v.npz"))
    assert loaded.version == m.version and loaded.dim == world.src.vectors.shape[1]
    np.testing.assert_array_equal(loaded.transform_target(world.tgt.vectors), Ym)


def _rotated_away(world, angle):
    """Source vectors mapped by the planted Q, then turned by ``angle`` in every coordinate plane: a poor start."""
    d = world.Q.shape[0]
    R = np.eye(d)
    c, s = np.cos(angle), np.sin(angle)
    for p in range(0, d - 1, 2):
        R[p:p + 2, p:p + 2] = [[c, -s], [s, c]]
    from services.alignment.vectors import WordVectors

    return WordVectors(world.src.words, (world.src.vectors @ world.Q @ R).astype(np.float32))


def test_l1_rounds_reinduce_the_dictionary_until_it_stops_changing():
    world = planted_world(n=400, d=16, noise=0.5, seed=21, identical_fraction=0.1)
    src = _rotated_away(world, 0.6)
    before = nn_accuracy(src.vectors, world.tgt.vectors, world.gold)
    opts = {"mode": "orthogonal", "holdout": 0.0, "mu_start": 1e-6, "max_vocab": 300}
    one = align(src, world.tgt, "l1", options={**opts, "rounds": 1}).mapping
    many = align(src, world.tgt, "l1", options={**opts, "rounds": 4}).mapping
    s1, s4 = one.stats["stages"][0], many.stats["stages"][0]
    assert s1["rounds"] == 1 and len(s1["round_stats"]) == 1 and s1["dictionary"] == "restricted"
    assert 2 <= s4["rounds"] <= 4 and len(s4["round_stats"]) == s4["rounds"]
    assert s4["round_stats"][0]["pairs"] == s1["pairs"] < s4["pairs"]  # refined mapping induces more pairs
    assert s4["steps"] == sum(r["steps"] for r in s4["round_stats"])
    acc1 = nn_accuracy(one.transform_source(src.vectors), world.tgt.vectors, world.gold)
    acc4 = nn_accuracy(many.transform_source(src.vectors), world.tgt.vectors, world.gold)
    assert before < 0.7 < acc1 <= acc4
    M = many.stages[0].W
    np.testing.assert_allclose(M.T @ M, np.eye(16), atol=1e-6)
    if s4["rounds"] < 4:  # stopped early: at a fixed point, the final mapping induces the final dictionary again
        from services.alignment.l1 import l1_dictionary

        again = l1_dictionary(many.transform_source(src.vectors), world.tgt.vectors, max_vocab=300)
        assert len(again) == s4["pairs"]


@pytest.mark.parametrize("bad", [{"rounds": 0}, {"dictionary": "nope"}])
def test_l1_rejects_bad_rounds_and_dictionary_rule(world, bad):
    with pytest.raises(InvalidInput):
        align(world.src, world.tgt, "l1", options=bad)
