"""`langgraft run RECIPE.yaml`: the whole method, stage by stage, into `OUT/<stage>/`, resumable.

Modules: `recipe` (the recipe's schema, loaded and checked into a `Plan`), `run` (`run_recipe`: the stages in
order, on every process of a launch), `stages` (one plain function per stage, each calling its verb's Python API),
`report` (the last stage's report folder).

Stages, in order (`--from`/`--to` take these names):
  data              `data prepare` (normaliser: the recipe's tokenizer.normalizer)  → OUT/data/
  tokenizer         `tokenizer train` on target-language text: tokenizer.input     → OUT/tokenizer/
                    files and/or the train split of the prepared tokenizer.dataset
  tokenizer_extend  merge it into the base tokenizer                               → OUT/tokenizer_extend/
  model_extend      embedding surgery; evaluates the base and the extended model   → OUT/model_extend/, OUT/eval/
  align             `train --stage align` + `export`; evaluates the result         → OUT/align/{train,export}/
  pretrain          `train --stage pretrain` on the aligned model + `export`; eval  → OUT/pretrain/{train,export}/
  instruct          `train --stage instruct` on the pretrained model + `export`;    → OUT/instruct/{train,export}/
                    eval (optional: only when the recipe names instruct.dataset)
  report            `eval --compare` of every evaluated stage + tokenizer report    → OUT/report/
                    + MODEL_CARD.md (the last stage's model card with every evaluation)
A recipe's `stages` lists the stages it has (default: all). Without tokenizer, tokenizer_extend and model_extend
(all three or none) it is the control arm: `model_extend.model` is the base, trained on its own tokenizer by the
training stages present (`rows: none`, LoRA alone; align has nothing to train there), the base is evaluated before
the first of them, and the report names each arm's training tokens, characters seen and seconds. A recipe's
`seed`, when set, is every training stage's seed.
Each stage calls the Python API of its verb, and each of those skips itself when its manifest matches (same
config, same inputs), so a rerun skips finished stages and a killed run continues from the first unfinished one
(training resumes from its last checkpoint). Training runs also record which upstream outputs they were built on
(`upstream.json`: the upstream manifests' fingerprints and start times); a rebuilt upstream stage retrains them.
A training stage's model and dataset come from the run (the previous stage's model, OUT/data/<dataset>): a
`model` or `data.dataset` in the stage's own train config is not used, and the run prints one line saying so.

Relative paths in a recipe are relative to the working directory (`base_dir` for the Python API, which
`langgraft demo` points at its own folder). A recipe's sections hold each verb's own flags, or the path of the
verb's own YAML config plus dotted overrides (schema: table.py); unknown keys anywhere are one-line errors before
anything runs.

Multi-GPU: `accelerate launch -m langgraft run RECIPE.yaml` (or torchrun) runs the training stages on every
process (DDP, FSDP, ZeRO as the launch config says) and everything else — tokenizer, data, surgery, export, eval,
report — on the main process while the others wait at a barrier (timeout 24 h: evaluating a 7B model on one GPU
takes long).

Why not a workflow engine (Snakemake, DVC, Luigi): the stages are a fixed sequence of eight calls, and "up to
date" already has one definition here (the manifests' config + input hashes); an engine would bring a second one
(file times, its own lock files) that can disagree with it, and another dependency.
"""
