"""`python -m tasks.encoder.engine ARGS` (or `torchrun ... -m tasks.encoder.engine ARGS`): open_clip's own
training entry point (open_clip_train.main) with ARGS, after making open_clip importable on this host and
registering cxrflow's tiny timm ViT (training/openclip.py).

One compatibility fix: webdataset 1.x's `tar_file_expander` yields an empty end-of-shard marker (`{}`) that
open_clip_train's own key grouping (written for webdataset 0.2) reads as a file and fails on (KeyError
'fname'). The engine's module-level reference is pointed at the same expander with the marker turned off,
which is webdataset 0.2's behaviour; nothing else in the engine is changed."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from training.openclip import import_open_clip

    import_open_clip()
    import functools

    import open_clip_train.data
    from open_clip_train.main import main as engine_main
    from webdataset.tariterators import tar_file_expander

    open_clip_train.data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)

    rc = engine_main(argv)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
