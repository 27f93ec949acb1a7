"""Property tests of the front end (parse -> build -> infer).

(a) random text from a vocabulary of the language's tokens and some junk, and (b) random
mutations of the reference models either compile to a well-formed graph or raise a
:class:`cnnc.CnncError` whose position lies inside the text; never anything else.
(c) Random valid networks compile, and their parameter and MAC counts equal an
independent count made here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnc
from cnnc import CnncError, SourceError

MODELS = sorted((Path(__file__).resolve().parent.parent / "models").glob("*.cnn"))
MODEL_TEXTS = {p.name: p.read_text(encoding="utf-8") for p in MODELS}

CI = dict(derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_outcome(text: str, **kwargs) -> cnnc.Model | None:
    """Compile ``text``; assert the result is a sane graph or a positioned CnncError."""
    kwargs = kwargs or {"input": "3x32x32", "classes": 10}
    try:
        model = cnnc.compile(text, **kwargs)
    except SourceError as err:
        rendered = str(err)  # rendering never fails
        assert rendered and "Traceback" not in rendered
        assert isinstance(err.kind, str) and err.kind
        if err.span is not None:
            lines = text.split("\n")
            assert 1 <= err.span.line <= len(lines), (err.span, text)
            line = lines[err.span.line - 1]
            assert 1 <= err.span.column <= len(line) + 1, (err.span, text)
            assert 0 <= err.span.start <= err.span.end <= len(text), (err.span, text)
            assert rendered.startswith(f"<string>:{err.span.line}:{err.span.column}: error: ")
        return None
    except CnncError as err:  # UsageError and friends: no position, still a clean message
        assert str(err)
        return None
    g = model.graph
    assert nx.is_directed_acyclic_graph(g)
    assert "input" in g
    reachable = nx.descendants(g, "input") | {"input"}
    assert set(g.nodes) == reachable
    assert g.graph["output"] in g
    assert len(model.summary.rows) == g.number_of_nodes() - 1
    assert model.summary.total_params == sum(r.params for r in model.summary.rows)
    return model


# ---- (a) random token soup --------------------------------------------------------------------

VOCAB = [
    # layers, with and without sizes and arguments
    "conv", "conv3", "conv5", "conv1", "conv1x7", "pool", "maxpool3", "avgpool2", "gap", "fc",
    "fc(10)", "relu", "tanh", "sigmoid", "softmax", "bn", "id", "dropout", "dropout(0.5)", "leaky",
    "flatten", "maxout", "relu3", "cnov3", "block", "b", "c", "s", "same", "valid", "ceil",
    "stride", "pad", "groups", "round", "bias", "true", "false",
    # numbers
    "0", "1", "2", "3", "16", "64", "0.5", "1e3", ".5", "3x32x32", "1x8x8", "3x3", "99999999",
    # operators and punctuation
    "-", "->", "|", "+", "*", "/", "[", "]", "(", ")", "=", ",", " ", " ", "  ", "\n", "\n\n", "\t",
    "\\\n", "# comment\n", "#",
    # header keywords
    "input", "classes", "width", "epochs", "optimizer", "sgd", "lr", "data", '"mnist"', "nesterov",
    # junk
    "$", "{", "}", ";", ":", "'", '"', ".", "@", "\u2013", "\u00d7", "\x00", "\r", "\f", "\u2028",
    "é", "\x85",
]

token_text = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=40).map("".join)


@pytest.mark.slow
@settings(max_examples=1500, **CI)
@given(token_text)
def test_random_token_text_never_crashes(text):
    check_outcome(text)


# Shaped soup: mostly well-formed layer sequences with occasional damage, which gets much
# further into graph building and shape inference than uniform soup.
LAYER_WORDS = ["conv3", "conv3(16)", "conv1(8, stride=2)", "conv5(4, pad=valid)", "pool",
               "maxpool3(stride=2)", "maxpool3(stride=2, round=ceil)", "avgpool2", "gap", "fc",
               "fc(32)", "relu", "bn", "dropout(0.3)", "id", "softmax", "b(8)", "b(8, 2)", "[relu]*2",
               "(conv3 + id)", "(conv1(4) | conv3(4))", "(relu | relu)", "(conv3(8) + conv3(16))"]
# mostly good joins, sometimes a bad one
SEPARATORS = [" - "] * 8 + ["-", " -> ", "\n- ", " -\n", "*2 - ", " ", "*0 - ", " | ", " + "]


@st.composite
def shaped_text(draw):
    n = draw(st.integers(1, 10))
    parts = []
    for i in range(n):
        parts.append(draw(st.sampled_from(LAYER_WORDS)))
        if i < n - 1:
            parts.append(draw(st.sampled_from(SEPARATORS)))
    body = "".join(parts)
    if draw(st.booleans()):
        body = "[" + body + "]*" + draw(st.sampled_from(["1", "2", "3"]))
    head = draw(st.sampled_from(["", "b(c) = conv3(c) - relu\n", "width 4\n", "input 1x9x9\n",
                                 "b(c) = b(c)\n"]))
    return head + body


@settings(max_examples=1000, **CI)
@given(shaped_text())
def test_shaped_random_networks_never_crash(text):
    check_outcome(text)


# ---- (b) mutations of the reference models ------------------------------------------------------

MUTATION_CHARS = st.sampled_from(list("-|+*()[]=,#\n x0123456789abcdefgilnoprsuvwy_.$\t\"") + ["->", "\u2013"])


@st.composite
def mutated_model(draw):
    name = draw(st.sampled_from(sorted(MODEL_TEXTS)))
    text = MODEL_TEXTS[name]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "delete-span", "duplicate-line"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(MUTATION_CHARS) + text[pos:]
        elif op == "delete" and text:
            text = text[:pos] + text[pos + 1:]
        elif op == "replace" and pos < len(text):
            text = text[:pos] + draw(MUTATION_CHARS) + text[pos + 1:]
        elif op == "delete-span":
            end = draw(st.integers(pos, min(len(text), pos + 12)))
            text = text[:pos] + text[end:]
        elif op == "duplicate-line":
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


@pytest.mark.slow
@settings(max_examples=1500, **CI)
@given(mutated_model())
def test_mutated_models_never_crash(text):
    check_outcome(text)


@pytest.mark.parametrize("name", sorted(MODEL_TEXTS))
def test_unmutated_models_pass_the_same_checks(name):
    assert check_outcome(MODEL_TEXTS[name], filename="<string>") is not None  # each at its own input shape


# ---- (c) generated valid networks: independent parameter and MAC counts ----------------------------


@dataclass(frozen=True)
class State:
    shape: tuple  # (C, H, W) or (F,)
    downs: int  # spatial down-samplings so far (the width rule)
    params: int
    macs: int


@dataclass(frozen=True)
class Layer:
    text: str
    kind: str
    k: int = 0
    filters: int | None = None
    pad: str = "same"
    bias: bool = True
    units: int | None = None


def apply(layer: Layer, s: State, width: int, classes: int) -> State | None:
    """The expected effect of one layer, computed independently of cnnc; None if invalid."""
    if layer.kind == "conv":
        if len(s.shape) != 3:
            return None
        c, h, w = s.shape
        f = layer.filters if layer.filters is not None else width * 2 ** s.downs
        if layer.pad == "valid":
            oh, ow = h - layer.k + 1, w - layer.k + 1
            if oh < 1 or ow < 1:
                return None
        else:
            oh, ow = h, w
        weights = layer.k * layer.k * c * f + (f if layer.bias else 0)
        return State((f, oh, ow), s.downs, s.params + weights, s.macs + f * oh * ow * layer.k * layer.k * c)
    if layer.kind == "pool":
        if len(s.shape) != 3 or s.shape[1] % 2 or s.shape[2] % 2 or s.shape[1] < 2:
            return None
        c, h, w = s.shape
        return State((c, h // 2, w // 2), s.downs + 1, s.params, s.macs)
    if layer.kind == "bn":
        return State(s.shape, s.downs, s.params + 2 * s.shape[0], s.macs)
    if layer.kind == "pointwise":
        return s
    if layer.kind == "fc":
        n = 1
        for d in s.shape:
            n *= d
        units = layer.units if layer.units is not None else classes
        return State((units,), s.downs, s.params + (n + 1) * units, s.macs + n * units)
    raise AssertionError(layer.kind)


layer_strategy = st.one_of(
    st.builds(lambda k, f, pad, bias: Layer(
        f"conv{k}" + _args([str(f)] if f else [], ["pad=valid"] if pad == "valid" else [],
                           [] if bias else ["bias=false"]), "conv", k=k, filters=f, pad=pad, bias=bias),
        st.sampled_from([1, 3, 5]), st.one_of(st.none(), st.integers(1, 24)),
        st.sampled_from(["same", "valid"]), st.booleans()),
    st.just(Layer("pool", "pool")),
    st.just(Layer("maxpool2", "pool")),
    st.just(Layer("avgpool2(stride=2)", "pool")),
    st.just(Layer("bn", "bn")),
    st.sampled_from([Layer(t, "pointwise") for t in ("relu", "tanh", "sigmoid", "dropout(0.25)", "leaky(0.1)")]),
    st.builds(lambda u: Layer(f"fc({u})", "fc", units=u), st.integers(1, 40)),
)


def _args(*groups) -> str:
    args = [a for g in groups for a in g]
    return f"({', '.join(args)})" if args else ""


@st.composite
def valid_network(draw):
    c = draw(st.integers(1, 4))
    hw = draw(st.sampled_from([4, 6, 8, 12, 16]))
    width = draw(st.integers(1, 12))
    classes = draw(st.integers(1, 12))
    state = State((c, hw, hw), 0, 0, 0)
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.integers(0, 4)) == 0:
            # a repetition [a - b]*n: every copy must stay valid
            body = draw(st.lists(layer_strategy, min_size=1, max_size=3))
            n = draw(st.integers(1, 3))
            s = state
            for _ in range(n):
                for layer in body:
                    s = s and apply(layer, s, width, classes)
            if s is None:
                continue
            state = s
            parts.append("[" + " - ".join(layer.text for layer in body) + f"]*{n}")
        else:
            layer = draw(layer_strategy)
            s = apply(layer, state, width, classes)
            if s is None:
                continue
            state = s
            parts.append(layer.text)
    final = Layer("fc", "fc")  # the last fc without a size: `classes` outputs
    state = apply(final, state, width, classes)
    parts.append("fc")
    sep = draw(st.sampled_from([" - ", "-", " -> ", " -\n    "]))
    text = f"input {c}x{hw}x{hw}\nclasses {classes}\nwidth {width}\n\n" + sep.join(parts) + "\n"
    return text, state


@settings(max_examples=300, **CI)
@given(valid_network())
def test_generated_networks_count_like_an_independent_count(case):
    text, expected = case
    model = cnnc.compile(text)
    assert model.summary.total_params == expected.params, text
    assert model.summary.total_macs == expected.macs, text
    assert model.summary.output_shape == expected.shape
    assert check_outcome(text, filename="<string>") is not None
