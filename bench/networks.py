"""Real-size networks, built from MONAI's own classes with a fixed seed and exported as TorchScript.

The fixture model is 18 KB; what teams ship is millions of parameters. bench/networks.toml declares
each network (its MONAI class, arguments, seed, window); nothing is downloaded, so the same file comes
out wherever it is built from the same torch and MONAI:

    python -m bench.networks dynunet /tmp/dynunet.ts      # write one as TorchScript
    python -m bench.networks --list                       # names, parameters, titles
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validation.errors import GateError

NETWORKS_TOML = Path(__file__).with_name("networks.toml")


@dataclass(frozen=True)
class Network:
    """One declared network: how to build it and the window it takes."""

    name: str
    title: str
    label: str  # short, for the bench's table
    class_path: str
    args: dict[str, Any]
    seed: int
    window: tuple[int, ...]
    emulated_runs: int
    small_window: tuple[int, ...] | None = None  # a smaller input the network takes (the bench's comparison)

    def build(self) -> Any:
        """The network in eval mode, its weights drawn from the declared seed."""
        import torch

        module_name, _, class_name = self.class_path.rpartition(".")
        network_class = getattr(importlib.import_module(module_name), class_name)
        torch.manual_seed(self.seed)
        return network_class(**self.args).eval()

    def export(self, path: Path) -> Path:
        """Trace the network on one window and save it: what the gate and the bench are given."""
        import torch

        network = self.build()
        with torch.no_grad():
            traced = torch.jit.trace(network, torch.zeros(self.window))
        path.parent.mkdir(parents=True, exist_ok=True)
        traced.save(str(path))
        return path


def load(path: Path = NETWORKS_TOML) -> dict[str, Network]:
    """Every network of the declaration, checked."""
    data = tomllib.loads(path.read_text())
    found = {}
    for name, table in data.get("networks", {}).items():
        try:
            found[name] = Network(
                name,
                str(table["title"]),
                str(table["label"]),
                str(table["class"]),
                dict(table["args"]),
                int(table["seed"]),
                tuple(int(n) for n in table["window"]),
                int(table["emulated_runs"]),
                tuple(int(n) for n in table["small_window"]) if "small_window" in table else None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise GateError(f"{path}: network {name!r} needs title, label, class, args, seed, window and "
                            f"emulated_runs ({error})") from None  # fmt: skip
    return found


def get(name: str, path: Path = NETWORKS_TOML) -> Network:
    networks = load(path)
    if name not in networks:
        raise GateError(f"{path}: no network {name!r}; have {', '.join(sorted(networks))}")
    return networks[name]


def parameters(network: Any) -> int:
    return sum(parameter.numel() for parameter in network.parameters())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.networks", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a network of bench/networks.toml")
    parser.add_argument("out", nargs="?", type=Path, help="where to write its TorchScript")
    parser.add_argument("--list", action="store_true", help="list the networks with their parameter counts")
    args = parser.parse_args(argv)
    try:
        if args.list or not args.name:
            for network in load().values():
                millions = parameters(network.build()) / 1e6
                print(f"{network.name}: {millions:.1f} M parameters, {network.title}")
            return 0
        if args.out is None:
            parser.error("give the file to write")
        network = get(args.name)
        print(network.export(args.out))
        print(f"parameters {parameters(network.build())}")
        return 0
    except GateError as error:
        print(f"armgate: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
