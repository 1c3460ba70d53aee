"""The vLLM backend (``backend.VLLMBackend``): a base model in a vLLM engine, adapters served per
LoRA request. vLLM is imported only when an engine starts (``engine.Engine``); engine arguments and
adapter checks work without it."""
