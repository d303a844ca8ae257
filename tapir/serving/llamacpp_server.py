"""Serve one GGUF with llama-cpp-python's OpenAI-compatible server, using tapir's chat template.

This is ``python -m llama_cpp.server`` plus one thing it cannot do: take a Jinja chat template
*file* for a GGUF that carries none (the embedded Gemma 3 270M base model has none, and
llama.cpp's fallback layout makes it answer with empty text). We build the server's app with
llama-cpp-python's own ``create_app``, install the template on the loaded model exactly as
tapir's in-process llama.cpp did, and run it with uvicorn as the library does. Grammars, stop
strings, seeds and sampling come per request through the server's own request fields.

    python -m tapir.serving.llamacpp_server --model m.gguf --alias embedded --port 8123 \
        --n-ctx 2048 --n-threads 2 --chat-template tapir_chat.jinja
"""

from __future__ import annotations

import argparse
import os
import threading


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tapir.serving.llamacpp_server")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="the model name clients send")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--chat-template", help="Jinja chat template file (transformers' generation tags allowed)"
    )
    parser.add_argument(
        "--adaptive-threads",
        action="store_true",
        help="use only the cores other processes leave idle (re-checked every 2 s)",
    )
    return parser


class ThreadGovernor(threading.Thread):
    """Gives llama.cpp only the cores that other processes leave idle, re-checked every few seconds.

    llama.cpp's threads meet at a barrier after every operation; when another CPU-bound process
    takes one of them off its core, the others spin at the barrier. On 2 cores beside one busy
    process, 2 threads made 25 output tokens/s and 1 thread 48 (62 with 2 threads on a quiet
    machine; BENCHMARKS.md). So: threads = cores minus the whole cores the rest of the machine
    keeps busy, measured from /proc/stat against this process's own CPU time, smoothed, at
    least 1. Linux only; elsewhere it leaves the threads alone.
    """

    def __init__(self, set_threads, cores: int, every_s: float = 2.0) -> None:
        super().__init__(daemon=True, name="tapir-thread-governor")
        self.set_threads, self.cores, self.every_s = set_threads, cores, every_s
        self.current = cores
        self.others = 0.0
        self.stopped = threading.Event()

    @staticmethod
    def _sample() -> tuple[int, int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
        with open("/proc/self/stat", encoding="ascii") as handle:
            own = handle.read().rsplit(")", 1)[1].split()
        return sum(fields), fields[3] + fields[4], int(own[11]) + int(own[12])

    def run(self) -> None:
        try:
            previous = self._sample()
        except OSError:
            return
        while not self.stopped.wait(self.every_s):
            current = self._sample()
            total, idle, own = (now - before for now, before in zip(current, previous))
            previous = current
            if total <= 0:
                continue
            busy_cores = (total - idle) / total * self.cores
            own_cores = own / total * self.cores
            self.others = 0.5 * self.others + 0.5 * max(0.0, busy_cores - own_cores)
            # Only a whole core's worth of other work takes a thread away: tapir's own clients
            # (a few tenths of a core) never do, so a quiet machine keeps every core.
            wanted = max(1, min(self.cores, self.cores - int(self.others + 0.1)))
            if wanted != self.current:
                self.set_threads(wanted, wanted)
                self.current = wanted
                print(f"tapir: llama.cpp threads -> {wanted} (other processes use {self.others:.1f} cores)")


def install_top_logprobs(model) -> None:  # type: ignore[no-untyped-def]
    """Answer ``logprobs``/``top_logprobs`` chat requests without ``logits_all``.

    llama-cpp-python returns log-probabilities only from a model loaded with ``logits_all=True``,
    which keeps the logits of every prompt token (n_ctx x 262k floats for Gemma 3) and sorts the
    whole vocabulary in Python for each answer token. A judge's expected score needs the top
    alternatives of a few answer tokens only: a logits processor records them at each generated
    position (the raw distribution, before grammar and sampling, as OpenAI and vLLM report it) and
    the answer carries them in OpenAI's ``choices[i].logprobs.content`` format.
    """
    import numpy as np
    from llama_cpp import LogitsProcessorList

    original = model.create_chat_completion

    def create_chat_completion(*args, logprobs=None, top_logprobs=None, logits_processor=None, **kwargs):
        if not logprobs:
            return original(*args, logits_processor=logits_processor, **kwargs)
        k = max(1, min(int(top_logprobs or 1), 20))
        steps: list[list] = []  # per position: [input length, top ids, top logprobs, chosen logprob]
        previous: list[np.ndarray] = []  # the last position's log-probabilities over the vocabulary

        def record(input_ids, scores):  # type: ignore[no-untyped-def]
            if previous and steps:  # the token chosen there is now the last input
                steps[-1][3] = float(previous.pop()[int(input_ids[-1])])
            values = np.asarray(scores, dtype=np.float64)
            peak = values.max()
            logprobs = values - (peak + np.log(np.exp(values - peak).sum()))
            top = np.argpartition(logprobs, -k)[-k:]
            top = top[np.argsort(-logprobs[top])]
            steps.append([len(input_ids), top, logprobs[top], None])
            previous.append(logprobs)
            return scores

        processors = LogitsProcessorList([record, *(logits_processor or [])])
        answer = original(*args, logits_processor=processors, **kwargs)
        if steps:
            answer["choices"][0]["logprobs"] = {"content": _content(model, steps, answer), "refusal": None}
        return answer

    model.create_chat_completion = create_chat_completion


def _content(model, steps, answer) -> list[dict]:  # type: ignore[no-untyped-def]
    """OpenAI's per-token entries for the generated text, from the recorded positions."""
    text = answer["choices"][0]["message"].get("content") or ""
    ids = [int(i) for i in model._input_ids]  # the prompt and every answer token evaluated after it
    start = steps[0][0]
    content, written = [], ""

    def piece(token_id: int, before: list[int]) -> str:
        return model.detokenize([token_id], prev_tokens=before).decode("utf-8", errors="ignore")

    for position, (_, top, logprobs, chosen) in enumerate(steps):
        if len(written) >= len(text):
            break
        before = ids[: start + position]
        evaluated = start + position < len(ids)  # the last one of a length cut never was
        token = piece(ids[start + position], before) if evaluated else text[len(written) :]
        written += token
        alternatives = [
            {"token": (alt := piece(int(i), before)), "logprob": float(lp), "bytes": list(alt.encode())}
            for i, lp in zip(top, logprobs)
        ]
        if chosen is None:  # never followed by another position: its own entry, if among the top
            chosen = next((a["logprob"] for a in alternatives if a["token"] == token), -9999.0)
        content.append(
            {"token": token, "logprob": chosen, "bytes": list(token.encode()), "top_logprobs": alternatives}
        )
    return content


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    import uvicorn
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from tapir.serving.llms import strip_generation_markers

    model_settings = ModelSettings(
        model=args.model,
        model_alias=args.alias,
        n_ctx=args.n_ctx,
        n_threads=args.n_threads,
        n_threads_batch=args.n_threads,
        n_batch=args.n_batch,
        n_gpu_layers=args.n_gpu_layers,
        seed=args.seed,
        logits_all=False,  # the server's default keeps logits of every prompt token: slow, unused
        verbose=False,
    )
    server_settings = ServerSettings(host=args.host, port=args.port)
    app = server_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    if args.chat_template:
        with open(args.chat_template, encoding="utf-8") as handle:
            template = handle.read()
        model = server_app._llama_proxy(args.alias)  # type: ignore[misc]  # loaded by create_app
        vocab_token = model._model.token_get_text  # type: ignore[attr-defined]
        model.chat_handler = Jinja2ChatFormatter(
            template=strip_generation_markers(template),
            eos_token=vocab_token(model.token_eos()),
            bos_token=vocab_token(model.token_bos()),
            stop_token_ids=[model.token_eos()],
        ).to_chat_handler()
    install_top_logprobs(server_app._llama_proxy(args.alias))  # type: ignore[misc]
    if args.adaptive_threads and os.path.exists("/proc/stat"):
        model = server_app._llama_proxy(args.alias)  # type: ignore[misc]
        ThreadGovernor(model._ctx.set_n_threads, args.n_threads).start()  # type: ignore[attr-defined]
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
