"""`train --stage instruct`: response-only labels, packing, the loss on labelled rows, the trained adapter."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraft.cli import main
from langgraft.config import from_dict, load_config
from langgraft.data.config import PrepareConfig
from langgraft.data.load import load_records
from langgraft.data.prepare import prepare
from langgraft.errors import UserError
from langgraft.train.config import TrainConfig
from langgraft.train.instruct import DEFAULT_TEMPLATE, encode_example, ensure_chat_template, pack_examples
from langgraft.train.stages import train
from helpers import copy_without_chat_template, make_dataset, make_extended_model, persian_lines


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir):
    """Tiny extended model + a real instructions dataset from `data prepare` (Persian + English seed tasks)."""
    tmp = tmp_path_factory.mktemp("instruct")
    model = make_extended_model(tmp, data_dir)
    cfg = {"root": str(tmp), "workers": 1, "datasets": [{
        "name": "inst", "kind": "instructions", "lang": "fa", "validation_fraction": 0.2,
        "filters": {"min_chars": 5, "min_words": 1, "min_script_ratio": 0.3},
        "sources": [{"path": str(data_dir / "persian_instruct/persian_seed_tasks.jsonl"), "records": "instances",
                     "limit": 60},
                    {"path": str(data_dir / "self_instruct/data/seed_tasks.jsonl"), "records": "instances",
                     "lang": "en", "limit": 20}]}]}
    (tmp / "prep.yaml").write_text(yaml.safe_dump(cfg))
    prepare(load_config(PrepareConfig, tmp / "prep.yaml"), tmp / "data", progress=False)
    bare = copy_without_chat_template(model, tmp / "bare")
    assert not AutoTokenizer.from_pretrained(bare).chat_template
    return {"tmp": tmp, "model": model, "bare": bare, "dataset": tmp / "data" / "inst"}


def config(setup, **raw) -> TrainConfig:
    base = {"model": str(setup["model"]), "data": {"dataset": str(setup["dataset"]), "block_size": 160},
            "micro_batch_size": 2, "max_steps": 4, "checkpoint_every": 0, "eval_every": 4, "eval_batches": 2,
            "log_every": 1, "precision": "fp32", "lora": {"targets": ["q_proj", "v_proj"]},
            "optim": {"lr": 1e-3}}
    return from_dict(TrainConfig, {**base, **raw})


def test_the_models_own_chat_template_is_used_with_one_bos(setup):
    tok = AutoTokenizer.from_pretrained(setup["model"])  # Mistral-7B-v0.3's tokenizer, with its [INST] template
    assert not ensure_chat_template(tok)
    record = load_records(setup["dataset"], "train")[0]
    prompt, response = encode_example(tok, record)
    assert prompt.count(tok.bos_token_id) == 1 and prompt[0] == tok.bos_token_id
    assert "[INST]" in tok.decode(prompt) and record["instruction"][:20] in tok.decode(prompt)
    assert tok.decode(response[:-1]).strip() == record["output"].strip() and response[-1] == tok.eos_token_id


def test_best_fit_packs_tighter_than_in_order_and_keeps_every_example():
    from langgraft.train.instruct import best_fit

    lengths = [6, 5, 4, 5, 4, 6]  # in order: 6 | 5 4 | 5 4 | 6 = 4 rows of 10; 6+4, 6+4, 5+5 = 3
    rows = best_fit(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows) and len(rows) == 3
    assert all(row == sorted(row) for row in rows)


def test_prompt_tokens_are_not_targets_and_every_example_is_packed(setup):
    tok = AutoTokenizer.from_pretrained(setup["bare"])
    assert ensure_chat_template(tok) and tok.chat_template == DEFAULT_TEMPLATE
    records = load_records(setup["dataset"], "train")
    assert any(r["input"] for r in records) and {r["lang"] for r in records} == {"fa", "en"}
    packed = pack_examples(records, tok, 160)
    rows = packed.rows
    assert rows.shape[1:] == (3, 160) and packed.examples + sum(packed.skipped.values()) == len(records)
    # every kept example's response (then EOS) is a target, its prompt is not: the runs of targets in the rows are
    # exactly the kept examples' responses (rows are bin-packed, so compared as a multiset)
    targets = []
    for row in rows:
        run = []
        for label in row[1].tolist() + [-100]:
            if label != -100:
                run.append(label)
            elif run:
                targets.append(tuple(run))
                run = []
    expected = []
    for r in records:
        prompt, response = encode_example(tok, r)
        if len(prompt) + len(response) <= 160:
            expected.append(tuple(response))
            assert tok.decode(prompt).count("### Instruction:") == 1 and r["instruction"][:20] in tok.decode(prompt)
            assert response[-1] == tok.eos_token_id
    assert sorted(targets) == sorted(expected)
    # labels equal the ids wherever they are set; padding has label -100
    mask = rows[:, 1] != -100
    assert torch.equal(rows[:, 0][mask], rows[:, 1][mask])
    assert packed.response_tokens == int(mask.sum()) and 0 < packed.efficiency <= 1


def test_skipped_examples_are_counted_by_reason(setup):
    tok = AutoTokenizer.from_pretrained(setup["model"])
    ensure_chat_template(tok)
    records = [{"instruction": "یک جمله بنویس.", "input": "", "output": "این یک جمله است."},
               {"instruction": "بنویس", "input": "", "output": ""},
               {"instruction": "خلاصه کن: " + "کلمه " * 200, "input": "", "output": "خلاصه"}]
    packed = pack_examples(records, tok, 64)
    assert packed.examples == 1
    assert packed.skipped == {"empty_instruction_or_output": 1, "longer_than_block_size": 1}


def test_labelled_rows_give_the_models_own_masked_loss(setup):
    from langgraft.train.model import LossModule, build_peft_model

    cfg = config(setup)
    tok = AutoTokenizer.from_pretrained(setup["model"])
    ensure_chat_template(tok)
    rows = pack_examples(load_records(setup["dataset"], "train"), tok, 160).rows[:2]
    torch.manual_seed(0)
    peft_model = build_peft_model(AutoModelForCausalLM.from_pretrained(setup["model"]), "instruct", cfg,
                                  list(range(32768, 32808)))
    peft_model.eval()
    ref = peft_model(input_ids=rows[:, 0], labels=rows[:, 1], position_ids=rows[:, 2]).loss
    ours = LossModule(peft_model, chunk=13)(rows)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    nats, count = LossModule(peft_model, chunk=13).loss_sum(rows)
    assert count == int((rows[:, 1, 1:] != -100).sum()) and nats / count == pytest.approx(ref.item(), rel=1e-5)


def test_instruct_stage_trains_lora_and_saves_the_chat_template(setup, capsys):
    out = setup["tmp"] / "run"
    summary = train("instruct", config(setup, model=str(setup["bare"])), out=out)
    assert summary["steps"] == 4 and summary["train_examples"] > 20 and summary["val_loss"] > 0
    splits = json.loads((setup["dataset"] / "dataset.json").read_text())["splits"]
    err = capsys.readouterr().err  # said before step 1, then the validation loss at step 4
    assert f"tokenizing {splits['train']['records']} instruction examples of inst (train)" in err
    assert f"tokenizing {splits['validation']['records']} instruction examples of inst (validation)" in err
    assert f"step 4/4: train loss {summary['final_loss']:.4f}, validation loss {summary['val_loss']:.4f}" in err
    assert summary["skipped"] == {} or all(v > 0 for v in summary["skipped"].values())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    adapter_tok = AutoTokenizer.from_pretrained(out / "adapter")
    assert adapter_tok.chat_template == DEFAULT_TEMPLATE
    text = adapter_tok.apply_chat_template([{"role": "user", "content": "سلام"}], tokenize=False,
                                           add_generation_prompt=True)
    assert text.endswith("### Instruction:\nسلام\n\n### Response:\n")
    from safetensors.torch import load_file

    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    # the exported model keeps the template it was tuned with, so `eval --chat` prompts it the same way
    from langgraft.export.run import export_run

    export_run(out, out=setup["tmp"] / "export")
    assert AutoTokenizer.from_pretrained(setup["tmp"] / "export" / "model").chat_template == DEFAULT_TEMPLATE
    # generation works on the run's adapter (on its base) and on the merged export, with the same text
    from langgraft.model.generation import Sampling, generate_texts
    from langgraft.model.load import chat_text, load_model_or_adapter as load

    outputs = []
    for path in (out / "adapter", setup["tmp"] / "export" / "model"):
        model, tok = load(str(path))
        outputs.append(generate_texts(model, tok, [chat_text(tok, [{"role": "user", "content": "سلام"}])],
                                      Sampling(max_new_tokens=8)))
    assert outputs[0] == outputs[1] and outputs[0][0]["new_tokens"] > 0


def test_instruct_needs_an_instructions_dataset(setup, data_dir, capsys):
    mono = make_dataset(setup["tmp"] / "mono", "fa", persian_lines(data_dir, 30), [])
    with pytest.raises(UserError, match="needs an instructions dataset"):
        train("instruct", config(setup, data={"dataset": str(mono), "block_size": 160}), out=setup["tmp"] / "x")
    assert not (setup["tmp"] / "x").exists()
    (setup["tmp"] / "cfg.yaml").write_text(yaml.safe_dump({"model": str(setup["model"]),
                                                           "data": {"dataset": str(mono)}}))
    assert main(["train", "--stage", "instruct", "--config", str(setup["tmp"] / "cfg.yaml"),
                 "--out", str(setup["tmp"] / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langgraft: error: data.dataset") and "\n" not in err


def test_instruct_resumes_exactly_from_a_checkpoint(setup):
    """The labelled rows go through the same step-indexed batches and data cache as pretraining: a run cut
    back to its step-2 checkpoint and resumed ends with the uninterrupted run's weights."""
    from safetensors.torch import load_file

    from langgraft.train.checkpoint import list_checkpoints

    cfg = config(setup, max_steps=4, checkpoint_every=2, keep_checkpoints=3, lora={"targets": ["q_proj", "v_proj"],
                                                                                  "dropout": 0.1})
    whole, cut = setup["tmp"] / "whole", setup["tmp"] / "cut"
    train("instruct", cfg, out=whole)
    train("instruct", cfg, out=cut)
    # back to the state a kill after step 2 leaves: no final outputs, the step-2 checkpoint the newest
    for ckpt in list_checkpoints(cut / "checkpoints"):
        if ckpt.name > "step-00000002":
            shutil.rmtree(ckpt)
    shutil.rmtree(cut / "adapter")
    (cut / "manifest.json").unlink()
    summary = train("instruct", cfg, out=cut, resume=True)
    assert summary["steps"] == 4
    # it continued from step 2 (a restart would have logged steps 1-4 a second time)
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    a = load_file(cut / "adapter" / "adapter_model.safetensors")
    b = load_file(whole / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("name,own", [("qwen2", True), ("gpt2", False)])
def test_byte_level_tokenizers_with_and_without_a_template(data_dir, name, own):
    tok = AutoTokenizer.from_pretrained(data_dir / "tokenizers" / name)
    assert ensure_chat_template(tok) is not own
    record = {"instruction": "این جمله را به انگلیسی ترجمه کن.", "input": "هوا سرد است.", "output": "It is cold."}
    prompt, response = encode_example(tok, record)
    text = tok.decode(prompt)
    assert "این جمله را به انگلیسی ترجمه کن.\n\nهوا سرد است." in text
    assert text.endswith("<|im_start|>assistant\n" if own else "### Response:\n")
    assert response[-1] == tok.eos_token_id and tok.decode(response[:-1]) == "It is cold."


def _chat(data_dir, system: bool) -> list[dict]:
    """Two exchanges of real Persian seed-task text (one task's instruction with two of its instances)."""
    line = (data_dir / "persian_instruct/persian_seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()[3]
    inst = json.loads(line)["instances"] * 2
    turns = [{"role": "system", "content": "به فارسی پاسخ بده."}] if system else []
    for x in inst[:2]:
        turns += [{"role": "user", "content": f"{x['instruction']}\n{x['input']}".strip()},
                  {"role": "assistant", "content": x["output"]}]
    return turns


@pytest.mark.parametrize("name,system", [("bare", True), ("mistral", False), ("qwen2", True)])
def test_conversations_train_on_every_assistant_turn_only(setup, data_dir, name, system):
    from langgraft.train.instruct import encode_conversation

    path = {"bare": setup["bare"], "mistral": setup["model"], "qwen2": data_dir / "tokenizers" / "qwen2"}[name]
    tok = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tok)
    turns = _chat(data_dir, system)
    ids, labels = encode_conversation(tok, turns)
    assert len(ids) == len(labels)
    # the whole sequence is the template's rendering of the chat (one BOS at most, at the start)
    bos = tok.bos_token_id
    assert bos is None or bos not in ids[1:]
    text = tok.apply_chat_template(turns, tokenize=False)
    # (turns are tokenized one by one, so a SentencePiece tokenizer may start a reply with a word-boundary space)
    decoded = tok.decode([i for i in ids if i != bos])
    assert "".join(decoded.split()) == "".join(text.removeprefix(tok.bos_token or "").split())
    # targets: the two assistant replies, each closed by EOS; nothing of the system or user turns
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    spans += [cur] if cur else []
    assert len(spans) == 2
    for span, reply in zip(spans, [t for t in turns if t["role"] == "assistant"]):
        assert reply["content"].strip() in tok.decode(span) and tok.eos_token_id in span
    assert not any(t["content"][:15] in tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
                   for t in turns if t["role"] != "assistant")


def test_packing_takes_conversations_from_messages(setup, data_dir):
    tok = AutoTokenizer.from_pretrained(setup["bare"])
    ensure_chat_template(tok)
    chat = {"instruction": "x", "input": "", "output": "y", "messages": _chat(data_dir, True)}
    single = load_records(setup["dataset"], "train")[0]
    packed = pack_examples([chat, single, {**chat, "messages": [{"role": "user", "content": "سلام"}]}], tok, 4096)
    assert packed.examples == 2 and packed.skipped == {"no_assistant_turn": 1}
    assert packed.response_chars == sum(len(t["content"]) for t in chat["messages"] if t["role"] == "assistant") \
        + len(single["output"])


def _peft_loss_module(path, attn: str, token_ids: list[int]):
    from langgraft.train.instruct import check_packed_attention
    from langgraft.train.model import LossModule, build_peft_model

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)
    check_packed_attention(model)
    cfg = from_dict(TrainConfig, {"model": str(path), "data": {"dataset": "x"},
                                  "lora": {"targets": ["q_proj", "v_proj"]}})
    peft_model = build_peft_model(model, "instruct", cfg, token_ids)
    torch.manual_seed(1)
    for p in peft_model.parameters():  # LoRA B starts at zero: move every trained weight so all get gradients
        if p.requires_grad:
            p.data += 0.05 * torch.randn_like(p)
    peft_model.eval()
    return LossModule(peft_model, chunk=7)


