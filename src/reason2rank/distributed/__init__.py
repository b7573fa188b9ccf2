"""Scale-out on Ray Data: batch reranking and teacher annotation by pools of stateful actors.

    from reason2rank.distributed import rerank_dataset
    run = rerank_dataset("my-model", items, out="run.parquet", concurrency=4, num_gpus=1)

Ray is imported only when a function here runs (``pip install 'reason2rank[ray]'``); importing this package
does not need it.
"""

from reason2rank.distributed.annotate import AnnotationShards, annotate_dataset
from reason2rank.distributed.cluster import import_ray, ray_session
from reason2rank.distributed.rerank import DistributedRun, rank_mode, rerank_dataset

__all__ = [
    "AnnotationShards",
    "DistributedRun",
    "annotate_dataset",
    "import_ray",
    "rank_mode",
    "ray_session",
    "rerank_dataset",
]
