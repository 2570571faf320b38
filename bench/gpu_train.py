"""GPU training throughput and memory: langgraft align/pretrain vs the usual HF + PEFT way, Llama-2-7B shape.

Self-contained: builds a random Llama-2-7B-shape model (hidden 4096, 32 layers, 11008 MLP, 32 heads) with the
paper's extended vocabulary (49,856 rows, of which 32,000 are old), trains on random tokens (seq 2048,
micro-batch 2, bf16 autocast, frozen base weights in bf16, trained weights in fp32) and times it:
- peers (`--peers`), each with the model's own loss (`model(input_ids, labels=...)`), no gradient checkpointing:
  `modules_to_save`: PEFT LoRA r=8 α=32 dropout 0.05 on q,k,v,o,gate,up,down + `modules_to_save` =
  [embed_tokens, lm_head] (align: the whole embedding and head matrices); `token_indices`: the same LoRA + PEFT
  `trainable_token_indices` on the same new rows langgraft trains (align: PEFT's `TrainableTokensConfig` alone);
  `+liger`: either with Liger-Kernel's fused linear cross-entropy patched into the model's forward (GPU only; Liger
  reads `lm_head.weight`, which PEFT's wrappers resolve to the trained copy or the merged rows, so the head still
  trains). RESULT compares ours with the fastest peer (tokens/s) and the leanest (memory).
- ours pretrain: `langgraft.train.model`: the same LoRA + only the new rows (`trainable_token_indices`), the fused
  chunked head + cross-entropy, `layer.compile()` on every decoder layer (`--compile off` to turn off).
- align: baseline trains whole embedding + head matrices; ours the new rows only (same loss/compile as above).
Writes nothing except, with --out DIR (default $OUT when set), DIR/gpu_train.json. Prints per run tokens/s and
peak GPU memory, then `RESULT` lines (tokens/s and memory per stage), the last one for pretrain tokens/s.

    python bench/gpu_train.py [--stages pretrain,align] [--steps 10] [--warmup 3] [--compile auto|on|off] [--out DIR]
        [--peers modules_to_save,token_indices,modules_to_save+liger,token_indices+liger]
    python bench/gpu_train.py --shape smollm2 --micro-batch 32 --compile off   # the GPU recipe's shape
    python bench/gpu_train.py --smoke      # same code, tiny model on CPU (checks the script, not the speed)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a bare checkout too

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab=49856, old=32000, seq=2048),
    # SmolLM2-135M extended by recipes/smollm2-135m-persian*.yaml (66,688 rows, 49,152 old), at the GPU recipe's
    # align/pretrain batch shape (32 × 512): the tokens/s bench/gpu_recipe.sh sizes that recipe's steps by
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab=66688, old=49152, seq=512),
    "smoke": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab=1024, old=640, seq=128),
}
PEERS = ("modules_to_save", "token_indices", "modules_to_save+liger", "token_indices+liger")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Lora:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    targets: list = field(default_factory=lambda: list(TARGETS))


@dataclass
class Cfg:  # the slice of langgraft's TrainConfig that build_peft_model / build_optimizer read
    lora: Lora = field(default_factory=Lora)
    optim: object = None


def build_model(shape: dict, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=shape["vocab"], max_position_embeddings=shape["seq"], tie_word_embeddings=False,
                      **{k: v for k, v in shape.items() if k not in ("vocab", "old", "seq")})
    torch.manual_seed(0)
    with torch.device(device):  # built in bf16 directly: no 27 GB fp32 copy on the way
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.config.use_cache = False
    return model


def baseline_setup(model, stage: str, peer: str, new_rows: list[int]):
    """A peer's way: PEFT LoRA + modules_to_save or + trainable_token_indices (pretrain); whole embedding/head
    matrices or PEFT's trainable tokens (align)."""
    import peft

    rows = {"embed_tokens": new_rows, "lm_head": new_rows}
    if stage == "pretrain":
        extra = ({"trainable_token_indices": rows} if peer.startswith("token_indices")
                 else {"modules_to_save": ["embed_tokens", "lm_head"]})
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=8, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM", **extra))
    elif peer.startswith("token_indices"):
        model = peft.get_peft_model(model, peft.TrainableTokensConfig(
            target_modules=["embed_tokens", "lm_head"], token_indices=new_rows))
    else:
        model.requires_grad_(False)
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            module.weight.requires_grad_(True)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, fused=torch.cuda.is_available() or None)

    def loss_fn(ids):
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    return model, loss_fn, optimizer


