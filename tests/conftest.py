import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def bert_family(tmp_path_factory) -> Path:
    """A 5-model tree of tiny, really trained BERTs (see tests/family.py)."""
    from family import build_family

    return build_family(tmp_path_factory.mktemp("bert_family"))


@pytest.fixture(scope="session")
def second_family(tmp_path_factory) -> Path:
    """Another 5-model tree whose root keeps MiniLM's layers 2-3: unrelated to ``bert_family``'s root."""
    from family import build_family

    return build_family(tmp_path_factory.mktemp("second_family"), first_layer=2, prefix="b-")


@pytest.fixture(scope="session")
def pretraining_chain(tmp_path_factory) -> Path:
    """Four stages of continued (masked-token) pre-training from a 2-layer MiniLM (see tests/family.py)."""
    from family import build_chain

    return build_chain(tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="session")
def lora_family(tmp_path_factory) -> Path:
    """A 5-model tree of merged LoRA fine-tunes, ranks 4-16 (see tests/family.py)."""
    from family import build_lora_family

    return build_lora_family(tmp_path_factory.mktemp("lora_family"))


@pytest.fixture(scope="session")
def mixed_family(tmp_path_factory) -> Path:
    """Full and LoRA fine-tunes, two LoRA leaves saved as PEFT adapters (see tests/family.py)."""
    from family import build_mixed_family

    return build_mixed_family(tmp_path_factory.mktemp("mixed_family"))