@pytest.mark.parametrize("name,attn", [("bare", "sdpa"), ("mistral", "sdpa"), ("qwen2", "sdpa"), ("qwen2", "eager")])
def test_a_packed_example_has_the_loss_and_gradients_it_has_alone(setup, data_dir, tmp_path, name, attn):
    """Two real examples packed in one row: the second one's loss and every trained weight's gradient equal
    those of the same example alone (and differ clearly when the row shares one causal attention)."""
    from langgraft.train.instruct import _encode_record, _row_tensor
    from helpers import save_tiny_model

    src = {"bare": setup["bare"], "mistral": setup["model"], "qwen2": data_dir / "tokenizers" / "qwen2"}[name]
    tok = AutoTokenizer.from_pretrained(src)
    ensure_chat_template(tok)
    kind = {"bare": "llama", "mistral": "mistral", "qwen2": "qwen2"}[name]
    path = save_tiny_model(kind, tok, tmp_path / "m", hidden=32, layers=2)
    records = load_records(setup["dataset"], "train")
    first = _encode_record(tok, records[0])[0][:2]
    second = _encode_record(tok, records[1])[0][:2]
    width = len(first[0]) + len(second[0]) + 5
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    packed = _row_tensor([[([*first[0]], [-100] * len(first[1])), second]], width, pad)
    alone = _row_tensor([[second]], width, pad)
    shared = packed.clone()
    shared[:, 2] = torch.arange(width)

    # trained rows: tokens of both examples (rows only the first one uses must get no gradient from it)
    module = _peft_loss_module(path, attn, sorted(set(first[0]) | set(second[0])))

    def loss_and_grads(rows):
        module.zero_grad()
        loss = module(rows)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}

    ref_loss, ref_grads = loss_and_grads(alone)
    got_loss, got_grads = loss_and_grads(packed)
    torch.testing.assert_close(got_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert ref_grads.keys() == got_grads.keys() and len(ref_grads) > 4
    for key in ref_grads:
        assert ref_grads[key].abs().sum() > 0, key
        torch.testing.assert_close(got_grads[key], ref_grads[key], rtol=1e-4, atol=1e-6, msg=key)
    leaky_loss, _ = loss_and_grads(shared)
    assert abs(float(leaky_loss - ref_loss)) > 1e-4  # the check can tell isolation from a shared attention
    nats, count = module.loss_sum(packed)
    assert count == len([x for x in second[1][1:] if x != -100]) and nats / count == pytest.approx(float(ref_loss))


def test_packed_rows_restart_positions_at_every_example(setup):
    tok = AutoTokenizer.from_pretrained(setup["model"])
    packed = pack_examples(load_records(setup["dataset"], "train"), tok, 160)
    assert packed.rows.shape[1] == 3
    for row in packed.rows[:5]:
        positions = row[2].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0]
        assert starts[0] == 0 and len(starts) >= 2  # several examples (or an example and padding) per row
        for a, b in zip(starts, starts[1:] + [160]):
            assert positions[a:b] == list(range(b - a))
        if tok.bos_token_id is not None:  # each example starts with its own BOS, at position 0
            assert all(row[0, s] == tok.bos_token_id for s in starts if row[1, s:].ne(-100).any())


@pytest.mark.parametrize("kind", ["opt", "falcon"])
def test_an_architecture_whose_attention_ignores_restarted_positions_is_refused(kind):
    """OPT and Falcon build their masks without the packed-sequence detection: training would let packed
    examples see each other, so the start-up probe refuses them (Llama, Mistral, Qwen2 pass it, above)."""
    import transformers as tf

    from langgraft.train.instruct import check_packed_attention

    cfg = {"opt": tf.OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                               ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32),
           "falcon": tf.FalconConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)}
    model = tf.AutoModelForCausalLM.from_config(cfg[kind], attn_implementation="sdpa")
    with pytest.raises(UserError, match=f"model {kind} .*packed instruction examples would attend to each other"):
        check_packed_attention(model)
