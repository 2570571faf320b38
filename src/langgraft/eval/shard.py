"""Evaluation on every process of a launch (`torchrun`, `accelerate launch`: WORLD_SIZE > 1): each rank scores every
WORLD_SIZE-th example of a task, and the results are gathered back into example order on every rank, so whatever
follows (metrics, bootstrap, the report) runs on the same list one process would have made. Rank 0 alone writes the
output; the other ranks follow its decisions (run, up to date, failed) through `tell`/`hear`.

The shards are strided, not contiguous: tasks are often ordered by length or source, and a stride gives every rank
a similar mix. Per-example scores do not depend on which rank computes them, only (within float rounding) on the
batch an example is padded into, so a gathered result equals the one-process result to float tolerance.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Group:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def map(self, fn: Callable[[list], list], items: list) -> list:
        """fn(items), computed as fn(this rank's share) on every rank and gathered in order on every rank."""
        if self.size == 1:
            return fn(items)
        import torch.distributed as dist

        mine = fn(items[self.rank::self.size])
        if len(mine) != len(items[self.rank::self.size]):
            raise AssertionError("a sharded function must return one result per item")
        parts: list = [None] * self.size
        dist.all_gather_object(parts, mine)
        out: list = [None] * len(items)
        for rank, part in enumerate(parts):
            out[rank::self.size] = part
        return out

    def tell(self, message) -> None:
        """Rank 0: send `message` to every other rank (they `hear` it)."""
        if self.size > 1:
            import torch.distributed as dist

            dist.broadcast_object_list([message], src=0)

    def hear(self):
        """Ranks > 0: what rank 0 `tell`s."""
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launch_group() -> Group:
    """This process's rank and the launch's size; the process group is started (gloo without a GPU, nccl with
    one) unless the launch already started it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Group()
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(hours=24))
    return Group(dist.get_rank(), dist.get_world_size())
