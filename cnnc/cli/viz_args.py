"""The arguments of ``cnnc draw`` and ``cnnc viz`` (light: building the parser imports no
NumPy; :mod:`cnnc.cli.viz` runs the commands)."""
from __future__ import annotations

import argparse

VIEWS = ("filters", "activations", "saliency", "guided", "occlusion", "maximize", "neighbours",
         "embedding", "invert")

VIZ_EPILOG = """\
views (--what):
  filters      a conv layer's weights as a grid (default: the first conv; RGB for 3 channels)
  activations  a layer's feature maps for each image (default layer: the first ReLU)
  saliency     |d score / d pixel| for the predicted (or --class) class, and SmoothGrad
               (--samples noisy copies, --noise), overlaid on the image
  guided       guided backpropagation (the deconvolution view)
  occlusion    the class score as a gray --patch slides with --stride over the image
  maximize     an input maximizing --channel(s) of --layer, or a class score without --layer;
               gradient ascent with --l2, --tv and --jitter regularizers, --steps, --seed
  neighbours   the -k nearest training images to each image in --layer's feature space
               (default: the input of the last fc)
  embedding    t-SNE (or --method pca) of --layer's features of --count test images
  invert       images reconstructed from --layer's code of each image (TV + L2 prior)
images: IMAGE files if given, else the first --count test images of --data (default: the data
set the weights were trained on).

examples:
  cnnc viz models/lenet5.cnn --weights runs/lenet5 --what filters -o viz/
  cnnc viz models/lenet5.cnn --weights runs/lenet5 --what saliency --count 4 -o viz/
  cnnc viz models/digits.cnn --weights runs/digits --what maximize --layer conv_4 -o viz/
  cnnc viz models/digits.cnn --weights runs/digits --what embedding --method pca -o viz/ --json"""


def add_commands(sub, model_args) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "draw", help="draw the layer graph (SVG, PNG or PDF)", formatter_class=fmt,
        description="Draw the model's layer graph: one box per layer, or per definition call "
                    "(expand them with --expand), with its output shape and parameter count; "
                    "branches and merges are laid out side by side. Needs no system Graphviz: "
                    "the layered layout is cnnc's own (on networkx), the drawing matplotlib's.",
        epilog="examples:\n  cnnc draw models/resnet18.cnn -o resnet18.svg\n"
               "  cnnc draw models/inception.cnn --expand -o inception.png\n"
               "  cnnc draw models/lenet5.cnn --direction LR --json")
    model_args(p)
    p.add_argument("-o", "--out", metavar="FILE",
                   help="picture to write, .svg, .png or .pdf (default: <model>.svg here)")
    p.add_argument("--expand", action="store_true", help="one box per layer inside definition calls too")
    p.add_argument("--direction", choices=["TB", "LR"], default="TB",
                   help="top to bottom (default) or left to right")
    p.add_argument("--json", action="store_true", help="print the layout (boxes, positions, edges) as JSON")

    p = sub.add_parser(
        "viz", help="see inside trained weights: filters, activations, saliency, ...", formatter_class=fmt,
        description="Write PNG pictures of what a trained network computes; the title of each says "
                    "what it shows.", epilog=VIZ_EPILOG)
    model_args(p)
    p.add_argument("--weights", required=True, metavar="RUN", help="a checkpoint file or run folder")
    p.add_argument("--what", required=True, choices=VIEWS, metavar="VIEW", help=", ".join(VIEWS))
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (default: test images)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the PNGs")
    p.add_argument("--layer", metavar="L", help="layer name as in `cnnc check` (e.g. conv_2, relu_3)")
    p.add_argument("--class", dest="cls", type=int, metavar="K",
                   help="class for saliency/guided/occlusion (default: predicted); maximize: classes")
    p.add_argument("--channel", type=int, action="append", metavar="C",
                   help="maximize: channel(s) of --layer (repeatable; default: the first 16)")
    p.add_argument("--data", metavar="NAME|PATH", help="data set for images (default: the one trained on)")
    p.add_argument("--data-dir", metavar="DIR", help="where named data sets live")
    p.add_argument("--count", type=int, metavar="N",
                   help="test images to use (default 6; neighbours 5, invert 4, embedding 1000)")
    p.add_argument("--resize", action="store_true", help="resize IMAGE files to the model's input size")
    g = p.add_argument_group("view settings")
    g.add_argument("--samples", type=int, default=25, metavar="N", help="SmoothGrad: noisy copies (default 25)")
    g.add_argument("--noise", type=float, default=0.15, metavar="S",
                   help="SmoothGrad: noise std as a fraction of the image range (default 0.15)")
    g.add_argument("--patch", type=int, metavar="P", help="occlusion patch size (default: 1/4 of the image)")
    g.add_argument("--stride", type=int, metavar="S", help="occlusion stride (default: patch/2)")
    g.add_argument("--steps", type=int, metavar="N", help="maximize/invert: gradient steps (default 200/300)")
    g.add_argument("--lr", type=float, metavar="LR", help="maximize/invert: Adam step (default 0.1/0.05)")
    g.add_argument("--l2", type=float, default=1e-3, metavar="W", help="maximize/invert: L2 weight (default 1e-3)")
    g.add_argument("--tv", type=float, metavar="W", help="maximize/invert: total-variation weight (default 0.05/0.02)")
    g.add_argument("--jitter", type=int, metavar="PX", help="maximize/invert: random shift each step (default: maximize 1 px for "
                        "inputs >= 16 px, else 0; invert 0)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    g.add_argument("-k", type=int, default=8, metavar="K", help="neighbours per query (default 8)")
    g.add_argument("--reference", type=int, default=10000, metavar="N",
                   help="neighbours: training images searched (default 10000)")
    g.add_argument("--method", choices=["tsne", "pca"], default="tsne", help="embedding method (default tsne)")
    p.add_argument("--json", action="store_true", help="print the files written (and key numbers) as JSON")
    p.__class__ = _intermixed(type(p))  # IMAGE files may follow the options


def _intermixed(base):
    """``base`` parsing positionals mixed with options (``viz FILE --what x IMAGE -o DIR``);
    plain argparse gives the IMAGE list up once FILE has been read."""
    class Intermixed(base):
        _inner = False

        def parse_known_args(self, args=None, namespace=None):
            if self._inner:
                return super().parse_known_args(args, namespace)
            self._inner = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inner = False

    return Intermixed


# ---------------------------------------------------------------------------
