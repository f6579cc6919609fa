# The compiled linear algebra of the feature loop (_linalg.c); see reductions.pairwise_squared_distances
# and rank.sketched_ranks.
from typing import Any

def centred_gram(stack: Any, out: Any, rows: int, /) -> None: ...
def count_sketch(
    stack: Any,
    models: int,
    rows: int,
    cols: int,
    s_indptr: Any,
    s_indices: Any,
    s_signs: Any,
    t_indptr: Any,
    t_indices: Any,
    t_signs: Any,
    out: Any,
    /,
) -> None: ...
