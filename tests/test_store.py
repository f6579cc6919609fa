"""The fingerprint store: index once, recover/add/query from fingerprints, same trees as the weights give.

Models are the really trained MiniLM families of tests/family.py; every comparison is against the exact
path (``pipeline.recover`` on the folders), not against numbers written here.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from mothertree import indexing
from mothertree.cli import main
from mothertree.errors import InvalidStoreError
from mothertree.features.fingerprint import FingerprintParams
from mothertree.indexing import add, index, query, recover_store
from mothertree.pipeline import recover
from mothertree.store import FingerprintStore

pytestmark = pytest.mark.slow


def _same_edges(estimated, exact) -> None:
    """The same edges with the same relations; confidences as near as estimated distances allow (they
    come from the distances through the placement margins: a 1 % distance error moves them by less)."""
    mine = {(e.parent, e.child): e for e in estimated.edges}
    theirs = {(e.parent, e.child): e for e in exact.edges}
    assert set(mine) == set(theirs)
    for key, edge in mine.items():
        assert edge.relation == theirs[key].relation
        assert edge.confidence == pytest.approx(theirs[key].confidence, abs=0.01)


@pytest.mark.parametrize("family", ["bert_family", "lora_family", "mixed_family", "pretraining_chain"])
def test_recovery_from_fingerprints_equals_recovery_from_weights(family: str, request, tmp_path: Path):
    folder = request.getfixturevalue(family)
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        report = index([folder], store)
        assert len(report.indexed) == len(list(p for p in folder.iterdir() if p.is_dir()))
        from_store = recover_store(store)
    _same_edges(from_store, recover([folder]))


def test_a_rerun_reads_nothing_and_a_moved_model_is_one_model(bert_family: Path, tmp_path: Path):
    collection = tmp_path / "models"
    shutil.copytree(bert_family, collection)
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        first = index([collection], store)
        again = index([collection], store)
        assert len(first.indexed) == 5 and len(again.unchanged) == 5 and again.bytes_read == 0
        shutil.copytree(collection / "ft-colour", tmp_path / "elsewhere" / "ft-colour-copy")
        moved = index([tmp_path / "elsewhere"], store)
        assert moved.aliases == ["ft-colour-copy"] and len(store) == 5
        result = recover_store(store)
        model = next(m for m in result.models if m.id == "ft-colour")
        assert model.aliases == ("ft-colour-copy",)
        assert len(result.edges) == 4  # the copy is an alias, not an edge


def test_a_changed_file_is_a_new_model(bert_family: Path, tmp_path: Path):
    from safetensors.numpy import load_file, save_file

    collection = tmp_path / "models"
    shutil.copytree(bert_family, collection)
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        index([collection], store)
        weights_file = collection / "root" / "model.safetensors"
        tensors = load_file(weights_file)
        name = next(iter(tensors))
        tensors[name] = tensors[name] + 1e-3  # one tensor changed: another model
        save_file(tensors, weights_file, metadata={"format": "pt"})
        report = index([collection], store)
        assert report.indexed == ["root"] and len(report.unchanged) == 4
        assert len(store) == 6  # the old root's fingerprint stays; no location names it now
        assert len(recover_store(store).models) == 5


def test_an_interrupted_index_keeps_what_it_committed_and_resumes(
    bert_family: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real = indexing.fingerprint
    # The third model in the order `index` commits; not the third call: models are read in threads, so the
    # fourth may reach `fingerprint` before the third.
    refs, _ = indexing.discover(bert_family)
    victim = indexing.with_unique_ids(refs)[2].path.resolve()

    def interrupted(checkpoint, params):
        if Path(checkpoint.path).resolve() == victim:
            raise KeyboardInterrupt
        return real(checkpoint, params)

    monkeypatch.setattr(indexing, "fingerprint", interrupted)
    with FingerprintStore(tmp_path / "store.sqlite") as store, pytest.raises(KeyboardInterrupt):
        index([bert_family], store)
    monkeypatch.setattr(indexing, "fingerprint", real)
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        assert len(store) == 2
        resumed = index([bert_family], store)
        assert len(resumed.unchanged) == 2 and len(resumed.indexed) == 3 and len(store) == 5


def test_add_and_query_place_one_model(bert_family: Path, second_family: Path, tmp_path: Path):
    collection = tmp_path / "models"
    shutil.copytree(bert_family, collection, ignore=shutil.ignore_patterns("ft-colour-person"))
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        index([collection], store)
        asked = query(bert_family / "ft-colour-person", store)
        assert len(store) == 4 and not asked.added
        placed = add(bert_family / "ft-colour-person", store)
        assert len(store) == 5 and placed.added
        expected = next(e for e in recover([bert_family]).edges if e.child == "ft-colour-person")
        for answer in (asked, placed):
            assert answer.related and answer.parent is not None
            assert answer.parent.parent == expected.parent == "ft-colour"
        stranger = query(second_family / "b-ft-number", store)
        assert not stranger.related and stranger.parent is None
        assert stranger.why.startswith("no relative in this store")
        by_name = query("ft-number", store)
        assert by_name.parent is not None and by_name.parent.parent == "root"


def test_a_store_that_is_not_one_is_refused_by_name(bert_family: Path, tmp_path: Path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(InvalidStoreError, match="garbage.sqlite"):
        FingerprintStore(garbage)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (x)")
    with pytest.raises(InvalidStoreError, match="not a mothertree store"):
        FingerprintStore(other)
    with pytest.raises(InvalidStoreError, match="does not exist"):
        FingerprintStore(tmp_path / "missing.sqlite", create=False)


def test_fingerprints_made_otherwise_are_refused(bert_family: Path, tmp_path: Path):
    path = tmp_path / "store.sqlite"
    with FingerprintStore(path, params=FingerprintParams(samples=256)) as store:
        assert store.params.samples == 256
    with FingerprintStore(path) as store:  # no parameters given: the store's own
        assert store.params.samples == 256
    with pytest.raises(InvalidStoreError, match="made alike"):
        FingerprintStore(path, params=FingerprintParams())
    # A store of the version before the moments kernel: its moments differ in their last bits.
    params_json = FingerprintParams().to_json()
    older = tmp_path / "older.sqlite"
    with FingerprintStore(older):
        pass
    with sqlite3.connect(older) as db:
        version_one = json.dumps({**params_json, "version": 1})
        db.execute("UPDATE meta SET value = ? WHERE key = 'params'", [version_one])
    with pytest.raises(InvalidStoreError, match="version 1") as refused:
        FingerprintStore(older)
    assert "new store" in (refused.value.hint or "")


def test_a_damaged_fingerprint_is_an_error_naming_the_store(bert_family: Path, tmp_path: Path):
    path = tmp_path / "store.sqlite"
    with FingerprintStore(path) as store:
        index([bert_family], store)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE fingerprints SET blob = x'00ff00ff' WHERE rowid = 1")
    with FingerprintStore(path) as store, pytest.raises(InvalidStoreError, match="store.sqlite.*damaged"):
        recover_store(store)


def test_the_commands(bert_family: Path, tmp_path: Path):
    store = str(tmp_path / "store.sqlite")
    runner = CliRunner()
    indexed = runner.invoke(main, ["index", str(bert_family), "--store", store, "-q"])
    assert indexed.exit_code == 0, indexed.output
    assert "indexed 5 new" in indexed.stdout
    recovered = runner.invoke(main, ["recover", "--store", store, "-q", "--format", "json"])
    assert recovered.exit_code == 0, recovered.output
    exact = runner.invoke(main, ["recover", str(bert_family), "-q", "--format", "json"])
    assert recovered.stdout.count('"parent"') == exact.stdout.count('"parent"') == 4
    asked = runner.invoke(main, ["query", "ft-number-water", "--store", store])
    assert asked.exit_code == 0 and "parent:   ft-number" in asked.stdout
    missing = runner.invoke(main, ["recover", "--store", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 1 and "error:" in missing.stderr and "hint:" in missing.stderr


def test_the_sparse_path_gives_the_dense_paths_trees(bert_family: Path, second_family: Path, tmp_path: Path):
    with FingerprintStore(tmp_path / "store.sqlite") as store:
        index([bert_family, second_family], store)
        dense = recover_store(store)
        sparse = recover_store(store, sparse_above=3)  # both groups of five through the candidate graph
    assert {(e.parent, e.child) for e in sparse.edges} == {(e.parent, e.child) for e in dense.edges}
    assert len(sparse.trees) == len(dense.trees) == 2
    assert sparse.params["distances_used"] == ["l2 (sparse candidate graph)"]


def test_index_on_a_local_dask_cluster_equals_one_process_even_when_a_worker_dies(
    mixed_family: Path, tmp_path: Path
):
    import os
    import signal

    from distributed import Client, LocalCluster

    with FingerprintStore(tmp_path / "alone.sqlite") as store:
        index([mixed_family], store)
        alone = {loc.name: loc.content_id for loc in store.locations()}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killed: list[int] = []

        def kill_a_worker(_model_id: str) -> None:
            if not killed:  # the first commit is in: take a worker down while the others are read
                with Client(cluster.scheduler_address) as client:
                    killed.append(next(iter(client.run(os.getpid).values())))
                os.kill(killed[0], signal.SIGKILL)

        with FingerprintStore(tmp_path / "dask.sqlite") as store:
            report = index([mixed_family], store, scheduler=cluster.scheduler_address, on_model=kill_a_worker)
            on_dask = {loc.name: loc.content_id for loc in store.locations()}
    assert killed and not report.broken
    assert on_dask == alone  # every model, each committed once, with the same fingerprint
    assert len(report.indexed) == len(alone)
    with FingerprintStore(tmp_path / "local.sqlite") as store:
        local = index([mixed_family], store, workers=2)
        assert sorted(local.indexed) == sorted(alone) and len(store) == len(alone)
