"""Run by ``test_trainer.py`` under ``torch.distributed.run`` (2 CPU processes, gloo): a decoder student sharded
with FSDP2 the way accelerate's transformer-based wrap does it (each block a unit, then the root) takes one
optimizer step through the wrapped module; ``full_student`` must gather exactly the weights that an unsharded
replica taking the same step has, and the saved copy must score as the replica does.

    python -m torch.distributed.run --nproc_per_node 2 tests/distill/fsdp_shard_worker.py CONFIG.yaml OUT.json
"""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from reason2rank.distill.batching import GroupStream
from reason2rank.distill.config import TrainConfig
from reason2rank.distill.trainer import build_student, full_student, load_training_set


def step(model: torch.nn.Module, batch: dict) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(batch)["loss"].backward()
    opt.step()


def main(cfg_path: str, out_path: str) -> None:
    dist.init_process_group("gloo")
    cfg = TrainConfig.from_yaml(cfg_path)
    torch.manual_seed(0)
    student = build_student(cfg, device="cpu")
    replica = copy.deepcopy(student)
    before = {k: v.clone() for k, v in replica.state_dict().items()}
    blocks = set(student._no_split_modules)
    units = [m for m in student.modules() if type(m).__name__ in blocks]
    for m in units:
        fully_shard(m)
    fully_shard(student)
    stream = GroupStream(load_training_set(cfg.data.train, cfg), batch_size=2, group_size=cfg.data.group_size,
                         seed=cfg.seed, reasoning_per_query=1)  # fmt: skip
    batch = replica.collate(
        stream.batch(0)
    )  # the same micro-batch on both processes: the mean gradient is its own
    step(student, batch)
    step(replica, batch)
    whole = full_student(student, cfg, dist.get_rank() == 0)
    if dist.get_rank() == 0:
        assert whole is not None
        want, got = replica.state_dict(), whole.state_dict()
        trainable = {n for n, p in replica.named_parameters() if p.requires_grad}
        result = {
            "units": len(units),
            "sharded": type(next(student.parameters())).__name__,
            "same_keys": sorted(want) == sorted(got),
            "max_diff": max(float((want[k] - got[k]).abs().max()) for k in want),
            "changed": sum(bool((want[k] != before[k]).any()) for k in trainable),
            "trainable": len(trainable),
        }
        whole.save(cfg.resolve(cfg.output_dir))
        with open(out_path, "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
