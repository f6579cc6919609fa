"""The demo graph, built for real at the tiny preset: real ImageNet root, real (short) fine-tunes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch_threads import one_thread

from mothertree.zoo.build import STATE_FILE, TRUTH_FILE, GraphBuild, build_graph
from mothertree.zoo.demo import ROOT_ID, TINY_DEMO_GRAPH, default_demo_dir
from mothertree.zoo.files import load_state_dict
from mothertree.zoo.mobilenet import MobileNetV2, imagenet_weights_path

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Rebuilt models are compared bit for bit with ``tiny_demo``'s, which was built on one thread."""
    with one_thread():
        yield


TINY = TINY_DEMO_GRAPH
TRAINED = [n.id for n in TINY.nodes if n.parent is not None]
REQUIRED = {"task", "lr", "seed", "steps", "accuracy", "final_loss", "relative_change_from_parent"}


def _weights_file(folder: Path) -> Path:
    files = [p for p in folder.iterdir() if p.suffix in {".bin", ".safetensors"}]
    assert len(files) == 1, f"{folder} should hold exactly one checkpoint, has {files}"
    return files[0]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*") if p.is_file()}


def test_build_trains_every_model_once(tiny_demo: GraphBuild) -> None:
    assert tiny_demo.trained == (ROOT_ID, *TRAINED)
    assert tiny_demo.reused == ()


def test_truth_json_structure(tiny_demo: GraphBuild) -> None:
    truth = json.loads((tiny_demo.path / TRUTH_FILE).read_text())
    assert set(truth) == {"edges", "models", "spec"}
    assert truth["spec"] == json.loads(json.dumps(TINY.to_json()))
    edges = {(e["parent"], e["child"]) for e in truth["edges"]}
    assert edges == {(ROOT_ID, "orientation"), (ROOT_ID, "size"), ("orientation", "colour")}
    assert set(truth["models"]) == {ROOT_ID, *TRAINED}
    root = truth["models"][ROOT_ID]
    assert root["parent"] is None and root["steps"] is None and "relative_change_from_parent" not in root
    assert root["task"].startswith("imagenet-1k")
    seeds = set()
    for model_id in TRAINED:
        record = truth["models"][model_id]
        assert REQUIRED <= set(record), model_id
        assert record["task"] == model_id
        assert record["steps"] == TINY.steps
        # A full fine-tune moves the backbone, but stays close to where it started.
        assert 1e-4 < record["relative_change_from_parent"] < 0.5
        seeds.add(record["seed"])
    assert len(seeds) == len(TRAINED)
    # Siblings get different learning rates.
    assert truth["models"]["orientation"]["lr"] != truth["models"]["size"]["lr"]


def test_files_load_back_with_mobilenet_keys(tiny_demo: GraphBuild) -> None:
    expected_keys = set(MobileNetV2().state_dict())
    suffixes = set()
    for model_id in [ROOT_ID, *TRAINED]:
        path = _weights_file(tiny_demo.path / model_id)
        suffixes.add(path.suffix)
        state = load_state_dict(path)
        assert set(state) == expected_keys
        assert all(t.is_contiguous() for t in state.values())
        model = MobileNetV2(num_classes=state["classifier.1.weight"].shape[0])
        model.load_state_dict(state, strict=True)
    assert suffixes == {".bin", ".safetensors"}, "both checkpoint formats must be exercised"
    # Both formats get the same (umask-given) permissions, as files a user saved would.
    modes = {_weights_file(tiny_demo.path / m).stat().st_mode & 0o777 for m in [ROOT_ID, *TRAINED]}
    assert len(modes) == 1
    # The root is ImageNet MobileNetV2 exactly as published.
    imagenet = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    root = load_state_dict(_weights_file(tiny_demo.path / ROOT_ID))
    assert set(root) == set(imagenet)
    assert all(torch.equal(root[k], imagenet[k]) for k in imagenet)
    # No temporary file survives a build.
    assert not list(tiny_demo.path.rglob("*.tmp"))


