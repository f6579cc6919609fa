import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def bert_family(tmp_path_factory) -> Path:
    """A 5-model tree of tiny, really trained BERTs (see tests/family.py)."""
    from family import FAMILY, build

    return build(FAMILY, tmp_path_factory.mktemp("bert_family"))


@pytest.fixture(scope="session")
def second_family(tmp_path_factory) -> Path:
    """Another 5-model tree whose root keeps MiniLM's layers 2-3: unrelated to ``bert_family``'s root."""
    from family import SECOND_FAMILY, build

    return build(SECOND_FAMILY, tmp_path_factory.mktemp("second_family"))


@pytest.fixture(scope="session")
def pretraining_chain(tmp_path_factory) -> Path:
    """Four stages of continued (masked-token) pre-training from a 2-layer MiniLM (see tests/family.py)."""
    from family import CHAIN, build

    return build(CHAIN, tmp_path_factory.mktemp("chain"))


@pytest.fixture(scope="session")
def lora_family(tmp_path_factory) -> Path:
    """A 5-model tree of merged LoRA fine-tunes, ranks 4-16 (see tests/family.py)."""
    from family import LORA_FAMILY, build

    return build(LORA_FAMILY, tmp_path_factory.mktemp("lora_family"))


@pytest.fixture(scope="session")
def mixed_family(tmp_path_factory) -> Path:
    """Full and LoRA fine-tunes, two LoRA leaves saved as PEFT adapters (see tests/family.py)."""
    from family import MIXED_FAMILY, build

    return build(MIXED_FAMILY, tmp_path_factory.mktemp("mixed_family"))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The first build of the demo graph at its test size (``TINY_DEMO_GRAPH``): ImageNet MobileNetV2 and
    three fine-tunes. Its folder is shared: copy it before changing anything in it."""
    from torch_threads import one_thread

    from mothertree.zoo.build import build_graph
    from mothertree.zoo.demo import TINY_DEMO_GRAPH

    with one_thread():  # tests rebuild some of its models and compare them bit for bit
        return build_graph(TINY_DEMO_GRAPH, tmp_path_factory.mktemp("demo") / "graph", quiet=True)
