"""Train one of nets.py's networks on mnist5k with snnc's losses and write its state dict.

    python models/paper_nets/train.py sew_resnet_imp --loss lts --epochs 3 -o models/paper_nets/sew_resnet_imp.pt

The network is the user's own module: this script is the training code such a user runs, with
snnc.train.fit (Adam, cosine schedule, the TET / TET-S / LTS objectives) as its loop. The state
dict it writes is what `snnc export --model nets.py:FACTORY --weights FILE` loads.
"""
import argparse
import sys
from pathlib import Path

import torch
from spikingjelly.activation_based import base
from torch import nn

from snnc.data import InputSpec, open_inputs
from snnc.frontends.checkpoint import PIXEL_ENCODING
from snnc.train import fit

sys.path.insert(0, str(Path(__file__).parent))
import nets  # noqa: E402  (beside this script)


class Trained(nn.Module):
    """The network as snnc.train.fit drives it: SpikingJelly's neurons keep their membranes between
    calls, so each batch starts from reset(); `readout` gives class scores from the per-step outputs."""

    def __init__(self, network, readout):
        super().__init__()
        self.network = network
        self.mode = readout

    def forward(self, x):
        for module in self.network.modules():
            if isinstance(module, base.MemoryModule):
                module.reset()
        return self.network(x)

    def readout(self, y):
        return y[-1] if self.mode == "last" else y.mean(dim=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factory", choices=sorted(nets.FACTORIES))
    parser.add_argument("--loss", choices=["sdt", "tet", "tet-s", "lts"], required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate, cosine-annealed to 0")
    parser.add_argument("--shift", type=int, default=2, help="random translation of training digits, pixels")
    parser.add_argument("--train-samples", type=int, default=None, help="the first N training digits (all: 4000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    spec = InputSpec((1, 28, 28), args.T, dict(PIXEL_ENCODING), 10)
    train_set = open_inputs("mnist5k", spec, samples=args.train_samples, split="train")
    test_set = open_inputs("mnist5k", spec, split="test")
    torch.manual_seed(0)
    model = Trained(nets.FACTORIES[args.factory](), "last" if args.loss == "lts" else "mean")
    _, accuracy = fit(model, train_set, test_set, args.loss, args.epochs, lr=args.lr, shift=args.shift, threads=args.threads,
                      on_epoch=lambda epoch, loss, acc: print(f"epoch {epoch}: loss {loss:.4f}, "
                                                              f"test accuracy {acc:.4f}", file=sys.stderr))
    output = Path(args.output)
    partial = output.with_name(output.name + ".partial")
    torch.save(model.network.state_dict(), partial)
    partial.replace(output)
    print(f"wrote {output}: test accuracy {accuracy:.4f} on mnist5k's 1000 test digits")


if __name__ == "__main__":
    main()
