"""The long fuzz campaign: coverage-guided (atheris, libFuzzer) on one decoder of ``fuzz_targets.TARGETS``.

    python tests/fuzz_campaign.py TARGET -runs=1000000 [libFuzzer options]

Seeded from the target's real inputs. Any exception other than the target's declared one is a crash: libFuzzer
stops, prints the traceback and writes the input to ``crash-*``. At the end it prints one line of figures.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
import time
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))
# Coverage feedback for fedsecure and for the parsers it relies on (zip for checkpoints, numpy's .npy reader).
with atheris.instrument_imports(include=["fedsecure", "zipfile", "numpy.lib.format", "numpy.lib._npyio_impl"]):
    import zipfile  # noqa: F401

    import numpy.lib.format  # noqa: F401

    import fedsecure  # noqa: F401
    import fedsecure.audit  # noqa: F401
    import fedsecure.fl._federation  # noqa: F401
    import fedsecure.runtime.flower  # noqa: F401
    from fuzz_targets import TARGETS


def main() -> None:
    name = sys.argv.pop(1)
    target = TARGETS[name]()
    counts = {"inputs": 0, "declared": 0}

    def one_input(data: bytes) -> None:
        counts["inputs"] += 1
        try:
            target.run(data)
        except target.declared:
            counts["declared"] += 1

    corpus = Path(tempfile.mkdtemp(prefix=f"fedsecure-fuzz-{name}-"))
    for index, seed in enumerate(target.seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    started = time.perf_counter()

    def report() -> None:  # libFuzzer ends the process itself, so the figures are printed at exit
        print(f"fuzz {name}: {counts['inputs']} inputs, {counts['declared']} declared errors, "
              f"{time.perf_counter() - started:.0f} s", flush=True)

    atexit.register(report)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus), "-max_len=65536"], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
