"""Graph specs and ``zoo build``: planning (pure), loading, real tiny builds (real training, few steps)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner
from torch_threads import one_thread

from mothertree.cli import main
from mothertree.errors import InvalidParameterError
from mothertree.evaluation.metrics import score_edges
from mothertree.evaluation.truth import load_edges
from mothertree.pipeline import recover
from mothertree.zoo.build import STATE_FILE, TRUTH_FILE, build_graph, weights_digest
from mothertree.zoo.mobilenet import MobileNetV2
from mothertree.zoo.spec import GraphSpec, NodePlan, builtin_specs, load_spec, plan_graph

VISION_TASKS = ("orientation", "size", "colour")
TEXT_TASKS = ("colour", "water", "plural", "has-number")

TINY_VISION = GraphSpec(
    name="tiny-vision",
    family="vision",
    roots=("imagenet", "scratch:7"),
    children=2,
    grandchildren=1,
    tasks=VISION_TASKS,
    lrs=(1e-3,),
    steps=4,
    batch_size=8,
    image_size=16,
    pretrain_steps=4,
)

# One encoder layer, full and LoRA fine-tunes, one LoRA leaf stored as a PEFT adapter.
TINY_TEXT = GraphSpec(
    name="tiny-text",
    family="text",
    method="mixed",
    lora_share=0.5,
    lora_ranks=(4,),
    roots=("minilm@0", "minilm@3"),
    layers=1,
    children=2,
    grandchildren=1,
    tasks=TEXT_TASKS,
    lrs=(3e-4,),
    lora_lrs=(3e-3,),
    steps=25,
    saves=("fp32", "adapter", "bf16"),
    seed=5,
)


# --- planning (pure) ------------------------------------------------------------------------------------


def _depths(plans: list[NodePlan]) -> dict[str, int]:
    depths: dict[str, int] = {}
    for plan in plans:
        depths[plan.id] = 0 if plan.parent is None else depths[plan.parent] + 1
    return depths


def test_default_shape_is_the_papers() -> None:
    spec = GraphSpec(
        name="paper", family="vision", roots=tuple(f"scratch:{i}" for i in range(5)), tasks=VISION_TASKS
    )
    plans = plan_graph(spec)
    assert len(plans) == spec.n_models == 105
    assert sum(p.parent is None for p in plans) == 5
    children = Counter(p.parent for p in plans if p.parent is not None)
    depths = _depths(plans)
    assert sorted(Counter(depths[parent] for parent in children).items()) == [(0, 5), (1, 20)]
    assert set(children.values()) == {4}
    assert len({p.id for p in plans}) == 105


def test_plan_is_deterministic_and_seeded() -> None:
    assert plan_graph(TINY_TEXT) == plan_graph(TINY_TEXT)
    other = plan_graph(replace(TINY_TEXT, seed=6))
    assert [p.id for p in other] != [p.id for p in plan_graph(TINY_TEXT)]


def test_ids_say_nothing_of_the_structure() -> None:
    plans = plan_graph(load_spec("vision-ft"))
    roots = [p.id for p in plans if p.parent is None]
    assert sorted(p.id for p in plans)[:5] != roots
    assert [p.id for p in plans] != sorted(p.id for p in plans)


def test_parents_come_first_and_siblings_learn_different_tasks() -> None:
    plans = plan_graph(load_spec("text-ft"))
    seen: set[str] = set()
    for plan in plans:
        assert plan.parent is None or plan.parent in seen
        seen.add(plan.id)
    tasks_of_siblings: dict[str | None, list[str | None]] = {}
    for plan in plans:
        if plan.parent is not None:
            tasks_of_siblings.setdefault(plan.parent, []).append(plan.task)
    for tasks in tasks_of_siblings.values():
        assert len(set(tasks)) == len(tasks)


def test_lora_ranks_lrs_and_adapters_follow_the_spec() -> None:
    spec = load_spec("text-mixed")
    plans = plan_graph(spec)
    lora = [p for p in plans if p.method == "lora"]
    full = [p for p in plans if p.parent is not None and p.method == "full"]
    assert lora and full
    assert {p.lora_rank for p in lora} <= set(spec.lora_ranks)
    assert {p.lr for p in lora} <= set(spec.lora_lrs) and {p.lr for p in full} <= set(spec.lrs)
    adapters = [p for p in plans if p.save == "adapter"]
    depths = _depths(plans)
    assert adapters and all(p.method == "lora" and depths[p.id] == 2 for p in adapters)
    ranks = Counter(p.lora_rank for p in plan_graph(load_spec("text-lora-v")) if p.lora_rank)
    assert set(ranks) == {8, 16, 32, 64}


# --- specs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(builtin_specs()))
def test_builtin_specs_load_at_every_size(name: str) -> None:
    spec = load_spec(name)
    # The zoo's splits have the paper's shape; the hub splits are trees as a hub holds them, the clock
    # spec two chains.
    assert spec.n_models == 105 or name.startswith("hub") or name == "clock"
    for size in spec.sizes:
        assert plan_graph(spec.sized(size))


def test_spec_file_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("family: vision\nroots: [imagenet]\ntasks: [counting]\ncolour: blue\n")
    with pytest.raises(InvalidParameterError, match="unknown fields \\['colour'\\]") as caught:
        load_spec(path)
    assert caught.value.hint and "roots" in caught.value.hint
    path.write_text("family: vision\nroots: [imagenet]\ntasks: [juggling]\n")
    with pytest.raises(InvalidParameterError, match="unknown vision tasks"):
        load_spec(path)
    path.write_text("family: vision\nroots: [minilm@0]\ntasks: [counting]\n")
    with pytest.raises(InvalidParameterError, match="unknown root"):
        load_spec(path)
    with pytest.raises(InvalidParameterError, match="no size 'huge'"):
        load_spec("vision-ft").sized("huge")
    with pytest.raises(InvalidParameterError, match="no graph spec at 'no-such-spec'") as caught:
        load_spec("no-such-spec")
    assert caught.value.hint and "vision-ft" in caught.value.hint


def test_generated_specs_keep_their_fingerprint_so_old_builds_resume() -> None:
    # A build folder is resumed only by the spec whose fingerprint its state file holds: fields added to
    # GraphSpec must leave the fingerprint of a spec that does not use them as it was.
    spec = load_spec("text-ft").sized("small")
    fingerprint = hashlib.sha256(json.dumps({"version": 1, "spec": spec.to_json()}, sort_keys=True).encode())
    assert fingerprint.hexdigest() == "5fc6211735447c3b7480730e4806f70e53ab5f8c41d00bacee3f1853b5efbd03"


def test_a_spec_file_can_list_its_nodes(tmp_path: Path) -> None:
    path = tmp_path / "listed.yaml"
    path.write_text(
        "family: text\nlayers: 1\nsteps: 3\nnodes:\n  - {id: base, root: minilm@0}\n"
        "  - {id: tuned, parent: base, task: colour, lr: 1.0e-4, seed: 3, lora_rank: 4, save: adapter}\n"
        "  - {id: stage, parent: base, task: mlm, lr: 1.0e-4, seed: 4}\n"
    )
    spec = load_spec(path)
    assert spec.n_models == 3 and spec.trees == 1
    plans = plan_graph(spec)
    assert [(p.id, p.parent, p.method, p.save) for p in plans] == [
        ("base", None, "full", "fp32"),
        ("tuned", "base", "lora", "adapter"),
        ("stage", "base", "full", "fp32"),
    ]
    assert spec.to_json()["nodes"][1]["lora_rank"] == 4 and "roots" not in spec.to_json()
    path.write_text("family: text\nnodes:\n  - {id: base, root: minilm@0, colour: blue}\n")
    with pytest.raises(InvalidParameterError, match="a node is a mapping with an id"):
        load_spec(path)
    path.write_text("family: text\nroots: [minilm@0]\nnodes:\n  - {id: base, root: minilm@2}\n")
    with pytest.raises(InvalidParameterError, match="both roots and nodes"):
        load_spec(path)


# --- real builds ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Roots pre-trained from scratch are cached between builds: never in the user's cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTHERTREE_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Bit-identical rebuilds need the same thread count."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def vision_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_graph(TINY_VISION, tmp_path_factory.mktemp("zoo") / "vision", quiet=True).path


@pytest.mark.slow
def test_same_seed_same_weights(vision_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTHERTREE_CACHE", str(tmp_path / "fresh-cache"))  # the scratch root is trained again
    again = build_graph(TINY_VISION, tmp_path / "again", quiet=True).path
    first = json.loads((vision_graph / TRUTH_FILE).read_text())["models"]
    second = json.loads((again / TRUTH_FILE).read_text())["models"]
    assert {k: v["weights_sha256"] for k, v in first.items()} == {
        k: v["weights_sha256"] for k, v in second.items()
    }
    reseeded = build_graph(replace(TINY_VISION, seed=1), tmp_path / "reseeded", quiet=True).path
    third = json.loads((reseeded / TRUTH_FILE).read_text())["models"]
    assert {v["weights_sha256"] for v in third.values()}.isdisjoint(
        v["weights_sha256"] for v in first.values() if v["parent"] is not None
    )


@pytest.mark.slow
def test_truth_records_every_model_and_its_outcome(vision_graph: Path) -> None:
    truth = json.loads((vision_graph / TRUTH_FILE).read_text())
    plans = plan_graph(TINY_VISION)
    assert {(e["parent"], e["child"]) for e in truth["edges"]} == {
        (p.parent, p.id) for p in plans if p.parent
    }
    for plan in plans:
        record = truth["models"][plan.id]
        assert record["weights_sha256"] == weights_digest(vision_graph / plan.id)
        if plan.parent is not None:
            assert record["relative_change_from_parent"] > 0
            assert record["task"] == plan.task and record["lr"] == plan.lr
    scratch = next(p for p in plans if p.root == "scratch:7")
    assert "random init" in truth["models"][scratch.id]["task"]
    assert truth["models"][scratch.id]["steps"] == TINY_VISION.pretrain_steps


@pytest.mark.slow
def test_roots_pretrained_from_scratch_are_reused(
    vision_graph: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object) -> None:
        raise AssertionError("the cached root should have been copied, not trained again")

    monkeypatch.setattr("mothertree.zoo.build._pretrain_vision_root", no_training)
    spec = replace(TINY_VISION, roots=("scratch:7",), seed=3)  # other fine-tunes, same root settings
    graph = build_graph(spec, tmp_path / "other", quiet=True).path
    root = next(p for p in plan_graph(spec) if p.parent is None)
    first_root = next(p for p in plan_graph(TINY_VISION) if p.root == "scratch:7")
    assert weights_digest(graph / root.id) == weights_digest(vision_graph / first_root.id)


@pytest.mark.slow
def test_an_interrupted_build_resumes(vision_graph: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(vision_graph, copy)
    plans = plan_graph(TINY_VISION)
    leaf = next(p for p in plans if _depths(plans)[p.id] == 2)
    state = json.loads((copy / STATE_FILE).read_text())
    del state["models"][leaf.id]  # as if killed while training it
    (copy / STATE_FILE).write_text(json.dumps(state))
    (copy / TRUTH_FILE).unlink()
    rebuilt = build_graph(TINY_VISION, copy, quiet=True)
    assert rebuilt.trained == (leaf.id,)
    assert (copy / TRUTH_FILE).read_text() == (vision_graph / TRUTH_FILE).read_text()


@pytest.mark.slow
def test_a_folder_of_another_spec_is_refused(vision_graph: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(vision_graph, copy)
    with pytest.raises(InvalidParameterError, match="another spec") as caught:
        build_graph(replace(TINY_VISION, steps=5), copy, quiet=True)
    assert caught.value.hint and "--force" in caught.value.hint


@pytest.mark.slow
def test_hf_root_resolves_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hub cache entry laid out as huggingface_hub writes it, read offline: the `hf:` path, no network.
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in MobileNetV2(num_classes=3).state_dict().items()}
    commit = "a" * 40
    snapshot = tmp_path / "hub" / "models--someone--mobilenet" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    spec = replace(TINY_VISION, roots=("hf:someone/mobilenet",), children=1, grandchildren=0)
    graph = build_graph(spec, tmp_path / "graph", quiet=True).path
    root = next(p for p in plan_graph(spec) if p.parent is None)
    loaded = torch.load(graph / root.id / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.slow
def test_tiny_mixed_text_graph_is_recovered(tmp_path: Path) -> None:
    graph = build_graph(TINY_TEXT, tmp_path / "text", quiet=True).path
    truth = json.loads((graph / TRUTH_FILE).read_text())
    saved = Counter(m["saved_as"] for m in truth["models"].values())
    assert saved["adapter"] >= 1 and saved["bf16"] >= 1
    result = recover([graph])
    score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(graph / TRUTH_FILE))
    assert score.directed == 1.0, result.edges


@pytest.mark.slow
def test_cli_builds_a_spec_file(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "family: vision\nroots: [imagenet]\nchildren: 1\ngrandchildren: 0\ntasks: [size]\n"
        "lrs: [1.0e-3]\nsteps: 2\nbatch_size: 4\nimage_size: 16\n"
    )
    out = tmp_path / "graph"
    result = CliRunner().invoke(main, ["zoo", "build", str(spec_file), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert len(load_edges(out / TRUTH_FILE)) == 1
    bad = CliRunner().invoke(main, ["zoo", "build", str(spec_file), "--out", str(out), "--size", "huge"])
    assert bad.exit_code == 1
    assert "error: spec 'spec' has no size 'huge'" in bad.stderr


@pytest.mark.slow
def test_cli_writes_a_variant(vision_graph: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    result = CliRunner().invoke(
        main, ["zoo", "variant", str(vision_graph), "prune:0.5", "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert load_edges(out / TRUTH_FILE) == load_edges(vision_graph / TRUTH_FILE)
    bad = CliRunner().invoke(
        main, ["zoo", "variant", str(vision_graph), "prune:2", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and bad.stderr.startswith("error: ")
