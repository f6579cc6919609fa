from __future__ import annotations

from pathlib import Path

import pytest

from mothertree.io import read_declared_base_models


@pytest.mark.parametrize(
    ("card", "declared"),
    [
        ("---\nbase_model: google-bert/bert-base-uncased\n---\n# card\n", ("google-bert/bert-base-uncased",)),
        ("---\nbase_model:\n- a/one\n- b/two\n- a/one\n---\n", ("a/one", "b/two")),
        ("\ufeff\n---\r\nlicense: mit\r\nbase_model: ' a/b '\r\n---\r\ntext\r\n", ("a/b",)),
        ("---\nbase_model: [a/b, 3, null, '']\n---\n", ("a/b",)),
        ("---\nlicense: mit\n---\n", ()),
        ("---\nbase_model: {name: x}\n---\n", ()),
        ("# no front matter\nbase_model: a/b\n", ()),
        ("---\nbase_model: a/b\n", ()),  # never closed
        ("---\nbase_model: [unclosed\n---\n", ()),  # invalid YAML
        ("---\n- a list\n---\n", ()),
        ("---\n!!python/object:os.system echo\n---\n", ()),  # safe_load refuses tags
    ],
)
def test_front_matter(tmp_path: Path, card: str, declared: tuple[str, ...]) -> None:
    (tmp_path / "README.md").write_text(card, encoding="utf-8", newline="")
    assert read_declared_base_models(tmp_path) == declared


def test_no_card_or_unreadable_card(tmp_path: Path) -> None:
    assert read_declared_base_models(tmp_path) == ()
    assert read_declared_base_models(tmp_path / "missing") == ()
    (tmp_path / "README.md").write_bytes(b"---\nbase_model: a/b\n---\nnot utf-8: \xff\xfe\n")
    assert read_declared_base_models(tmp_path) == ("a/b",)
    (tmp_path / "README.md").unlink()
    (tmp_path / "README.md").mkdir()
    assert read_declared_base_models(tmp_path) == ()