def test_models_learn_their_tasks(tiny_demo: GraphBuild) -> None:
    truth = json.loads((tiny_demo.path / TRUTH_FILE).read_text())
    for model_id in TRAINED:
        record = truth["models"][model_id]
        assert record["final_loss"] < record["initial_loss"], model_id
        assert record["accuracy"] > record["chance"] + 0.15, (model_id, record["accuracy"], record["chance"])


def test_complete_build_is_returned_from_cache(tiny_demo: GraphBuild) -> None:
    before = _mtimes(tiny_demo.path)
    truth = (tiny_demo.path / TRUTH_FILE).read_text()
    again = build_graph(TINY, tiny_demo.path, quiet=True)
    assert again.trained == ()
    assert again.reused == (ROOT_ID, *TRAINED)
    assert _mtimes(tiny_demo.path) == before
    assert (tiny_demo.path / TRUTH_FILE).read_text() == truth


def test_same_seed_gives_bit_identical_weights(tiny_demo: GraphBuild, tmp_path: Path) -> None:
    # A fine-tune's weights depend on its parent and its own settings only, so a graph of the root and
    # the first fine-tune alone makes exactly the same fine-tune in a fresh folder.
    first = TRAINED[0]
    again = build_graph(replace(TINY, nodes=TINY.nodes[:2]), tmp_path, quiet=True)
    assert again.trained == (ROOT_ID, first)
    a = load_state_dict(_weights_file(tiny_demo.path / first))
    b = load_state_dict(_weights_file(tmp_path / first))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deleted_leaf_is_the_only_model_retrained(tiny_demo: GraphBuild, tmp_path: Path) -> None:
    out = tmp_path / "graph"
    shutil.copytree(tiny_demo.path, out)
    leaf = "colour"
    original = load_state_dict(_weights_file(out / leaf))
    shutil.rmtree(out / leaf)
    before = _mtimes(out)

    resumed = build_graph(TINY, out, quiet=True)

    assert resumed.trained == (leaf,)
    assert set(resumed.reused) == {ROOT_ID, *TRAINED} - {leaf}
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if not k.startswith(f"{leaf}/")} == before
    # Its parent came from disk, so the retrained leaf is the same model as before.
    rebuilt = load_state_dict(_weights_file(out / leaf))
    assert all(torch.equal(original[k], rebuilt[k]) for k in original)
    assert json.loads((out / TRUTH_FILE).read_text()) == json.loads((tiny_demo.path / TRUTH_FILE).read_text())


def test_interrupted_build_is_not_taken_for_complete(tiny_demo: GraphBuild, tmp_path: Path) -> None:
    out = tmp_path / "graph"
    shutil.copytree(tiny_demo.path, out)
    # As if killed after the last model was saved but before truth.json: nothing may be retrained,
    # but truth.json must be written.
    (out / TRUTH_FILE).unlink()
    resumed = build_graph(TINY, out, quiet=True)
    assert resumed.trained == ()
    assert (out / TRUTH_FILE).read_text() == (tiny_demo.path / TRUTH_FILE).read_text()


def test_force_drops_the_models_of_another_spec(tiny_demo: GraphBuild, tmp_path: Path) -> None:
    out = tmp_path / "graph"
    shutil.copytree(tiny_demo.path, out)
    smaller = replace(TINY, nodes=TINY.nodes[:2])
    rebuilt = build_graph(smaller, out, quiet=True, force=True)
    assert rebuilt.trained == (ROOT_ID, TRAINED[0]) and rebuilt.reused == ()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([ROOT_ID, TRAINED[0]])


def test_state_file_is_hidden_and_default_dir_follows_env(
    tiny_demo: GraphBuild, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert (tiny_demo.path / STATE_FILE).name.startswith(".")
    monkeypatch.setenv("MOTHERTREE_CACHE", str(tmp_path / "cache"))
    assert default_demo_dir() == tmp_path / "cache" / "demo-v2"
    monkeypatch.delenv("MOTHERTREE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_demo_dir() == tmp_path / "xdg" / "mothertree" / "demo-v2"
