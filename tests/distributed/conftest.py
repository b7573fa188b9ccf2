"""A local Ray for the distributed tests: started once per test module, shut down after it.

``num_cpus=4`` logical CPUs on a 2-core machine: Ray Data needs CPUs for its own tasks beside two actors (with
``num_cpus=2`` a two-actor run waits forever). Every worker process gets ``MKL_CBWR`` (MKL's conditional numerical
reproducibility) so a float32 forward gives the same bits in any process: without it MKL picks kernels by buffer
alignment, and the same pair scored in two processes can differ in the last bit.
"""

from __future__ import annotations

import sys

import pytest

from reason2rank.cpu_isa import cpu_flags

MKL_CBWR = "AVX512,STRICT" if "avx512f" in cpu_flags() else "AVX2,STRICT"


@pytest.fixture(scope="module")
def ray_local(request):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"MKL_CBWR": MKL_CBWR, "TOKENIZERS_PARALLELISM": "false",
                                  "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
    )  # fmt: skip
    ray.cloudpickle.register_pickle_by_value(sys.modules[request.module.__name__])
    yield ray
    ray.shutdown()
