"""rows: none — LoRA alone on an unextended base (the control arm): no row deltas, the head and embedding unchanged,
export works; and the one seed drives LoRA init, dropout and data order."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from langgraft.errors import UserError
from langgraft.export.run import export_run
from langgraft.train.stages import train
from helpers import load_base_tokenizer, save_tiny_model, train_config


@pytest.fixture(scope="module")
def base(tmp_path_factory, data_dir):
    """A tiny tied (Gemma-style) and an untied (Llama) base, neither extended: no new_tokens.json."""
    tmp = tmp_path_factory.mktemp("rows-none")
    tok = load_base_tokenizer(data_dir, "gpt2", tmp / "tok")
    return {"tmp": tmp, "data_dir": data_dir,
            "llama": save_tiny_model("llama", tok, tmp / "llama", hidden=16, layers=1),
            "gemma": save_tiny_model("gemma", tok, tmp / "gemma", hidden=16, layers=1)}


def _cfg(base, kind: str, name: str, **raw):
    settings = {"rows": "none", "max_steps": 3, "checkpoint_every": 0, "eval_every": 0, "eval_batches": 2,
                "log_every": 1, **raw}
    return train_config(base[kind], base["data_dir"], base["tmp"] / name, 60, 10, **settings)


@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_rows_none_trains_only_lora_and_exports(base, kind):
    out = base["tmp"] / f"{kind}-run"
    summary = train("pretrain", _cfg(base, kind, kind), out=out)
    assert summary["steps"] == 3 and summary["trained_rows"] == 0
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in k for k in weights)
    assert not any("trainable_tokens" in k or "embed" in k or "lm_head" in k for k in weights), sorted(weights)
    export_run(out, out=base["tmp"] / f"{kind}-export")
    merged = AutoModelForCausalLM.from_pretrained(base["tmp"] / f"{kind}-export" / "model")
    parent = AutoModelForCausalLM.from_pretrained(base[kind])
    assert torch.equal(merged.get_input_embeddings().weight, parent.get_input_embeddings().weight)
    assert torch.equal(merged.get_output_embeddings().weight, parent.get_output_embeddings().weight)
    q = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q, parent.model.layers[0].self_attn.q_proj.weight)  # the LoRA merged in
    assert not (base["tmp"] / f"{kind}-export" / "model" / "new_tokens.json").exists()


def test_rows_none_on_the_instruct_stage_too(base, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helpers import persian_lines

    lines = persian_lines(data_dir, 40)
    ds = base["tmp"] / "inst" / "inst"
    (ds / "train").mkdir(parents=True)
    pq.write_table(pa.table({"instruction": [x[:40] for x in lines[:30:2]], "input": [""] * 15,
                             "output": [x[:40] for x in lines[1:30:2]]}),
                   ds / "train" / "part-00000.parquet")
    (ds / "dataset.json").write_text('{"name": "inst", "kind": "instructions", "lang": "fa", "splits": '
                                     '{"train": {"files": ["train/part-00000.parquet"], "records": 15}}}')
    cfg = _cfg(base, "llama", "inst-cfg", data={"dataset": str(ds), "block_size": 256})
    summary = train("instruct", cfg, out=base["tmp"] / "inst-run")
    assert summary["trained_rows"] == 0 and summary["steps"] == 3


def test_rows_none_bad_input(base, capfd):
    with pytest.raises(UserError, match=r"rows: none: --stage align trains only embedding/head rows"):
        train("align", _cfg(base, "llama", "bad-align"), out=base["tmp"] / "bad-align-run")
    assert not (base["tmp"] / "bad-align-run").exists()
    out = base["tmp"] / "warn-run"
    train("pretrain", _cfg(base, "llama", "warn", optim={"embed_lr": 1e-3}), out=out)
    lines = [x for x in capfd.readouterr().err.splitlines() if "embed_lr" in x]
    assert lines == ["langgraft train: rows: none trains no embedding/head rows; optim.embed_lr (0.001) is unused"]


def _lora(out):
    return {k: v for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora" in k}


def test_one_seed_drives_lora_init_and_data_order(base):
    """Same seed: bit-identical adapters; another seed: other LoRA A init (B starts at zero) and other batches."""
    from langgraft.train.data import batch_indices

    runs = {}
    for name, seed in (("s0", 0), ("s0-again", 0), ("s1", 1)):
        out = base["tmp"] / f"seed-{name}-run"
        train("pretrain", _cfg(base, "llama", f"seed-{name}", seed=seed, max_steps=1, optim={"lr": 1e-9}), out=out)
        runs[name] = _lora(out)
    a_keys = [k for k in runs["s0"] if "lora_A" in k]
    assert all(torch.equal(runs["s0"][k], runs["s0-again"][k]) for k in runs["s0"])
    assert all(not torch.equal(runs["s0"][k], runs["s1"][k]) for k in a_keys)
    order = [torch.cat(batch_indices(64, 0, 4, accum=2, world=1, rank=0, seed=s, steps_per_epoch=8)).tolist()
             for s in (0, 0, 1)]
    assert order[0] == order[1] != order[2]
