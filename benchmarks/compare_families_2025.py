"""MIRAGE, DFPIR and BaryIR against their official code: same weights, one process, fp32 inference.

The official code is not part of this repository: pass the folder of a checkout of the official
repository (its folder goes first on ``sys.path``), with the official code's own imports installed
(MIRAGE: ``timm``, ``fvcore``; DFPIR: ``torchvision``, ``clip``; BaryIR: ``torchvision``)::

    python benchmarks/compare_families_2025.py mirage --official MIRAGE/ --size 128
    python benchmarks/compare_families_2025.py dfpir --official DFPIR/ --size 128
    python benchmarks/compare_families_2025.py baryir --official BaryIR/ --size 128
    python benchmarks/compare_families_2025.py baryir --official BaryIR/ --size 256 --memory ours

Time: one thread, process CPU time of one forward, official and ours in turn (interleaved), the
minimum of ``--repeats``. ``--memory VARIANT``: instead, the rise of the process's peak resident set
over one forward of that variant only (run once per variant, each in its own process).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable

import torch

from allinone_ir import create_model


def _pair(
    family: str,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The official network and ours with its weights, as two functions of the image."""
    if family == "mirage":
        from net.mirage_small import MIRAGE  # type: ignore[import-not-found]

        official = MIRAGE().eval()
        ours = create_model("mirage_s").eval()
        ours.load_state_dict(official.state_dict())

        def run_official(x: torch.Tensor) -> torch.Tensor:
            y = official(x)
            return y[0] if isinstance(y, (tuple, list)) else y

        return run_official, ours
    if family == "dfpir":
        from net.model import ChannelShuffle_skip_textguaid  # type: ignore[import-not-found]

        official = ChannelShuffle_skip_textguaid(device="cpu").eval()
        ours = create_model("dfpir").eval()
        ours.load_state_dict(official.state_dict())
        text = torch.randn(1, 512)
        return (lambda x: official(x, text)), (lambda x: ours(x, text_embedding=text))
    from model_bary import BaryNet  # type: ignore[import-not-found]

    official = BaryNet(decoder=True).eval()
    ours = create_model("baryir").eval()
    ours.load_state_dict(type(ours).filter_state_dict(official.state_dict(), ours))
    return (lambda x: official(x)[0]), ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=("mirage", "dfpir", "baryir"))
    parser.add_argument("--official", required=True, help="folder of the official repository")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", choices=("official", "ours"))
    args = parser.parse_args()
    sys.path.insert(0, args.official)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    official, ours = _pair(args.family)
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        if args.memory:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            (official if args.memory == "official" else ours)(x)
            rise = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            print(f"{args.family} {args.memory}: peak RSS rise {rise:.0f} MiB")
            return
        diff = (official(x) - ours(x)).abs().max().item()
        times: dict[str, list[float]] = {"official": [], "ours": []}
        for _ in range(args.repeats):
            for name, f in (("official", official), ("ours", ours)):
                start = time.process_time()
                f(x)
                times[name].append(time.process_time() - start)
    o, u = min(times["official"]), min(times["ours"])
    print(f"{args.family} {args.size} px: official {o:.2f} s, ours {u:.2f} s, official/ours {o / u:.2f}x; "
          f"max abs diff {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
