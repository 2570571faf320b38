"""Model-side scoring: continuation log-likelihoods, greedy generation, and per-text negative log-likelihood.

Log-likelihood requests that share a prompt (the choices of one question) are scored with one forward pass over
the prompt and one over the continuations (chunked by length), reusing the prompt's KV cache
(`DynamicCache.reorder_cache` repeats a row per continuation); the vocabulary projection runs only at positions
whose next token is scored (`logits_to_keep`); groups are sorted by length and batched. Written here rather than taken from
lm-evaluation-harness because that harness re-runs the full prompt for every choice and would be a heavy
dependency; `score_one` below is the plain one-pass-per-request reference that tests compare against.
"""

from __future__ import annotations

import copy
import sys
import time
from collections import Counter, defaultdict

import torch

PAD_SLACK = 1.25  # a continuation chunk may hold at most 25% padding tokens


def encode_pair(tok, context: str, continuation: str, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids of (prompt, continuation): encode the whole string once, split where it departs from the prompt.

    Splitting the joint encoding (instead of encoding the continuation alone) keeps the continuation's tokens
    exactly those the model would see, also when the tokenizer merges across the boundary.
    """
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    n = 0
    while n < min(len(ctx), len(whole) - 1) and ctx[n] == whole[n]:
        n += 1
    prefix, cont = whole[:n], whole[n:]
    overflow = len(prefix) + len(cont) - max_len
    if overflow > 0:  # keep the end of the prompt: it is what the continuation depends on
        prefix = prefix[min(overflow, max(len(prefix) - 1, 0)):]
    return prefix, cont


def max_length(model, default: int = 2048) -> int:
    return int(getattr(model.config, "max_position_embeddings", None) or default)


@torch.no_grad()
def score_one(model, tok, context: str, continuation: str) -> float:
    """Reference: sum log P(continuation | context) with one full forward pass for this request alone."""
    prefix, cont = encode_pair(tok, context, continuation, max_length(model))
    ids = torch.tensor([prefix + cont], device=model.device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return float(logp[len(prefix) - 1:].gather(-1, targets[len(prefix) - 1:, None]).sum())


@torch.no_grad()
def loglikelihoods(model, tok, requests: list[tuple[str, str]], batch_size: int = 16,
                   progress: str = "", owners: list[int] | None = None) -> list[float]:
    """Sum log P(continuation | context) for every (context, continuation), batched with prompt-cache reuse.
    `owners[i]` is the example request i belongs to (its choices): the progress line counts examples."""
    limit = max_length(model)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
    for i, (ctx, cont) in enumerate(requests):
        prefix, cont_ids = encode_pair(tok, ctx, cont, limit)
        groups[tuple(prefix)].append((i, cont_ids))
    # Longest first: the first batch shows the memory peak at once, and similar lengths share padding.
    ordered = sorted(groups.items(), key=lambda kv: -(len(kv[0]) + max(len(c) for _, c in kv[1])))
    out = [0.0] * len(requests)
    counter = _Examples(owners if owners is not None else range(len(requests)), progress)
    batch: list = []
    rows = 0
    for item in ordered + [None]:
        if batch and (item is None or rows + len(item[1]) > batch_size):
            _score_batch(model, batch, out)
            counter.finish(i for _, conts in batch for i, _ in conts)
            batch, rows = [], 0
        if item is not None:
            batch.append(item)
            rows += len(item[1])
    return out


class _Examples:
    """Progress in examples, not in the requests or windows they are scored as: an example is done when the last
    of its parts is (a 4-choice question is 4 requests, a long text several windows)."""

    def __init__(self, owners, label: str):
        self.owners = list(owners)
        self.left = Counter(self.owners)
        self.done, self.label, self.started = 0, label, time.time()

    def finish(self, parts) -> None:
        for part in parts:
            owner = self.owners[part]
            self.left[owner] -= 1
            self.done += self.left[owner] == 0
        _progress(self.label, self.done, len(self.left), self.started)


def _progress(label: str, done: int, total: int, started: float) -> None:
    """Rate and ETA on stderr: redrawn in place on a terminal, one final line per task in logs."""
    tty = sys.stderr.isatty()
    if not label or (done < total and not tty):
        return
    rate = done / max(time.time() - started, 1e-9)
    eta = (total - done) / rate if rate else 0
    print(f"\r  {label}: {done}/{total} examples ({rate:.1f}/s, ETA {eta:.0f}s)", end="" if done < total else "\n",
          file=sys.stderr, flush=True)


def _score_batch(model, groups: list, out: list[float]) -> None:
    device = model.device
    prefixes = [list(p) for p, _ in groups]
    plen = torch.tensor([len(p) for p in prefixes], device=device)
    width = int(plen.max())
    ctx = torch.zeros(len(groups), width, dtype=torch.long, device=device)
    ctx_mask = torch.zeros_like(ctx)
    for g, p in enumerate(prefixes):
        ctx[g, : len(p)] = torch.tensor(p, device=device)
        ctx_mask[g, : len(p)] = 1
    # Only each prompt's last position is needed: project just that row onto the vocabulary.
    first = model(input_ids=ctx, attention_mask=ctx_mask, use_cache=True, logits_to_keep=(plen - 1)[:, None])
    logits = first.logits[:, 0] if first.logits.shape[1] == 1 else first.logits[
        torch.arange(len(groups), device=device), plen - 1]
    last_logp = torch.log_softmax(logits.float(), -1)
    row_group = [g for g, (_, items) in enumerate(groups) for _ in items]
    conts = [c for _, items in groups for _, c in items]
    index = [i for _, items in groups for i, _ in items]
    totals = last_logp[row_group, [c[0] for c in conts]]
    if max(len(c) for c in conts) > 1:
        totals = totals + _continuation_logprobs(model, first.past_key_values, ctx_mask, plen, row_group, conts)
    for r, i in enumerate(index):
        out[i] = float(totals[r])


def _continuation_logprobs(model, cache, ctx_mask, plen, row_group: list[int], conts: list[list[int]]):
    """log P of continuation tokens 2..n of every row, given its prompt's cache.

    Rows are sorted by continuation length and cut into chunks with little padding (choices of one question
    often differ several-fold in length); each chunk gets its own copy of the rows' prompt caches.
    """
    device = ctx_mask.device
    totals = torch.zeros(len(conts), device=device)
    order = sorted((r for r, c in enumerate(conts) if len(c) > 1), key=lambda r: -len(conts[r]))
    chunks: list[list[int]] = []
    for r in order:
        # Rows are longest first, so a chunk's width is its first row's length.
        if chunks and len(conts[chunks[-1][0]]) * (len(chunks[-1]) + 1) <= PAD_SLACK * (
                sum(len(conts[x]) for x in chunks[-1]) + len(conts[r])):
            chunks[-1].append(r)
        else:
            chunks.append([r])
    for k, rows in enumerate(chunks):
        # reorder_cache works in place: copy the prompt caches unless this is the last chunk to use them.
        part_cache = cache if k == len(chunks) - 1 else copy.deepcopy(cache)
        totals[rows] = _chunk_logprobs(model, part_cache, ctx_mask, plen, [row_group[r] for r in rows],
                                       [conts[r] for r in rows])
    return totals


def _chunk_logprobs(model, cache, ctx_mask, plen, row_group: list[int], conts: list[list[int]]):
    device = ctx_mask.device
    sel = torch.tensor(row_group, device=device)
    cache.reorder_cache(sel)  # repeat each prompt's cache once per continuation
    clen = max(len(c) for c in conts)
    cont = torch.zeros(len(conts), clen, dtype=torch.long, device=device)
    cont_mask = torch.zeros_like(cont)
    need = torch.zeros(len(conts), clen, dtype=torch.bool, device=device)
    for r, c in enumerate(conts):
        cont[r, : len(c)] = torch.tensor(c, device=device)
        cont_mask[r, : len(c)] = 1
        need[r, : len(c) - 1] = True  # positions that predict a next continuation token
    # Prompts are right-padded, so each row's continuation starts at its own position, not at the padded width.
    positions = plen[sel, None] + torch.arange(clen, device=device)[None]
    # The vocabulary projection only where needed (no padding, no last token): a boolean `logits_to_keep`.
    second = model(input_ids=cont, attention_mask=torch.cat([ctx_mask[sel], cont_mask], 1),
                   position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=need)
    logits = second.logits if second.logits.dim() == 2 else second.logits[need]
    targets = torch.cat([cont[:, 1:], cont[:, :1]], 1)[need]  # the token each kept position predicts
    token_lp = torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]
    rows = need.nonzero()[:, 0]
    return torch.zeros(len(conts), device=device).index_add_(0, rows, token_lp)


def generate_outputs(model, tok, prompts: list[str], *, max_new_tokens: int, stop: list[str], batch_size: int = 8,
                     progress: str = "", repetition_penalty: float = 1.1) -> list[dict]:
    """Greedy continuations cut before the first stop string (`langgraft.model.generation`: batched by length with
    left padding, repetition penalty as configured), as `generate_texts` outputs (text, ids, token counts);
    prompts cut to fit the context are counted on stderr."""
    from langgraft.model.generation import Sampling, generate_texts

    sampling = Sampling(max_new_tokens=max_new_tokens, stop=list(stop), repetition_penalty=repetition_penalty)
    started, done = time.time(), [0]

    def tick(n: int, _tokens: int) -> None:
        done[0] += n
        _progress(progress, done[0], len(prompts), started)

    out = generate_texts(model, tok, prompts, sampling, batch_size, tick)
    cut = sum(1 for o in out if o["truncated_tokens"])
    if cut:
        print(f"  {progress or 'generation'}: {cut} of {len(prompts)} prompts longer than the context lost their "
              "start", file=sys.stderr)
    return out


@torch.no_grad()
def text_nll(model, tok, texts: list[str], batch_size: int = 8, window: int = 1024,
             progress: str = "") -> list[tuple[float, int]]:
    """(sum of -ln P over the text's tokens, number of tokens) for each text, BOS-conditioned.

    Long texts are cut into windows; each window starts with the last token of the previous one so every text
    token is predicted exactly once (with less context at window starts, as usual for rolling evaluation).
    """
    window = min(window, max_length(model))
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else [tok.eos_token_id or 0]
    chunks: list[tuple[int, list[int]]] = []
    for t, text in enumerate(texts):
        ids = bos + tok(text, add_special_tokens=False).input_ids
        for s in range(0, len(ids) - 1, window - 1):
            chunks.append((t, ids[s: s + window]))
    chunks.sort(key=lambda c: -len(c[1]))
    nll = [0.0] * len(texts)
    count = [0] * len(texts)
    counter = _Examples([t for t, _ in chunks], progress)
    for start in range(0, len(chunks), batch_size):
        part = chunks[start: start + batch_size]
        width = max(len(c) for _, c in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (_, c) in enumerate(part):
            ids[r, : len(c)] = torch.tensor(c)
            mask[r, : len(c)] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        for (t, c), row_nll in zip(part, _row_nlls(model, ids, mask)):
            nll[t] += row_nll
            count[t] += len(c) - 1
        counter.finish(range(start, start + len(part)))
    return list(zip(nll, count))


HEAD_CHUNK = 256  # positions per vocabulary projection when scoring text: 256 x 66k float logits = 68 MB


def _row_nlls(model, ids: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Summed -ln P of each row's tokens 1..n (n = its mask length), with the vocabulary projection run over
    `HEAD_CHUNK` positions at a time: the model's own forward would hold batch x window x vocab logits (2.2 GB
    for 8 x 1,024 tokens at vocab 66k in float32), the largest buffer of an evaluation."""
    head, body = model.get_output_embeddings(), getattr(model, model.base_model_prefix, None)
    text_cfg = model.config.get_text_config()
    cap = getattr(text_cfg, "final_logit_softcapping", None)
    lengths = [int(n) - 1 for n in mask.sum(1)]
    if head is None or body is None or getattr(text_cfg, "logit_scale", None):
        logits = model(input_ids=ids, attention_mask=mask).logits  # a head this module does not reproduce
        return [float(torch.nn.functional.cross_entropy(logits[r, :n].float(), ids[r, 1: n + 1], reduction="sum"))
                for r, n in enumerate(lengths)]
    hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    out = []
    for r, n in enumerate(lengths):
        total = 0.0
        for s in range(0, n, HEAD_CHUNK):
            e = min(s + HEAD_CHUNK, n)
            logits = head(hidden[r, s:e]).float()
            if cap:  # Gemma 2/3: the model's forward soft-caps its logits the same way
                logits = torch.tanh(logits / cap) * cap
            total += float(torch.nn.functional.cross_entropy(logits, ids[r, s + 1: e + 1], reduction="sum"))
        out.append(total)
    return out
