"""Scale: index and recover folders of thousands of tiny models through the fingerprint store.

The models are *synthetic*, as the issue that asked for this defines them: four 64x64 float32 matrices
each; a random recursive tree (each model's parent drawn uniformly among the models before it); the root
Gaussian, each child its parent plus small Gaussian noise; saved with safetensors, one file per model,
with the true edges in ``truth.json``. They measure the machinery (reading, the store, the candidate graph,
the sparse tree step), not direction on real fine-tunes (the zoo does that).

    python benchmarks/scale_bench.py --models 10000              # build (once), index, recover, score
    python benchmarks/scale_bench.py --models 10000 --write      # and put it into docs/RESULTS.md

Each phase runs in its own process so that its peak RSS is its own (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCALE_DIR = ROOT / ".bench" / "scale"
SHAPE = (64, 64)
NOISE = 2e-3


def build(n_models: int, folder: Path, seed: int = 0) -> Path:
    """Write ``n_models`` tiny models along a random tree into ``folder`` (skipped when complete)."""
    from safetensors.numpy import save_file

    truth_file = folder / "truth.json"
    if truth_file.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"m{k:06d}" for k in range(n_models)]
    parents = [-1] + [int(rng.integers(0, k)) for k in range(1, n_models)]
    weights: list[dict[str, np.ndarray]] = []
    for k in range(n_models):
        if parents[k] < 0:
            tensors = {f"layer.{t}.weight": rng.normal(0, 0.05, SHAPE).astype(np.float32) for t in range(4)}
        else:
            tensors = {
                name: (value + rng.normal(0, NOISE, SHAPE)).astype(np.float32)
                for name, value in weights[parents[k]].items()
            }
        weights.append(tensors)
        save_file(tensors, str(folder / f"{names[k]}.safetensors"))
    edges = [{"parent": names[p], "child": names[k]} for k, p in enumerate(parents) if p >= 0]
    truth_file.write_text(json.dumps({"edges": edges}))
    return folder


def _phase(code: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; its last line is JSON; add the process's peak RSS."""
    wrapped = (
        "import json, resource, time\n"
        "started = time.perf_counter()\n"
        f"{code}\n"
        "out['seconds'] = time.perf_counter() - started\n"
        "out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "MOTHERTREE_NO_PROGRESS": "1"}
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"a phase failed:\n{done.stderr}")
    found = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(found), file=sys.stderr, flush=True)
    return found


def measure(n_models: int) -> dict[str, object]:
    folder = build(n_models, SCALE_DIR / f"tiny-{n_models}")
    store = SCALE_DIR / f"tiny-{n_models}.sqlite"
    store.unlink(missing_ok=True)
    indexed = _phase(
        "from mothertree.indexing import index\n"
        "from mothertree.store import FingerprintStore\n"
        f"with FingerprintStore({str(store)!r}) as s:\n"
        f"    r = index([{str(folder)!r}], s)\n"
        "    out = {'indexed': len(r.indexed), 'bytes_read': r.bytes_read, 'store_mb': s.size_bytes() / 1e6}\n"
    )
    recovered = _phase(
        "from mothertree.indexing import recover_store\n"
        "from mothertree.store import FingerprintStore\n"
        "from mothertree.evaluation.metrics import score_edges\n"
        "from mothertree.evaluation.truth import load_edges\n"
        f"with FingerprintStore({str(store)!r}) as s:\n"
        "    result = recover_store(s)\n"
        f"score = score_edges({{(e.parent, e.child) for e in result.edges}}, load_edges({str(folder / 'truth.json')!r}))\n"
        "wrong = [e for e in result.edges if (e.parent, e.child) not in load_edges("
        f"{str(folder / 'truth.json')!r})]\n"
        "out = {'directed': score.directed, 'undirected': score.undirected, 'trees': len(result.trees),\n"
        "       'wrong_above_099': sum(e.confidence > 0.99 for e in wrong),\n"
        "       'expected_wrong': sum(1 - e.confidence for e in result.edges), 'observed_wrong': len(wrong)}\n"
    )
    added = _phase(
        "import shutil, tempfile\n"
        "from pathlib import Path\n"
        "from mothertree.indexing import add, query\n"
        "from mothertree.store import FingerprintStore\n"
        f"copy = Path(tempfile.mkdtemp()) / 'store.sqlite'\n"
        f"shutil.copy({str(store)!r}, copy)\n"
        f"model = {str(folder / f'm{n_models - 1:06d}.safetensors')!r}\n"
        "with FingerprintStore(copy) as s:\n"
        "    t = time.perf_counter(); q = query(model, s); query_s = time.perf_counter() - t\n"
        "out = {'query_s': query_s, 'parent': q.parent.parent if q.parent else None}\n"
    )
    return {"n_models": n_models, "index": indexed, "recover": recovered, "query": added}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, nargs="+", default=[10000])
    args = parser.parse_args()
    for n_models in args.models:
        started = time.perf_counter()
        print(json.dumps(measure(n_models), indent=1), flush=True)
        print(f"({time.perf_counter() - started:.0f} s in all, building included)", file=sys.stderr)


if __name__ == "__main__":
    main()
