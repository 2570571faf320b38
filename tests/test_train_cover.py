"""data.cover_new_tokens: the training blocks kept are the ones that together hold the most distinct new tokens
(greedy maximum coverage), on the packed cache a real train run writes; settings it cannot honour are one line."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from transformers import AutoTokenizer

from langgraft.errors import UserError
from langgraft.formats.new_tokens import read_new_tokens
from langgraft.train.cover import check_cover, covering_blocks
from langgraft.train.data import CACHE, build_data
from langgraft.train.stages import train
from helpers import tiny_run


def plain_greedy(blocks: np.ndarray, k: int, first_new: int) -> list[int]:
    """Greedy maximum coverage spelled out: every round, rescan every block, take the lowest-index best gain."""
    sets = [set(int(t) for t in row if t >= first_new) for row in blocks]
    held: set[int] = set()
    picked: list[int] = []
    for _ in range(min(k, len(sets))):
        gains = [len(s - held) if i not in picked else -1 for i, s in enumerate(sets)]
        best = int(np.argmax(gains))
        picked.append(best)
        held |= sets[best]
    return sorted(picked)


def covered(blocks: np.ndarray, pick, first_new: int) -> int:
    return len({int(t) for i in pick for t in blocks[i] if t >= first_new})


@pytest.mark.parametrize("seed", range(6))
def test_lazy_greedy_picks_what_greedy_picks_and_is_near_the_best(seed):
    rng = np.random.default_rng(seed)
    n, width, first_new = int(rng.integers(5, 12)), int(rng.integers(3, 9)), 50
    # skewed ids, as text is: a few common new tokens, many rare ones, old ids between them
    blocks = np.where(rng.random((n, width)) < 0.3, rng.integers(0, first_new, (n, width)),
                      first_new + rng.zipf(1.6, (n, width)) % 40).astype(np.int32)
    for k in (1, 2, 3, n + 2):
        pick, held, present = covering_blocks(blocks, k, first_new, chunk=3)
        assert list(pick) == plain_greedy(blocks, k, first_new)
        assert held == covered(blocks, pick, first_new)
        assert present == covered(blocks, range(n), first_new)
        best = max(covered(blocks, c, first_new) for c in itertools.combinations(range(n), min(k, n)))
        assert held >= (1 - 1 / np.e) * best


def test_covering_blocks_beat_the_first_blocks_where_text_repeats_itself():
    first_new = 100
    repeats = np.full((6, 4), 101, dtype=np.int32)  # the same common new token, block after block
    rare = np.array([[102, 103, 5, 6], [104, 105, 106, 7]], dtype=np.int32)
    blocks = np.concatenate([repeats, rare])
    pick, held, _ = covering_blocks(blocks, 3, first_new)
    assert set(pick) >= {6, 7} and held == 6
    assert covered(blocks, range(3), first_new) == 1


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("cover")
    return tmp, data_dir, tiny_run(tmp, data_dir, 80, 8, max_steps=2, checkpoint_every=0, eval_every=0,
                                   eval_batches=1, log_every=1)


def test_a_train_run_keeps_the_covering_blocks_of_its_packed_data(run, capsys):
    import dataclasses

    from accelerate import Accelerator

    tmp, _, cfg = run
    tok = AutoTokenizer.from_pretrained(cfg.model)
    cover_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cover_new_tokens=3))
    every = np.asarray(build_data("align", cfg, tok, Accelerator(cpu=True), tmp / "full")[0].array)
    kept, _, data_summary = build_data("align", cover_cfg, tok, Accelerator(cpu=True), tmp / "kept")
    first_new = read_new_tokens(cfg.model)["base_vocab_size"]
    want = plain_greedy(every, 3, first_new)
    assert len(every) > 3 and np.array_equal(np.asarray(kept.array), every[want])
    assert data_summary["cover_blocks"] == 3
    assert data_summary["cover_new_tokens_held"] == covered(every, want, first_new)
    assert data_summary["cover_new_tokens_held"] > covered(every, range(3), first_new)
    assert data_summary["cover_new_tokens_in_data"] == covered(every, range(len(every)), first_new)
    said = f"data.cover_new_tokens kept 3 of {len(every):,} blocks, holding {data_summary['cover_new_tokens_held']:,} of"
    assert said in capsys.readouterr().err
    summary = train("align", cover_cfg, out=tmp / "cover")
    assert summary["steps"] == 2 and summary["cover_blocks"] == 3 and summary["train_blocks"] == len(every)


def test_settings_it_cannot_honour_are_one_line(run):
    tmp, _, cfg = run
    import dataclasses

    plain = tmp / "plain-model"
    shutil.copytree(cfg.model, plain)
    (plain / "new_tokens.json").unlink()
    for bad, stage, match in (
        (dataclasses.replace(cfg, model=str(plain), rows="none"), "pretrain",
         r"data.cover_new_tokens: .*plain-model has no new_tokens.json"),
        (dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, replay=cfg.data.dataset, replay_fraction=0.2)),
         "pretrain", "data.cover_new_tokens: .*without replay data"),
    ):
        bad = dataclasses.replace(bad, data=dataclasses.replace(bad.data, cover_new_tokens=2))
        with pytest.raises(UserError, match=match):
            train(stage, bad, out=tmp / f"bad-{len(match)}")
        assert not (tmp / f"bad-{len(match)}" / CACHE).exists()
    with pytest.raises(UserError, match="data.cover_new_tokens: chooses blocks of plain text for --stage align or"):
        check_cover(2, "instruct", cfg.model, 0.0)
