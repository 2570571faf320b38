"""langgraft: graft a new language onto a pretrained decoder LLM."""

__version__ = "0.1.0"
