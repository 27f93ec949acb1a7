"""``cnnc draw`` and ``cnnc viz``: their arguments, and the files they write (the views
themselves are :mod:`cnnc.viz`). Registering the commands imports no NumPy.

Everything is computed and checked before the first file is written, so a bad input
leaves nothing half-written; each PNG is written atomically.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from .common import add_model_args, compile_from_args, load_weights

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


def register(sub) -> None:
    model_args = add_model_args
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


def cmd_draw(args) -> int:
    from ..viz.draw import render

    model = compile_from_args(args)
    out = args.out or (Path(args.file).stem + ".svg")
    data = render(model, out, expand=args.expand, direction=args.direction)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"wrote {out}: {len(data['boxes'])} boxes, {len(data['edges'])} edges")
    return 0


class _Context:
    """Weights, normalization and the data set behind one ``cnnc viz`` call."""

    def __init__(self, args):
        self.args = args
        self.model, self.net, arrays, self.meta, self.path = load_weights(args)
        self.mean, self.std = arrays["data.mean"], arrays["data.std"]
        self.names_list = list(self.meta.get("class_names") or [])
        self._data = None

    def name(self, c) -> str:
        c = int(c)
        return self.names_list[c] if 0 <= c < len(self.names_list) else str(c)

    def data(self):
        """(train, test) datasets fitted to the model, loaded once."""
        if self._data is None:
            from ..training import data as D
            from ..training.train import TrainConfig

            cfg = TrainConfig(**self.meta["config"])
            train, test = D.resolve_dataset(self.args.data or cfg.data, self.args.data_dir or cfg.data_dir)
            fitted = []
            for ds in (train, test):
                if tuple(ds.shape) != tuple(self.model.input_shape):
                    if not cfg.fit:
                        D.check_input_shape(self.model.input_shape, ds)
                    ds = D.fit_to_shape(ds, self.model.input_shape)
                fitted.append(ds)
            self._data = tuple(fitted)
        return self._data

    def normalize(self, x):
        from ..training import data as D

        return D.to_float(x, self.mean, self.std)

    def images(self, default_count: int = 6):
        """(normalized images, labels or None, captions)."""
        import numpy as np

        from ..training import data as D

        args = self.args
        count = args.count if args.count is not None else default_count
        if count < 1:
            raise UsageError(f"--count must be at least 1, got {count}")
        if args.images:
            raw = np.stack([D.load_image_file(f, self.model.input_shape, resize=args.resize) for f in args.images])
            return self.normalize(raw), None, [Path(f).name for f in args.images]
        _, test = self.data()
        n = min(count, len(test.y))
        return self.normalize(test.x[:n]), test.y[:n], [f"test #{i}, true {self.name(test.y[i])}" for i in range(n)]

    def bounds(self):
        """Normalized values of black and white pixels (the data's range), for synthesis."""
        _, test = self.data()
        x = self.normalize(test.x[: min(len(test.y), 2000)])
        return float(x.min()), float(x.max())


def _captions(ctx, x, captions):
    probs = ctx.net.predict_proba(x)
    pred = probs.argmax(1)
    return [f"{c}\npredicted {ctx.name(p)} ({probs[i, p]:.2f})" for i, (c, p) in enumerate(zip(captions, pred))]


def cmd_viz(args) -> int:
    from ..viz import plot
    from ..viz import core
    from .. import viz

    ctx = _Context(args)
    net, what = ctx.net, args.what
    files: dict[str, bytes] = {}
    info: dict = {"what": what, "weights": str(ctx.path)}
    if args.images and what in ("filters", "maximize", "embedding"):
        raise UsageError(f"--what {what} takes no image files")
    if what == "filters":
        layer = args.layer or core.first_conv(net)
        w = viz.filters(net, layer)
        files[f"filters-{layer}.png"] = plot.filters_png(w, layer)
        info["layer"] = layer
    elif what == "activations":
        layer = args.layer or next((n for n in core.layer_nodes(net) if core.layer_type(net, n).rectifier
                                    and len(core.out_shape(net, n)) == 3), None) or core.first_conv(net)
        core.resolve_layer(net, layer, image=True, view="activations")
        x, _, caps = ctx.images()
        acts = viz.activations(net, x, layer)
        shown = plot.display(x, ctx.mean, ctx.std)
        for i, cap in enumerate(_captions(ctx, x, caps)):
            files[f"activations-{layer}-{i}.png"] = plot.activations_png(shown[i], acts[i], layer, cap.replace("\n", ", "))
        info["layer"] = layer
    elif what in ("saliency", "guided", "occlusion"):
        x, _, caps = ctx.images()
        cls = None if args.cls is None else core.check_class(net, args.cls)
        shown = plot.display(x, ctx.mean, ctx.std)
        caps = _captions(ctx, x, caps)
        if what == "saliency":
            if args.samples < 1 or args.noise < 0:
                raise UsageError("--samples must be at least 1 and --noise at least 0")
            g, used = viz.saliency(net, x, cls)
            s, _ = viz.smoothgrad(net, x, used, samples=args.samples, noise=args.noise, seed=args.seed)
            caps = [c + f"\nscore of {ctx.name(u)}" for c, u in zip(caps, used)]
            files["saliency.png"] = plot.saliency_png(shown, viz.magnitude_map(g), viz.magnitude_map(s), caps,
                                                      args.samples, args.noise)
        elif what == "guided":
            g, used = viz.guided_backprop(net, x, cls)
            caps = [c + f"\nscore of {ctx.name(u)}" for c, u in zip(caps, used)]
            files["guided.png"] = plot.guided_png(shown, g, caps)
        else:
            h = net.input_shape[1]
            patch = args.patch or max(1, h // 4)
            stride = args.stride or max(1, patch // 2)
            occ = viz.occlusion(net, x, cls, patch=patch, stride=stride)
            caps = [c + f"\nscore of {ctx.name(u)}" for c, u in zip(caps, occ.classes)]
            files["occlusion.png"] = plot.occlusion_png(shown, occ, caps)
            info.update(patch=patch, stride=stride)
    elif what == "maximize":
        layer = args.layer
        if layer is not None:
            core.resolve_layer(net, layer, view="maximize")
        chans = args.channel if layer is not None else ([args.cls] if args.cls is not None else None)
        if layer is None and chans is None:
            chans = list(range(net.classes))
        if layer is None and args.channel:
            raise UsageError("--channel needs --layer; for class scores give --class K (or nothing: every class)")
        tv = 0.05 if args.tv is None else args.tv
        jitter = (1 if min(net.input_shape[1:]) >= 16 else 0) if args.jitter is None else args.jitter
        res = viz.maximize(net, layer, chans, steps=args.steps or 200, lr=args.lr or 0.1, l2=args.l2,
                           tv=tv, jitter=jitter, bounds=ctx.bounds(), seed=args.seed)
        chans = list(range(len(res.images))) if chans is None else chans
        shown = plot.display(res.images, ctx.mean, ctx.std)
        name = layer or "class"
        titles = [(f"ch {c}" if layer else ctx.name(c)) + f"\nact {v:.2f}" for c, v in zip(chans, res.objective)]
        what_text = f"mean activation of {layer} channels" if layer else "class scores (pre-softmax)"
        files[f"maximize-{name}.png"] = plot.synthesis_png(
            shown, titles, f"Activation maximization: inputs that maximize the {what_text}; Adam, "
                           f"{args.steps or 200} steps, L2 {args.l2:g}, TV {tv:g}, jitter {jitter}px, seed {args.seed}")
        info.update(layer=layer, channels=[int(c) for c in chans], activation=[float(v) for v in res.objective])
    elif what == "invert":
        layer = args.layer or core.last_fc_input(net)
        core.resolve_layer(net, layer, view="invert")
        x, _, _ = ctx.images(default_count=4)
        res = viz.invert(net, x, layer, steps=args.steps or 300, lr=args.lr or 0.05, l2=args.l2,
                         tv=0.02 if args.tv is None else args.tv, jitter=args.jitter or 0,
                         bounds=ctx.bounds(), seed=args.seed)
        files[f"invert-{layer}.png"] = plot.invert_png(plot.display(x, ctx.mean, ctx.std),
                                                       plot.display(res.images, ctx.mean, ctx.std), layer, res.objective)
        info.update(layer=layer, code_error=[float(v) for v in res.objective])
    elif what == "neighbours":
        layer = args.layer or core.last_fc_input(net)
        core.resolve_layer(net, layer, view="neighbours")
        if args.reference < 1:
            raise UsageError(f"--reference must be at least 1, got {args.reference}")
        x, labels, _ = ctx.images(default_count=5)
        train, _ = ctx.data()
        m = min(args.reference, len(train.y))
        ref = ctx.normalize(train.x[:m])
        nb = viz.neighbours(net, x, ref, k=args.k, layer=layer)
        q_labels = labels if labels is not None else net.predict_proba(x).argmax(1)
        files[f"neighbours-{layer}.png"] = plot.neighbours_png(
            plot.display(x, ctx.mean, ctx.std), plot.display(ref, ctx.mean, ctx.std), nb, q_labels, train.y[:m],
            ctx.name, layer)
        info.update(layer=layer, indices=nb.indices.tolist())
    elif what == "embedding":
        layer = args.layer or core.last_fc_input(net)
        core.resolve_layer(net, layer, view="embedding")
        x, labels, _ = ctx.images(default_count=1000)
        xy = viz.embedding(net, x, layer, method=args.method, seed=args.seed)
        _, test = ctx.data()
        files[f"embedding-{layer}-{args.method}.png"] = plot.embedding_png(xy, labels, ctx.name, layer, args.method,
                                                                           test.name)
        info.update(layer=layer, method=args.method, images=int(len(labels)))
    written = _write(Path(args.out), files)
    info["files"] = written
    from .train import describe_weights

    info["weights"] = describe_weights(ctx.path, ctx.meta)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"weights: {info['weights']}")
        for f in written:
            print(f"wrote {f}")
    return 0


def _write(out: Path, files: dict[str, bytes]) -> list[str]:
    from ..atomic import atomic_write_bytes

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None
    paths = []
    for name, data in files.items():
        atomic_write_bytes(out / name, data, error=UsageError, what="picture")
        paths.append(str(out / name))
    return paths


COMMANDS = {"draw": cmd_draw, "viz": cmd_viz}
