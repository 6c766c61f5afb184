"""The `linear784` seed example, runnable as a script: `python examples/linear_784.py [--protocol secagg+] [--rounds R] ...`.

It is `fedsecure train --example linear784` with the same options; the experiment itself lives in
`fedsecure.fl.examples` so the CLI, this script and the tests share one definition.
"""

import sys

from fedsecure.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--example", "linear784", *sys.argv[1:]]))
