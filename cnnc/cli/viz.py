"""``cnnc draw`` and ``cnnc viz``: argument parsing and the files they write.

Everything is computed and checked before the first file is written, so a bad input
leaves nothing half-written; each PNG is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UsageError

def cmd_draw(args) -> int:
    from .commands import compile_from_args as _compile_from_args
    from ..viz.draw import render

    model = _compile_from_args(args)
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
        from .commands import _load_weights

        self.args = args
        self.model, self.net, arrays, self.meta, self.path = _load_weights(args)
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
        layer = args.layer or next((n for n in core.layer_nodes(net) if core.layer_kind(net, n) == "relu"
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
    if args.json:
        print(json.dumps(info, indent=2))
    else:
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
