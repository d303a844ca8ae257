"""Everything that starts or talks to a model: the engines tapir starts (llama.cpp, vLLM, the
simulator), the one client every step uses, the LLM factory, and the model-file conversions
(the embedded GGUF to a trainable model and back)."""
