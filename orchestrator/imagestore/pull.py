"""A client's command to rebuild an image from its building's distribution point.

::

    python -m orchestrator.imagestore.pull --point https://point.b101:8443 \\
        --image 17-custom-image-lab-1.2 --kind custom_image --scope 101 --name lab \\
        --keys district-keys.txt --seed /images/current.img --out /images/next.img \\
        --seed-index /images/current.caibx --save-index /images/next.caibx

The manifest is checked before anything else is fetched (see
:mod:`orchestrator.imagestore.fetch`); ``--keys`` is a file of the lines
``orchestrator store keys`` prints. On success one line on stdout says what
came from where; on a refusal or failure the reason goes to stderr and the
exit status is the error's (3 refused, 4 not staged or missing, 8 point
unreachable, ...). Nothing is written under ``--out`` unless the image is whole.
A pull that fails or is killed leaves its partial output beside ``--out``
(``.orchestrator-partial.<name>.resume-<key>`` and its ``.journal``); the same
command run again re-hashes the chunks it had written there and fetches only
the rest (a pull of another image to that ``--out`` removes them).

``--save-index`` keeps the pulled image's index (the signed bytes) once the
image is in place; the next pull passes it as ``--seed-index`` with that image
as ``--seed``, and need not chunk the seed to learn what it holds (a hint only:
an index that does not fit the seed is set aside, and every seed chunk is
re-hashed as it is copied either way).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.imagestore.fetch import load_keys, pull

MiB = 1024 * 1024


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
        return value

    return parse


def main(argv: Sequence[str] | None = None, *, today: date | None = None) -> int:
    """Run one pull; returns the exit status. ``today`` defaults to the machine's date."""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.imagestore.pull",
        description="Rebuild an image from a distribution point: only what the seed lacks.",
    )
    parser.add_argument("--point", required=True, help="the point's URL, http(s)://host:port")
    parser.add_argument("--image", required=True, help="the image's name in the store")
    parser.add_argument("--out", required=True, type=Path, help="the file to write")
    parser.add_argument("--seed", type=Path, help="a file to take chunks from (the current image)")
    parser.add_argument(
        "--seed-index",
        type=Path,
        metavar="PATH",
        help="the seed's casync index, as --save-index wrote it (a hint: checked against the seed)",
    )
    parser.add_argument(
        "--save-index",
        type=Path,
        metavar="PATH",
        help="where to keep the pulled image's index for the next pull",
    )
    parser.add_argument("--keys", required=True, type=Path, help="the district's public keys")
    parser.add_argument("--kind", required=True, help="base_image, custom_image or package")
    parser.add_argument("--scope", required=True, help="'district' or the building's number")
    parser.add_argument("--name", required=True, help="the image's catalog name (signed)")
    parser.add_argument("--version", help="the exact version expected")
    parser.add_argument("--installed-version", help="the version installed now (no going below)")
    parser.add_argument(
        "--cache",
        type=Path,
        help="a chunk store whose chunks are taken instead of fetched (default: none);"
        " fetched chunks are not written there: a killed pull resumes from its partial"
        " output beside --out",
    )
    parser.add_argument("--ca-file", type=Path, help="PEM certificate(s) an HTTPS point chains to")
    parser.add_argument(
        "--workers",
        type=_positive(int),
        default=8,
        help="requests at once (each for up to 32 chunks)",
    )
    parser.add_argument(
        "--timeout", type=_positive(float), default=30.0, help="seconds per request"
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        report = pull(
            args.point,
            args.image,
            args.out,
            trusted_keys=load_keys(args.keys),
            kind=args.kind,
            scope=args.scope,
            image_name=args.name,
            today=today or date.today(),
            version=args.version,
            installed_version=args.installed_version,
            seed=args.seed,
            seed_index=args.seed_index,
            save_index=args.save_index,
            cache_dir=args.cache,
            workers=args.workers,
            ca_file=args.ca_file,
            timeout=args.timeout,
        )
    except OrchestratorError as exc:
        print(f"pull of {args.image} failed: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"{report.manifest.ref}: {report.size / MiB:.1f} MiB written to {args.out}; "
        f"{report.bytes_from_seed / MiB:.1f} MiB from the seed, "
        f"{report.bytes_downloaded / MiB:.1f} MiB downloaded in {report.chunks_fetched} chunks "
        f"({report.chunks_cached} already cached"
        + (f", {report.chunks_resumed} resumed" if report.chunks_resumed else "")
        + f"), {report.seconds:.1f} s"
        + (
            f"; seed located by its {'index' if report.seed_by == 'index' else 'chunks'}"
            if report.seed_by != "none"
            else ""
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