def ours_setup(model, stage: str, shape: dict, compile_layers: bool):
    from types import SimpleNamespace

    from langgraft.train.model import LossModule, build_peft_model
    from langgraft.train.model import build_optimizer

    cfg = Cfg(optim=SimpleNamespace(lr=2e-4, embed_lr=None, weight_decay=0.0))
    peft_model = build_peft_model(model, stage, cfg, list(range(shape["old"], shape["vocab"])))
    for p in peft_model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if compile_layers:
        for layer in peft_model.get_base_model().model.layers:
            layer.compile()
    loss_module = LossModule(peft_model, chunk=4096)
    return peft_model, loss_module, build_optimizer(peft_model, cfg)


def time_steps(loss_fn, optimizer, params, shape, args, device) -> dict:
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, shape["vocab"] - 64, (args.micro_batch, shape["seq"]), generator=gen).to(device)
               for _ in range(4)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    losses = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = loss_fn(batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    sync()
    elapsed = time.perf_counter() - start
    tokens = args.steps * args.micro_batch * shape["seq"]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"tokens_per_s": tokens / elapsed, "peak_gib": peak, "first_loss": losses[0], "last_loss": losses[-1],
            "trainable_params": sum(p.numel() for p in params)}


def run_one(side: str, stage: str, shape: dict, args, device: str) -> dict:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = build_model(shape, device)
    if side != "ours":
        new_rows = list(range(shape["old"], shape["vocab"]))
        model, loss_fn, optimizer = baseline_setup(model, stage, side, new_rows)
    else:
        model, loss_module, optimizer = ours_setup(model, stage, shape, args.compile)
        loss_fn = loss_module
    params = [p for p in model.parameters() if p.requires_grad]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()  # peak of training itself (weights included), not of building
    result = time_steps(loss_fn, optimizer, params, shape, args, device)
    result["setup_and_run_s"] = time.perf_counter() - t0
    print(f"{stage:8s} {side:20s} {result['tokens_per_s']:10,.0f} tok/s  peak {result['peak_gib']:6.1f} GiB  "
          f"loss {result['first_loss']:.3f}→{result['last_loss']:.3f}  trainable {result['trainable_params']:,}  "
          f"({result['setup_and_run_s']:.0f} s)", flush=True)
    del model, optimizer, params, loss_fn
    if side == "ours" and args.compile:
        torch._dynamo.reset()  # compiled graphs and guards must not keep this 7B model alive into the next run
    gc.collect()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["7b", "smollm2"], default="7b", help="model shape (GPU runs)")
    ap.add_argument("--stages", default="pretrain,align")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="the HF + PEFT ways to compare with (+liger: Liger's fused linear cross-entropy, GPU only)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="compile each decoder layer (auto: on for the GPU run, off for --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, 2+1 steps, no compile")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="write gpu_train.json here (default: $OUT)")
    args = ap.parse_args()
    unknown = [p for p in args.peers.split(",") if p not in PEERS]
    if unknown:  # a misspelt peer would otherwise run as modules_to_save under the wrong name
        ap.error(f"--peers: unknown {', '.join(unknown)} (choose from {', '.join(PEERS)})")
    if args.smoke:
        shape, device = SHAPES["smoke"], "cpu"
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
        args.compile = args.compile == "on"
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device; use --smoke to check the script on CPU")
        shape, device = SHAPES[args.shape], "cuda"
        args.compile = args.compile != "off"
        torch.backends.cuda.matmul.allow_tf32 = True
    # compiler caches go to a temporary folder that is removed at the end: nothing is left outside --out
    scratch = tempfile.mkdtemp(prefix="langgraft-gpu-bench-")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(scratch, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(scratch, "triton"))
    try:
        run_all(args, shape, device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_all(args, shape: dict, device: str) -> None:
    import peft
    import transformers

    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device {gpu}, torch {torch.__version__}, transformers {transformers.__version__}, peft "
          f"{peft.__version__}; shape {shape}; micro-batch {args.micro_batch}, "
          f"{args.warmup}+{args.steps} steps, compile {args.compile}", flush=True)
    results = {}
    for stage in args.stages.split(","):  # pretrain first: the headline survives a run cut short
        sides = [*args.peers.split(","), "ours"]
        results[stage] = {side: run_guarded(side, stage, shape, args, device) for side in sides}
        print("\n".join(result_lines(stage, results[stage])), flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu_train.json").write_text(json.dumps(
                {"device": gpu, "torch": torch.__version__, "shape": shape, "args": vars(args),
                 "results": results}, indent=2))
    if "pretrain" in results:  # the benchmark ends with its headline: stage-2 tokens/s
        print(result_lines("pretrain", results["pretrain"])[-1])


