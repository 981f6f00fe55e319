"""The MD worker processes keep freed memory on glibc's heap instead of fresh mmaps."""

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys
import torch
from freecg_md import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd  # bytes in mmapped chunks (the imports made some)
tensor = torch.empty(64 * 2**20, dtype=torch.uint8)  # far above any mmap threshold
print(libc.mallinfo2().hblkhd - before)
"""


def newly_mapped_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc >= 2.33
    except (OSError, AttributeError):
        pytest.skip("no glibc mallinfo2 here")
    # Without it a 64 MiB tensor is a fresh mapping (so the check can fail); with it, none.
    assert newly_mapped_bytes("default") >= 64 * 2**20
    assert newly_mapped_bytes("keep") == 0
