"""`python -m llama_runtime train|serve [--flags]`, configured by LLAMAOP_* variables (see contract.py).

`python -m llama_runtime launch train|serve` is what worker pods run: it counts the devices the container
was given and starts the processes (torchrun, the server, or vLLM) on them (launch.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from llama_runtime.errors import UserError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    # Weights and tokenizers come from local directories only: never let transformers reach a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["launch"]:
            from llama_runtime.launch import main as launch

            return launch(args[1:])
        from llama_runtime.config import parse

        cfg = parse(args)
        if cfg.command == "train":
            from llama_runtime.train import run
        else:
            from llama_runtime.serve.app import run
        run(cfg)
    except UserError as e:
        rank = os.environ.get("RANK")
        where = f" (rank {rank})" if rank not in (None, "0") else ""
        print(f"llama_runtime: error{where}: {e}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
