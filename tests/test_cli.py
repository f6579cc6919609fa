"""The command line on a real tiny Model Tree: output contracts and exact error text."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import mothertree
from mothertree.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def family(bert_family: Path, tmp_path: Path) -> Path:
    """A private copy, so tests may break models in it."""
    copy = tmp_path / "models"
    shutil.copytree(bert_family, copy, ignore=shutil.ignore_patterns("*.json"))
    return copy


@pytest.mark.slow
def test_json_output_contract(bert_family: Path):
    code, out, _ = run("recover", str(bert_family), "--format", "json", "--quiet")
    assert code == 0
    result = json.loads(out)
    assert set(result) == {
        "format",
        "mothertree_version",
        "models",
        "edges",
        "roots",
        "trees",
        "skipped",
        "params",
    }
    assert result["format"] == 2 and result["mothertree_version"] == mothertree.__version__
    ids = {m["id"] for m in result["models"]}
    assert ids == {"root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"}
    assert all(set(m) == {"id", "path", "tree", "dtype", "parameters", "aliases"} for m in result["models"])
    assert all(m["aliases"] == [] for m in result["models"])  # five trained models, no copy among them
    # The tiny BERTs are saved in float32; their headers give the count (every model has the same).
    assert {(m["dtype"], m["parameters"]) for m in result["models"]} == {
        ("F32", result["models"][0]["parameters"])
    }
    assert result["models"][0]["parameters"] > 0
    edge_keys = {
        "parent",
        "child",
        "distance",
        "confidence",
        "known",
        "direction_probability",
        "direction",
        "placement_margin",
        "relation",
        "weight",
    }
    assert all(set(e) == edge_keys for e in result["edges"])
    assert all(e["weight"] is None for e in result["edges"])  # a weight is a merge parent's share
    assert {e["relation"] for e in result["edges"]} == {"finetune"}  # full fine-tunes, no adapter
    assert all(0 <= e["placement_margin"] <= 1 for e in result["edges"])
    assert not any(e["known"] for e in result["edges"])  # no adapters: every edge was inferred
    # Measured on this deterministic family (every edge right): confidences 0.63-0.98. Four edges are little
    # evidence: the edge below the root, at 0.63, is reported undetermined.
    assert all(
        e["distance"] > 0 and 0.5 < e["confidence"] <= e["direction_probability"] for e in result["edges"]
    )
    assert all(
        e["direction"] == ("determined" if e["direction_probability"] > 0.75 else "undetermined")
        for e in result["edges"]
    )
    assert len(result["edges"]) == 4 and len(result["roots"]) == 1
    [tree] = result["trees"]
    assert tree["root"] == result["roots"][0] and tree["models"] == sorted(ids)
    # The norm grew along every edge (test_direction_norm_recovers_the_tiny_real_tree), and so did the skew.
    assert tree["cue"] == "norm grows + norm changes skew right"
    assert result["params"] == {
        "n_trees": "auto",
        "lam": 0.3,
        "direction": "auto",
        "distance": "auto",
        "distances_used": ["l2"],
        "layers": None,
    }
    assert result["skipped"] == []


@pytest.mark.slow
def test_distance_places_every_edge_of_the_tiny_tree(bert_family: Path, tmp_path: Path):
    """Placement (undirected) must be right; direction is reported, not asserted (see the README)."""
    out = tmp_path / "result.json"
    code, stdout, _ = run("recover", str(bert_family), "--format", "json", "--quiet", "--lam", "0")
    out.write_text(stdout)
    code, score, _ = run("evaluate", str(out), str(bert_family / "truth.json"), "--format", "json")
    assert code == 0
    assert json.loads(score)["undirected_accuracy"] == 1.0


@pytest.mark.slow
def test_text_and_dot_output(bert_family: Path):
    code, out, _ = run("recover", str(bert_family), "--quiet")
    assert code == 0
    assert (
        out.splitlines()[0] == "tree 0: 5 models, oriented by: norm grows + norm changes skew right"
    )  # as in the JSON contract
    assert "└── " in out
    assert out.splitlines()[1].endswith("(root: no parent in this collection)")
    assert out.count("confidence 0.") + out.count("confidence 1.000") == 4
    code, out, _ = run("recover", str(bert_family), "--format", "dot", "--quiet")
    assert code == 0 and out.startswith("digraph model_trees {") and out.count("->") == 4


@pytest.mark.slow
def test_saved_features_rerun_without_weights(bert_family: Path, tmp_path: Path):
    features = tmp_path / "features.npz"
    code, direct, _ = run(
        "recover", str(bert_family), "--format", "json", "--quiet", "--save-features", str(features)
    )
    assert code == 0 and features.exists()
    code, again, _ = run("recover", str(features), "--format", "json", "--quiet")
    assert code == 0
    assert json.loads(again)["edges"] == json.loads(direct)["edges"]


def _saved_features(path: Path) -> Path:
    """A FeatureSet of three models written by hand (synthetic: only the file matters here)."""
    from mothertree.features.featureset import FeatureSet

    distances = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])[None]
    moments = np.tile([0.0, 1.0, 0.0, 3.0], (1, 3, 1))
    FeatureSet(["a", "b", "c"], ["a", "b", "c"], ["w"], np.array([4]), distances, moments).save(path)
    return path


def test_features_and_folders_are_not_mixed(tmp_path: Path):
    features = _saved_features(tmp_path / "f.npz")
    code, out, err = run("recover", str(features), str(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith("error: give either model folders or FeatureSet (.npz) files, not both\n\nhint: ")


def test_options_that_read_weights_are_refused_on_saved_features(tmp_path: Path):
    features = _saved_features(tmp_path / "f.npz")
    code, _, err = run("recover", str(features), "--layers", "query")
    assert code == 1
    assert err.startswith("error: `--layers` and `--base` apply when weights are read")
    code, out, _ = run("recover", str(features), "--format", "json", "--trees", "1", "--direction", "falls")
    # The nearest pairs are joined (a-b at 1.0, b-c at 1.5); equal kurtosis leaves the direction open.
    assert code == 0 and {frozenset((e["parent"], e["child"])) for e in json.loads(out)["edges"]} == {
        frozenset("ab"),
        frozenset("bc"),
    }


def test_wrong_path():
    code, out, err = run("recover", "/no/such/folder")
    assert code == 1 and out == ""
    assert err.startswith("error: `/no/such/folder` does not exist\n\nhint: ")


def test_empty_folder(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a model")
    code, _, err = run("recover", str(tmp_path))
    assert code == 1
    assert err.startswith(f"error: no models found in `{tmp_path}`")
    assert "\nhint: " in err


@pytest.mark.slow
def test_single_model(family: Path):
    code, _, err = run("recover", str(family / "root"))
    assert code == 1
    assert err.startswith(f"error: found 1 readable model in `{family / 'root'}`; need at least 2\n")


@pytest.mark.slow
def test_broken_models_are_skipped_and_listed(family: Path):
    truncated = family / "ft-number" / "model.safetensors"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    code, out, err = run("recover", str(family), "--format", "json", "--quiet")
    assert code == 0
    result = json.loads(out)
    assert {m["id"] for m in result["models"]} == {"root", "ft-colour", "ft-colour-person", "ft-number-water"}
    assert result["skipped"][0]["path"].endswith("ft-number")
    assert "warning: skipped 1 model:" in err
    assert f"`{truncated}` is truncated" in err


@pytest.mark.slow
def test_nan_weights_are_reported(family: Path):
    path = family / "ft-colour-person" / "model.safetensors"
    tensors = load_file(path)
    name = next(k for k, v in tensors.items() if v.ndim == 2 and v.shape[0] == v.shape[1])
    tensors[name] = np.full_like(tensors[name], np.nan)
    save_file(tensors, path)
    code, out, err = run("recover", str(family), "--format", "json", "--quiet")
    assert code == 0
    assert "ft-colour-person" not in {m["id"] for m in json.loads(out)["models"]}
    assert f"`{path.parent}` has NaN or infinite values in `{name}`" in err


def test_no_comparable_tensors(tmp_path: Path):
    rng = np.random.default_rng(0)  # synthetic: two unrelated "architectures" for an error path only
    save_file({"a.weight": rng.normal(size=(4, 4)).astype(np.float32)}, str(tmp_path / "one.safetensors"))
    save_file({"b.weight": rng.normal(size=(3, 5)).astype(np.float32)}, str(tmp_path / "two.safetensors"))
    code, _, err = run("recover", str(tmp_path), "--quiet")
    assert code == 1
    assert err.startswith("error: no two models share their weight tensors (name and shape)")


@pytest.mark.slow
def test_too_many_trees(bert_family: Path):
    code, _, err = run("recover", str(bert_family), "--trees", "9", "--quiet")
    assert code == 1
    assert err.startswith("error: cannot split 5 models in 1 architecture groups into 9 trees")


def test_debug_variable_shows_traceback(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MOTHERTREE_DEBUG", "1")
    result = CliRunner().invoke(main, ["recover", "/no/such/folder"])
    assert isinstance(result.exception, FileNotFoundError)


def test_evaluate_text(tmp_path: Path):
    result = tmp_path / "r.json"
    truth = tmp_path / "t.json"
    result.write_text(json.dumps({"edges": [{"parent": "a", "child": "b"}, {"parent": "c", "child": "a"}]}))
    truth.write_text(json.dumps({"edges": [{"parent": "a", "child": "b"}, {"parent": "a", "child": "c"}]}))
    code, out, _ = run("evaluate", str(result), str(truth))
    assert code == 0
    assert out == "directed accuracy:   50.0% (1/2 edges)\nundirected accuracy: 100.0% (2/2 edges)\n"


@pytest.mark.slow
def test_never_writes_into_input_folders(bert_family: Path):
    before = sorted((p, p.stat().st_mtime_ns) for p in bert_family.rglob("*"))
    run("recover", str(bert_family), "--quiet")
    assert sorted((p, p.stat().st_mtime_ns) for p in bert_family.rglob("*")) == before


@pytest.mark.slow
def test_evaluate_against_model_cards(family: Path, tmp_path: Path):
    parents = {"ft-colour": "root", "ft-number": "root", "ft-colour-person": "ft-colour"}
    for child, parent in parents.items():
        (family / child / "README.md").write_text(f"---\nbase_model: someone/{parent}\n---\n# {child}\n")
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"edges": [{"parent": p, "child": c} for c, p in parents.items()]}))
    code, out, _ = run("evaluate", str(result), str(family))
    assert code == 0
    assert out.startswith("directed accuracy:   100.0% (3/3 edges)\n")


@pytest.mark.slow
def test_evaluate_against_folder_without_model_cards(family: Path, tmp_path: Path):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"edges": []}))
    code, _, err = run("evaluate", str(result), str(family))
    assert code == 1
    assert err.startswith(
        f"error: no model card under `{family}` declares a `base_model` that is in the folder"
    )


@pytest.mark.slow
def test_direction_norm_recovers_the_tiny_real_tree(bert_family: Path, tmp_path: Path):
    """Measured, not guaranteed: weight norms grew along every edge of this really fine-tuned family."""
    out = tmp_path / "result.json"
    code, stdout, _ = run("recover", str(bert_family), "--format", "json", "--quiet", "--direction", "norm")
    assert code == 0
    out.write_text(stdout)
    code, score, _ = run("evaluate", str(out), str(bert_family / "truth.json"), "--format", "json")
    assert json.loads(score)["directed_accuracy"] == 1.0


def test_trees_must_be_auto_or_a_count(tmp_path: Path):
    code, _, err = run("recover", str(tmp_path), "--trees", "many")  # refused before any path is read
    assert code == 2
    assert "`many` is neither `auto` nor a number of trees" in err


def test_the_command_line_describes_itself_without_loading_numpy() -> None:
    # `mothertree --help` must not wait for numpy, scipy and the readers: each command imports its own.
    code = "import sys, mothertree.cli; print(sorted({'numpy', 'scipy', 'torch'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_format_names_are_the_renderers() -> None:
    from mothertree._choices import BINARY_FORMATS, TEXT_FORMATS
    from mothertree.render import BINARY_RENDERERS, RENDERERS

    assert set(TEXT_FORMATS) == set(RENDERERS) and set(BINARY_FORMATS) == set(BINARY_RENDERERS)


def test_compare_answers_the_auditors_question(bert_family: Path, second_family: Path, tiny_demo) -> None:
    code, out, _ = run(
        "compare", str(bert_family / "root"), str(bert_family / "ft-colour"), "--format", "json", "-q"
    )
    answer = json.loads(out)
    assert code == 0 and answer["related"] is True and (answer["a"], answer["b"]) == ("root", "ft-colour")
    assert {answer["edge"]["parent"], answer["edge"]["child"]} == {"root", "ft-colour"}
    assert 0 < answer["relative_distance"] < 0.5 and answer["edge"]["relation"] == "finetune"

    # Roots cut from other layers of MiniLM: one architecture, unrelated weights.
    code, out, _ = run("compare", str(bert_family / "root"), str(second_family / "b-root"), "-q")
    assert code == 0 and out.startswith("related: no\n") and "as far apart as unrelated weights" in out

    code, out, _ = run(
        "compare", str(bert_family / "root"), str(tiny_demo.path / "mobilenetv2-imagenet"), "-q"
    )
    assert code == 0 and out == (
        "related: no\nthey share no weight tensor of one name and shape: other architectures, never "
        "fine-tuned from one another\n"
    )
