"""The `cnn-digits` seed example, runnable as a script: `python examples/cnn_digits_noniid.py [--protocol secagg+] [--rounds R] ...`.

It is `fedsecure train --example cnn-digits` with the same options; the experiment itself lives in
`fedsecure.fl.examples` so the CLI, this script and the tests share one definition.
"""

import sys

from fedsecure.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--example", "cnn-digits", *sys.argv[1:]]))
