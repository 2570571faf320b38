"""`langgraft export`: `run.py` (a training run or checkpoint → a merged HF model and an adapter; `--push-to-hub`),
`modelcard.py` (the model card, from the run's own records), `gguf.py` (`--gguf`: the merged model as one GGUF file)
and `modelfile.py` (the Ollama Modelfile beside it)."""