def run_guarded(side: str, stage: str, shape: dict, args, device: str) -> dict:
    """One failed run must not cost the whole (expensive) device session: report it, retry ours uncompiled."""
    try:
        with liger_patch(side.endswith("+liger"), device):
            return run_one(side, stage, shape, args, device)
    except Exception as exc:  # noqa: BLE001 — any failure is reported and the other runs go on
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    gc.collect()  # outside the except block: the traceback no longer pins the failed run's tensors
    if device == "cuda":
        torch.cuda.empty_cache()
    print(f"{stage} {side} FAILED: {error}", flush=True)
    if side == "ours" and args.compile:
        args.compile = False
        print(f"{stage} ours: retrying without compile", flush=True)
        return run_guarded(side, stage, shape, args, device)
    nan = float("nan")
    return {"tokens_per_s": nan, "peak_gib": nan, "first_loss": nan, "last_loss": nan, "trainable_params": 0,
            "error": error}


@contextmanager
def liger_patch(on: bool, device: str):
    """Liger-Kernel's fused linear cross-entropy in LlamaForCausalLM's forward for one run (its other kernels
    off: the comparison is about the head), the original forward restored after it."""
    if not on:
        yield
        return
    if device != "cuda":
        raise RuntimeError("Liger's kernels are Triton GPU kernels: skipped on CPU")
    from liger_kernel.transformers import apply_liger_kernel_to_llama
    from transformers.models.llama import modeling_llama

    forward = modeling_llama.LlamaForCausalLM.forward
    apply_liger_kernel_to_llama(rope=False, rms_norm=False, swiglu=False, cross_entropy=False,
                                fused_linear_cross_entropy=True)
    try:
        yield
    finally:
        modeling_llama.LlamaForCausalLM.forward = forward


def result_lines(stage: str, r: dict) -> list[str]:
    """RESULT lines: ours against the leanest peer (memory) and the fastest (tokens/s); failed peers left out."""
    o = r["ours"]
    peers = {k: v for k, v in r.items() if k != "ours" and v["tokens_per_s"] == v["tokens_per_s"]}
    if not peers:
        return [f"RESULT metric={o['tokens_per_s']:.1f} baseline=nan ratio=nan stage={stage} unit=tokens/s"]
    lean = min(peers, key=lambda k: peers[k]["peak_gib"])
    fast = max(peers, key=lambda k: peers[k]["tokens_per_s"])
    m, b = o["peak_gib"], peers[lean]["peak_gib"]
    mem_ratio = b / m if m == m and m else float("nan")
    return [f"RESULT metric={m:.2f} baseline={b:.2f} ratio={mem_ratio:.2f} stage={stage} unit=GiB peer={lean}",
            f"RESULT metric={o['tokens_per_s']:.1f} baseline={peers[fast]['tokens_per_s']:.1f} "
            f"ratio={o['tokens_per_s'] / peers[fast]['tokens_per_s']:.2f} stage={stage} unit=tokens/s peer={fast}"]


if __name__ == "__main__":
    main()
