"""Native chatter goes to a log file, not the console (unit tier): what C code prints through
its own stdio buffers and straight to descriptors 1 and 2 inside ``native_output_to``."""

from __future__ import annotations

import ctypes
import os

from tapir.native_output import native_output_to


def test_c_level_output_lands_in_the_log_and_the_console_gets_it_back(tmp_path, capfd):
    libc = ctypes.CDLL(None)
    log = tmp_path / "logs" / "native.log"
    print("before", flush=True)
    with native_output_to(log):
        libc.printf(b"WARNING: class label 1 specified in weight is not found\n")  # buffered C stdio
        os.write(2, b"llama_model_loader: - kv 12\n")
    print("after", flush=True)
    console = capfd.readouterr()
    assert console.out == "before\nafter\n" and console.err == ""
    written = log.read_text()
    assert "class label 1 specified" in written and "llama_model_loader" in written


def test_without_a_log_the_output_is_discarded(capfd):
    with native_output_to(None):
        os.write(1, b"noise\n")
    assert capfd.readouterr().out == ""


def test_transformers_local_bars_are_hidden_and_others_kept(capfd):
    from transformers.utils.logging import tqdm

    from tapir.native_output import quiet_transformers_local_bars

    quiet_transformers_local_bars()
    for _ in tqdm(range(3), desc="Loading weights"):
        pass
    for _ in tqdm(range(3), desc="Downloading model.safetensors"):
        pass
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Downloading model.safetensors" in err


def test_the_gguf_readers_own_bar_is_off_inside_and_back_after(capfd):
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from tapir.native_output import gguf_conversion_bar_off

    with gguf_conversion_bar_off():
        for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
    assert "Converting" not in capfd.readouterr().err
    for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
        pass
    assert "Converting" in capfd.readouterr().err
