"""The demo graph, built for real at the tiny preset: real ImageNet root, real (short) fine-tunes."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mothertree.zoo.demo import (
    ROOT_ID,
    STATE_FILE,
    TRUTH_FILE,
    DemoBuild,
    DemoConfig,
    build_demo,
    build_demo_graph,
    default_demo_dir,
    load_state_dict,
)
from mothertree.zoo.mobilenet import MobileNetV2, imagenet_weights_path

pytestmark = pytest.mark.slow

TINY = DemoConfig.tiny()
TRAINED = [spec.id for spec in TINY.tree]
REQUIRED = {"task", "lr", "seed", "steps", "accuracy", "final_loss", "relative_change_from_parent"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DemoBuild:
    return build_demo(tmp_path_factory.mktemp("demo") / "graph", quiet=True, config=TINY)


def _weights_file(folder: Path) -> Path:
    files = [p for p in folder.iterdir() if p.suffix in {".bin", ".safetensors"}]
    assert len(files) == 1, f"{folder} should hold exactly one checkpoint, has {files}"
    return files[0]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*") if p.is_file()}


def test_build_trains_every_model_once(tiny: DemoBuild) -> None:
    assert tiny.trained == tuple(TRAINED)
    assert tiny.reused == ()


def test_truth_json_structure(tiny: DemoBuild) -> None:
    truth = json.loads((tiny.path / TRUTH_FILE).read_text())
    assert set(truth) == {"edges", "models"}
    edges = {(e["parent"], e["child"]) for e in truth["edges"]}
    assert edges == {(ROOT_ID, "orientation"), (ROOT_ID, "size"), ("orientation", "colour")}
    assert set(truth["models"]) == {ROOT_ID, *TRAINED}
    for model_id, record in truth["models"].items():
        assert REQUIRED <= set(record), model_id
    root = truth["models"][ROOT_ID]
    assert root["steps"] == 0 and root["relative_change_from_parent"] is None
    seeds = set()
    for model_id in TRAINED:
        record = truth["models"][model_id]
        assert record["task"] == model_id
        assert record["steps"] == TINY.steps
        assert record["lr"] in TINY.lrs
        assert 0.0 <= record["accuracy"] <= 1.0
        # A full fine-tune moves the backbone, but stays close to where it started.
        assert 1e-4 < record["relative_change_from_parent"] < 0.5
        seeds.add(record["seed"])
    assert len(seeds) == len(TRAINED)
    # Siblings get different learning rates.
    assert truth["models"]["orientation"]["lr"] != truth["models"]["size"]["lr"]


def test_files_load_back_with_mobilenet_keys(tiny: DemoBuild) -> None:
    expected_keys = set(MobileNetV2().state_dict())
    suffixes = set()
    for model_id in [ROOT_ID, *TRAINED]:
        path = _weights_file(tiny.path / model_id)
        suffixes.add(path.suffix)
        state = load_state_dict(path)
        assert set(state) == expected_keys
        assert all(t.is_contiguous() for t in state.values())
        model = MobileNetV2(num_classes=state["classifier.1.weight"].shape[0])
        model.load_state_dict(state, strict=True)
    assert suffixes == {".bin", ".safetensors"}, "both checkpoint formats must be exercised"
    # Both formats get the same (umask-given) permissions, as files a user saved would.
    modes = {_weights_file(tiny.path / m).stat().st_mode & 0o777 for m in [ROOT_ID, *TRAINED]}
    assert len(modes) == 1
    # The root is ImageNet MobileNetV2 exactly as published.
    imagenet = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    root = load_state_dict(_weights_file(tiny.path / ROOT_ID))
    assert set(root) == set(imagenet)
    assert all(torch.equal(root[k], imagenet[k]) for k in imagenet)
    # No temporary file survives a build.
    assert not list(tiny.path.rglob("*.tmp"))


def test_models_learn_their_tasks(tiny: DemoBuild) -> None:
    truth = json.loads((tiny.path / TRUTH_FILE).read_text())
    for model_id in TRAINED:
        record = truth["models"][model_id]
        assert record["final_loss"] < record["initial_loss"], model_id
        assert record["accuracy"] > record["chance"] + 0.15, (model_id, record["accuracy"], record["chance"])


def test_complete_build_is_returned_from_cache(tiny: DemoBuild) -> None:
    before = _mtimes(tiny.path)
    again = build_demo(tiny.path, quiet=True, config=TINY)
    assert again.trained == ()
    assert again.seconds < 2.0
    assert _mtimes(tiny.path) == before
    assert build_demo_graph(tiny.path, quiet=True, config=TINY) == tiny.path


def test_same_seed_gives_bit_identical_weights(tiny: DemoBuild, tmp_path: Path) -> None:
    # The first model's plan (lr, seed, format) does not depend on the rest of the tree, so a one-model
    # build retrains exactly the same fine-tune in a fresh folder.
    first = TINY.tree[0].id
    again = build_demo(tmp_path, quiet=True, config=replace(TINY, tree=TINY.tree[:1]))
    assert again.trained == (first,)
    a = load_state_dict(_weights_file(tiny.path / first))
    b = load_state_dict(_weights_file(tmp_path / first))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deleted_leaf_is_the_only_model_retrained(tiny: DemoBuild, tmp_path: Path) -> None:
    out = tmp_path / "graph"
    shutil.copytree(tiny.path, out)
    leaf = "colour"
    original = load_state_dict(_weights_file(out / leaf))
    shutil.rmtree(out / leaf)
    before = _mtimes(out)

    resumed = build_demo(out, quiet=True, config=TINY)

    assert resumed.trained == (leaf,)
    assert set(resumed.reused) == set(TRAINED) - {leaf}
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if not k.startswith(f"{leaf}/")} == before
    # Its parent came from disk, so the retrained leaf is the same model as before.
    rebuilt = load_state_dict(_weights_file(out / leaf))
    assert all(torch.equal(original[k], rebuilt[k]) for k in original)
    assert json.loads((out / TRUTH_FILE).read_text()) == json.loads((tiny.path / TRUTH_FILE).read_text())


def test_interrupted_build_is_not_taken_for_complete(tiny: DemoBuild, tmp_path: Path) -> None:
    out = tmp_path / "graph"
    shutil.copytree(tiny.path, out)
    # As if killed after the last model was saved but before truth.json: nothing may be retrained,
    # but truth.json must be written.
    (out / TRUTH_FILE).unlink()
    resumed = build_demo(out, quiet=True, config=TINY)
    assert resumed.trained == ()
    assert (out / TRUTH_FILE).is_file()


def test_state_file_is_hidden_and_default_dir_follows_env(
    tiny: DemoBuild, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert (tiny.path / STATE_FILE).name.startswith(".")
    monkeypatch.setenv("MOTHERTREE_CACHE", str(tmp_path / "cache"))
    assert default_demo_dir() == tmp_path / "cache" / "demo-v1"
    assert default_demo_dir(TINY).parent == tmp_path / "cache"
    assert default_demo_dir(TINY) != default_demo_dir()
    monkeypatch.delenv("MOTHERTREE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_demo_dir() == tmp_path / "xdg" / "mothertree" / "demo-v1"
